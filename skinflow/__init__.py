"""skinflow: the Dynamic Vision Encoder in Qwen2.5-VL for open dermatological diagnosis.

Layers, each importing only those above it (docs/design.md): ``formats``, ``taxonomy``, ``targets`` and ``util`` (pure
Python) -> ``data`` -> ``model`` (the DVE, processor, tiny default; importing it registers them with transformers) ->
``rewards`` (pure Python) -> ``cli``. ``import skinflow`` itself loads nothing heavy: ``skinflow.apply_dve``,
``skinflow.load_pretrained`` and ``skinflow.diagnose`` import the model layer on first use.
"""

from __future__ import annotations

import importlib

_FROM_MODEL = ("apply_dve", "diagnose", "load_pretrained")

__all__ = list(_FROM_MODEL)


def __getattr__(name: str):
    if name in _FROM_MODEL:
        return getattr(importlib.import_module("skinflow.model"), name)
    raise AttributeError(f"module 'skinflow' has no attribute {name!r}")
