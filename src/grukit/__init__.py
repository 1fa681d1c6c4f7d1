"""grukit: develop, train, fine-tune and run GRU models from scratch."""

__version__ = "0.1.0"
