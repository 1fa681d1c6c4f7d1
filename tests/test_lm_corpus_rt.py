"""The unlabelled Rotten Tomatoes text a sentiment language model pretrains on."""

from grukit.lm.corpus import rotten_tomatoes_unlabelled


def test_unlabelled_text_holds_the_plot_summaries_and_only_the_snippets_given():
    snippets = ["A given snippet.", "Another one,\nover two lines."]
    lines = rotten_tomatoes_unlabelled(snippets, seed=0)
    assert len(lines) == 1083 + 2  # the plot summaries (empty rows dropped) and the two snippets
    assert "A given snippet." in lines and "Another one, over two lines." in lines
    assert all("\n" not in line and line not in ("", "nan") for line in lines)
    assert lines == rotten_tomatoes_unlabelled(snippets, seed=0)
    assert lines != rotten_tomatoes_unlabelled(snippets, seed=1)  # shuffled by the seed
