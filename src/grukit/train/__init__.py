"""Training shared by everything in grukit: checkpoints, resume, seeding, the loop."""

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
    "Metric",
    "ModelCheckpoint",
    "ProgressBar",
    "ReduceLROnPlateau",
    "SlantedTriangular",
    "StepSchedule",
    "TensorBoard",
    "Trainer",
    "get_loss",
    "get_metric",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
]
