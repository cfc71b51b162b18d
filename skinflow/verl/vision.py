"""The DVE in vLLM's vision tower, without vLLM: the MLP of a DVE block and its installation (docs/verl.md).

:mod:`skinflow.verl.vllm_model` uses these on vLLM's ``Qwen2_5_VisionTransformer``; they need only torch and
transformers, so ``tests/verl`` checks on the CPU that :class:`DVEVisionMLP` computes the HF DVE MLP's function per
image from the same weights, on vLLM's ``(tokens, 1, d)`` layout.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn
from transformers.activations import ACT2FN

from skinflow.model.dve import DVELinear, ImageBoundaries
from skinflow.verl.names import DVEPlan

__all__ = ["DVEVisionMLP", "image_boundaries", "install_dve"]


class DVEVisionMLP(nn.Module):
    """The vision MLP of a DVE block: ``down(act(gate(x)) * up(x))`` with unmerged projections.

    Args:
        hidden_size: d of the tower.
        intermediate_size: width of the MLP.
        hidden_act: the activation name of the vision config (``silu`` for Qwen2.5-VL).
        projections: which of ``gate_proj, up_proj, down_proj`` are DVE layers (float32 parameters; their bases are
            formed in float32 and the matmul runs in the input's dtype).
        num_bases: K of the DVE layers.
        boundaries: the tower's per-image boundaries (set by its forward).
        dtype: dtype of the plain projections (the model's).
    """

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str, projections: tuple[str, ...],
                 num_bases: int, boundaries: ImageBoundaries, dtype: torch.dtype) -> None:
        super().__init__()
        shapes = {"gate_proj": (hidden_size, intermediate_size), "up_proj": (hidden_size, intermediate_size),
                  "down_proj": (intermediate_size, hidden_size)}
        for name, (fan_in, fan_out) in shapes.items():
            if name in projections:
                layer = DVELinear(fan_in, fan_out, bias=True, num_bases=num_bases, dtype=torch.float32)
                layer.boundaries = boundaries
            else:
                layer = nn.Linear(fan_in, fan_out, bias=True, dtype=dtype)
            setattr(self, name, layer)
        self.act_fn = ACT2FN[hidden_act]
        self.boundaries = boundaries

    def forward(self, x: Tensor) -> Tensor:
        """x (T, 1, d) or (T, d) packed image tokens → the same shape; each image is one sample."""
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        hidden = self.act_fn(self.gate_proj(rows)) * self.up_proj(rows)
        return self.down_proj(hidden).reshape(shape)


def _grid_of(args: tuple, kwargs: dict) -> Tensor:
    grid_thw = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
    if grid_thw is None:
        raise ValueError("the vision tower of a DVE model needs grid_thw")
    return torch.as_tensor(grid_thw, dtype=torch.long).reshape(-1, 3)


def image_boundaries(grid_thw: object, device: torch.device | str = "cpu") -> Tensor:
    """grid_thw (N, 3) as a tensor or a list of ``[t, h, w]`` → (N+1,) int32 boundaries of each image's ``t·h·w``
    patch tokens, on ``device``."""
    lengths = torch.as_tensor(grid_thw, dtype=torch.long).reshape(-1, 3).prod(-1)
    return torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0)).to(device)


def _set_boundaries(boundaries: ImageBoundaries, module: nn.Module, args: tuple, kwargs: dict) -> None:
    x = args[0] if args else kwargs["x"]
    boundaries.cu_seqlens = image_boundaries(_grid_of(args, kwargs), x.device)


def _clear_boundaries(boundaries: ImageBoundaries, *_) -> None:
    boundaries.cu_seqlens = None


def install_dve(visual: nn.Module, plan: DVEPlan, vision_config) -> None:
    """Replace the MLP of every DVE block of vLLM's vision tower ``visual`` with a :class:`DVEVisionMLP`.

    ``visual`` needs ``blocks[i].mlp`` and a ``forward(x, grid_thw)``: a forward pre-hook sets the per-image
    boundaries the DVE layers read (cleared after the forward). Raises ``ValueError`` naming
    ``config.vision_config.dve`` when the tower's depth is not the plan's."""
    if len(visual.blocks) != plan.depth:
        raise ValueError(f"config.vision_config.dve: the tower has {len(visual.blocks)} blocks, the settings "
                         f"{plan.depth}")
    boundaries = ImageBoundaries()
    visual._dve_boundaries = boundaries
    visual.register_forward_pre_hook(functools.partial(_set_boundaries, boundaries), with_kwargs=True)
    visual.register_forward_hook(functools.partial(_clear_boundaries, boundaries))
    dtype = next(visual.parameters()).dtype
    device = next(visual.parameters()).device
    for index in plan.blocks:
        mlp = DVEVisionMLP(vision_config.hidden_size, vision_config.intermediate_size, vision_config.hidden_act,
                           plan.projections, plan.num_bases, boundaries, dtype)
        visual.blocks[index].mlp = mlp.to(device)
