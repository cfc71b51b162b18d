"""The ground truth of both stages, defined once: what an answer is scored against, and its JSON form.

A :class:`CaptionTarget` (Stage I) states the value of each caption field it *knows*; a field it does not know is
absent, not empty. The synthetic set knows all twelve fields; a caption derived from SkinCon's 48 concepts knows only
the fields those concepts cover (:data:`SKINCON_FIELDS`): there an absent concept means an empty value, while
location, size, ... are unknown. Rewards and metrics score only the known fields.

A :class:`DiagnosisTarget` (Stage II) is one Fitzpatrick17k label and the number of ranked candidates asked for.

JSON (the ``ground_truth`` of the verl and TRL exports, one string per row)::

    {"stage": "caption", "caption": {"color": "red", "surface": "scaly", "shape": "", ...}}   # known fields only
    {"stage": "diagnosis", "label": "psoriasis", "canonical": "psoriasis", "nine_group": "inflammatory",
     "three_group": "non-neoplastic", "k": 6}

Pure Python: no torch, transformers or PIL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skinflow.formats import CAPTION_FIELDS, DEFAULT_K, SKINCON_CONCEPTS, normalize_value, split_values
from skinflow.taxonomy import LABELS, canonical, nine_group, three_group
from skinflow.util import check_int, describe

STAGES = ("caption", "diagnosis")
SKINCON_FIELDS: tuple[str, ...] = tuple(f for f in CAPTION_FIELDS if f in {fv[0] for fv in SKINCON_CONCEPTS.values()})
_LABELS = frozenset(LABELS)
_MAX_JSON_CHARS = 1_000_000


class TargetError(ValueError):
    """A ground truth that is not a valid target; the message names the part that is wrong."""


def _value_text(field: str, value: object) -> str:
    """A caption value (str or sequence of str) as its normalised text."""
    if isinstance(value, str):
        return normalize_value(value)
    if isinstance(value, Sequence) and all(isinstance(term, str) for term in value):
        return ", ".join(term for term in (normalize_value(term) for term in value) if term)
    raise TargetError(f"caption.{field} must be a string or a list of strings, got {type(value).__name__}")


@dataclass(frozen=True)
class CaptionTarget:
    """The known fields of a Stage I target.

    Attributes:
        values: field -> normalised value for every known field, in ``CAPTION_FIELDS`` order; ``""`` means known to
            be empty. Fields not in it are unknown.
    """

    values: Mapping[str, str]

    def __post_init__(self) -> None:
        if not isinstance(self.values, Mapping):
            raise TargetError(f"caption must be an object of field -> value, got {type(self.values).__name__}")
        unknown = [field for field in self.values if field not in CAPTION_FIELDS]
        if unknown:
            raise TargetError(f"caption has unknown fields {unknown[:5]} (fields: {list(CAPTION_FIELDS)})")
        if not self.values:
            raise TargetError("caption knows no field (a target must state at least one)")
        clean = {field: _value_text(field, self.values[field]) for field in CAPTION_FIELDS if field in self.values}
        object.__setattr__(self, "values", clean)
        object.__setattr__(self, "_terms", {field: tuple(split_values(value)) for field, value in clean.items()})

    @classmethod
    def from_caption(cls, caption: Mapping[str, object], known: Iterable[str] | None = None) -> CaptionTarget:
        """The target of a record's caption (all twelve fields) of which the fields ``known`` (default all) are
        known."""
        if not isinstance(caption, Mapping):
            raise TargetError(f"caption must be an object of field -> value, got {type(caption).__name__}")
        fields = CAPTION_FIELDS if known is None else tuple(known)
        bad = [field for field in fields if field not in CAPTION_FIELDS]
        if bad:
            raise TargetError(f"caption_fields has unknown fields {bad[:5]} (fields: {list(CAPTION_FIELDS)})")
        return cls({field: caption.get(field, "") for field in CAPTION_FIELDS if field in fields})

    @property
    def known(self) -> tuple[str, ...]:
        """The known fields, in ``CAPTION_FIELDS`` order."""
        return tuple(self.values)

    def terms(self, field: str) -> tuple[str, ...]:
        """The normalised terms of a known field (``()`` when it is known to be empty)."""
        return self._terms[field]

    @property
    def is_empty(self) -> bool:
        """True when every known field is empty (nothing to describe)."""
        return not any(self.values.values())

    def to_json(self) -> dict[str, Any]:
        return {"stage": "caption", "caption": dict(self.values)}


@dataclass(frozen=True)
class DiagnosisTarget:
    """A Stage II target: the true label (one of ``taxonomy.LABELS``) and the number of candidates asked for."""

    label: str
    k: int = DEFAULT_K

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or self.label not in _LABELS:
            raise TargetError(f"label {describe(self.label)} is not a Fitzpatrick17k label")
        try:
            object.__setattr__(self, "k", check_int("k", self.k, minimum=1))
        except ValueError as error:
            raise TargetError(str(error)) from None

    @property
    def canonical(self) -> str:
        return canonical(self.label)

    @property
    def nine_group(self) -> str:
        return nine_group(self.label)

    @property
    def three_group(self) -> str:
        return three_group(self.label)

    def to_json(self) -> dict[str, Any]:
        return {"stage": "diagnosis", "label": self.label, "canonical": self.canonical,
                "nine_group": self.nine_group, "three_group": self.three_group, "k": self.k}


Target = CaptionTarget | DiagnosisTarget


def target_from_json(data: object, stage: str | None = None) -> Target:
    """A target from its JSON object or string (see the module docstring), checked.

    Args:
        data: the object, or its JSON text.
        stage: when given, the stage the target must be of.

    Raises:
        TargetError (a ValueError) naming what is wrong.
    """
    if isinstance(data, str):
        if len(data) > _MAX_JSON_CHARS:
            raise TargetError(f"{len(data)} characters, longer than {_MAX_JSON_CHARS}")
        try:
            data = json.loads(data)
        except RecursionError:
            raise TargetError("not valid JSON (nested too deeply)") from None
        except ValueError as error:  # also an integer of more than 4300 digits
            raise TargetError(f"not valid JSON ({str(error)[:120]})") from None
    if not isinstance(data, Mapping) or data.get("stage") not in STAGES:
        raise TargetError(f"must be an object with 'stage' in {list(STAGES)}, got {describe(data)}")
    if stage is not None and data["stage"] != stage:
        raise TargetError(f"stage {data['stage']!r} differs from the row's stage {stage!r}")
    if data["stage"] == "caption":
        return CaptionTarget(data.get("caption"))
    target = DiagnosisTarget(data.get("label"), data.get("k", DEFAULT_K))
    for key in ("canonical", "nine_group", "three_group"):
        if key in data and data[key] != getattr(target, key):
            raise TargetError(f"{key} {describe(data[key])} does not match the label {target.label!r}")
    return target


def caption_target_of(record: Mapping[str, Any]) -> CaptionTarget:
    """The caption target of a record: its ``caption`` over its ``caption_fields`` (all twelve when absent)."""
    return CaptionTarget.from_caption(record["caption"], record.get("caption_fields"))


def diagnosis_target_of(record: Mapping[str, Any], k: int = DEFAULT_K) -> DiagnosisTarget:
    """The diagnosis target of a record: its ``label``, with ``k`` candidates asked for."""
    return DiagnosisTarget(record["label"], k)
