"""vLLM's Qwen2.5-VL with the Dynamic Vision Encoder: the model the vLLM plugin registers (docs/verl.md).

Imported by vLLM only (it imports vLLM at module import): :func:`skinflow.verl.vllm_plugin.register` registers
:class:`SkinFlowQwen2_5_VLForConditionalGeneration` under the architecture name ``Qwen2_5_VLForConditionalGeneration``
through a lazy ``"module:class"`` reference, so this module is imported in vLLM's model workers when a Qwen2.5-VL is
built there.

Without ``config.vision_config.dve`` the class is vLLM's own model, unchanged. With it, the MLP of every DVE block
is replaced by :class:`skinflow.verl.vision.DVEVisionMLP`: unmerged ``gate_proj``, ``up_proj``, ``down_proj`` (a float32
:class:`~skinflow.model.dve.DVELinear` for each DVE projection, a plain ``nn.Linear`` in the model's dtype for the
others), replicated on every tensor-parallel rank (the vision tower is a small part of the model), and
the tower's ``forward`` sets the per-image boundaries (``t·h·w`` tokens per image from ``grid_thw``) that those MLPs
read. ``load_weights`` loads every tensor under a DVE MLP directly (names as in the HF checkpoint after vLLM's
prefix mapping, see :mod:`skinflow.verl.names`) and hands the others to vLLM's own loader, at model load and at
every weight sync. The rest of vLLM's model (attention, language model, processor, scheduling) is untouched.

Written against vLLM's ``qwen2_5_vl.py`` (module tree ``visual.blocks[i].mlp`` called on ``(tokens, 1, d)``
tensors, ``visual.forward(x, grid_thw)`` with ``grid_thw`` a list of ``[t, h, w]`` or a tensor). It cannot run on
the CPU test machines (vLLM needs CUDA); ``recipes/verl/smoke.sh`` exercises it on a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor
from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration as _VllmQwen2_5_VL

from skinflow.model.dve import DVELinear
from skinflow.verl.names import DVEPlan, is_dve_mlp_name, vllm_name
from skinflow.verl.vision import install_dve

__all__ = ["SkinFlowQwen2_5_VLForConditionalGeneration"]


class SkinFlowQwen2_5_VLForConditionalGeneration(_VllmQwen2_5_VL):
    """vLLM's Qwen2.5-VL whose vision tower runs the DVE layers of ``config.vision_config.dve`` per image."""

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.dve_plan = DVEPlan.from_config(self.config)
        self.vision_weight_syncs = 0
        if self.dve_plan is not None and self.visual is not None:
            install_dve(self.visual, self.dve_plan, self.config.vision_config)

    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> set[str]:
        """Load HF-named tensors: those of DVE MLPs directly, the others through vLLM's loader.

        Returns the vLLM names loaded (vLLM's loader checks them against the model's parameters). A tensor under a
        DVE MLP whose name is not a parameter there raises ``KeyError`` naming it.
        """
        if self.dve_plan is None or self.visual is None:
            return super().load_weights(weights)
        params = dict(self.named_parameters(remove_duplicate=False))
        direct: set[str] = set()
        touched_vision = False

        def others() -> Iterator[tuple[str, Tensor]]:
            nonlocal touched_vision
            for hf_name, tensor in weights:
                name = vllm_name(hf_name)
                touched_vision = touched_vision or name.startswith("visual.")
                if is_dve_mlp_name(name, self.dve_plan):
                    if name not in params:
                        raise KeyError(f"{hf_name}: no such parameter in the DVE vision MLP ({name})")
                    with torch.no_grad():
                        params[name].copy_(tensor.to(params[name].dtype))
                    direct.add(name)
                else:
                    yield hf_name, tensor

        loaded = set(super().load_weights(others()))
        if touched_vision:
            self.vision_weight_syncs += 1
            for module in self.visual.modules():
                if isinstance(module, DVELinear):
                    module.clear_basis_cache()
        return loaded | direct
