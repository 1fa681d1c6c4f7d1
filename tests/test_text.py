"""Tokenizers, token files and truncated-BPTT batching."""

import numpy as np
import pytest

from grukit.text import (
    BPETokenizer,
    CharTokenizer,
    TBPTTBatches,
    load_tokenizer,
    read_token_file,
    write_token_file,
)

ENGLISH = "In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void."
CHINESE = "今天天气很好，我们去公园散步。这部电影真的很好看！"


@pytest.mark.parametrize("text", [ENGLISH, CHINESE])
def test_char_tokenizer_round_trips_and_saves(tmp_path, text):
    tokenizer = CharTokenizer.train([text])
    ids = tokenizer.encode(text)
    assert len(ids) == len(text) and tokenizer.decode(ids) == text
    assert tokenizer.vocab_size == len(set(text)) + 1
    tokenizer.save(tmp_path)
    assert load_tokenizer(tmp_path).encode(text) == ids


def test_char_tokenizer_maps_unseen_characters_to_unknown():
    tokenizer = CharTokenizer.train(["abc"])
    assert tokenizer.encode("aXc") == [1, 0, 3]
    assert tokenizer.decode([1, 0, 3]) == "a\ufffdc"


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, "mixed 混合 text, emoji 🙂 and ünïcödé"])
def test_bpe_round_trips_any_text_and_saves(tmp_path, text):
    tokenizer = BPETokenizer.train([ENGLISH * 20, CHINESE * 20], vocab_size=320)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    decode = tokenizer.stream_decoder()
    assert "".join(decode(i) for i in ids) == text  # characters split across tokens come out whole
    tokenizer.save(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    assert load_tokenizer(tmp_path).encode(text) == ids


def test_bpe_learns_merges_that_shorten_text():
    tokenizer = BPETokenizer.train([ENGLISH * 50, CHINESE * 50], vocab_size=400)
    assert 256 < tokenizer.vocab_size <= 400
    assert len(tokenizer.encode(ENGLISH)) < len(ENGLISH.encode("utf-8")) / 2
    assert len(tokenizer.encode(CHINESE)) < len(CHINESE.encode("utf-8")) / 2


def test_tokenizer_errors_name_the_problem(tmp_path):
    expected = "expected char_tokenizer.json or word_tokenizer.json or tokenizer.json"
    with pytest.raises(FileNotFoundError, match=expected):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="vocab_size of at least 257"):
        BPETokenizer.train(["abc"], vocab_size=100)
    with pytest.raises(TypeError, match="expected a str, got list"):
        CharTokenizer.train(["abc"]).encode(["abc"])


def test_token_file_is_memory_mapped_and_checked(tmp_path):
    path = tmp_path / "tokens.bin"
    count = write_token_file(path, [[1, 2, 3], [], [4, 65535]], vocab_size=65536)
    tokens = read_token_file(path)
    assert count == 5 and isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    assert tokens.tolist() == [1, 2, 3, 4, 65535]
    with pytest.raises(ValueError, match="outside the vocabulary of size 10"):
        write_token_file(path, [[3, 12]], vocab_size=10)
    write_token_file(path, [[1, 2, 3]], vocab_size=10)
    with open(path, "ab") as handle:
        handle.write(b"\0\0")
    with pytest.raises(ValueError, match="its metadata says 6"):
        read_token_file(path)


def test_tbptt_batches_cut_the_stream_into_contiguous_rows():
    tokens = np.arange(103)
    batches = TBPTTBatches(tokens, batch_size=4, seq_len=7)
    xs, ys = zip(*batches)
    x = np.concatenate([b.numpy() for b in xs], axis=1)  # (B, n - 1)
    y = np.concatenate([b.numpy() for b in ys], axis=1)
    assert x.shape == (4, 25) and len(batches) == 4 and xs[-1].shape == (4, 4)
    for row in range(4):  # each row is one contiguous stretch of the stream, y the next token of x
        assert x[row].tolist() == list(range(row * 25, row * 25 + 25))
        assert y[row].tolist() == list(range(row * 25 + 1, row * 25 + 26))


def test_tbptt_batches_reject_what_they_cannot_cut():
    with pytest.raises(ValueError, match="5 tokens cannot fill 8 streams"):
        TBPTTBatches(np.arange(5), batch_size=8, seq_len=4)
    with pytest.raises(ValueError, match="seq_len to be a positive integer, got 0"):
        TBPTTBatches(np.arange(10), batch_size=2, seq_len=0)
    with pytest.raises(ValueError, match="1-D token stream"):
        TBPTTBatches(np.zeros((3, 4)), batch_size=2, seq_len=2)
