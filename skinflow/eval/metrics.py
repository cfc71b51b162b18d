"""Every number of the evaluation, from the rows of a predictions file (docs/design.md §3b, docs/evaluation.md).

Pure Python (no torch, numpy, PIL or matplotlib). The scoring is the rewards' core: ``rewards.match_ranks`` for the
four credit levels, ``rewards.score_diagnosis`` for the Stage II reward, ``rewards.candidate_labels`` for the
candidates the safety metrics and the confusion matrix read, ``rewards.score_caption`` for Stage I. So an answer is
scored the same way in training and in evaluation, whoever produced it.

A bad *row* (a missing key, a label that is not a Fitzpatrick17k label, a value of the wrong type, a malformed
caption target, a duplicate id) is a :class:`PredictionError` (a ``ValueError``) naming the file and line of each bad
row. The model's *answers* (``diagnosis_text``, ``caption_text``) can be anything: every value is scored (a non-str
is unparseable) and nothing about them raises.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skinflow.formats import CAPTION_FIELDS, DEFAULT_K
from skinflow.rewards import (
    CaptionRewardConfig,
    DiagnosisRewardConfig,
    candidate_labels,
    match_ranks,
    score_caption,
    score_diagnosis,
)
from skinflow.targets import CaptionTarget, DiagnosisTarget, TargetError
from skinflow.taxonomy import LABELS, NINE_GROUPS, nine_group, three_group
from skinflow.util import check_int, describe

__all__ = [
    "CONFUSION_NONE",
    "LEVELS",
    "MALIGNANT",
    "REQUIRED_KEYS",
    "SKIN_GROUPS",
    "EvalSettings",
    "PredictionError",
    "bootstrap_mean_ci",
    "check_rows",
    "compute_metrics",
    "load_predictions",
    "percentile",
]

LEVELS: tuple[str, ...] = ("exact", "synonym", "group9", "group3")
REQUIRED_KEYS: tuple[str, ...] = ("id", "label", "skin_type", "split", "diagnosis_text", "caption_text",
                                  "caption_target")
MALIGNANT = "malignant"
"""The malignant 3-way group (``taxonomy.three_group``)."""
SKIN_GROUPS: dict[str, tuple[int | None, ...]] = {
    "1": (1,), "2": (2,), "3": (3,), "4": (4,), "5": (5,), "6": (6,), "unknown": (None,),
    "I-II": (1, 2), "III-IV": (3, 4), "V-VI": (5, 6),
}
"""The ``by_skin_type`` groups of report.json and the Fitzpatrick types (``None``: unknown) each one holds."""
CONFUSION_NONE = "none"
"""The confusion matrix's column for an answer whose first candidate matches no label (or that has none)."""
_LABELS = frozenset(LABELS)
_MAX_SHOWN_ERRORS = 20
_MAX_LINE_BYTES = 50_000_000


class PredictionError(ValueError):
    """Bad rows of a predictions file; ``errors`` holds one message per bad row (``<file>:<line>: ...``)."""

    def __init__(self, title: str, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        shown = list(self.errors[:_MAX_SHOWN_ERRORS])
        if len(self.errors) > _MAX_SHOWN_ERRORS:
            shown.append(f"... and {len(self.errors) - _MAX_SHOWN_ERRORS} more")
        super().__init__(f"{title}:\n" + "\n".join(shown) if shown else title)


@dataclass(frozen=True)
class EvalSettings:
    """The settings of one evaluation (all recorded in report.json's ``settings``).

    Attributes:
        k: candidates read per answer (K of acc@1..K); ``None``: the rows' ``k`` when they all agree, else
            ``formats.DEFAULT_K``.
        bootstrap: bootstrap resamples per confidence interval (0: no intervals, every ``ci`` is null).
        seed: seed of the bootstrap (the same seed gives the same intervals).
        confidence: the intervals' coverage (percentile bootstrap).
        diagnosis: the Stage II reward's settings (default ``DiagnosisRewardConfig()``).
        caption: the Stage I reward's settings (default ``CaptionRewardConfig()``).
    """

    k: int | None = None
    bootstrap: int = 1000
    seed: int = 0
    confidence: float = 0.95
    diagnosis: DiagnosisRewardConfig | None = None
    caption: CaptionRewardConfig | None = None

    def __post_init__(self) -> None:
        if self.k is not None:
            check_int("k", self.k, minimum=1)
        check_int("bootstrap", self.bootstrap, minimum=0)
        check_int("seed", self.seed, minimum=0)
        if isinstance(self.confidence, bool) or not isinstance(self.confidence, float | int) \
                or not 0.0 < float(self.confidence) < 1.0:
            raise ValueError(f"confidence must be a number in (0, 1), got {describe(self.confidence)}")


# ---------------------------------------------------------------------------------------------------------- rows


def _row_problems(row: object) -> list[str]:
    """What is wrong with one predictions row (empty: nothing). The answers themselves are never checked."""
    if not isinstance(row, Mapping):
        return [f"must be a JSON object, got {type(row).__name__}"]
    problems = [f"missing key {key!r}" for key in REQUIRED_KEYS if key not in row]
    if "id" in row and (not isinstance(row["id"], str) or not row["id"]):
        problems.append(f"'id' must be a non-empty string, got {describe(row['id'])}")
    if "label" in row and (not isinstance(row["label"], str) or row["label"] not in _LABELS):
        problems.append(f"'label' {describe(row['label'])} is not a Fitzpatrick17k label")
    if "skin_type" in row:
        value = row["skin_type"]
        if value is not None and (type(value) is not int or not 1 <= value <= 6):
            problems.append(f"'skin_type' must be an int 1-6 or null (unknown), got {describe(value)}")
    if "split" in row and not isinstance(row["split"], str):
        problems.append(f"'split' must be a string, got {describe(row['split'])}")
    if "caption_target" in row and row["caption_target"] is not None:
        try:
            CaptionTarget(row["caption_target"])
        except TargetError as error:
            problems.append(f"'caption_target': {error}")
    if "k" in row and row["k"] is not None and (type(row["k"]) is not int or row["k"] < 1):
        problems.append(f"'k' must be a positive int, got {describe(row['k'])}")
    return problems


def check_rows(rows: Sequence[object], source: str = "predictions", lines: Sequence[int] | None = None) -> None:
    """Raise one :class:`PredictionError` naming ``source:line`` of every bad row (``lines``: the file line of
    each row; default 1, 2, ...). Also refuses duplicate ids and an empty set."""
    lines = list(range(1, len(rows) + 1)) if lines is None else list(lines)
    errors: list[str] = []
    first: dict[str, int] = {}
    for row, line in zip(rows, lines):
        problems = _row_problems(row)
        identifier = row.get("id") if isinstance(row, Mapping) else None
        if isinstance(identifier, str) and identifier:
            if identifier in first:
                problems.append(f"duplicate id {describe(identifier)} (first on line {first[identifier]})")
            else:
                first[identifier] = line
        if problems:
            errors.append(f"{source}:{line}: " + "; ".join(problems))
    if errors:
        raise PredictionError(f"{len(errors)} bad rows in {source}", errors)
    if not rows:
        raise PredictionError(f"{source}: no predictions (the file has no rows)", [])


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def load_predictions(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a predictions JSONL file (§3b), checked (:func:`check_rows`); blank lines are skipped.

    Raises ``FileNotFoundError`` for a missing file or a directory and :class:`PredictionError` (a ``ValueError``)
    naming ``<path>:<line>`` of every line that is not UTF-8, not JSON, not an object or not a valid row.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"predictions file {str(path)!r} {what}")
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    errors: list[str] = []
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            if len(raw) > _MAX_LINE_BYTES:
                errors.append(f"{path}:{number}: line longer than {_MAX_LINE_BYTES} bytes")
                continue
            try:
                text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
            except UnicodeDecodeError as error:
                errors.append(f"{path}:{number}: not UTF-8 text (byte {error.start + 1} of the line)")
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text, parse_constant=_refuse_constant)
            except RecursionError:
                errors.append(f"{path}:{number}: not valid JSON (nested too deeply)")
                continue
            except ValueError as error:
                errors.append(f"{path}:{number}: not valid JSON ({str(error)[:100]})")
                continue
            rows.append(row)
            numbers.append(number)
    if errors:
        raise PredictionError(f"{len(errors)} bad lines in {path}", errors)
    check_rows(rows, str(path), numbers)
    return rows


# ----------------------------------------------------------------------------------------------------- bootstrap


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0 <= q <= 1) of already sorted values, linearly interpolated (numpy's default)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def _rng(seed: int, name: str) -> random.Random:
    """A generator for one interval: the same seed and name give the same draws on every machine and run."""
    return random.Random(f"skinflow-eval:{seed}:{name}")


def _ci(values: list[float], confidence: float) -> list[float] | None:
    if not values:
        return None
    values.sort()
    tail = (1.0 - confidence) / 2
    return [percentile(values, tail), percentile(values, 1.0 - tail)]


def bootstrap_mean_ci(values: Sequence[float | None], *, resamples: int, seed: int, name: str,
                      confidence: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (``None`` entries are cases that do not count, e.g.
    benign cases for missed malignancy: a resample's mean is over its non-``None`` entries, and a resample with none
    is skipped). ``None`` when there is nothing to resample or ``resamples`` is 0."""
    if not values or resamples <= 0 or all(value is None for value in values):
        return None
    rng = _rng(seed, name)
    n = len(values)
    means: list[float] = []
    for _ in range(resamples):
        drawn = [value for value in rng.choices(values, k=n) if value is not None]
        if drawn:
            means.append(math.fsum(drawn) / len(drawn))
    return _ci(means, confidence)


def _bootstrap_gap(a: Sequence[float], b: Sequence[float], *, resamples: int, seed: int, name: str,
                   confidence: float) -> list[float] | None:
    """Percentile bootstrap interval of mean(a) − mean(b), the two groups resampled independently."""
    if not a or not b or resamples <= 0:
        return None
    rng = _rng(seed, name)
    gaps = [math.fsum(rng.choices(a, k=len(a))) / len(a) - math.fsum(rng.choices(b, k=len(b))) / len(b)
            for _ in range(resamples)]
    return _ci(gaps, confidence)


# ------------------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class _Case:
    """What one row contributes: ranks per level, reward, parse state, malignancy and the confusion cell."""

    ranks: dict[str, int | None]
    reward: float
    parsed: bool
    truth_malignant: bool
    any_malignant: bool
    first_malignant: bool
    truth_group9: str
    first_group9: str
    skin_type: int | None


def _score_case(row: Mapping[str, Any], k: int, config: DiagnosisRewardConfig) -> _Case:
    label = row["label"]
    answer = row["diagnosis_text"]
    target = DiagnosisTarget(label, k)
    candidates = candidate_labels(answer, k)
    labels = [matched for _, matched in candidates]
    first = labels[0] if labels else None
    return _Case(
        ranks=match_ranks(answer, target, k),
        reward=score_diagnosis(answer, target, config).score,
        parsed=bool(candidates),
        truth_malignant=three_group(label) == MALIGNANT,
        any_malignant=any(matched is not None and three_group(matched) == MALIGNANT for matched in labels),
        first_malignant=first is not None and three_group(first) == MALIGNANT,
        truth_group9=nine_group(label),
        first_group9=nine_group(first) if first is not None else CONFUSION_NONE,
        skin_type=row["skin_type"],
    )


def _rate(count: int, n: int) -> dict[str, Any]:
    return {"rate": count / n if n else None, "count": count, "n": n}


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _hit(case: _Case, level: str, j: int) -> float:
    rank = case.ranks[level]
    return float(rank is not None and rank <= j)


def _missed(case: _Case) -> float | None:
    """1.0 for a missed malignancy, 0.0 for a malignant case caught, ``None`` for a case that is not malignant."""
    return float(not case.any_malignant) if case.truth_malignant else None


def _estimate(values: Sequence[float | None], settings: EvalSettings, name: str) -> dict[str, Any]:
    counted = [value for value in values if value is not None]
    return {"value": _mean(counted),
            "ci": bootstrap_mean_ci(values, resamples=settings.bootstrap, seed=settings.seed, name=name,
                                    confidence=settings.confidence) if counted else None}


def _by_skin_type(cases: Sequence[_Case], k: int, settings: EvalSettings) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for group, types in SKIN_GROUPS.items():
        members = [case for case in cases if case.skin_type in types]
        missed = [_missed(case) for case in members]
        result[group] = {
            "n": len(members),
            "top1": _estimate([_hit(case, "synonym", 1) for case in members], settings, f"{group}/top1"),
            "topk": _estimate([_hit(case, "synonym", k) for case in members], settings, f"{group}/topk"),
            "missed_malignancy": {"n": sum(value is not None for value in missed),
                                  **_estimate(missed, settings, f"{group}/missed_malignancy")},
        }
    return result


def _gap(cases: Sequence[_Case], k: int, settings: EvalSettings) -> dict[str, Any]:
    """I-II minus V-VI, at top-1 and top-k (synonym level), with a bootstrap interval of the difference."""
    light = [case for case in cases if case.skin_type in SKIN_GROUPS["I-II"]]
    dark = [case for case in cases if case.skin_type in SKIN_GROUPS["V-VI"]]
    gap: dict[str, Any] = {"groups": ["I-II", "V-VI"], "n": [len(light), len(dark)]}
    for metric, j in (("top1", 1), ("topk", k)):
        a = [_hit(case, "synonym", j) for case in light]
        b = [_hit(case, "synonym", j) for case in dark]
        value = (math.fsum(a) / len(a) - math.fsum(b) / len(b)) if a and b else None
        gap[metric] = {"value": value,
                       "ci": _bootstrap_gap(a, b, resamples=settings.bootstrap, seed=settings.seed,
                                            name=f"gap/{metric}", confidence=settings.confidence)
                       if value is not None else None}
    return gap


def _worst(by_type: Mapping[str, Any], groups: Iterable[str]) -> dict[str, Any] | None:
    """The group with the lowest top-k (then top-1, then name) among ``groups`` that have cases."""
    present = [g for g in groups if by_type[g]["n"]]
    if not present:
        return None
    group = min(present, key=lambda g: (by_type[g]["topk"]["value"], by_type[g]["top1"]["value"], g))
    return {"group": group, "n": by_type[group]["n"], "topk": by_type[group]["topk"]["value"],
            "top1": by_type[group]["top1"]["value"]}


def _caption_metrics(rows: Sequence[Mapping[str, Any]], config: CaptionRewardConfig) -> dict[str, Any]:
    """Stage I over the rows with a caption target and a caption answer (``caption_text`` null: not asked)."""
    sums = dict.fromkeys(CAPTION_FIELDS, 0.0)
    known = dict.fromkeys(CAPTION_FIELDS, 0)
    rewards: list[float] = []
    parts_sum: dict[str, float] = {"content": 0.0, "format": 0.0, "parsed": 0.0, "stated": 0.0,
                                   "hallucinations": 0.0}
    for row in rows:
        if row["caption_target"] is None or row["caption_text"] is None:
            continue
        result = score_caption(row["caption_text"], CaptionTarget(row["caption_target"]), config)
        rewards.append(result.score)
        for name in parts_sum:
            parts_sum[name] += result.parts[name]
        for field in CAPTION_FIELDS:
            if result.parts[f"known/{field}"]:
                known[field] += 1
                sums[field] += result.parts[f"field/{field}"]
    n = len(rewards)
    return {
        "n": n,
        "reward": _mean(rewards),
        **{name: (total / n if n else None) for name, total in parts_sum.items()},
        "fields": {field: {"value": sums[field] / known[field] if known[field] else None, "n": known[field]}
                   for field in CAPTION_FIELDS},
    }


def _resolve_k(rows: Sequence[Mapping[str, Any]], k: int | None) -> int:
    if k is not None:
        return k
    ks = {row.get("k") for row in rows}
    if len(ks) == 1 and isinstance(next(iter(ks)), int):
        return next(iter(ks))
    return DEFAULT_K


def compute_metrics(rows: Sequence[Mapping[str, Any]], settings: EvalSettings | None = None,
                    source: str = "predictions") -> dict[str, Any]:
    """Every metric of the evaluation from the rows of a predictions file (checked first, see :func:`check_rows`).

    Returns a JSON-serialisable dict with the §3b keys (``n``, ``k``, ``topk``, ``safety``, ``by_skin_type``,
    ``settings``) and ``overall`` (Top-1 and Top-K at the synonym level with bootstrap intervals), ``reward`` (mean
    Stage II reward), ``unparseable``, ``skin_type_gap``, ``worst_group``,
    ``caption`` (Stage I), ``confusion`` (9-way, truth rows vs first-candidate columns plus ``"none"``) and
    ``splits`` (rows per split). Fractions are in [0, 1]; a value over no cases is ``None`` (null).
    """
    settings = EvalSettings() if settings is None else settings
    check_rows(rows, source)
    k = _resolve_k(rows, settings.k)
    diagnosis_config = settings.diagnosis or DiagnosisRewardConfig()
    caption_config = settings.caption or CaptionRewardConfig()
    cases = [_score_case(row, k, diagnosis_config) for row in rows]
    n = len(cases)
    topk = {level: [math.fsum(_hit(case, level, j) for case in cases) / n for j in range(1, k + 1)]
            for level in LEVELS}
    malignant = [case for case in cases if case.truth_malignant]
    others = [case for case in cases if not case.truth_malignant]
    safety = {
        "missed_malignancy": _rate(sum(not case.any_malignant for case in malignant), len(malignant)),
        "overcall": _rate(sum(case.first_malignant for case in others), len(others)),
    }
    by_type = _by_skin_type(cases, k, settings)
    overall = {"n": n, "level": "synonym",
               "top1": _estimate([_hit(case, "synonym", 1) for case in cases], settings, "all/top1"),
               "topk": _estimate([_hit(case, "synonym", k) for case in cases], settings, "all/topk")}
    columns = [*NINE_GROUPS, CONFUSION_NONE]
    matrix = [[0] * len(columns) for _ in NINE_GROUPS]
    for case in cases:
        matrix[NINE_GROUPS.index(case.truth_group9)][columns.index(case.first_group9)] += 1
    unparseable = sum(not case.parsed for case in cases)
    splits: dict[str, int] = {}
    for row in rows:
        splits[row["split"]] = splits.get(row["split"], 0) + 1
    return {
        "n": n,
        "k": k,
        "topk": topk,
        "overall": overall,
        "safety": safety,
        "by_skin_type": by_type,
        "settings": {
            "k": k,
            "bootstrap": settings.bootstrap,
            "seed": settings.seed,
            "confidence": settings.confidence,
            "ci_method": "percentile bootstrap over cases",
            "by_skin_type_level": "synonym",
            "diagnosis_reward": diagnosis_config.to_json(),
            "caption_reward": caption_config.to_json(),
        },
        "reward": {"mean": _mean([case.reward for case in cases]), "n": n},
        "unparseable": _rate(unparseable, n),
        "skin_type_gap": _gap(cases, k, settings),
        "worst_group": {"type": _worst(by_type, ("1", "2", "3", "4", "5", "6")),
                        "pair": _worst(by_type, ("I-II", "III-IV", "V-VI"))},
        "caption": _caption_metrics(rows, caption_config),
        "confusion": {"rows": list(NINE_GROUPS), "columns": columns, "matrix": matrix},
        "splits": dict(sorted(splits.items())),
    }
