"""grukit.text tokenizers: one interface for characters, words and BPE, JSON round trips, and the exact ids
the estimators' former private vocabularies gave (so trained results do not move)."""

import json
from collections import Counter

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from grukit.text import (
    BPETokenizer,
    CharTokenizer,
    WordTokenizer,
    load_tokenizer,
    tokenizer_from_files,
    tokenizer_from_json,
)

SPECIALS = {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}
REVIEWS = ["这部电影真的很好看！", "太差了，不推荐。", "Great film, great cast", "服务很好 very good", "很好很好"]


def test_char_tokenizer_with_specials_reserves_ids_and_decodes_without_pad_bos_eos():
    tokenizer = CharTokenizer.train(["abca"], SPECIALS)
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert tokenizer.vocab_size == 7 and tokenizer.encode("cab?") == [6, 4, 5, 1]
    assert tokenizer.decode([2, 6, 1, 4, 3, 0, 0]) == "c<unk>a"
    assert "".join(tokenizer.stream_decoder()(i) for i in [2, 6, 4, 3]) == "ca"


def test_char_tokenizer_orders_by_frequency_and_caps_the_vocabulary():
    tokenizer = CharTokenizer.train(["abbccc", "dcb"], {"pad": "[p]", "unk": "[u]"}, max_size=4, order="frequency")
    assert tokenizer.chars == ["[p]", "[u]", "c", "b"]  # c (4), b (3); a and d (1) fall past max_size
    tied = CharTokenizer.train(["xyzzy"], {"unk": "?"}, order="frequency", min_count=2)
    assert tied.chars == ["?", "y", "z"]  # ties keep the order first seen; x is below min_count


def test_language_model_char_layout_and_old_files_still_load(tmp_path):
    tokenizer = CharTokenizer.train(["hello"])
    assert tokenizer.unk_id == 0 and tokenizer.pad_id is None
    assert tokenizer.decode(tokenizer.encode("hex")) == "he\ufffd"
    (tmp_path / "char_tokenizer.json").write_text(json.dumps({"type": "char", "chars": ["e", "h", "l", "o"]}))
    assert load_tokenizer(tmp_path).encode("hello") == tokenizer.encode("hello")


def test_word_tokenizer_splits_whitespace_or_words_with_chinese_characters():
    assert WordTokenizer([]).split("Hello  world,\tok") == ["Hello", "world,", "ok"]
    words = WordTokenizer([], split="words", lowercase=True)
    assert words.split("我爱NLP, OK!!") == ["我", "爱", "nlp", ",", "ok", "!!"]
    tokenizer = WordTokenizer.train(["the cat", "the dog"], SPECIALS)
    assert tokenizer.encode("the bird cat") == [6, 1, 4] and tokenizer.decode([2, 6, 4, 3, 0]) == "the cat"
    tagged = WordTokenizer.train([["他", "来", "了"], ["他", "走"]], {"pad": "<pad>", "unk": "<unk>"}, min_count=2)
    assert tagged.encode_tokens(["他", "走"]) == [2, 1]


@pytest.mark.parametrize(
    "tokenizer",
    [
        CharTokenizer.train(REVIEWS, SPECIALS),
        WordTokenizer.train(REVIEWS, {"unk": "<unk>"}, split="words", lowercase=True),
        BPETokenizer.train(REVIEWS * 5, vocab_size=60, min_frequency=1, specials=("pad", "unk"), byte_level=False),
        BPETokenizer.train(REVIEWS * 5, vocab_size=300),
    ],
    ids=["char", "word", "bpe", "byte-bpe"],
)
def test_every_tokenizer_round_trips_through_json_and_files(tmp_path, tokenizer):
    text = "服务很好 great film ☃"
    restored = tokenizer_from_json(tokenizer.to_json())
    assert type(restored) is type(tokenizer) and restored.to_json() == tokenizer.to_json()
    assert restored.encode(text) == tokenizer.encode(text) and restored.vocab_size == tokenizer.vocab_size
    assert (restored.pad_id, restored.unk_id) == (tokenizer.pad_id, tokenizer.unk_id)
    assert type(tokenizer).from_json(tokenizer.to_json()).encode(text) == tokenizer.encode(text)
    tokenizer.save(tmp_path)
    assert load_tokenizer(tmp_path).encode(text) == tokenizer_from_files(tokenizer.files()).encode(text)


def test_bpe_with_specials_lowercases_and_maps_unseen_characters_to_unknown():
    tokenizer = BPETokenizer.train(REVIEWS * 5, vocab_size=80, min_frequency=1, specials=("pad", "unk"),
                                   byte_level=False, lowercase=True)
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id) == (0, 1, None)
    assert tokenizer.encode("GREAT") == tokenizer.encode("great")
    assert tokenizer.encode("☃") == [1]


# The estimators' former vocabularies, kept here as oracles ---------------------------------------------------
def _text_classifier_char_ids(train: list[str], texts: list[str], vocab_size: int, min_count: int) -> list[list[int]]:
    counts = Counter(char for text in train for char in text)
    frequent = [char for char, n in counts.most_common(vocab_size - 2) if n >= min_count]
    vocabulary = {char: index + 2 for index, char in enumerate(frequent)}
    return [[vocabulary.get(char, 1) for char in text] for text in texts]


def _text_classifier_bpe(train: list[str], vocab_size: int, min_count: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_count, special_tokens=["[PAD]", "[UNK]"], show_progress=False
    )
    tokenizer.train_from_iterator(train, trainer)
    return tokenizer


def _translator_ids(kind: str, train: list[str], texts: list[str]) -> list[list[int]]:
    split = list if kind == "char" else str.split
    items = ["<pad>", "<unk>", "<bos>", "<eos>", *sorted(Counter(t for text in train for t in split(text)))]
    index = {token: i for i, token in enumerate(items)}
    return [[index.get(token, 1) for token in split(text)] for text in texts]


def test_text_classifier_tokenizers_give_the_former_ids_exactly():
    train, texts = REVIEWS * 3 + ["好 film"], [*REVIEWS, "never seen ☃", ""]
    for vocab_size, min_count in ((8, 2), (500, 2), (30, 1)):
        chars = CharTokenizer.train(train, {"pad": "<pad>", "unk": "<unk>"}, min_count, vocab_size, "frequency")
        assert chars.encode_batch(texts) == _text_classifier_char_ids(train, texts, vocab_size, min_count)
    bpe = BPETokenizer.train(train, 60, 2, specials=("pad", "unk"), byte_level=False, lowercase=True)
    former = _text_classifier_bpe(train, 60, 2)
    assert bpe.encode_batch(texts) == [e.ids for e in former.encode_batch(texts)]
    assert bpe.vocab_size == former.get_vocab_size()


@pytest.mark.parametrize("kind", ["char", "word"])
def test_translator_vocabularies_give_the_former_ids_exactly(kind):
    train = ["one hundred", "two", "twenty one", "vingt et un"]
    tokenizer = (CharTokenizer if kind == "char" else WordTokenizer).train(train, SPECIALS)
    texts = [*train, "one thousand", "z"]
    assert tokenizer.encode_batch(texts) == _translator_ids(kind, train, texts)


def test_tagger_vocabularies_give_the_former_ids_exactly():
    sentences = [["北京", "是", "首都"], ["上海", "是", "城市"], ["北京", "大学"]]
    words = WordTokenizer.train(sentences, {"pad": "<pad>", "unk": "<unk>"}, min_count=2)
    word_counts = Counter(t for s in sentences for t in s)
    former_words = {w: i + 2 for i, w in enumerate(sorted(w for w, n in word_counts.items() if n >= 2))}
    assert words.index == former_words
    chars = CharTokenizer.train((t for s in sentences for t in s), {"pad": "<pad>", "unk": "<unk>"}, 2)
    char_counts = Counter(c for s in sentences for t in s for c in t)
    assert chars.index == {c: i + 2 for i, c in enumerate(sorted(c for c, n in char_counts.items() if n >= 2))}


def test_tokenizer_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"special roles among \('pad', 'unk', 'bos', 'eos'\), got \['mask'\]"):
        CharTokenizer(["a"], {"mask": "<m>"})
    with pytest.raises(ValueError, match="distinct non-empty strings as special symbols"):
        WordTokenizer(["a"], {"pad": "<x>", "unk": "<x>"})
    with pytest.raises(ValueError, match=r"distinct from the special symbols, got \['<unk>'\]"):
        WordTokenizer(["<unk>", "cat"])
    with pytest.raises(ValueError, match="split in \\('whitespace', 'words'\\), got 'jieba'"):
        WordTokenizer([], split="jieba")
    with pytest.raises(ValueError, match="order in \\('sorted', 'frequency'\\), got 'random'"):
        CharTokenizer.train(["ab"], order="random")
    with pytest.raises(ValueError, match="has no unknown id and never saw the token 'z'"):
        CharTokenizer(["a"], {"pad": "<pad>"}).encode("az")
    with pytest.raises(ValueError, match=r"WordTokenizer.decode got id 5, outside \[0, 2\)"):
        WordTokenizer(["a"]).decode([5])
    with pytest.raises(ValueError, match="CharTokenizer.from_json expected a tokenizer of type 'char', got 'word'"):
        CharTokenizer.from_json(WordTokenizer(["a"]).to_json())
    with pytest.raises(ValueError, match="expected a char, word or Hugging Face BPE tokenizer, got 'tfidf'"):
        tokenizer_from_json('{"type": "tfidf"}')
    with pytest.raises(ValueError, match=r"vocab_size of at least 3 \(the specials \+ one symbol\), got 2"):
        BPETokenizer.train(["ab"], vocab_size=2, specials=("pad", "unk"), byte_level=False)
