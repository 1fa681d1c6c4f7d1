"""Language-model training under bfloat16 autocast carries a float32 state from window to window; the GRU layers
above the first compute in bfloat16 and must take that state."""

import math

import numpy as np
import torch

from grukit.lm import GRULanguageModel, LMConfig
from grukit.lm.training import LMTrainingConfig, train_language_model


def tiny_model() -> GRULanguageModel:
    torch.manual_seed(0)
    return GRULanguageModel(LMConfig(20, 8, 16, num_layers=2, weight_dropout=0.1))


def test_a_float32_state_carried_into_a_bf16_forward_pass_is_accepted_and_used():
    model = tiny_model().eval()
    ids = torch.randint(0, 20, (3, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, state = model(ids)
        state32 = tuple(s.float() for s in state)  # (1, 3, 16) per layer, as the trainer carries it
        logits, _ = model(ids, state32)  # (3, 5, 20)
        fresh, _ = model(ids)
    assert logits.shape == (3, 5, 20)
    assert not torch.allclose(logits.float(), fresh.float())  # the carried state changed the outputs


def test_bf16_language_model_training_runs_several_windows_with_the_carried_state(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 20, size=2000).astype(np.int32)
    config = LMTrainingConfig(batch_size=4, seq_len=16, steps=12, warmup_steps=2, precision="bf16")
    losses = []
    result = train_language_model(
        tiny_model(),
        tokens,
        tokens[:200],
        tmp_path,
        config,
        progress=False,
        tensorboard=False,
        on_step=lambda step, loss: losses.append(loss),
    )
    assert result["steps"] == 12 and len(losses) == 12
    assert all(math.isfinite(loss) for loss in losses)
    assert math.isfinite(result["valid_loss"])
