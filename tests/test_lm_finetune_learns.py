"""Fine-tuning a GRU language model as a classifier must learn: a keyword decides the label, and both full
fine-tuning (ULMFiT) and LoRA have to find it. The head used to see pooled features with one shared offset and a
tiny spread across texts; without the batch norms in the head it stayed at the coin's loss, ~0.69, here too."""

import numpy as np
import pytest
import torch

from grukit.lm import GRULanguageModel, LMConfig
from grukit.lm.classifier import (
    ClassifierTraining,
    GRUClassifier,
    LengthBucketedBatches,
    batch_starts,
    finetune_classifier,
    length_bucketed_batches,
    pad_batch,
    predict,
)

VOCABULARY = 50
KEYWORDS = (1, 2)  # label 0 and label 1; every other token is noise drawn from 4..49


def keyword_texts(count: int, rng: np.random.Generator) -> tuple[list[list[int]], np.ndarray]:
    """Texts of 5-19 noise tokens with one keyword at a random place; the keyword is the label."""
    rows, labels = [], rng.integers(0, 2, size=count)
    for label in labels:
        row = rng.integers(4, VOCABULARY, size=int(rng.integers(5, 20))).tolist()
        row[int(rng.integers(0, len(row)))] = KEYWORDS[label]
        rows.append(row)
    return rows, labels


@pytest.fixture(scope="module")
def keyword_task():
    rng = np.random.default_rng(0)
    return keyword_texts(400, rng), keyword_texts(200, rng)


def fresh_classifier(head_norm: bool = True) -> GRUClassifier:
    torch.manual_seed(0)
    return GRUClassifier(GRULanguageModel(LMConfig(VOCABULARY, 16, 32, num_layers=2)), 2, 16, head_norm=head_norm)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_finetuning_learns_a_keyword_task(keyword_task, method):
    (train_rows, train_labels), (test_rows, test_labels) = keyword_task
    model = fresh_classifier()
    result = finetune_classifier(
        model, train_rows, train_labels, ClassifierTraining(method=method, epochs=8), progress=False
    )
    assert result["history"][-1]["loss"] < 0.35
    assert (predict(model, test_rows) == test_labels).mean() > 0.9


def test_after_training_the_head_norms_hold_the_statistics_of_the_training_texts(keyword_task):
    (train_rows, train_labels), _ = keyword_task
    model = fresh_classifier()
    finetune_classifier(model, train_rows, train_labels, ClassifierTraining(epochs=2), progress=False)
    model.eval()
    captured = []
    hook = model.head[0].register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    with torch.no_grad():
        model(*pad_batch(train_rows, 256))
    hook.remove()
    pooled = captured[0]  # (N, 3H): the head's input for every training text, in one batch
    torch.testing.assert_close(model.head[0].running_mean, pooled.mean(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.head[0].running_var, pooled.var(0), rtol=1e-4, atol=1e-6)


def test_no_training_batch_holds_a_single_text():
    rng = np.random.default_rng(0)
    for count in (33, 65, 1601, 1633):
        batches = length_bucketed_batches([5] * count, 32, rng)
        assert min(len(batch) for batch in batches) > 1
        assert len(batches) == len(LengthBucketedBatches([[5]] * count, np.zeros(count), 32, 64, seed=0))
        assert sorted(np.concatenate(batches).tolist()) == list(range(count))
    assert [(s.start, s.stop) for s in batch_starts(65, 32)] == [(0, 32), (32, 65)]
    assert [(s.start, s.stop) for s in batch_starts(1, 32)] == [(0, 1)]


def test_a_head_with_batch_norm_needs_two_texts():
    with pytest.raises(ValueError, match="at least 2 texts for a head with batch norm, got 1"):
        finetune_classifier(fresh_classifier(), [[3, 4]], np.array([1]), ClassifierTraining(), progress=False)


def test_head_without_norms_keeps_the_layout_of_earlier_saved_models(tmp_path):
    old = fresh_classifier(head_norm=False)
    assert [name for name, _ in old.head.named_parameters()] == ["1.weight", "1.bias", "4.weight", "4.bias"]
    folder = old.save_pretrained(tmp_path / "old")
    assert GRUClassifier.from_pretrained(folder).head_norm is False
    new = fresh_classifier()
    new.head[0].running_mean.fill_(0.5)
    loaded = GRUClassifier.from_pretrained(new.save_pretrained(tmp_path / "new"))
    assert loaded.head_norm is True
    torch.testing.assert_close(loaded.head[0].running_mean, torch.full((96,), 0.5))
