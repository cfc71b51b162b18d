"""verl's custom reward function for both stages: ``compute_score``.

verl config (the stage comes from each row's ground truth; run one stage per job, since verl needs the same part keys
for every row of a batch)::

    reward.custom_reward_function.path=pkg://skinflow.rewards.verl     # or the path of this file
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.format_weight=0.1
    +reward.custom_reward_function.reward_kwargs.rank_weights=linear

(verl versions before the ``reward`` group take the same keys under a top-level ``custom_reward_function``.)
The keys of ``reward_kwargs`` are those of :mod:`skinflow.rewards.config`; an unknown key raises ``ValueError``
naming it at the first reward.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from skinflow.rewards.config import CaptionRewardConfig, DiagnosisRewardConfig, configs_from_mapping, plain_settings
from skinflow.rewards.core import score

__all__ = ["compute_score"]

# Keyword arguments verl's reward loop passes to every reward function besides the configured reward_kwargs.
VERL_ARGUMENTS = frozenset({"reward_router_address", "reward_model_tokenizer"})
_DEFAULTS = (CaptionRewardConfig(), DiagnosisRewardConfig())


@functools.lru_cache(maxsize=64)
def _configs_of_json(text: str) -> tuple[CaptionRewardConfig, DiagnosisRewardConfig]:
    return configs_from_mapping(json.loads(text))


def _configs(settings: dict[str, Any]) -> tuple[CaptionRewardConfig, DiagnosisRewardConfig]:
    """The configs of verl's reward kwargs; built once per distinct setting (verl passes the same ones every call)."""
    settings = {key: value for key, value in settings.items() if key not in VERL_ARGUMENTS}
    if not settings:
        return _DEFAULTS
    try:
        key = json.dumps(plain_settings(settings), sort_keys=True)
    except (TypeError, ValueError):  # a value that is not JSON (e.g. a CaptionWeights object): not cached
        return configs_from_mapping(settings)
    return _configs_of_json(key)


def compute_score(
    data_source: Any, solution_str: Any, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> dict[str, float]:
    """Score one rollout (verl's custom reward signature).

    Args:
        data_source: the row's data source (not used).
        solution_str: the decoded response; any value (never raises on it).
        ground_truth: the row's ``reward_model.ground_truth``: the JSON text of a ``skinflow.targets`` target, or
            its object.
        extra_info: the row's extra info (not used).
        **kwargs: the reward settings (``custom_reward_function.reward_kwargs``, see ``skinflow.rewards.config``),
            plus what verl's reward loop passes along (``reward_router_address``, ``reward_model_tokenizer``:
            ignored).

    Returns:
        ``{"score": float, <parts>}``, every value a finite float in a fixed key set per stage (verl averages and
        logs them): Stage I ``content``, ``format``, ``parsed``, ``stated``, ``hallucinations``, ``known``,
        ``field/<name>``, ``known/<name>``; Stage II ``rank``, ``hit``, ``top1``, ``exact``, ``group9``,
        ``group3``, ``candidates``, ``unmatched``, ``parsed``.

    Raises:
        ValueError: a malformed ground truth (``targets.TargetError``, naming it) or reward setting (naming it).
    """
    caption, diagnosis = _configs(kwargs)
    return score(solution_str, ground_truth, caption, diagnosis).as_dict()
