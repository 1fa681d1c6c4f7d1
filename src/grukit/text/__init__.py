"""Text and sequences as model input: character, word and BPE tokenizers with one interface, padding and
length-bucketed batches for variable-length sequences, memory-mapped token files and truncated-BPTT
batching."""

from grukit.text.batching import TBPTTBatches, read_token_file, write_token_file
from grukit.text.sequences import BucketBatches, lengths_to_mask, mask_to_lengths, pad_sequences
from grukit.text.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    TextTokenizer,
    WordTokenizer,
    load_tokenizer,
    tokenizer_from_files,
    tokenizer_from_json,
    train_tokenizer,
)

__all__ = [
    "BPETokenizer",
    "BucketBatches",
    "CharTokenizer",
    "TBPTTBatches",
    "TextTokenizer",
    "WordTokenizer",
    "lengths_to_mask",
    "load_tokenizer",
    "mask_to_lengths",
    "pad_sequences",
    "read_token_file",
    "tokenizer_from_files",
    "tokenizer_from_json",
    "train_tokenizer",
    "write_token_file",
]
