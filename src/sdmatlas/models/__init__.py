"""Plugged models: model cards and the adapters that run them."""

from sdmatlas.models.adapters import ModelAdapter, load_adapter
from sdmatlas.models.card import ModelCard, load_card

__all__ = ["ModelAdapter", "ModelCard", "load_adapter", "load_card"]
