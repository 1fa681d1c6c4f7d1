"""Training shared by everything in grukit: checkpoints, resume, seeding, the loop."""

from grukit.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint", "seed_everything"]
