"""The Dynamic Vision Encoder: FDLinear in the vision tower of Qwen2.5-VL, one image = one sample (DESIGN §3).

``apply_dve(model)`` replaces chosen Linear layers of the vision blocks with :class:`DVELinear` (an FDLinear made
with ``from_linear``, so the model's outputs are unchanged at init). The tower packs every image of a batch into
one sequence and its blocks call ``self.qkv(hidden_states)`` without boundaries (window-attention blocks get
window boundaries, not image ones), so a forward pre-hook on the tower computes the per-image boundaries from
``grid_thw`` (tokens per image = t·h·w; the window reordering stays inside each image, so per-image means are
unchanged) and every DVE layer of that tower reads them.

Defaults, and why: ``blocks`` = the second half of the tower (deeper blocks carry the semantic, lesion-level
features the per-image modulation is meant to adapt; the early blocks stay static so low-level features and
their cost stay those of the pretrained tower); ``projections`` = the MLP (``gate_proj``, ``up_proj``,
``down_proj``: two thirds of a block's weights, and the layers where a per-image re-weighting of channels acts
most directly; the attention projections stay static). Both are overridable.

The DVE settings live in ``config.vision_config.dve``; after ``import skinflow`` every construction of a
Qwen2.5-VL vision tower from such a config (``from_pretrained``, ``AutoModelForImageTextToText``, ``from_config``)
rebuilds the DVE layers before the weights load, so checkpoints round-trip through stock transformers
(model_type stays ``qwen2_5_vl``).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen

from fdlinear import FDLinear

PROJECTIONS = ("qkv", "proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
_PARENT = {"qkv": "attn", "proj": "attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


class ImageBoundaries:
    """Per-image boundaries of the vision tower's forwards, for the DVE layers of that tower.

    ``cu_seqlens`` is what the DVE layers read. The tower's pre-hook sets it for the current forward (cleared after).
    Activation checkpointing re-runs a block's forward during backward, possibly after other forwards of the tower,
    so each block's attention pre-hook binds the attention ``cu_seqlens`` tensor it receives (the very object is
    passed again on recomputation) to the image boundaries of its forward, and restores them from that binding.
    """

    def __init__(self) -> None:
        self.cu_seqlens: Tensor | None = None
        self._by_attention: dict[int, tuple[weakref.ref, Tensor]] = {}

    def bind(self, attention_cu_seqlens: Tensor) -> None:
        """Select the image boundaries of the forward that made ``attention_cu_seqlens``."""
        key = id(attention_cu_seqlens)
        entry = self._by_attention.get(key)
        if entry is not None and entry[0]() is attention_cu_seqlens:
            self.cu_seqlens = entry[1]
        elif self.cu_seqlens is not None:
            forget = functools.partial(self._forget, key)
            self._by_attention[key] = (weakref.ref(attention_cu_seqlens, forget), self.cu_seqlens)

    def _forget(self, key: int, _reference: weakref.ref) -> None:
        self._by_attention.pop(key, None)


class DVELinear(FDLinear):
    """FDLinear inside a vision tower: the sample boundaries come from the tower's current ``grid_thw``.

    Its state-dict keys are FDLinear's (``dft_weight``, ``bias``, ``KSM_Global.*``).
    """

    boundaries: ImageBoundaries | None = None

    def forward(self, x: Tensor, cu_seqlens: Tensor | None = None) -> Tensor:
        """x (T, d_in) packed image tokens → (T, d_out); each image is one sample."""
        if cu_seqlens is None:
            if self.boundaries is None or self.boundaries.cu_seqlens is None:
                raise RuntimeError(
                    "a DVE layer needs per-image boundaries: call it through the vision tower's forward "
                    "(with grid_thw), or pass cu_seqlens"
                )
            cu_seqlens = self.boundaries.cu_seqlens
        return super().forward(x, cu_seqlens)


def image_cu_seqlens(grid_thw: Tensor) -> Tensor:
    """grid_thw (N, 3) → (N+1,) int32 boundaries of each image's t·h·w patch tokens."""
    lengths = grid_thw.prod(-1)
    return torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))


def _set_boundaries(boundaries: ImageBoundaries, module: nn.Module, args: tuple, kwargs: dict) -> None:
    grid_thw = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
    if grid_thw is None:
        raise ValueError("the vision tower of a DVE model needs grid_thw")
    boundaries.cu_seqlens = image_cu_seqlens(torch.as_tensor(grid_thw))


def _clear_boundaries(boundaries: ImageBoundaries, *_) -> None:
    boundaries.cu_seqlens = None


def _bind_boundaries(boundaries: ImageBoundaries, module: nn.Module, args: tuple, kwargs: dict) -> None:
    attention_cu_seqlens = kwargs.get("cu_seqlens", args[1] if len(args) > 1 else None)
    if isinstance(attention_cu_seqlens, Tensor):
        boundaries.bind(attention_cu_seqlens)


def find_vision_tower(model: nn.Module) -> nn.Module:
    """The Qwen2.5-VL vision tower inside ``model`` (or ``model`` itself)."""
    if isinstance(model, qwen.Qwen2_5_VisionTransformerPretrainedModel):
        return model
    for module in model.modules():
        if isinstance(module, qwen.Qwen2_5_VisionTransformerPretrainedModel):
            return module
    raise TypeError(f"model must contain a Qwen2.5-VL vision tower, got {type(model).__name__}")


def default_blocks(depth: int) -> list[int]:
    """The second half of the tower's blocks."""
    return list(range(depth // 2, depth))


def _install(tower: nn.Module, blocks: Sequence[int], projections: Sequence[str], num_bases: int) -> None:
    boundaries = getattr(tower, "_dve_boundaries", None)
    if boundaries is None:
        boundaries = ImageBoundaries()
        tower._dve_boundaries = boundaries
        tower.register_forward_pre_hook(functools.partial(_set_boundaries, boundaries), with_kwargs=True)
        tower.register_forward_hook(functools.partial(_clear_boundaries, boundaries))
    for index in blocks:
        attention = tower.blocks[index].attn
        if not getattr(attention, "_dve_bound", False):
            attention.register_forward_pre_hook(functools.partial(_bind_boundaries, boundaries), with_kwargs=True)
            attention._dve_bound = True
        for name in projections:
            parent = getattr(tower.blocks[index], _PARENT[name])
            layer = getattr(parent, name)
            if not isinstance(layer, DVELinear):
                layer = DVELinear.from_linear(layer, num_bases=num_bases)
            layer.boundaries = boundaries
            setattr(parent, name, layer)


def _check(blocks: Sequence[int], projections: Sequence[str], num_bases: int, depth: int) -> None:
    unknown = [p for p in projections if p not in PROJECTIONS]
    if unknown or not projections:
        raise ValueError(f"projections must be a non-empty subset of {PROJECTIONS}, got {list(projections)}")
    bad = [b for b in blocks if not isinstance(b, int) or not 0 <= b < depth]
    if bad or not blocks:
        raise ValueError(f"blocks must be block indices in [0, {depth}), got {list(blocks)}")
    if not isinstance(num_bases, int) or num_bases < 1:
        raise ValueError(f"num_bases must be an integer >= 1, got {num_bases!r}")


def apply_dve(
    model: nn.Module,
    blocks: Sequence[int] | None = None,
    projections: Sequence[str] | None = None,
    num_bases: int = 4,
) -> nn.Module:
    """Replace the chosen Linear layers of the vision tower with DVE layers (outputs unchanged at init).

    Args:
        model: a Qwen2.5-VL model (or its vision tower).
        blocks: block indices; default the second half of the tower.
        projections: among ``qkv, proj, gate_proj, up_proj, down_proj``; default the MLP projections.
        num_bases: K of every DVE layer.

    Returns ``model`` (modified in place). Idempotent: layers already converted are kept as they are, and the
    settings are recorded in ``config.vision_config.dve`` (merged with earlier calls).
    """
    tower = find_vision_tower(model)
    depth = len(tower.blocks)
    blocks = list(default_blocks(depth) if blocks is None else blocks)
    projections = list(DEFAULT_PROJECTIONS if projections is None else projections)
    _check(blocks, projections, num_bases, depth)
    _install(tower, blocks, projections, num_bases)
    previous = getattr(tower.config, "dve", None) or {}
    recorded = sorted(set(previous.get("blocks", [])) | set(blocks))
    recorded_projections = [p for p in PROJECTIONS if p in set(previous.get("projections", [])) | set(projections)]
    tower.config.dve = {"blocks": recorded, "projections": recorded_projections,
                        "num_bases": previous.get("num_bases", num_bases)}
    return model


def _patched_init(original):
    @functools.wraps(original)
    def __init__(self, config, *args, **kwargs):
        original(self, config, *args, **kwargs)
        settings = getattr(config, "dve", None)
        if settings:
            _install(self, settings["blocks"], settings["projections"], settings["num_bases"])

    __init__._skinflow_dve = True
    return __init__


def register_with_transformers() -> None:
    """Make every Qwen2.5-VL vision tower built from a config with DVE settings carry its DVE layers."""
    cls = qwen.Qwen2_5_VisionTransformerPretrainedModel
    if not getattr(cls.__init__, "_skinflow_dve", False):
        cls.__init__ = _patched_init(cls.__init__)


def load_pretrained(path: str | Path, **kwargs) -> nn.Module:
    """Load a DVE (or plain) Qwen2.5-VL checkpoint directory saved with ``save_pretrained`` (safetensors, local
    files only). Keyword arguments go to ``from_pretrained`` (e.g. ``torch_dtype``)."""
    register_with_transformers()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"path must be a model directory with a config.json, got {path}")
    kwargs.setdefault("local_files_only", True)
    kwargs.setdefault("use_safetensors", True)
    return qwen.Qwen2_5_VLForConditionalGeneration.from_pretrained(path, **kwargs)
