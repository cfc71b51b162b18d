"""One scoring core for both stages: a ground truth (target, JSON object or JSON text) and a completion -> reward."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from skinflow.rewards._truth import target_of
from skinflow.rewards.caption import CAPTION_PARTS, RewardResult, score_caption
from skinflow.rewards.config import CaptionRewardConfig, DiagnosisRewardConfig
from skinflow.rewards.diagnosis import DIAGNOSIS_PARTS, score_diagnosis
from skinflow.targets import CaptionTarget, DiagnosisTarget

__all__ = ["REWARDS", "Reward", "score", "target_of"]


@dataclass(frozen=True)
class Reward:
    """One stage's reward: its target and config types, the parts it reports and its scoring function
    ``score(completion, target, config=None) -> RewardResult``."""

    stage: str
    target_type: type
    config_type: type
    parts: tuple[str, ...]
    score: Callable[..., RewardResult]


REWARDS: dict[str, Reward] = {
    "caption": Reward("caption", CaptionTarget, CaptionRewardConfig, CAPTION_PARTS, score_caption),
    "diagnosis": Reward("diagnosis", DiagnosisTarget, DiagnosisRewardConfig, DIAGNOSIS_PARTS, score_diagnosis),
}


def score(
    completion: object,
    ground_truth: object,
    caption: CaptionRewardConfig | None = None,
    diagnosis: DiagnosisRewardConfig | None = None,
    stage: str | None = None,
) -> RewardResult:
    """The reward of ``completion`` against ``ground_truth`` with the stage's scoring function.

    Never raises on any ``completion``; a malformed ``ground_truth`` raises ``TargetError`` (a ValueError) naming it.
    """
    target = target_of(ground_truth, stage)
    if isinstance(target, CaptionTarget):
        return score_caption(completion, target, caption)
    return score_diagnosis(completion, target, diagnosis)

