"""Training shared by everything in grukit: checkpoints, resume, seeding, the loop, data-parallel runs under
torchrun (:mod:`grukit.train.distributed`) and the memory estimate (:mod:`grukit.train.memory`)."""

from grukit.train.callbacks import (
    Callback,
    CosineSchedule,
    CSVLogger,
    EarlyStopping,
    GradualUnfreezing,
    History,
    LearningRateScheduler,
    LinearWarmup,
    ModelCheckpoint,
    ProgressBar,
    ReduceLROnPlateau,
    SlantedTriangular,
    StepSchedule,
    TensorBoard,
)
from grukit.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from grukit.train.loop import Trainer
from grukit.train.losses import get_loss
from grukit.train.memory import MemoryEstimate, estimate_memory
from grukit.train.metrics import Metric, get_metric

__all__ = [
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "CosineSchedule",
    "EarlyStopping",
    "GradualUnfreezing",
    "History",
    "LearningRateScheduler",
    "LinearWarmup",
    "MemoryEstimate",
    "Metric",
    "ModelCheckpoint",
    "ProgressBar",
    "ReduceLROnPlateau",
    "SlantedTriangular",
    "StepSchedule",
    "TensorBoard",
    "Trainer",
    "estimate_memory",
    "get_loss",
    "get_metric",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
]
