"""The settings of one training run (:class:`TrainConfig`), loadable from YAML (docs/training.md).

Every field is documented in its metadata (``help``), which :func:`field_help` returns and docs/training.md lists.
A YAML recipe is a flat mapping of these field names (``recipes/``); unknown keys and bad values are a
``ValueError`` naming them. Pure Python apart from PyYAML (imported when a file is read).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from skinflow.formats import CAPTION_FIELDS, DEFAULT_K
from skinflow.util import check_int, check_number, describe

__all__ = ["PROJECTIONS", "SFT_ANSWERS", "SFT_TARGETS", "STAGES", "TrainConfig", "field_help", "load_config",
           "read_settings"]

STAGES: tuple[str, ...] = ("sft", "caption", "diagnosis")
SFT_TARGETS: tuple[str, ...] = ("caption", "diagnosis", "both")
SFT_ANSWERS: tuple[str, ...] = ("truth", "format")
PROJECTIONS: tuple[str, ...] = ("qkv", "proj", "gate_proj", "up_proj", "down_proj")
"""The vision-block projections the DVE can replace (as :data:`skinflow.model.dve.PROJECTIONS`)."""
_SPLITS = ("train", "val", "test")
_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "sgd")
_LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    """One training run: stage, model, data, optimiser, GRPO, DVE and reward settings (checked on construction)."""

    stage: str = field(default="caption", metadata=_help(
        "sft (supervised warm start on the formats), caption (Stage I GRPO) or diagnosis (Stage II GRPO)"))
    model: str | None = field(default=None, metadata=_help(
        "local Qwen2.5-VL / SkinFlow checkpoint directory to start from; null: the embedded tiny default. "
        "Stage II starts from the Stage I output directory"))
    data: str | None = field(default=None, metadata=_help("JSONL data set (docs/data.md); required to run"))
    out: str | None = field(default=None, metadata=_help(
        "output directory: the final model, checkpoint-N directories, run.json, metrics.jsonl; required to run"))
    split: str | None = field(default="train", metadata=_help("train on the records of this split; null: all"))
    sft_target: str = field(default="caption", metadata=_help(
        "sft stage only: the answer taught, caption (formats.format_caption of the record's caption), "
        "diagnosis (formats.format_diagnoses of the record's label) or both (one example of each per record)"))
    sft_answers: str = field(default="truth", metadata=_help(
        "sft stage only: truth (the record's own caption and label) or format (answers that teach the formats "
        "and not the content: caption fields not in sft_true_fields come from another record drawn at random, and "
        "the diagnosis answer lists k distinct labels of the data in random order)"))
    sft_true_fields: tuple[str, ...] = field(default=(), metadata=_help(
        "sft_answers format only: caption fields that keep the record's own value (e.g. the generic ones)"))
    sft_differential: bool = field(default=False, metadata=_help(
        "sft_answers format only: the diagnosis answer lists the record's own label at a random position among k "
        "distinct labels (a differential without a ranking) instead of k labels drawn at random"))
    sft_diagnosis_truth: float = field(default=0.0, metadata=_help(
        "sft_answers format only: the share of diagnosis answers (drawn at random, seeded) that are the record's "
        "differential: its own label first, then the k - 1 labels whose captions are most alike in the data (1: "
        "every answer; the demo's warm start, docs/demo.md)"))
    freeze_vision: bool = field(default=False, metadata=_help(
        "freeze the vision tower's patch embedding and blocks (the merger, i.e. the connector, and the language "
        "model train), as a warm start on top of a pretrained encoder does"))
    gradient_checkpointing: bool = field(default=True, metadata=_help(
        "recompute activations in backward to save memory (TRL's default); off is faster for small models"))
    k: int = field(default=DEFAULT_K, metadata=_help("ranked diagnoses asked for in the Stage II prompt"))
    max_steps: int = field(default=100, metadata=_help("optimizer steps of the run (a resumed run counts from 0)"))
    learning_rate: float = field(default=1e-6, metadata=_help("peak learning rate (paper: 1e-6 Stage I, 5e-7 II)"))
    lr_scheduler: str = field(default="constant", metadata=_help(
        "learning-rate schedule: constant, constant_with_warmup, linear or cosine"))
    warmup_steps: int = field(default=0, metadata=_help("linear warm-up steps"))
    optimizer: str = field(default="adamw_torch", metadata=_help(
        "HF Trainer optimizer name: adamw_torch (paper: AdamW), adamw_torch_fused or sgd"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping norm (0: off)"))
    batch_size: int = field(default=8, metadata=_help(
        "sequences per device and optimizer micro-step (GRPO: completions, a multiple of num_generations)"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("micro-steps per optimizer step"))
    num_generations: int = field(default=8, metadata=_help("GRPO group size G: completions sampled per prompt"))
    beta: float = field(default=0.04, metadata=_help(
        "GRPO KL coefficient to the reference (the start model); the paper's objective has the KL term, so it "
        "is on by default (TRL's default is 0)"))
    epsilon: float = field(default=0.2, metadata=_help("GRPO clip range of the importance ratio (PPO's epsilon)"))
    loss_type: str = field(default="grpo", metadata=_help(
        "GRPO loss aggregation (TRL's loss_type): grpo (the paper's per-sequence mean; TRL's default is dapo), "
        "dapo, dr_grpo or bnpo"))
    temperature: float = field(default=1.0, metadata=_help("GRPO sampling temperature"))
    max_new_tokens: int = field(default=256, metadata=_help(
        "GRPO: longest completion sampled (sft keeps whole sequences)"))
    seed: int = field(default=0, metadata=_help("seed of the run (data order, sampling, tiny-default init)"))
    bf16: bool = field(default=False, metadata=_help("bf16 mixed precision (GPUs; the paper trains in bf16)"))
    save_steps: int = field(default=50, metadata=_help(
        "write DIR/checkpoint-N every this many steps (and always at the end)"))
    save_total_limit: int | None = field(default=None, metadata=_help("keep only the newest checkpoints; null: all"))
    logging_steps: int = field(default=1, metadata=_help("log metrics every this many steps"))
    tensorboard: bool = field(default=True, metadata=_help(
        "also write the logged metrics as TensorBoard event files into DIR/tensorboard (offline)"))
    dve: bool = field(default=True, metadata=_help(
        "use the Dynamic Vision Encoder; on a checkpoint without it, it is applied (and said so)"))
    dve_blocks: tuple[int, ...] | None = field(default=None, metadata=_help(
        "vision blocks given DVE layers; null: the second half of the tower"))
    dve_projections: tuple[str, ...] | None = field(default=None, metadata=_help(
        f"projections of those blocks replaced, among {list(PROJECTIONS)}; null: the MLP projections"))
    dve_num_bases: int = field(default=4, metadata=_help("K: frequency bases of every DVE layer"))
    reward: Mapping[str, Any] = field(default_factory=dict, metadata=_help(
        "reward settings (skinflow.rewards.config: format_weight, field_weights, rank_weights, group9_credit, "
        "group3_credit, k); recorded in run.json"))

    def __post_init__(self) -> None:
        _choice("stage", self.stage, STAGES)
        _choice("sft_target", self.sft_target, SFT_TARGETS)
        for name in ("model", "data", "out"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a path or null, got {describe(value)}")
        if self.split is not None:
            _choice("split", self.split, _SPLITS)
        _choice("lr_scheduler", self.lr_scheduler, _SCHEDULERS)
        _choice("optimizer", self.optimizer, _OPTIMIZERS)
        _choice("loss_type", self.loss_type, _LOSS_TYPES)
        for name, minimum in (("k", 1), ("max_steps", 1), ("warmup_steps", 0), ("batch_size", 1),
                              ("gradient_accumulation_steps", 1), ("num_generations", 2), ("max_new_tokens", 1),
                              ("save_steps", 1), ("logging_steps", 1), ("dve_num_bases", 1)):
            check_int(name, getattr(self, name), minimum=minimum)
        check_int("seed", self.seed, minimum=0, maximum=2**32 - 1)
        if self.save_total_limit is not None:
            check_int("save_total_limit", self.save_total_limit, minimum=1)
        for name, minimum, maximum in (("learning_rate", 0.0, 1.0), ("weight_decay", 0.0, None),
                                       ("max_grad_norm", 0.0, None), ("beta", 0.0, None), ("epsilon", 0.0, 1.0),
                                       ("sft_diagnosis_truth", 0.0, 1.0),
                                       ("temperature", 1e-6, None)):
            object.__setattr__(self, name, check_number(name, getattr(self, name), minimum=minimum, maximum=maximum))
        if self.learning_rate <= 0.0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        _choice("sft_answers", self.sft_answers, SFT_ANSWERS)
        if isinstance(self.sft_true_fields, (str, bytes)) or not isinstance(self.sft_true_fields, (list, tuple)):
            raise ValueError(f"sft_true_fields must be a list of caption fields, got {describe(self.sft_true_fields)}")
        for index, name in enumerate(self.sft_true_fields):
            _choice(f"sft_true_fields[{index}]", name, CAPTION_FIELDS)
        object.__setattr__(self, "sft_true_fields", tuple(self.sft_true_fields))
        for name in ("bf16", "dve", "tensorboard", "freeze_vision", "gradient_checkpointing", "sft_differential"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {describe(getattr(self, name))}")
        if self.dve_blocks is not None:
            if isinstance(self.dve_blocks, (str, bytes)) or not isinstance(self.dve_blocks, (list, tuple)):
                raise ValueError(f"dve_blocks must be a list of block indices or null, got {describe(self.dve_blocks)}")
            object.__setattr__(self, "dve_blocks", tuple(
                check_int(f"dve_blocks[{index}]", block, minimum=0) for index, block in enumerate(self.dve_blocks)))
        if self.dve_projections is not None:
            if isinstance(self.dve_projections, (str, bytes)) or not isinstance(self.dve_projections, (list, tuple)):
                raise ValueError(f"dve_projections must be a list among {list(PROJECTIONS)} or null, "
                                 f"got {describe(self.dve_projections)}")
            for index, name in enumerate(self.dve_projections):
                _choice(f"dve_projections[{index}]", name, PROJECTIONS)
            object.__setattr__(self, "dve_projections", tuple(self.dve_projections))
        if not isinstance(self.reward, Mapping):
            raise ValueError(f"reward must be a mapping of reward settings, got {describe(self.reward)}")
        from skinflow.rewards.config import configs_from_mapping

        try:
            configs_from_mapping(self.reward)
        except ValueError as error:
            raise ValueError(f"reward: {error}") from error
        object.__setattr__(self, "reward", dict(self.reward))
        if self.stage != "sft" and (self.batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise ValueError(f"batch_size × gradient_accumulation_steps ({self.batch_size} × "
                             f"{self.gradient_accumulation_steps}) must be a multiple of num_generations "
                             f"({self.num_generations}): every GRPO group is scored together")

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any] | None, where: str = "config") -> TrainConfig:
        """From a mapping of field names (a YAML recipe); unknown keys and bad values raise ``ValueError``."""
        if settings is None:
            return cls()
        if not isinstance(settings, Mapping):
            raise ValueError(f"{where} must be a mapping of settings, got {type(settings).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(str(key) for key in settings if key not in names)
        if unknown:
            raise ValueError(f"{where}: unknown settings {unknown}; known: {names}")
        try:
            return cls(**dict(settings))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (checked again); ``None`` values are ignored, so CLI flags left out keep the
        recipe's values."""
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})

    def to_json(self) -> dict[str, Any]:
        """The settings as plain JSON values (tuples as lists); ``TrainConfig.from_mapping`` reads it back."""
        result = {}
        for item in fields(self):
            value = getattr(self, item.name)
            result[item.name] = list(value) if isinstance(value, tuple) else value
        return result


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {describe(value)}")


def field_help() -> dict[str, str]:
    """Field name -> its documentation (the ``help`` metadata)."""
    return {item.name: item.metadata["help"] for item in fields(TrainConfig)}


def load_config(path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file (``yaml.safe_load``), with ``overrides`` applied (``None`` ignored).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and the key for YAML that
    does not parse, is not a mapping, has unknown keys or bad values.
    """
    settings, where = read_settings(path, **overrides)
    return TrainConfig.from_mapping(settings, where)


def read_settings(path: str | os.PathLike[str], **overrides: Any) -> tuple[dict[str, Any], str]:
    """The mapping of a YAML recipe (``yaml.safe_load``; an empty file is ``{}``) with ``overrides`` applied
    (``None`` ignored), and the ``config '<path>'`` label its errors start with.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for text that is not UTF-8, not YAML or not
    a mapping.
    """
    import yaml

    path = Path(path)
    where = f"config {str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{where}: not UTF-8 text") from error
    except yaml.YAMLError as error:
        raise ValueError(f"{where}: not valid YAML ({' '.join(str(error).split())})") from error
    settings = {} if settings is None else settings
    if not isinstance(settings, Mapping):
        raise ValueError(f"{where} must hold a mapping of settings, got {type(settings).__name__}")
    settings = dict(settings)
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return settings, where
