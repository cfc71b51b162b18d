"""The settings of both rewards, as frozen dataclasses built from keyword arguments or a YAML-like mapping.

Every setting name is unique across the two stages, so one flat mapping (verl's ``reward_kwargs``, a YAML block)
can hold both; :func:`configs_from_mapping` splits it and names any key it does not know.

=====================  =========  ===========================================================================
key                    default    meaning
=====================  =========  ===========================================================================
``format_weight``      ``0.1``    λ of Stage I: score = (1 − λ)·content + λ·format, in [0, 1]
``field_weights``      uniform    α of Stage I: ``"uniform"``; a mapping field -> weight (given; missing
                                  fields weigh 0); a saved :class:`CaptionWeights` JSON object
                                  (``{"method": ..., "weights": ...}``); or the path of a JSON file holding one
``rank_weights``       linear     w_r of Stage II: ``"linear"`` (w_r = (K − r + 1)/K), ``"reciprocal"``
                                  (w_r = 1/r) or a list [w_1, w_2, ...] with w_1 = 1, strictly decreasing, > 0
                                  (ranks past the list score 0)
``group9_credit``      ``0.0``    Stage II credit, in [0, 1], for a candidate of the truth's 9-way group
``group3_credit``      ``0.0``    Stage II credit, in [0, 1], for a candidate of the truth's 3-way group
``k``                  target's   Stage II: number of distinct candidates read (None: the target's ``k``)
=====================  =========  ===========================================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from skinflow.rewards.weights import CaptionWeights

__all__ = ["RANK_SCHEMES", "CaptionRewardConfig", "DiagnosisRewardConfig", "configs_from_mapping"]

RANK_SCHEMES = ("linear", "reciprocal")


def _fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    number = float(value)
    if not (0.0 <= number <= 1.0):  # also refuses NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return number


def _field_weights(value: object) -> CaptionWeights:
    if isinstance(value, CaptionWeights):
        return value
    if value is None or value == "uniform":
        return CaptionWeights.uniform()
    if isinstance(value, (str, os.PathLike)):
        return CaptionWeights.load(value)
    if isinstance(value, Mapping):
        if "weights" in value:
            return CaptionWeights.from_json(dict(value))
        return CaptionWeights.given(dict(value))
    raise ValueError(f"field_weights must be 'uniform', a mapping field -> weight, a weights JSON object or the path "
                     f"of a weights file, got {type(value).__name__}")


def _rank_weights(value: object) -> str | tuple[float, ...]:
    if isinstance(value, str):
        if value not in RANK_SCHEMES:
            raise ValueError(f"rank_weights must be one of {list(RANK_SCHEMES)} or a list of weights, got {value!r}")
        return value
    if not isinstance(value, Sequence) or not value:
        raise ValueError(f"rank_weights must be one of {list(RANK_SCHEMES)} or a non-empty list of weights, "
                         f"got {value!r}")
    weights = []
    for index, weight in enumerate(value):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(float(weight)):
            raise ValueError(f"rank_weights[{index}] must be a finite number, got {weight!r}")
        weights.append(float(weight))
    if weights[0] != 1.0:
        raise ValueError(f"rank_weights[0] must be 1 (a first-ranked correct answer scores 1), got {weights[0]!r}")
    for index in range(1, len(weights)):
        if not (0.0 < weights[index] < weights[index - 1]):
            raise ValueError(f"rank_weights must be > 0 and strictly decreasing, but rank_weights[{index}] = "
                             f"{weights[index]!r} after {weights[index - 1]!r}")
    return tuple(weights)


@dataclass(frozen=True)
class CaptionRewardConfig:
    """Stage I reward settings.

    Attributes:
        format_weight: λ in [0, 1]; score = (1 − λ)·content + λ·format. Default 0.1: the content (the attributes)
            is what Stage I teaches, so it dominates; the format term is a small shaping bonus that keeps the
            twelve-line layout (which the Stage II prompt and the parsers rely on) without letting a well-formatted
            but wrong caption score well (it scores at most λ).
        field_weights: the α_i (:class:`CaptionWeights`); any value ``configs_from_mapping`` accepts is converted.
    """

    format_weight: float = 0.1
    field_weights: CaptionWeights = field(default_factory=CaptionWeights.uniform)

    def __post_init__(self) -> None:
        object.__setattr__(self, "format_weight", _fraction(self.format_weight, "format_weight"))
        object.__setattr__(self, "field_weights", _field_weights(self.field_weights))

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any] | None) -> CaptionRewardConfig:
        """From a mapping of the keys above (unknown keys raise ``ValueError`` naming them)."""
        return _from_mapping(cls, settings)

    def to_json(self) -> dict[str, Any]:
        return {"format_weight": self.format_weight, "field_weights": self.field_weights.to_json()}


@dataclass(frozen=True)
class DiagnosisRewardConfig:
    """Stage II reward settings.

    Attributes:
        rank_weights: ``"linear"`` (default, w_r = (K − r + 1)/K), ``"reciprocal"`` (w_r = 1/r) or explicit weights
            (w_1 = 1, strictly decreasing, > 0; ranks beyond the list score 0).
        group9_credit: credit c9 in [0, 1] for the same 9-way group; 0 (off) as in the paper.
        group3_credit: credit c3 in [0, 1] for the same 3-way group; 0 (off) as in the paper.
        k: candidates read; ``None`` (default) uses the target's ``k``.
    """

    rank_weights: str | tuple[float, ...] = "linear"
    group9_credit: float = 0.0
    group3_credit: float = 0.0
    k: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rank_weights", _rank_weights(self.rank_weights))
        object.__setattr__(self, "group9_credit", _fraction(self.group9_credit, "group9_credit"))
        object.__setattr__(self, "group3_credit", _fraction(self.group3_credit, "group3_credit"))
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            raise ValueError(f"k must be None or a positive int, got {self.k!r}")

    def weight(self, rank: int | None, k: int) -> float:
        """w_rank for ``k`` candidates: 1 at rank 1, strictly decreasing, 0 beyond ``k`` or for ``None``."""
        if rank is None or rank < 1 or rank > k:
            return 0.0
        if self.rank_weights == "linear":
            return (k - rank + 1) / k
        if self.rank_weights == "reciprocal":
            return 1.0 / rank
        return self.rank_weights[rank - 1] if rank <= len(self.rank_weights) else 0.0

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any] | None) -> DiagnosisRewardConfig:
        """From a mapping of the keys above (unknown keys raise ``ValueError`` naming them)."""
        return _from_mapping(cls, settings)

    def to_json(self) -> dict[str, Any]:
        weights = self.rank_weights if isinstance(self.rank_weights, str) else list(self.rank_weights)
        return {"rank_weights": weights, "group9_credit": self.group9_credit, "group3_credit": self.group3_credit,
                "k": self.k}


def plain_settings(value: object) -> object:
    """Mappings and sequences (OmegaConf's DictConfig/ListConfig included) as dicts and lists."""
    if isinstance(value, Mapping):
        return {key: plain_settings(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain_settings(item) for item in value]
    return value


def _from_mapping(cls: type, settings: Mapping[str, Any] | None):
    if settings is None:
        return cls()
    if not isinstance(settings, Mapping):
        raise ValueError(f"{cls.__name__} settings must be a mapping, got {type(settings).__name__}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(str(key) for key in settings if key not in names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings {unknown}; known: {names}")
    return cls(**{key: plain_settings(value) for key, value in settings.items()})


CAPTION_KEYS = tuple(f.name for f in fields(CaptionRewardConfig))
DIAGNOSIS_KEYS = tuple(f.name for f in fields(DiagnosisRewardConfig))


def configs_from_mapping(
    settings: Mapping[str, Any] | None, ignore: frozenset[str] = frozenset()
) -> tuple[CaptionRewardConfig, DiagnosisRewardConfig]:
    """Both stages' settings from one flat mapping (the table in the module docstring).

    Args:
        settings: keys of either config; ``None`` or ``{}`` gives the defaults.
        ignore: keys to skip silently (e.g. what a trainer passes along that is not a setting).

    Raises:
        ValueError: a key of neither config (named), or a bad value (named).
    """
    settings = {} if settings is None else settings
    if not isinstance(settings, Mapping):
        raise ValueError(f"reward settings must be a mapping, got {type(settings).__name__}")
    unknown = sorted(str(key) for key in settings if key not in CAPTION_KEYS + DIAGNOSIS_KEYS and key not in ignore)
    if unknown:
        raise ValueError(f"unknown reward settings {unknown}; known: {list(CAPTION_KEYS + DIAGNOSIS_KEYS)}")
    caption = {key: settings[key] for key in CAPTION_KEYS if key in settings}
    diagnosis = {key: settings[key] for key in DIAGNOSIS_KEYS if key in settings}
    return CaptionRewardConfig.from_mapping(caption), DiagnosisRewardConfig.from_mapping(diagnosis)
