"""Keras-style models: ``Sequential`` with compile / fit / evaluate / predict / summary / save, and
``load_model``."""

from grukit.models.sequential import Sequential, load_model

__all__ = ["Sequential", "load_model"]
