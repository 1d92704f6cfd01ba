"""World models, transition data sets and training.

This package's `__init__` stays torch-free: the data collector imports `TransitionSet`
on machines without torch. The torch parts load on first use of their names.
"""

from __future__ import annotations

from typing import Any

from dreamlink.learning.transitions import TransitionError, TransitionSet

# The hidden activations `WorldModelConfig` accepts, named here so torch-free code (the CLI) can offer them.
ACTIVATIONS = ("silu", "relu", "tanh", "gelu")

_TORCH_NAMES = {
    "EnsembleWorldModel": "dreamlink.learning.world_model",
    "WorldModelConfig": "dreamlink.learning.world_model",
    "TrainConfig": "dreamlink.learning.train",
    "TrainResult": "dreamlink.learning.train",
    "train_world_model": "dreamlink.learning.train",
    "save_checkpoint": "dreamlink.learning.train",
    "load_checkpoint": "dreamlink.learning.train",
}

__all__ = ["ACTIVATIONS", "TransitionError", "TransitionSet", *_TORCH_NAMES]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        import importlib

        return getattr(importlib.import_module(_TORCH_NAMES[name]), name)
    raise AttributeError(f"module 'dreamlink.learning' has no attribute {name!r}")
