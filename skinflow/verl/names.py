"""Parameter names of an HF DVE checkpoint and of vLLM's Qwen2.5-VL with the DVE plugin (docs/verl.md).

verl sends the actor's state-dict names (the HF names, ``model.visual.blocks.3.mlp.up_proj.dft_weight``) to vLLM's
``load_weights`` at every weight sync, and vLLM reads the same names from the checkpoint at model load. vLLM's
Qwen2.5-VL renames them by prefix (``model.visual.`` -> ``visual.``, ``model.language_model.`` ->
``language_model.model.``, ``lm_head.`` -> ``language_model.lm_head.``) and stacks some projections into one
parameter: the vision MLP's ``gate_proj``/``up_proj`` into ``gate_up_proj`` (shards 0, 1), the language model's
``q/k/v_proj`` into ``qkv_proj`` (shards ``"q"``, ``"k"``, ``"v"``) and ``gate/up_proj`` into ``gate_up_proj``.

The DVE plugin (:mod:`skinflow.verl.vllm_model`) keeps the MLP of every DVE block unmerged: ``gate_proj``,
``up_proj`` and ``down_proj`` are separate modules there (DVE layers for the DVE projections, plain linear layers
for the others), so every name under such an MLP loads as it is (after the prefix), without stacking.

This module is pure Python apart from :func:`vllm_layout` (which builds one meta-device FDLinear per projection
shape to read its parameter names). :func:`vllm_target` is what the plugin's ``load_weights`` uses to route names;
:func:`vllm_layout` describes every parameter the vLLM model has, with the tensor each loader call takes. Both are
written from vLLM's ``vllm/model_executor/models/qwen2_5_vl.py`` and ``qwen2.py`` (``hf_to_vllm_mapper``,
``stacked_params_mapping``, the module tree); vLLM itself cannot be imported on the CPU test machines.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

VLLM_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.language_model.", "language_model.model."),
    ("model.visual.", "visual."),
    ("lm_head.", "language_model.lm_head."),
    ("model.", "language_model.model."),
)
"""vLLM Qwen2.5-VL's ``hf_to_vllm_mapper`` prefixes, in order (the first that matches renames the name)."""

VISION_STACKED: tuple[tuple[str, str, int], ...] = (
    ("mlp.gate_proj.", "mlp.gate_up_proj.", 0),
    ("mlp.up_proj.", "mlp.gate_up_proj.", 1),
)
"""The vision tower's stacked parameters (HF part, vLLM parameter, shard id); its ``qkv`` is already fused in HF."""

TEXT_STACKED: tuple[tuple[str, str, str | int], ...] = (
    (".q_proj.", ".qkv_proj.", "q"),
    (".k_proj.", ".qkv_proj.", "k"),
    (".v_proj.", ".qkv_proj.", "v"),
    (".gate_proj.", ".gate_up_proj.", 0),
    (".up_proj.", ".gate_up_proj.", 1),
)
"""The language model's (vLLM ``Qwen2Model.load_weights``) stacked parameters."""

MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
_DVE_MLP = re.compile(r"^visual\.blocks\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.(.+)$")


@dataclass(frozen=True)
class DVEPlan:
    """Where a checkpoint's DVE layers are: its ``config.vision_config.dve`` as read by the vLLM plugin.

    Attributes:
        depth: blocks of the vision tower.
        blocks: indices of the DVE blocks (sorted).
        projections: the DVE projections of those blocks (a subset of ``gate_proj, up_proj, down_proj``).
        num_bases: K of every DVE layer.
    """

    depth: int
    blocks: tuple[int, ...]
    projections: tuple[str, ...]
    num_bases: int

    @classmethod
    def from_config(cls, config: Any) -> DVEPlan | None:
        """The plan of a Qwen2.5-VL config (an object with ``vision_config``, or its dict); ``None`` without DVE.

        Raises ``ValueError`` naming ``config.vision_config.dve`` for settings the vLLM plugin cannot serve: blocks
        out of range, an unknown projection, or an attention projection (``qkv``, ``proj``: vLLM shards the vision
        attention heads over tensor-parallel ranks, which a per-image FDLinear on the fused qkv would have to undo).
        """
        vision = config.get("vision_config") if isinstance(config, Mapping) else getattr(config, "vision_config", None)
        if vision is None:
            raise ValueError("config has no vision_config: not a Qwen2.5-VL config")
        get = vision.get if isinstance(vision, Mapping) else lambda key, default=None: getattr(vision, key, default)
        settings = get("dve", None)
        if not settings:
            return None
        where = "config.vision_config.dve"
        if not isinstance(settings, Mapping) or not {"blocks", "projections", "num_bases"} <= set(settings):
            raise ValueError(f"{where} must be a dict with blocks, projections and num_bases, got {settings!r}")
        depth = int(get("depth"))
        blocks = tuple(sorted(int(b) for b in settings["blocks"]))
        projections = tuple(str(p) for p in settings["projections"])
        num_bases = settings["num_bases"]
        if not blocks or any(not 0 <= b < depth for b in blocks):
            raise ValueError(f"{where}: blocks must be indices in [0, {depth}), got {list(blocks)}")
        unsupported = [p for p in projections if p not in MLP_PROJECTIONS]
        if unsupported or not projections:
            raise ValueError(
                f"{where}: the vLLM plugin runs DVE layers in the vision MLP only ({', '.join(MLP_PROJECTIONS)}), "
                f"got projections {list(projections)}; roll out such a checkpoint with vLLM's Transformers backend "
                "(model_impl=transformers, docs/verl.md)"
            )
        if isinstance(num_bases, bool) or not isinstance(num_bases, int) or num_bases < 1:
            raise ValueError(f"{where}: num_bases must be an int >= 1, got {num_bases!r}")
        return cls(depth, blocks, projections, num_bases)


@dataclass(frozen=True)
class Target:
    """Where one HF tensor goes in the vLLM model: parameter ``name`` (and ``shard`` of a stacked parameter), or
    nowhere (``skip`` says why)."""

    name: str
    shard: str | int | None = None
    skip: str | None = None


def vllm_name(hf_name: str) -> str:
    """The name vLLM's ``hf_to_vllm_mapper`` gives ``hf_name`` (unchanged if no prefix matches)."""
    for old, new in VLLM_PREFIXES:
        if hf_name.startswith(old):
            return new + hf_name[len(old):]
    return hf_name


def is_dve_mlp_name(name: str, plan: DVEPlan | None) -> bool:
    """Whether a vLLM-side ``name`` lies in the MLP of a DVE block (loaded as it is by the plugin)."""
    if plan is None:
        return False
    match = _DVE_MLP.match(name)
    return match is not None and int(match.group(1)) in plan.blocks


def vllm_target(hf_name: str, plan: DVEPlan | None, tie_word_embeddings: bool) -> Target:
    """Where the HF tensor ``hf_name`` is loaded in the vLLM model with the DVE plugin.

    Args:
        hf_name: a state-dict name of the HF model (what verl sends, what the checkpoint holds).
        plan: the checkpoint's :class:`DVEPlan` (``None`` without DVE).
        tie_word_embeddings: the config's; vLLM skips ``lm_head.*`` when it is set.

    Returns:
        a :class:`Target`.
    """
    name = vllm_name(hf_name)
    if "rotary_emb.inv_freq" in name:
        return Target(name, skip="rotary buffer, recomputed by vLLM")
    if name.startswith("language_model.lm_head.") and tie_word_embeddings:
        return Target(name, skip="lm_head is tied to embed_tokens")
    if name.startswith("visual."):
        if is_dve_mlp_name(name, plan):
            return Target(name)
        for part, stacked, shard in VISION_STACKED:
            if part in name:
                return Target(name.replace(part, stacked), shard)
        return Target(name)
    if name.startswith("language_model."):
        for part, stacked, shard in TEXT_STACKED:
            if part in name:
                return Target(name.replace(part, stacked), shard)
    return Target(name)


def _value(config: Any, key: str) -> Any:
    return config[key] if isinstance(config, Mapping) else getattr(config, key)


@functools.lru_cache(maxsize=64)
def _fdlinear_shapes(in_features: int, out_features: int, num_bases: int) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of a DVE layer of this shape (a meta-device FDLinear, as the plugin builds)."""
    from fdlinear import FDLinear

    layer = FDLinear(in_features, out_features, bias=True, num_bases=num_bases, device="meta")
    return {name: tuple(parameter.shape) for name, parameter in layer.named_parameters()}


def vllm_layout(config: Any) -> dict[str, dict[str | int | None, tuple[int, ...]]]:
    """Every parameter of vLLM's Qwen2.5-VL with the DVE plugin, with the tensor shape each loader call takes.

    Args:
        config: a ``Qwen2_5_VLConfig`` (or an object/dict with ``vision_config``, ``text_config`` and
            ``tie_word_embeddings``).

    Returns:
        ``{vllm_parameter_name: {shard: shape}}``: shard ``None`` for a parameter loaded whole, else one entry per
        stacked shard (``0``/``1`` for gate/up, ``"q"``/``"k"``/``"v"``); ``shape`` is the HF tensor the loader
        takes for it (e.g. the patch embedding's Conv3d weight ``(D, C, T, P, P)``, which vLLM's loader may reshape).
    """
    vision = _value(config, "vision_config")
    text = _value(config, "text_config")
    plan = DVEPlan.from_config(config)
    layout: dict[str, dict[str | int | None, tuple[int, ...]]] = {}

    def whole(name: str, *shape: int) -> None:
        layout[name] = {None: tuple(shape)}

    d = _value(vision, "hidden_size")
    inter = _value(vision, "intermediate_size")
    channels = getattr(vision, "in_channels", 3) if not isinstance(vision, Mapping) else vision.get("in_channels", 3)
    patch, temporal = _value(vision, "patch_size"), _value(vision, "temporal_patch_size")
    whole("visual.patch_embed.proj.weight", d, channels, temporal, patch, patch)
    for index in range(_value(vision, "depth")):
        block = f"visual.blocks.{index}"
        whole(f"{block}.norm1.weight", d)
        whole(f"{block}.norm2.weight", d)
        whole(f"{block}.attn.qkv.weight", 3 * d, d)
        whole(f"{block}.attn.qkv.bias", 3 * d)
        whole(f"{block}.attn.proj.weight", d, d)
        whole(f"{block}.attn.proj.bias", d)
        if plan is not None and index in plan.blocks:
            shapes = {"gate_proj": (d, inter), "up_proj": (d, inter), "down_proj": (inter, d)}
            for projection, (fan_in, fan_out) in shapes.items():
                if projection in plan.projections:
                    for name, shape in _fdlinear_shapes(fan_in, fan_out, plan.num_bases).items():
                        whole(f"{block}.mlp.{projection}.{name}", *shape)
                else:
                    whole(f"{block}.mlp.{projection}.weight", fan_out, fan_in)
                    whole(f"{block}.mlp.{projection}.bias", fan_out)
        else:
            layout[f"{block}.mlp.gate_up_proj.weight"] = {0: (inter, d), 1: (inter, d)}
            layout[f"{block}.mlp.gate_up_proj.bias"] = {0: (inter,), 1: (inter,)}
            whole(f"{block}.mlp.down_proj.weight", d, inter)
            whole(f"{block}.mlp.down_proj.bias", d)
    merged = d * _value(vision, "spatial_merge_size") ** 2
    whole("visual.merger.ln_q.weight", d)
    whole("visual.merger.mlp.0.weight", merged, merged)
    whole("visual.merger.mlp.0.bias", merged)
    whole("visual.merger.mlp.2.weight", _value(vision, "out_hidden_size"), merged)
    whole("visual.merger.mlp.2.bias", _value(vision, "out_hidden_size"))

    hidden, vocab = _value(text, "hidden_size"), _value(text, "vocab_size")
    heads, kv_heads = _value(text, "num_attention_heads"), _value(text, "num_key_value_heads")
    head_dim = getattr(text, "head_dim", None) if not isinstance(text, Mapping) else text.get("head_dim")
    head_dim = head_dim or hidden // heads
    text_inter = _value(text, "intermediate_size")
    lm = "language_model.model"
    whole(f"{lm}.embed_tokens.weight", vocab, hidden)
    for index in range(_value(text, "num_hidden_layers")):
        layer = f"{lm}.layers.{index}"
        layout[f"{layer}.self_attn.qkv_proj.weight"] = {
            "q": (heads * head_dim, hidden), "k": (kv_heads * head_dim, hidden), "v": (kv_heads * head_dim, hidden)
        }
        layout[f"{layer}.self_attn.qkv_proj.bias"] = {
            "q": (heads * head_dim,), "k": (kv_heads * head_dim,), "v": (kv_heads * head_dim,)
        }
        whole(f"{layer}.self_attn.o_proj.weight", hidden, heads * head_dim)
        layout[f"{layer}.mlp.gate_up_proj.weight"] = {0: (text_inter, hidden), 1: (text_inter, hidden)}
        whole(f"{layer}.mlp.down_proj.weight", hidden, text_inter)
        whole(f"{layer}.input_layernorm.weight", hidden)
        whole(f"{layer}.post_attention_layernorm.weight", hidden)
    whole(f"{lm}.norm.weight", hidden)
    if not _value(config, "tie_word_embeddings"):
        whole("language_model.lm_head.weight", vocab, hidden)
    return layout


@dataclass(frozen=True)
class MappingReport:
    """What :func:`map_checkpoint` found: every problem of mapping a set of HF tensors onto :func:`vllm_layout`.

    Attributes:
        loaded: ``(vllm name, shard) -> [hf names]`` for every loader call.
        skipped: ``hf name -> reason`` for tensors vLLM skips.
        unknown: HF names whose target is not a vLLM parameter or shard.
        twice: ``(vllm name, shard)`` filled by more than one HF tensor.
        missing: ``(vllm name, shard)`` left at its initial value.
        wrong_shape: ``(hf name, hf shape, expected shape)``.
    """

    loaded: dict[tuple[str, str | int | None], list[str]]
    skipped: dict[str, str]
    unknown: list[str]
    twice: list[tuple[str, str | int | None]]
    missing: list[tuple[str, str | int | None]]
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    @property
    def ok(self) -> bool:
        """No unknown, double, missing or misshapen tensor: the mapping is complete and one-to-one."""
        return not (self.unknown or self.twice or self.missing or self.wrong_shape)


def map_checkpoint(hf_shapes: Mapping[str, Sequence[int]], config: Any) -> MappingReport:
    """Map HF tensors (``name -> shape``) onto the vLLM layout of ``config`` and report every problem.

    Args:
        hf_shapes: the HF state-dict names and shapes (a checkpoint's, or what verl's weight sync sends).
        config: the checkpoint's Qwen2.5-VL config (see :func:`vllm_layout`).

    Returns:
        a :class:`MappingReport`; ``report.ok`` when every vLLM parameter (shard) is loaded exactly once from a
        tensor of its shape and no HF tensor is left over.
    """
    layout = vllm_layout(config)
    plan = DVEPlan.from_config(config)
    tie = bool(_value(config, "tie_word_embeddings"))
    loaded: dict[tuple[str, str | int | None], list[str]] = {}
    skipped: dict[str, str] = {}
    unknown: list[str] = []
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for hf_name, shape in hf_shapes.items():
        target = vllm_target(hf_name, plan, tie)
        if target.skip is not None:
            skipped[hf_name] = target.skip
            continue
        shards = layout.get(target.name)
        if shards is None or target.shard not in shards:
            unknown.append(hf_name)
            continue
        loaded.setdefault((target.name, target.shard), []).append(hf_name)
        if tuple(shape) != shards[target.shard]:
            wrong_shape.append((hf_name, tuple(shape), shards[target.shard]))
    twice = sorted((key for key, names in loaded.items() if len(names) > 1), key=str)
    missing = sorted(((name, shard) for name, shards in layout.items() for shard in shards
                      if (name, shard) not in loaded), key=str)
    return MappingReport(loaded, skipped, sorted(unknown), twice, missing, wrong_shape)
