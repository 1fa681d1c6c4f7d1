"""Training data a newcomer can get wrong: each case must end in an error that names the estimator and says what
to do, not in a message from deep inside numpy or a tokenizer."""

import numpy as np
import pytest

from grukit.tasks import SequenceClassifier, TextClassifier, Translator


def test_number_labels_too_large_for_64_bits_are_named_as_such():
    with pytest.raises(TypeError, match="TextClassifier expected number labels that fit in 64 bits, got values such"):
        TextClassifier(epochs=1).fit(["a", "b"], [10**30, 1])


def test_series_of_strings_are_refused_by_the_estimator():
    with pytest.raises(ValueError, match="SequenceClassifier expected series of numbers, got could not convert"):
        SequenceClassifier(epochs=1).fit(np.array([["a", "b"], ["c", "d"]]), [0, 1])


@pytest.mark.parametrize("tokens", ["char", "bpe"])
def test_only_empty_texts_are_refused_by_the_estimator(tokens):
    with pytest.raises(ValueError, match="TextClassifier got only empty texts"):
        TextClassifier(tokens=tokens, epochs=1).fit(["", ""], ["a", "b"])


def test_only_empty_translation_targets_are_refused_by_the_estimator():
    with pytest.raises(ValueError, match="Translator got only empty targets"):
        Translator(epochs=1).fit(["a", "b"], ["", ""])
