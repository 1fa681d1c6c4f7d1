"""Text for language models: character and byte-level BPE tokenizers, memory-mapped token files and
truncated-BPTT batching."""

from grukit.text.batching import TBPTTBatches, read_token_file, write_token_file
from grukit.text.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    TextTokenizer,
    load_tokenizer,
    tokenizer_from_files,
    train_tokenizer,
)

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "TBPTTBatches",
    "TextTokenizer",
    "load_tokenizer",
    "read_token_file",
    "tokenizer_from_files",
    "train_tokenizer",
    "write_token_file",
]
