"""The Stage I (caption) and Stage II (diagnosis) rewards: one scoring core, thin verl and TRL adapters.

Pure Python (no torch, transformers or PIL). Every score is a float in [0, 1]; no completion (any str, non-str,
``None``, message lists, megabytes) makes a reward raise; a malformed ground truth raises ``TargetError`` (a
``ValueError``) naming what is wrong. See docs/rewards.md for the formulas, defaults and measured speed.

- :func:`score` (and :data:`REWARDS`): completion + ground truth -> :class:`RewardResult` (score and parts);
  :func:`score_caption`, :func:`score_diagnosis` for one stage.
- :class:`CaptionRewardConfig`, :class:`DiagnosisRewardConfig`, :func:`configs_from_mapping`: the settings;
  :class:`CaptionWeights`: the field weights α (uniform, given, from training records), JSON-serialisable.
- :func:`match_ranks`, :func:`candidate_labels`, :func:`match_candidate`: the diagnosis matching the evaluation
  shares.
- ``skinflow.rewards.verl.compute_score`` (verl), ``skinflow.rewards.trl.caption_reward`` /
  ``diagnosis_reward`` (TRL).
"""

from skinflow.rewards.caption import CAPTION_PARTS, RewardResult, field_score, score_caption
from skinflow.rewards.config import CaptionRewardConfig, DiagnosisRewardConfig, configs_from_mapping
from skinflow.rewards.core import REWARDS, Reward, score, target_of
from skinflow.rewards.diagnosis import (
    DIAGNOSIS_PARTS,
    LEVELS,
    candidate_labels,
    match_candidate,
    match_ranks,
    score_diagnosis,
)
from skinflow.rewards.terms import TERM_SYNONYMS, map_term
from skinflow.rewards.weights import CaptionWeights

__all__ = [
    "CAPTION_PARTS",
    "DIAGNOSIS_PARTS",
    "LEVELS",
    "REWARDS",
    "TERM_SYNONYMS",
    "CaptionRewardConfig",
    "CaptionWeights",
    "DiagnosisRewardConfig",
    "Reward",
    "RewardResult",
    "candidate_labels",
    "configs_from_mapping",
    "field_score",
    "map_term",
    "match_candidate",
    "match_ranks",
    "score",
    "score_caption",
    "score_diagnosis",
    "target_of",
]
