"""verl's plugin: the DVE in every verl worker, and in verl's FSDP2 actor and reference (docs/verl.md).

verl imports the modules of every ``verl.plugins`` entry point when ``verl`` itself is imported (in the driver and
in every Ray worker), and imports ``actor_rollout_ref.model.external_lib`` before it builds a model. Importing this
module (either way) does five things, once per process:

1. ``import skinflow.model``: registers the DVE and the image-only processor with transformers, so verl's
   ``AutoModelForImageTextToText.from_pretrained`` / ``from_config`` on a DVE checkpoint builds the DVE layers before
   the weights load (the same ``from_pretrained`` path as the local trainer; model_type stays ``qwen2_5_vl``).
2. Lets verl use the tiny default's image-only processor: verl's ``hf_processor`` accepts processors by class name
   (``Qwen2_5_VLProcessor``, ...) and returns ``None`` for :class:`~skinflow.model.processor.ImageOnlyQwenVLProcessor`
   (so verl would treat the model as text-only); :func:`hf_processor_with_image_only` gives it the same treatment as
   the stock processor (the model config and Qwen2.5-VL's ``get_rope_index`` bound to it). Other processors go to
   verl's function unchanged.
3. Makes verl's text-only batches work with transformers 5: verl's Qwen2.5-VL forward
   (``verl.models.transformers.qwen2_vl._get_input_embeds``) runs a dummy 16-patch image (grid 1×4×4) through the
   vision tower for a batch without images, so that every vision parameter (the DVE's included) takes part in every
   rank's backward, and adds ``0 * mean`` of its output; verl 0.9.1 calls ``.mean()`` on the tower's output, which is
   a ``BaseModelOutputWithPooling`` under transformers 5, not a tensor. :func:`input_embeds_with_dummy_image` does
   the same with the output unpacked; batches with images go to verl's function unchanged.
4. Lets verl's FSDP engine run with TRL 1.x installed (the local trainer's TRL): verl 0.9.1's
   ``apply_monkey_patch`` imports TRL's ``AutoModelForCausalLMWithValueHead`` whenever TRL is installed, to patch a
   value-head model class that GRPO never builds; TRL 1.x has no such class, so building the actor would fail with
   an ``ImportError``. :func:`trl_value_head_available` makes that check true only where the class exists.
5. Wraps verl's ``apply_fsdp2`` (in ``verl.utils.fsdp_utils`` and ``verl.workers.engine.fsdp.transformer_impl``,
   patched when they are imported) with :func:`apply_fsdp2_with_dve`: each FDLinear becomes its own FSDP2 unit
   with a float32 mixed-precision policy before verl wraps the blocks and the root, so under verl's bf16
   ``param_dtype`` the DVE layers' parameters (``dft_weight``, the modulation heads) stay float32 in forward and
   backward and the bases are formed from float32 coefficients (the matmul runs in the bf16 input's dtype, as
   everywhere). Gradients are reduced in float32. Every other parameter gets verl's policy unchanged.

verl's FSDP1 strategy (``strategy=fsdp``) has no per-module policy in verl's code: under it the DVE parameters are
cast to ``param_dtype`` like every other; the recipes use ``fsdp2``.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
from typing import Any

import skinflow.model  # noqa: F401  (registers the DVE and the processor with transformers)

PATCHED_MODULES = ("verl.utils.fsdp_utils", "verl.workers.engine.fsdp.transformer_impl", "verl.utils",
                   "verl.utils.tokenizer", "verl.utils.tokenizer.tokenizer", "verl.workers.config.model",
                   "verl.models.transformers.qwen2_vl", "verl.models.transformers.monkey_patch")
"""The modules whose ``apply_fsdp2`` / ``hf_processor`` / ``_get_input_embeds`` / ``is_trl_available`` are wrapped
(where verl defines or imports them)."""
DUMMY_GRID = (1, 4, 4)
"""verl's dummy image of a text-only batch: 16 patches."""

__all__ = ["DUMMY_GRID", "PATCHED_MODULES", "apply_fsdp2_with_dve", "hf_processor_with_image_only",
           "input_embeds_with_dummy_image", "install", "shard_dve_layers", "trl_value_head_available"]


def shard_dve_layers(model: Any, fsdp_kwargs: dict[str, Any]) -> int:
    """Make every FDLinear of ``model`` its own FSDP2 unit with float32 parameters and gradient reduction.

    Args:
        model: the (not yet sharded) model.
        fsdp_kwargs: verl's ``fully_shard`` arguments (``mesh``, ``mp_policy``, ``offload_policy``,
            ``reshard_after_forward``); ``mp_policy`` is replaced for the DVE units.

    Returns:
        the number of DVE units made. Each also drops its basis cache before every forward (defensive: the cache is
        keyed on the parameter's storage and version counter, and nothing guarantees that FSDP2's refill of the
        unsharded parameter after an update changes either).
    """
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from fdlinear import FDLinear

    policy = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32, cast_forward_inputs=False)
    arguments = {**fsdp_kwargs, "mp_policy": policy}
    count = 0
    for module in list(model.modules()):
        if isinstance(module, FDLinear) and not getattr(module, "_skinflow_fsdp_unit", False):
            fully_shard(module, **arguments)
            module.register_forward_pre_hook(_drop_basis_cache)
            module._skinflow_fsdp_unit = True
            count += 1
    return count


def _drop_basis_cache(module: Any, _args: tuple) -> None:
    module.clear_basis_cache()


def apply_fsdp2_with_dve(original):
    """verl's ``apply_fsdp2(model, fsdp_kwargs, config)`` preceded by :func:`shard_dve_layers`."""
    if getattr(original, "_skinflow_dve", False):
        return original

    @functools.wraps(original)
    def apply_fsdp2(model, fsdp_kwargs, config):
        shard_dve_layers(model, fsdp_kwargs)
        return original(model, fsdp_kwargs, config)

    apply_fsdp2._skinflow_dve = True
    return apply_fsdp2


def hf_processor_with_image_only(original):
    """verl's ``hf_processor(name_or_path, **kwargs)`` that also accepts the image-only processor."""
    if getattr(original, "_skinflow_dve", False):
        return original

    @functools.wraps(original)
    def hf_processor(name_or_path, **kwargs):
        import types

        from transformers import AutoConfig, AutoProcessor
        from transformers.models.qwen2_5_vl import Qwen2_5_VLModel

        from skinflow.model.processor import ImageOnlyQwenVLProcessor

        try:
            processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
        except Exception:  # verl's function reports (and tolerates) what cannot be loaded
            return original(name_or_path, **kwargs)
        if not isinstance(processor, ImageOnlyQwenVLProcessor):
            return original(name_or_path, **kwargs)
        processor.config = AutoConfig.from_pretrained(name_or_path, **kwargs)
        processor.get_rope_index = types.MethodType(Qwen2_5_VLModel.get_rope_index, processor)
        if hasattr(Qwen2_5_VLModel, "get_vision_position_ids"):
            processor.get_vision_position_ids = types.MethodType(Qwen2_5_VLModel.get_vision_position_ids, processor)
        return processor

    hf_processor._skinflow_dve = True
    return hf_processor


def input_embeds_with_dummy_image(original):
    """verl's ``_get_input_embeds(model, input_ids, attention_mask, pixel_values, pixel_values_videos,
    image_grid_thw, video_grid_thw)`` whose text-only branch unpacks the vision tower's output.

    For a batch without images or videos: ``inputs_embeds`` (B, L, D) = the token embeddings + 0 × the mean of the
    vision tower's output on a zero image of :data:`DUMMY_GRID` patches; returns ``(inputs_embeds, attention_mask)``.
    """
    if getattr(original, "_skinflow_dve", False):
        return original

    @functools.wraps(original)
    def _get_input_embeds(model, input_ids, attention_mask=None, pixel_values=None, pixel_values_videos=None,
                          image_grid_thw=None, video_grid_thw=None):
        if pixel_values is not None or pixel_values_videos is not None:
            return original(model, input_ids, attention_mask, pixel_values, pixel_values_videos, image_grid_thw,
                            video_grid_thw)
        import math

        import torch

        inputs_embeds = model.get_input_embeddings()(input_ids)
        vision = model.config.vision_config
        patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        dummy = torch.zeros((math.prod(DUMMY_GRID), patch_dim), dtype=inputs_embeds.dtype, device=inputs_embeds.device)
        grid = torch.tensor([DUMMY_GRID], dtype=torch.long, device=inputs_embeds.device)
        output = model.visual(dummy, grid_thw=grid)
        embeds = getattr(output, "pooler_output", None)
        if embeds is None:
            embeds = output[0] if isinstance(output, tuple) else output
        inputs_embeds = inputs_embeds + 0.0 * embeds.mean()
        if attention_mask is not None:
            attention_mask = attention_mask.to(inputs_embeds.device)
        return inputs_embeds, attention_mask

    _get_input_embeds._skinflow_dve = True
    return _get_input_embeds


def trl_value_head_available() -> bool:
    """Whether TRL is installed with the value-head model class verl's monkey patch imports
    (``trl.experimental.ppo.AutoModelForCausalLMWithValueHead`` or ``trl.AutoModelForCausalLMWithValueHead``)."""
    try:
        from trl.experimental.ppo import AutoModelForCausalLMWithValueHead  # noqa: F401
    except ImportError:
        try:
            from trl import AutoModelForCausalLMWithValueHead  # noqa: F401
        except ImportError:
            return False
    return True


def _patch(module: Any) -> None:
    function = getattr(module, "apply_fsdp2", None)
    if function is not None:
        module.apply_fsdp2 = apply_fsdp2_with_dve(function)
    function = module.__dict__.get("hf_processor")
    if function is not None:
        module.hf_processor = hf_processor_with_image_only(function)
    if module.__name__ == "verl.models.transformers.monkey_patch" and "is_trl_available" in module.__dict__:
        module.is_trl_available = trl_value_head_available
    function = module.__dict__.get("_get_input_embeds")
    if function is not None and module.__name__ == "verl.models.transformers.qwen2_vl":
        module._get_input_embeds = input_embeds_with_dummy_image(function)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches :data:`PATCHED_MODULES` right after they are executed (verl imports most of them after its plugins)."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in PATCHED_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    """The module's own loader (every other attribute delegated to it: source, resources) that patches after
    executing the module."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str):
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        _patch(module)


def install() -> None:
    """Patch the already imported :data:`PATCHED_MODULES` now and the others when imported (idempotent)."""
    for name in PATCHED_MODULES:
        if name in sys.modules:
            _patch(sys.modules[name])
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def register() -> None:
    """The entry point's object: the module's import already did the work; calling it again is harmless."""
    install()


install()
