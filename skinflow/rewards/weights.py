"""The field weights α of the Stage I reward: data-driven, uniform or given, and their JSON record.

The paper weights each caption attribute by how much it drives the diagnosis. :meth:`CaptionWeights.from_records`
measures that on training records: for each field, over the records that know it, the mutual information between the
field's terms (the set of vocabulary terms of its value, :mod:`skinflow.rewards.terms`; an empty value is a value
too) and the diagnosis (the canonical label, synonyms merged), bias-corrected and normalised by the label entropy::

    I_f  = Σ_{x,y} p(x,y) log(p(x,y) / (p(x) p(y)))                (plug-in estimate, nats)
    Î_f  = max(0, I_f − (|X_f| − 1)(|Y_f| − 1) / (2 N_f))           (Miller–Madow bias correction)
    u_f  = Î_f / H(Y_f)                                             (uncertainty coefficient, in [0, 1])
    α_f  = max(u_f, floor · max_g u_g), then scaled so that Σ_f α_f = 1

The correction removes the information a field appears to carry by chance (a field drawn at random, such as the
synthetic set's location, would otherwise get weight from sampling noise alone); the floor (default 0.05) keeps every
field's weight above zero, so that no field a target knows is ignored. When no field carries information, the weights
are uniform. Every run should record ``weights.to_json()`` (the trainers do), which includes the method and the
per-field statistics.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skinflow.formats import CAPTION_FIELDS, normalize_value
from skinflow.rewards.terms import map_term, split_terms
from skinflow.taxonomy import LABELS, canonical

__all__ = ["DEFAULT_FLOOR", "METHODS", "CaptionWeights"]

METHODS = ("uniform", "given", "records")
DEFAULT_FLOOR = 0.05
_LABEL_SET = frozenset(LABELS)


def _finite_nonnegative(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return number


def value_terms(field_name: str, value: str) -> frozenset[str]:
    """The vocabulary terms (or free-text keys) of a normalised value of ``field_name``; empty when nothing."""
    terms: set[str] = set()
    for key in split_terms(value):
        terms.update(map_term(field_name, key))
    return frozenset(terms)


def _record_value(record_index: int, field_name: str, value: object) -> str:
    if isinstance(value, str):
        return normalize_value(value)
    if isinstance(value, (list, tuple)) and all(isinstance(term, str) for term in value):
        return ", ".join(term for term in (normalize_value(term) for term in value) if term)
    raise ValueError(f"records[{record_index}].caption.{field_name} must be a string or a list of strings, "
                     f"got {type(value).__name__}")


def _record_label(record_index: int, label: object) -> str:
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"records[{record_index}].label must be a non-empty string, got {label!r:.80}")
    return canonical(label) if label in _LABEL_SET else normalize_value(label)


def _entropy(counts: Iterable[int], total: int) -> float:
    return -sum(c / total * math.log(c / total) for c in counts if c)


@dataclass(frozen=True)
class CaptionWeights:
    """Field weights α of the Stage I reward, with how they were obtained.

    Attributes:
        weights: field -> weight for all twelve ``CAPTION_FIELDS`` (finite, >= 0, not all zero; the reward divides
            by the sum over the fields a target knows, so only ratios matter).
        method: ``"uniform"``, ``"given"`` or ``"records"``.
        details: JSON-able facts about the weights (for ``"records"``: the number of records, the floor and per
            field ``n``, ``mi``, ``mi_corrected``, ``label_entropy``, ``u``).
    """

    weights: Mapping[str, float]
    method: str = "given"
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"weights method must be one of {list(METHODS)}, got {self.method!r}")
        if not isinstance(self.weights, Mapping):
            raise ValueError(f"field weights must be a mapping of field -> weight, got {type(self.weights).__name__}")
        unknown = [name for name in self.weights if name not in CAPTION_FIELDS]
        if unknown:
            raise ValueError(f"field weights name unknown fields {unknown[:5]} (fields: {list(CAPTION_FIELDS)})")
        missing = [name for name in CAPTION_FIELDS if name not in self.weights]
        if missing:
            raise ValueError(f"field weights miss fields {missing} (use CaptionWeights.given for a partial mapping)")
        clean = {name: _finite_nonnegative(self.weights[name], f"field weight {name!r}") for name in CAPTION_FIELDS}
        if not any(clean.values()):
            raise ValueError("field weights are all zero")
        object.__setattr__(self, "weights", clean)
        object.__setattr__(self, "details", dict(self.details))

    @classmethod
    def uniform(cls) -> CaptionWeights:
        """Every field weighs the same."""
        return cls(dict.fromkeys(CAPTION_FIELDS, 1.0), "uniform")

    @classmethod
    def given(cls, weights: Mapping[str, object], default: float = 0.0) -> CaptionWeights:
        """User-given weights; fields not in ``weights`` get ``default``. Raises ``ValueError`` naming a bad field
        or value (unknown field, not a number, negative, not finite, all zero)."""
        if not isinstance(weights, Mapping):
            raise ValueError(f"field weights must be a mapping of field -> weight, got {type(weights).__name__}")
        unknown = [name for name in weights if name not in CAPTION_FIELDS]
        if unknown:
            raise ValueError(f"field weights name unknown fields {unknown[:5]} (fields: {list(CAPTION_FIELDS)})")
        default = _finite_nonnegative(default, "default field weight")
        return cls({name: weights.get(name, default) for name in CAPTION_FIELDS}, "given")

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], floor: float = DEFAULT_FLOOR) -> CaptionWeights:
        """Weights from how informative each field is about the label over training ``records`` (module docstring).

        Args:
            records: dicts with ``"caption"`` ({field: value}), ``"label"`` and optionally ``"caption_fields"`` (the
                fields the caption knows; all twelve when absent), e.g. the records of ``skinflow.data``.
            floor: the smallest weight relative to the largest, in [0, 1].

        Raises:
            ValueError: naming the record and key that is malformed, or when there are no records.
        """
        floor = _finite_nonnegative(floor, "floor")
        if floor > 1:
            raise ValueError(f"floor must be in [0, 1], got {floor!r}")
        joint = {name: Counter() for name in CAPTION_FIELDS}
        total = 0
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise ValueError(f"records[{index}] must be a mapping, got {type(record).__name__}")
            caption = record.get("caption")
            if not isinstance(caption, Mapping):
                raise ValueError(f"records[{index}].caption must be a mapping of field -> value")
            known = record.get("caption_fields")
            if known is None:
                known = CAPTION_FIELDS
            elif isinstance(known, str) or not isinstance(known, Iterable):
                raise ValueError(f"records[{index}].caption_fields must be a list of field names")
            known = list(known)
            bad = [name for name in [*known, *caption] if name not in CAPTION_FIELDS]
            if bad:
                raise ValueError(f"records[{index}] names unknown caption fields {bad[:5]}")
            label = _record_label(index, record.get("label"))
            total += 1
            for name in known:
                terms = value_terms(name, _record_value(index, name, caption.get(name, "")))
                joint[name][(terms, label)] += 1
        if total == 0:
            raise ValueError("records is empty: field weights need at least one training record")
        stats: dict[str, dict[str, float]] = {}
        for name in CAPTION_FIELDS:
            counts = joint[name]
            n = sum(counts.values())
            if n == 0:
                stats[name] = {"n": 0, "mi": 0.0, "mi_corrected": 0.0, "label_entropy": 0.0, "u": 0.0}
                continue
            px, py = Counter(), Counter()
            for (x, y), c in counts.items():
                px[x] += c
                py[y] += c
            mi = sum(c / n * math.log(c * n / (px[x] * py[y])) for (x, y), c in counts.items())
            corrected = max(0.0, mi - (len(px) - 1) * (len(py) - 1) / (2 * n))
            h_label = _entropy(py.values(), n)
            u = min(1.0, corrected / h_label) if h_label > 0 else 0.0
            stats[name] = {"n": n, "mi": mi, "mi_corrected": corrected, "label_entropy": h_label, "u": u}
        top = max(s["u"] for s in stats.values())
        details = {"records": total, "floor": floor, "fields": stats}
        if top <= 0:
            details["note"] = "no field carries information about the label; weights are uniform"
            return cls(dict.fromkeys(CAPTION_FIELDS, 1.0 / len(CAPTION_FIELDS)), "records", details)
        raw = {name: max(stats[name]["u"], floor * top) for name in CAPTION_FIELDS}
        scale = sum(raw.values())
        return cls({name: value / scale for name, value in raw.items()}, "records", details)

    def to_json(self) -> dict[str, Any]:
        """``{"method": ..., "weights": {field: weight}, "details": {...}}`` (JSON-serialisable)."""
        return {"method": self.method, "weights": dict(self.weights), "details": dict(self.details)}

    @classmethod
    def from_json(cls, data: object) -> CaptionWeights:
        """Weights from :meth:`to_json` output (a mapping or its JSON text); raises ``ValueError`` naming what is
        wrong."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError as error:
                raise ValueError(f"field weights are not valid JSON ({str(error)[:120]})") from None
        if not isinstance(data, Mapping) or "weights" not in data:
            raise ValueError("field weights JSON must be an object with 'method' and 'weights'")
        extra = sorted(set(data) - {"method", "weights", "details"})
        if extra:
            raise ValueError(f"field weights JSON has unknown keys {extra}")
        details = data.get("details", {})
        if not isinstance(details, Mapping):
            raise ValueError("field weights JSON 'details' must be an object")
        return cls(data["weights"], data.get("method", "given"), details)

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_json` to ``path`` (atomically: a temporary file renamed into place)."""
        path = os.fspath(path)
        temporary = f"{path}.tmp{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CaptionWeights:
        """Read weights written by :meth:`save`; raises ``ValueError`` naming the file when it is malformed."""
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise ValueError(f"cannot read field weights file {os.fspath(path)!r}: {error.strerror}") from None
        try:
            return cls.from_json(text)
        except ValueError as error:
            raise ValueError(f"field weights file {os.fspath(path)!r}: {error}") from None
