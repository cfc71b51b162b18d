"""Ground truths of any accepted form -> targets (shared by the stage scorers and the adapters)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from skinflow.targets import CaptionTarget, DiagnosisTarget, Target, TargetError, target_from_json

__all__ = ["target_of"]

_STAGE_TYPES = {"caption": CaptionTarget, "diagnosis": DiagnosisTarget}
_MAX_CACHED_CHARS = 4096  # ground truths are a few hundred characters; longer ones are parsed every time


@functools.lru_cache(maxsize=4096)
def _target_from_text(text: str) -> Target:
    # Ground truths repeat (every rollout of a prompt shares one); answers are never cached.
    return target_from_json(text)


def target_of(ground_truth: object, stage: str | None = None, name: str = "ground truth") -> Target:
    """The target of a ground truth: a target, its JSON object (``targets.target_from_json``) or its JSON text.

    Raises:
        TargetError (a ValueError) starting with ``name`` and saying what is wrong, including a target of another
        ``stage`` than asked.
    """
    if stage is not None and stage not in _STAGE_TYPES:
        raise ValueError(f"stage must be one of {list(_STAGE_TYPES)}, got {stage!r}")
    try:
        if isinstance(ground_truth, (CaptionTarget, DiagnosisTarget)):
            target = ground_truth
        elif issubclass(type(ground_truth), str):
            text = str.__str__(ground_truth)
            target = _target_from_text(text) if len(text) <= _MAX_CACHED_CHARS else target_from_json(text)
        elif isinstance(ground_truth, Mapping):
            target = target_from_json(ground_truth)
        else:
            raise TargetError(f"must be a JSON string or object, got {type(ground_truth).__name__}")
        if stage is not None and not isinstance(target, _STAGE_TYPES[stage]):
            other = "caption" if isinstance(target, CaptionTarget) else "diagnosis"
            raise TargetError(f"is of stage {other!r}, expected {stage!r}")
    except TargetError as error:
        raise TargetError(f"{name} {error}" if str(error).startswith("is of") else f"{name}: {error}") from None
    return target
