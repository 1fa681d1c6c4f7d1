"""Extending a character language model's vocabulary with characters its fine-tuning text brings: old ids keep
their meaning and their predictions, the new ones train, and the extended model saves and loads."""

import json

import pytest
import torch

import grukit
from grukit.cli import main
from grukit.lm import GRULanguageModel, LMConfig, add_lora
from grukit.text import BPETokenizer, CharTokenizer

TEXT = "the cat sat on the mat. " * 4


def small_model(tie_weights=False, seed=0):
    torch.manual_seed(seed)
    tokenizer = CharTokenizer.train([TEXT])
    embedding = 20 if tie_weights else 12
    config = LMConfig(tokenizer.vocab_size, embedding_size=embedding, hidden_size=20, num_layers=2,
                      tie_weights=tie_weights)
    return GRULanguageModel(config, tokenizer).eval()


@pytest.mark.parametrize("tie_weights", [False, True])
def test_extending_keeps_old_ids_and_their_logits_and_starts_new_rows_at_the_mean(tie_weights):
    model = small_model(tie_weights)
    old_size = model.config.vocab_size
    ids = torch.tensor([model.tokenizer.encode("the mat sat")])
    before, _ = model(ids)  # (1, T, V)
    embedding_mean = model.embedding.weight.mean(0)
    bias_mean = model.decoder.bias.mean()

    added = model.extend_vocabulary(["ça été", "zèbre"])
    assert added == sorted(set("çaétézèbre") - set(TEXT)) == ["b", "r", "z", "ç", "è", "é"]
    assert model.config.vocab_size == model.tokenizer.vocab_size == old_size + 6
    assert model.tokenizer.encode("the mat sat") == ids[0].tolist()
    assert model.tokenizer.encode("é") == [old_size + 5] and model.tokenizer.decode([old_size + 3]) == "ç"
    after, _ = model(ids)  # (1, T, V + 6)
    assert after.shape[-1] == old_size + 6
    torch.testing.assert_close(after[..., :old_size], before, rtol=0, atol=0)
    torch.testing.assert_close(model.embedding.weight[old_size:], embedding_mean.expand(6, -1))
    torch.testing.assert_close(model.decoder.bias[old_size:], bias_mean.expand(6))
    assert (model.decoder.weight is model.embedding.weight) == tie_weights
    assert model.extend_vocabulary("the cat") == []

    model.train()
    logits, _ = model(torch.tensor([model.tokenizer.encode("zèbre")]))
    logits.sum().backward()
    assert model.embedding.weight.grad[old_size:].abs().sum() > 0


def test_an_extended_model_saves_and_loads_with_its_new_characters(tmp_path):
    model = small_model(tie_weights=True)
    model.extend_vocabulary("Ωμέγα")
    model.save_pretrained(tmp_path / "model")
    chars = json.loads((tmp_path / "model" / "char_tokenizer.json").read_text(encoding="utf-8"))["chars"]
    assert chars[-5:] == sorted("Ωμέγα")
    loaded = GRULanguageModel.from_pretrained(tmp_path / "model").eval()
    assert loaded.tokenizer.chars == model.tokenizer.chars and loaded.config == model.config
    ids = torch.tensor([model.tokenizer.encode("the Ωμέγα cat")])
    torch.testing.assert_close(loaded(ids)[0], model(ids)[0], rtol=0, atol=0)


def test_lora_adapters_survive_and_frozen_weights_stay_frozen():
    model = small_model()
    add_lora(model, rank=2)
    ids = torch.tensor([model.tokenizer.encode("the cat")])
    before, _ = model(ids)
    frozen = model.embedding.weight.requires_grad
    model.extend_vocabulary("q")
    assert model.embedding.weight.requires_grad == frozen and model.decoder.bias.requires_grad == frozen
    torch.testing.assert_close(model(ids)[0][..., :-1], before, rtol=0, atol=0)


def test_extending_refuses_other_tokenizers_and_non_text():
    bpe = BPETokenizer.train([TEXT], 260)
    model = GRULanguageModel(LMConfig(bpe.vocab_size, embedding_size=8, hidden_size=8, num_layers=1), bpe)
    with pytest.raises(ValueError, match="needs a model with a character tokenizer, this one has a BPETokenizer"):
        model.extend_vocabulary("é")
    with pytest.raises(TypeError, match="expected a text or texts"):
        small_model().extend_vocabulary([3])
    with pytest.raises(ValueError, match="expected single characters"):
        CharTokenizer.train([TEXT]).extended(["ab"])


def test_finetune_lm_extend_vocab_adds_the_characters_the_warning_names(tmp_path, capsys):
    torch.set_num_threads(1)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT + "\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"hidden_size": 8, "embedding_size": 8, "num_layers": 1}}))
    pretrained = tmp_path / "pre"
    assert main(["lm", "train", "--text", str(corpus), "--config", str(config), "--out", str(pretrained),
                 "--steps", "1", "--quiet"]) == 0
    french = tmp_path / "french.txt"
    french.write_text(("le chat été là. " * 8 + "\n") * 4, encoding="utf-8")
    capsys.readouterr()
    common = ["finetune", "lm", "--lm", str(pretrained), "--text", str(french), "--steps", "1", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    err = capsys.readouterr().err
    assert "warning: 3 distinct characters of your text" in err and "pass --extend-vocab to add them" in err

    assert main([*common, "--out", str(tmp_path / "extended"), "--extend-vocab"]) == 0
    captured = capsys.readouterr()
    assert "not in the model's vocabulary" not in captured.err
    assert "added 3 characters of your text to the vocabulary, now 16: 'l\u00e0\u00e9'" in captured.out
    tuned = GRULanguageModel.from_pretrained(tmp_path / "extended" / "model")
    assert tuned.config.vocab_size == 16 and tuned.tokenizer.encode("été")[0] == 15


def test_finetune_classify_extend_vocab_grows_the_pretrained_encoder(tmp_path, capsys):
    torch.set_num_threads(1)
    pretrained = tmp_path / "pre"
    small_model().save_pretrained(pretrained)
    data = tmp_path / "reviews.csv"
    rows = [f"a fine film {i},pos" for i in range(8)] + [f"a dull film {i},neg" for i in range(8)]
    data.write_text("text,label\n" + "\n".join(rows) + "\n")
    common = ["finetune", "classify", "--data", str(data), "--epochs", "1", "--quiet", "--extend-vocab"]
    assert main([*common, "--lm", str(pretrained), "--out", str(tmp_path / "clf")]) == 0
    out = capsys.readouterr().out  # the seeded split keeps 12 of the 16 texts, 12 new characters among them
    assert "added 12 characters of the training texts to the vocabulary, now 24: '0123467dfilu'" in out
    assert grukit.load(tmp_path / "clf").encoder.tokenizer.vocab_size == 24
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"hidden_size": 8, "embedding_size": 8, "num_layers": 1}}))
    assert main([*common, "--scratch", str(config), "--out", str(tmp_path / "scratch")]) == 2
    assert "--extend-vocab extends a pretrained model's vocabulary (--lm)" in capsys.readouterr().err
