"""skinflow: the Dynamic Vision Encoder in Qwen2.5-VL for open dermatological diagnosis.

Importing skinflow registers the DVE with transformers, so ``from_pretrained`` on a DVE checkpoint rebuilds
its FDLinear layers (see :mod:`skinflow.dve`).
"""

from skinflow.dve import apply_dve, load_pretrained, register_with_transformers

register_with_transformers()

__all__ = ["apply_dve", "load_pretrained"]
