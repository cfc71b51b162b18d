"""vLLM's general plugin (entry point group ``vllm.general_plugins``): the DVE Qwen2.5-VL for every vLLM process.

vLLM loads every ``vllm.general_plugins`` entry point in each process it starts (engine, workers), before building a
model, so the plugin is active in verl's rollout servers and in TRL's ``use_vllm`` (server and colocate modes) alike
once the package is installed. :func:`register` points the architecture ``Qwen2_5_VLForConditionalGeneration`` at
:class:`skinflow.verl.vllm_model.SkinFlowQwen2_5_VLForConditionalGeneration` by a lazy ``"module:class"`` string,
so nothing of the model is imported until vLLM builds one; checkpoints without ``vision_config.dve`` get vLLM's own
model unchanged (the subclass only adds the DVE when the config asks for it).

Importing this module imports nothing heavy; :func:`register` imports vLLM. Set ``SKINFLOW_VLLM_PLUGIN=0`` to keep
vLLM's own Qwen2.5-VL.
"""

from __future__ import annotations

import os
from typing import Any

ARCHITECTURE = "Qwen2_5_VLForConditionalGeneration"
MODEL_CLASS = "skinflow.verl.vllm_model:SkinFlowQwen2_5_VLForConditionalGeneration"
ENV_SWITCH = "SKINFLOW_VLLM_PLUGIN"

__all__ = ["ARCHITECTURE", "MODEL_CLASS", "register", "reset_image_caches"]


def register() -> bool:
    """Register the DVE Qwen2.5-VL with vLLM's ``ModelRegistry`` (idempotent), and the image-only processor with
    transformers' ``AutoProcessor`` (vLLM loads a checkpoint's processor through it: the tiny default's);
    ``False`` when switched off by ``SKINFLOW_VLLM_PLUGIN=0``. Raises ``ValueError`` naming the variable for another
    value than ``0``/``1``."""
    switch = os.environ.get(ENV_SWITCH, "1").strip()
    if switch not in ("0", "1"):
        raise ValueError(f"{ENV_SWITCH} must be 0 or 1, got {switch!r}")
    if switch == "0":
        return False
    from vllm import ModelRegistry

    from skinflow.model.processor import register_with_transformers

    register_with_transformers()
    ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
    return True


def reset_image_caches(llm: Any) -> list[str]:
    """Drop vLLM's cached image encodings (and the prefix cache, whose KV blocks hold them) after the vision
    tower's weights changed.

    vLLM keeps image encodings across requests (the encoder cache, keyed by the image's hash) and KV blocks of image
    prompts (prefix caching): after a weight sync that changed the vision tower, both hold encodings of the old
    weights. verl 0.9 resets both itself at every sync (``vllm_async_server.py``: ``reset_prefix_cache``,
    ``reset_mm_cache``, ``reset_encoder_cache`` when the engine sleeps or its caches are cleared); TRL's ``use_vllm``
    and scripts that call ``load_weights`` themselves call this after each sync.

    Args:
        llm: a ``vllm.LLM`` (or its ``llm_engine``), or an async engine client with these methods.

    Returns:
        the names of the methods called, among ``reset_prefix_cache``, ``reset_mm_cache``, ``reset_encoder_cache``.

    Raises:
        TypeError: ``llm`` has none of them (not a vLLM engine), or no way to drop encoder outputs.
    """
    called = []
    engines = [llm, getattr(llm, "llm_engine", None)]
    for method in ("reset_prefix_cache", "reset_mm_cache", "reset_encoder_cache"):
        for engine in engines:
            function = getattr(engine, method, None) if engine is not None else None
            if callable(function):
                function()
                called.append(method)
                break
    if "reset_encoder_cache" not in called and "reset_mm_cache" not in called:
        raise TypeError(f"llm must be a vLLM engine with reset_encoder_cache/reset_mm_cache, got {type(llm).__name__}")
    return called
