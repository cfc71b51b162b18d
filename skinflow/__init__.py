"""skinflow: the Dynamic Vision Encoder in Qwen2.5-VL for open dermatological diagnosis.

Importing skinflow registers the DVE and the image-only processor with transformers, so ``from_pretrained`` on a
DVE checkpoint rebuilds its FDLinear layers (see :mod:`skinflow.dve`) and ``AutoProcessor`` finds the processor of
the tiny default (see :mod:`skinflow.processor`).
"""

from skinflow import processor as _processor
from skinflow.dve import apply_dve, load_pretrained, register_with_transformers
from skinflow.inference import diagnose

register_with_transformers()
_processor.register_with_transformers()

__all__ = ["apply_dve", "diagnose", "load_pretrained"]
