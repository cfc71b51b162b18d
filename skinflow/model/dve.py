"""The Dynamic Vision Encoder: FDLinear in the vision tower of Qwen2.5-VL, one image = one sample (docs/design.md §3).

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

The DVE settings live in ``config.vision_config.dve``; after ``import skinflow.model`` every construction of a
Qwen2.5-VL vision tower from such a config (``from_pretrained``, ``AutoModelForImageTextToText``, ``from_config``)
rebuilds the DVE layers before the weights load, so checkpoints round-trip through stock transformers
(model_type stays ``qwen2_5_vl``).
"""

from __future__ import annotations

import functools
import json
import numbers
import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen

from fdlinear import FDLinear
from skinflow.util import check_int, error_summary

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


def _check_blocks(blocks: object, depth: int) -> list[int]:
    if isinstance(blocks, str | bytes) or not isinstance(blocks, Iterable):
        raise TypeError(f"blocks must be a sequence of block indices (ints), got {blocks!r}")
    indices = list(blocks)
    not_ints = [b for b in indices if isinstance(b, bool) or not isinstance(b, numbers.Integral)]
    if not_ints:
        raise TypeError(f"blocks must be a sequence of block indices (ints), got {not_ints[:5]} in it")
    indices = [int(b) for b in indices]
    if not indices or any(not 0 <= b < depth for b in indices):
        raise ValueError(f"blocks must be a non-empty sequence of block indices in [0, {depth}), got {indices}")
    return indices


def _check_projections(projections: object) -> list[str]:
    if isinstance(projections, str | bytes) or not isinstance(projections, Iterable):
        raise TypeError(
            f"projections must be a sequence of names among {PROJECTIONS} (e.g. ['qkv'], not 'qkv'), "
            f"got {projections!r}"
        )
    names = list(projections)
    if not names or any(not isinstance(p, str) or p not in PROJECTIONS for p in names):
        raise ValueError(f"projections must be a non-empty subset of {PROJECTIONS}, got {names}")
    return names


def _check_num_bases(num_bases: object) -> int:
    return check_int("num_bases", num_bases, minimum=1)


def _check_settings(settings: object, depth: int) -> tuple[list[int], list[str], int]:
    """The DVE settings recorded in a vision config, checked: ``(blocks, projections, num_bases)``."""
    where = "config.vision_config.dve"
    if not isinstance(settings, Mapping) or not {"blocks", "projections", "num_bases"} <= set(settings):
        raise ValueError(f"{where} must be a dict with blocks, projections and num_bases, got {settings!r}")
    try:
        return (_check_blocks(settings["blocks"], depth), _check_projections(settings["projections"]),
                _check_num_bases(settings["num_bases"]))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from error


def apply_dve(
    model: nn.Module,
    blocks: Sequence[int] | None = None,
    projections: Sequence[str] | None = None,
    num_bases: int | None = None,
) -> nn.Module:
    """Replace the chosen Linear layers of the vision tower with DVE layers (outputs unchanged at init).

    Args:
        model: a Qwen2.5-VL model (or its vision tower).
        blocks: a sequence of block indices (ints); default the second half of the tower.
        projections: a sequence of names among ``qkv, proj, gate_proj, up_proj, down_proj`` (a bare string such as
            ``"qkv"`` is refused: pass ``["qkv"]``); default the MLP projections.
        num_bases: K of every DVE layer (an int, not a bool); default the K of the DVE layers already in the model,
            else 4. Every DVE layer of a model has the same K (the config records one).

    Returns ``model`` (modified in place). Idempotent: layers already converted are kept as they are, and the
    settings are recorded in ``config.vision_config.dve`` (merged with earlier calls).

    Raises ``TypeError`` for arguments of the wrong type and ``ValueError`` for bad values (unknown projections,
    out-of-range blocks, ``num_bases < 1`` or different from the model's existing DVE layers), before any change.
    """
    tower = find_vision_tower(model)
    depth = len(tower.blocks)
    blocks = _check_blocks(default_blocks(depth) if blocks is None else blocks, depth)
    projections = _check_projections(DEFAULT_PROJECTIONS if projections is None else projections)
    previous = getattr(tower.config, "dve", None) or {}
    recorded_bases = previous.get("num_bases")
    if num_bases is None:
        num_bases = 4 if recorded_bases is None else recorded_bases
    num_bases = _check_num_bases(num_bases)
    if recorded_bases is not None and num_bases != recorded_bases:
        raise ValueError(
            f"num_bases must be the K of the model's existing DVE layers ({recorded_bases}), got {num_bases}"
        )
    _install(tower, blocks, projections, num_bases)
    recorded = sorted(set(previous.get("blocks", [])) | set(blocks))
    recorded_projections = [p for p in PROJECTIONS if p in set(previous.get("projections", [])) | set(projections)]
    tower.config.dve = {"blocks": recorded, "projections": recorded_projections, "num_bases": num_bases}
    return model


def _patched_init(original):
    @functools.wraps(original)
    def __init__(self, config, *args, **kwargs):
        original(self, config, *args, **kwargs)
        settings = getattr(config, "dve", None)
        if settings:
            _install(self, *_check_settings(settings, len(self.blocks)))

    __init__._skinflow_dve = True
    return __init__


def register_with_transformers() -> None:
    """Make every Qwen2.5-VL vision tower built from a config with DVE settings carry its DVE layers."""
    cls = qwen.Qwen2_5_VisionTransformerPretrainedModel
    if not getattr(cls.__init__, "_skinflow_dve", False):
        cls.__init__ = _patched_init(cls.__init__)


WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _read_json(file: Path, label: str) -> object:
    try:
        return json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{label}: {file.name} is not UTF-8 text ({error.reason} at byte {error.start})") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{label}: {file.name} is not valid JSON ({error.msg}, line {error.lineno} column "
                         f"{error.colno})") from error


def _weight_files(directory: Path, label: str) -> list[Path]:
    """The safetensors files of a checkpoint directory (one file, or the shards of its index)."""
    if (directory / WEIGHTS_INDEX).is_file():
        index = _read_json(directory / WEIGHTS_INDEX, label)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(file, str) and file for file in weight_map.values()
        ):
            raise ValueError(f"{label}: {WEIGHTS_INDEX} has no valid weight_map")
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [file.name for file in files if not file.is_file()]
        if missing:
            raise FileNotFoundError(f"{label}: {WEIGHTS_INDEX} names missing weight files {missing[:3]}")
        return files
    if (directory / WEIGHTS_FILE).is_file():
        return [directory / WEIGHTS_FILE]
    pickles = sorted(file.name for file in directory.iterdir() if file.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise FileNotFoundError(
            f"{label}: no {WEIGHTS_FILE}, only pickle weights ({', '.join(pickles[:3])}), which skinflow does not "
            "load; convert them to safetensors"
        )
    raise FileNotFoundError(f"{label}: no weights ({WEIGHTS_FILE} or {WEIGHTS_INDEX})")


def check_checkpoint(path: str | os.PathLike[str], *, name: str = "path") -> qwen.Qwen2_5_VLConfig:
    """Check a local Qwen2.5-VL checkpoint directory without loading its weights; returns its config.

    Checked: ``path`` is a directory; ``config.json`` is a UTF-8 JSON object with ``model_type`` ``qwen2_5_vl``
    that transformers accepts, with valid DVE settings if any; the weights are safetensors (``model.safetensors``
    or an index and its shards, never pickle files), each with a readable header that covers the file.

    Raises ``FileNotFoundError`` or ``ValueError`` naming ``name`` and the directory (and the file) on one line.
    """
    from safetensors import safe_open
    from transformers import Qwen2_5_VLConfig

    directory = Path(path)
    label = f"{name} {str(path)!r}"
    if not directory.is_dir():
        raise FileNotFoundError(f"{label}: not a checkpoint directory")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{label}: no config.json, not a model checkpoint directory")
    raw = _read_json(directory / "config.json", label)
    if not isinstance(raw, dict):
        raise ValueError(f"{label}: config.json must hold a JSON object, got {type(raw).__name__}")
    if raw.get("model_type") != "qwen2_5_vl":
        raise ValueError(f"{label}: config.json has model_type {raw.get('model_type')!r}; skinflow loads "
                         "Qwen2.5-VL checkpoints (model_type 'qwen2_5_vl')")
    try:
        config = Qwen2_5_VLConfig.from_pretrained(directory, local_files_only=True)
    except MemoryError:
        raise
    except Exception as error:  # transformers validates configs with many exception types
        raise ValueError(f"{label}: invalid config.json ({error_summary(error)})") from error
    settings = getattr(config.vision_config, "dve", None)
    if settings:
        try:
            _check_settings(settings, config.vision_config.depth)
        except ValueError as error:
            raise ValueError(f"{label}: invalid config.json: {error}") from error
    for file in _weight_files(directory, label):
        try:
            with safe_open(str(file), framework="pt") as opened:
                opened.keys()
        except MemoryError:
            raise
        except Exception as error:  # safetensors raises its own SafetensorError (and OSError) for a bad file
            raise ValueError(f"{label}: {file.name} is not a valid safetensors file ({error_summary(error)})") from error
    return config


def load_pretrained(path: str | os.PathLike[str], *, name: str = "path", **kwargs) -> nn.Module:
    """Load a DVE (or plain) Qwen2.5-VL checkpoint directory saved with ``save_pretrained``.

    Local files only, safetensors only (no pickle), no remote code. The directory is checked first
    (:func:`check_checkpoint`), and the load must fill every parameter with a tensor of its shape: weights that
    leave parameters uninitialised or do not fit the config are an error, not a warning.

    Args:
        path: the checkpoint directory.
        name: what to call it in errors (e.g. ``"--model"``).
        kwargs: passed to ``from_pretrained`` (e.g. ``dtype``); ``ignore_mismatched_sizes=True`` allows weights of
            other shapes (re-initialised), as in transformers.

    Raises ``FileNotFoundError`` or ``ValueError`` naming ``name`` and the directory on one line.
    """
    register_with_transformers()
    check_checkpoint(path, name=name)
    label = f"{name} {str(path)!r}"
    want_info = kwargs.pop("output_loading_info", False)
    allow_mismatch = kwargs.pop("ignore_mismatched_sizes", False)
    kwargs.setdefault("local_files_only", True)
    kwargs.setdefault("use_safetensors", True)
    try:
        model, info = qwen.Qwen2_5_VLForConditionalGeneration.from_pretrained(
            Path(path), output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    except MemoryError:
        raise
    except Exception as error:  # a corrupt or foreign checkpoint fails in many ways inside transformers
        raise ValueError(f"{label}: cannot load the checkpoint ({error_summary(error)})") from error
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ValueError(f"{label}: the weights lack {len(missing)} of the model's tensors (e.g. "
                         f"{', '.join(missing[:3])}): they do not belong to this config.json")
    mismatched = list(info.get("mismatched_keys") or ())
    if mismatched and not allow_mismatch:
        key, stored, expected = mismatched[0]
        raise ValueError(f"{label}: {len(mismatched)} tensors of the weights do not fit config.json (e.g. {key}: "
                         f"{list(stored)} in the file, {list(expected)} in the model)")
    return (model, info) if want_info else model
