"""Bad input to the sequence layer and the tokenizers: each case must end in an error that names the function and
the bad value, or give the right answer, never a silent truncation, a wrapped-around index or a crash deep in
torch or Hugging Face."""

import numpy as np
import pytest
import torch

from grukit.text import (
    BPETokenizer,
    BucketBatches,
    CharTokenizer,
    WordTokenizer,
    lengths_to_mask,
    pad_sequences,
    tokenizer_from_json,
)


def test_pad_sequences_promotes_dtypes_instead_of_cutting_fractions():
    batch, lengths = pad_sequences([[1, 2], [1.5]])
    assert batch.dtype == torch.float64 and batch.tolist() == [[1.0, 2.0], [1.5, 0.0]]
    ids, _ = pad_sequences([torch.tensor([3, 4]), torch.tensor([])])  # an empty row does not widen int ids
    assert ids.dtype == torch.int64 and ids.tolist() == [[3, 4], [0, 0]]
    assert lengths.tolist() == [2, 1]


def test_pad_sequences_names_a_sequence_that_is_not_numbers_and_takes_generators():
    with pytest.raises(ValueError, match="sequences of numbers, sequence 1 is None"):
        pad_sequences([[1, 2], None])
    with pytest.raises(ValueError, match=r"sequence 0 is \['a'\]"):
        pad_sequences([["a"], ["b"]])
    batch, lengths = pad_sequences(row for row in [[1], [2, 3]])
    assert batch.tolist() == [[1, 0], [2, 3]] and lengths.tolist() == [1, 2]


def test_lengths_to_mask_refuses_lengths_it_cannot_express():
    with pytest.raises(ValueError, match="lengths >= 0, got -1"):
        lengths_to_mask(torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match="integer lengths, got torch.float32"):
        lengths_to_mask(torch.tensor([1.5, 2.0]))
    with pytest.raises(ValueError, match="a length of 3, more than the 2 steps"):
        lengths_to_mask(torch.tensor([3]), 2)
    assert lengths_to_mask(torch.tensor([], dtype=torch.int64)).shape == (0, 0)


@pytest.mark.parametrize("seed", [-1, "x", 1.5, True])
def test_bucket_batches_refuse_a_bad_seed_up_front(seed):
    with pytest.raises(ValueError, match="seed to be a non-negative integer, a numpy.random.Generator or None"):
        BucketBatches(3, 2, seed=seed, shuffle=True)


def test_encode_batch_refuses_a_single_string_and_non_strings():
    with pytest.raises(TypeError, match="CharTokenizer.encode_batch expected a list of texts, got a single string"):
        CharTokenizer(["a", "b"]).encode_batch("ab")
    bpe = BPETokenizer.train(["ab ab ba"], 12, byte_level=False, specials=("unk",))
    with pytest.raises(TypeError, match="BPETokenizer.encode_batch expected each text to be a str, text 1 is NoneType"):
        bpe.encode_batch(["a", None])
    with pytest.raises(TypeError, match="BPETokenizer.train expected each text to be a str, text 1 is NoneType"):
        BPETokenizer.train(["a", None], 12, byte_level=False, specials=("unk",))
    with pytest.raises(TypeError, match="WordTokenizer.train expected each text to be a str or a list of words"):
        WordTokenizer.train(["a", None])


def test_decoders_refuse_ids_outside_the_vocabulary_and_fractional_ids():
    chars = CharTokenizer(["a"])  # ids: 0 unknown, 1 "a"
    with pytest.raises(ValueError, match=r"decode got id -1, outside \[0, 2\)"):
        chars.stream_decoder()(-1)  # would otherwise be the last symbol
    with pytest.raises(ValueError, match=r"decode got id 99, outside \[0, 2\)"):
        chars.stream_decoder()(99)
    with pytest.raises(TypeError, match=r"integer ids, got 1.7 \(float\)"):
        chars.decode([1.7])
    assert chars.decode([np.int64(1), torch.tensor(1)]) == "aa"
    bpe = BPETokenizer.train(["ab ab ba"], 12, byte_level=False, specials=("unk",))
    with pytest.raises(ValueError, match=r"BPETokenizer.decode got id 999, outside \[0, "):
        bpe.decode([999])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "CharTokenizer.from_json expected JSON text"),
        ('{"type": "char", "chars": "abc"}', "expected 'chars' to be a list of tokens"),
        ('{"type": "char", "chars": ["a"], "specials": ["x"]}', r"expected specials as \{role: symbol\}"),
        ('{"type": "char", "chars": ["a"], "evil": 1}', r"unknown entries \['evil'\]"),
    ],
)
def test_char_tokenizer_files_are_checked(text, message):
    with pytest.raises(ValueError, match=message):
        CharTokenizer.from_json(text)


def test_word_and_bpe_tokenizer_files_are_checked():
    with pytest.raises(ValueError, match="expected 'lowercase' to be a bool, got 'no'"):
        WordTokenizer.from_json('{"type": "word", "words": ["a"], "lowercase": "no"}')
    with pytest.raises(ValueError, match="BPETokenizer.from_json could not read the Hugging Face tokenizer"):
        tokenizer_from_json('{"model": {}}')
    words = WordTokenizer.train(["中文 😀 x"], split="words", lowercase=True)
    assert WordTokenizer.from_json(words.to_json()).encode("中文 😀") == words.encode("中文 😀")
