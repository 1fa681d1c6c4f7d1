"""GRU language models: pretraining with truncated BPTT, generation, and fine-tuning (ULMFiT, LoRA)."""

from grukit.lm.lora import add_lora, count_parameters, load_lora, lora_config, merge_lora, save_lora
from grukit.lm.model import GRULanguageModel, LMConfig, detach_state
from grukit.lm.sampling import sample_next

__all__ = [
    "GRULanguageModel",
    "LMConfig",
    "add_lora",
    "count_parameters",
    "detach_state",
    "load_lora",
    "lora_config",
    "merge_lora",
    "sample_next",
    "save_lora",
]
