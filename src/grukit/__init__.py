"""grukit: develop, train, fine-tune and run GRU models from scratch."""

from grukit.saved import load
from grukit.train.checkpoint import seed_everything

__version__ = "0.1.0"

__all__ = ["__version__", "load", "seed_everything"]
