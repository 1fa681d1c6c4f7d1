"""ULMFiT pieces (concat pooling, discriminative rates, slanted triangular schedule, gradual unfreezing),
LoRA fine-tuning, and a tiny pretrain → fine-tune pipeline through the command line."""

import csv
import json

import numpy as np
import pytest
import torch

import grukit
from grukit.cli import main
from grukit.lm import GRULanguageModel, LMConfig
from grukit.lm.classifier import (
    ClassifierTraining,
    GRUClassifier,
    discriminative_groups,
    finetune_classifier,
    pad_batch,
    predict,
)
from grukit.text import CharTokenizer
from grukit.train import Callback, CheckpointError, save_checkpoint
from grukit.train.callbacks import GradualUnfreezing, slanted_triangular

POSITIVE = ["a good film", "great acting", "a joy to watch", "good and great", "wonderful story", "a great joy"]
NEGATIVE = ["a bad film", "dull acting", "a bore to watch", "bad and dull", "awful story", "a dull bore"]


@pytest.fixture
def classifier():
    tokenizer = CharTokenizer.train(POSITIVE + NEGATIVE)
    torch.manual_seed(0)
    encoder = GRULanguageModel(LMConfig(tokenizer.vocab_size, 8, 12, num_layers=2), tokenizer)
    return GRUClassifier(encoder, num_classes=2, head_hidden=6)


def test_slanted_triangular_rises_then_falls_between_lr_over_ratio_and_lr():
    total = 1000
    factors = [slanted_triangular(step, total, cut_frac=0.1, ratio=32) for step in range(total + 1)]
    assert factors[0] == pytest.approx(1 / 32)
    assert max(factors) == factors[100] == pytest.approx(1.0)
    assert factors[total] == pytest.approx(1 / 32)
    assert all(a < b for a, b in zip(factors[:100], factors[1:101]))
    assert all(a > b for a, b in zip(factors[100:], factors[101:]))


def test_discriminative_rates_divide_by_2_6_per_group_going_down(classifier):
    groups = discriminative_groups(classifier, lr=1e-2, decay=2.6)
    assert [g["lr"] for g in groups] == pytest.approx([1e-2 / 2.6**3, 1e-2 / 2.6**2, 1e-2 / 2.6, 1e-2])
    assert groups[0]["params"][0] is classifier.encoder.embedding.weight
    assert groups[-1]["params"] == list(classifier.head.parameters())


def test_concat_pooling_ignores_padding(classifier):
    classifier.eval()
    rows = [classifier.encoder.tokenizer.encode(t) for t in ("a good film", "dull")]
    ids, lengths = pad_batch(rows, max_len=64)
    batched = classifier(ids, lengths)
    one = [classifier(*pad_batch([row], 64)) for row in rows]
    torch.testing.assert_close(batched, torch.cat(one), rtol=1e-5, atol=1e-6)


def test_gradual_unfreezing_really_freezes(classifier):
    groups = classifier.layer_groups()
    optimizer = torch.optim.AdamW(discriminative_groups(classifier, 1e-2, 2.6), weight_decay=0.1)
    ids, lengths = pad_batch([classifier.encoder.tokenizer.encode(t) for t in POSITIVE + NEGATIVE], 64)
    labels = torch.tensor([1] * 6 + [0] * 6)
    unfreezing = GradualUnfreezing(groups)
    for epoch, trainable in ((0, 1), (1, 2)):
        assert unfreezing.apply(epoch) == trainable
        before = [[p.clone() for p in group] for group in groups]
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(classifier(ids, lengths), labels).backward()
        optimizer.step()
        for k, group in enumerate(groups):
            moved = any(not torch.equal(p, b) for p, b in zip(group, before[k]))
            assert moved == (k >= len(groups) - trainable), (epoch, k)


def test_lora_finetuning_changes_only_adapters_and_head(classifier):
    base = {k: v.clone() for k, v in classifier.encoder.base_state_dict().items()}
    rows = [classifier.encoder.tokenizer.encode(t) for t in POSITIVE + NEGATIVE]
    result = finetune_classifier(
        classifier, rows, np.array([1] * 6 + [0] * 6),
        ClassifierTraining(method="lora", epochs=2, batch_size=4, lora_rank=2), progress=False,
    )
    adapters = sum(p.numel() for n, p in classifier.named_parameters() if "lora_" in n)
    head = sum(p.numel() for p in classifier.head.parameters())
    assert result["trainable_parameters"] == adapters + head
    for name, tensor in classifier.encoder.base_state_dict().items():
        assert torch.equal(tensor, base[name]), name


def test_full_finetuning_unfreezes_one_group_per_epoch_until_all_train(classifier):
    rows = [classifier.encoder.tokenizer.encode(t) for t in POSITIVE + NEGATIVE]
    before = [[p.clone() for p in group] for group in classifier.layer_groups()]
    result = finetune_classifier(
        classifier, rows, np.array([1] * 6 + [0] * 6), ClassifierTraining(epochs=5, batch_size=4), progress=False
    )
    assert [h["trainable_groups"] for h in result["history"]] == [1, 2, 3, 4, 4]
    assert all(np.isfinite(h["loss"]) for h in result["history"])
    for group, old in zip(classifier.layer_groups(), before):  # every group trained in the end
        assert any(not torch.equal(p, b) for p, b in zip(group, old))
    assert result["trainable_parameters"] == sum(p.numel() for g in classifier.layer_groups() for p in g)


def test_pretrain_then_finetune_pipeline_end_to_end(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join((POSITIVE + NEGATIVE) * 10) + "\n", encoding="utf-8")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "tokenizer": {"type": "char"},
        "model": {"embedding_size": 8, "hidden_size": 12, "num_layers": 2, "weight_dropout": 0.1},
        "training": {"batch_size": 4, "seq_len": 16, "warmup_steps": 2},
    }))
    data = tmp_path / "reviews.csv"
    with open(data, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(5):
            writer.writerows([[t, "pos"] for t in POSITIVE] + [[t, "neg"] for t in NEGATIVE])
    assert main(["lm", "train", "--text", str(corpus), "--config", str(config), "--out", str(tmp_path / "lm"),
                 "--steps", "6", "--no-progress"]) == 0
    assert main(["finetune", "lm", "--lm", str(tmp_path / "lm"), "--text", str(corpus), "--out",
                 str(tmp_path / "adapted"), "--steps", "3", "--no-progress"]) == 0
    for method in ("full", "lora"):
        out = tmp_path / f"clf-{method}"
        assert main(["finetune", "classify", "--lm", str(tmp_path / "adapted"), "--data", str(data), "--out", str(out),
                     "--method", method, "--epochs", "2", "--batch-size", "8", "--no-progress"]) == 0
        printed = capsys.readouterr().out
        assert f"{method}: 48 training labels, trainable parameters" in printed
        results = json.loads((out / "results.json").read_text())
        assert 0.0 <= results["test_accuracy"] <= 1.0 and results["test_texts"] == 12
        assert (out / "adapter_model.safetensors").is_file() == (method == "lora")
        loaded = GRUClassifier.from_pretrained(out)
        assert json.loads((out / "config.json").read_text())["labels"] == ["neg", "pos"]
        rows = [loaded.encoder.tokenizer.encode(t) for t in POSITIVE]
        assert predict(loaded, rows).shape == (6,)
    assert main(["finetune", "classify", "--lm", str(tmp_path / "lm"), "--data", str(data), "--out",
                 str(tmp_path / "x"), "--method", "scratch"]) == 2
    assert "grukit: error: --method scratch needs --scratch" in capsys.readouterr().err


def _fresh_classifier(seed: int = 0) -> GRUClassifier:
    tokenizer = CharTokenizer.train(POSITIVE + NEGATIVE)
    torch.manual_seed(seed)
    encoder = GRULanguageModel(LMConfig(tokenizer.vocab_size, 8, 12, num_layers=2, weight_dropout=0.2), tokenizer)
    return GRUClassifier(encoder, num_classes=2, head_hidden=6)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_interrupted_finetuning_resumes_bit_identical(tmp_path, method):
    class Interrupt(Callback):
        def on_batch_end(self, step, logs):
            if step == 5:  # epoch 2 of 3 steps each; the last checkpoint is step 4's, mid-epoch
                raise KeyboardInterrupt

    rows = [CharTokenizer.train(POSITIVE + NEGATIVE).encode(t) for t in POSITIVE + NEGATIVE]
    labels = np.array([1] * 6 + [0] * 6)
    training = ClassifierTraining(method=method, epochs=3, batch_size=4, lora_rank=2, seed=3)
    straight = _fresh_classifier()
    expected = finetune_classifier(straight, rows, labels, training, rows, labels, progress=False)
    with pytest.raises(KeyboardInterrupt):
        finetune_classifier(_fresh_classifier(), rows, labels, training, rows, labels, progress=False,
                            checkpoint_dir=tmp_path / "ck", checkpoint_every=2, callbacks=[Interrupt()])
    resumed = _fresh_classifier(seed=1)  # other initial weights: they come from the checkpoint
    result = finetune_classifier(resumed, rows, labels, training, rows, labels, progress=False,
                                 checkpoint_dir=tmp_path / "ck", checkpoint_every=2, resume=True)
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
    assert [h["loss"] for h in result["history"]] == [h["loss"] for h in expected["history"]]
    assert result["trainable_parameters"] == expected["trainable_parameters"]
    assert [h["trainable_groups"] for h in result["history"]] == ([1, 2, 3] if method == "full" else [4, 4, 4])



def test_saved_classifier_is_a_shared_checkpoint_folder_with_label_names(tmp_path, classifier):
    classifier.eval()
    classifier.save_pretrained(tmp_path / "clf", {"labels": ["neg", "pos"]})
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["architecture"] == "grukit.GRUClassifier" and config["labels"] == ["neg", "pos"]
    loaded = grukit.load(tmp_path / "clf")
    assert isinstance(loaded, GRUClassifier) and loaded.labels == ["neg", "pos"]
    ids, lengths = pad_batch([classifier.encoder.tokenizer.encode("a good film")], 64)
    assert torch.equal(loaded.eval()(ids, lengths), classifier(ids, lengths))

    old = {**config, "architecture": "grukit-gru-classifier"}  # the id earlier versions wrote
    files = classifier.encoder.tokenizer.files()
    save_checkpoint(tmp_path / "old", old, classifier.base_state_dict(), extra_files=files)
    assert torch.equal(GRUClassifier.from_pretrained(tmp_path / "old").eval()(ids, lengths), classifier(ids, lengths))
    save_checkpoint(tmp_path / "lm", {"architecture": "grukit.GRULanguageModel"}, classifier.base_state_dict())
    expected = "holds a 'grukit.GRULanguageModel' model, expected 'grukit.GRUClassifier'"
    with pytest.raises(CheckpointError, match=expected):
        GRUClassifier.from_pretrained(tmp_path / "lm")
