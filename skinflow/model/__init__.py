"""The model layer: the Dynamic Vision Encoder (:mod:`~skinflow.model.dve`), the image-only processor
(:mod:`~skinflow.model.processor`), the embedded tiny default (:mod:`~skinflow.model.tiny`) and inference
(:mod:`~skinflow.model.inference`).

Importing it registers the DVE and the image-only processor with transformers, so that ``from_pretrained`` on a DVE
checkpoint rebuilds its FDLinear layers and ``AutoProcessor`` finds the tiny default's processor. This is the module
to name wherever a process must know DVE checkpoints before it loads one (verl's
``actor_rollout_ref.model.external_lib=skinflow.model``).
"""

from skinflow.model import processor as _processor
from skinflow.model.dve import apply_dve, load_pretrained, register_with_transformers
from skinflow.model.inference import diagnose

register_with_transformers()
_processor.register_with_transformers()

__all__ = ["apply_dve", "diagnose", "load_pretrained"]
