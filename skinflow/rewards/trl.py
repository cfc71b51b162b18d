"""TRL reward functions for both stages: ``caption_reward`` and ``diagnosis_reward`` (``GRPOTrainer(reward_funcs=...)``).

TRL (1.16) calls a reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns,
trainer_state=..., log_extra=..., log_metric=...)``, where ``columns`` are the dataset's other columns (one value per
completion) and ``completions`` are strings (standard datasets) or message lists (conversational datasets). These
functions read the ``ground_truth`` column (the JSON text of a ``skinflow.targets`` target, as the TRL export writes
it), return one float per completion, and report their parts through TRL's ``log_metric`` (batch means, logged as
``rewards/<name>/<part>`` next to TRL's ``rewards/<name>/mean``) and ``log_extra`` (per-completion columns of the
completions table). Called without those (outside a trainer), they just return the rewards; the parts are then
available from :func:`skinflow.rewards.score`.

Other settings: ``make_caption_reward(format_weight=0.2, field_weights=...)``,
``make_diagnosis_reward(rank_weights="reciprocal", group9_credit=0.5)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from skinflow.formats import CAPTION_FIELDS
from skinflow.rewards._truth import target_of
from skinflow.rewards.caption import score_caption
from skinflow.rewards.config import CaptionRewardConfig, DiagnosisRewardConfig
from skinflow.rewards.diagnosis import score_diagnosis

__all__ = ["caption_reward", "diagnosis_reward", "make_caption_reward", "make_diagnosis_reward"]

RewardFunction = Callable[..., list[float]]
_CAPTION_METRICS = ("content", "format", "parsed", "stated", "hallucinations")
_CAPTION_EXTRA = ("format", "hallucinations")
_DIAGNOSIS_METRICS = ("rank", "hit", "top1", "exact", "group9", "group3", "candidates", "unmatched", "parsed")
_DIAGNOSIS_EXTRA = ("rank",)


def _targets(stage: str, name: str, ground_truth: object, count: int) -> list[Any]:
    if ground_truth is None:
        raise ValueError(f"{name} needs the dataset column 'ground_truth' (the JSON targets of skinflow's TRL export)")
    if isinstance(ground_truth, (str, bytes)) or not isinstance(ground_truth, Sequence):
        raise ValueError(f"{name}: ground_truth must be a list with one target per completion, "
                         f"got {type(ground_truth).__name__}")
    if len(ground_truth) != count:
        raise ValueError(f"{name}: {len(ground_truth)} ground truths for {count} completions")
    return [target_of(truth, stage, f"{name}: ground_truth[{index}]") for index, truth in enumerate(ground_truth)]


def _completions(name: str, completions: object) -> Sequence[object]:
    if completions is None or isinstance(completions, (str, bytes)) or not isinstance(completions, Sequence):
        raise ValueError(f"{name}: completions must be a list (one str or message list per completion), "
                         f"got {type(completions).__name__}")
    return completions


def _log(results: list[dict[str, float]], name: str, metrics: Sequence[str], extra: Sequence[str],
         log_metric: object, log_extra: object, fields: bool) -> None:
    if not results:
        return
    if callable(log_metric):
        for part in metrics:
            log_metric(f"rewards/{name}/{part}", sum(r[part] for r in results) / len(results))
        if fields:
            for field in CAPTION_FIELDS:
                known = [r[f"field/{field}"] for r in results if r[f"known/{field}"]]
                if known:
                    log_metric(f"rewards/{name}/field/{field}", sum(known) / len(known))
    if callable(log_extra):
        for part in extra:
            log_extra(f"{name}/{part}", [r[part] for r in results])


def _make_reward(stage: str, config: CaptionRewardConfig | DiagnosisRewardConfig, name: str) -> RewardFunction:
    """The TRL reward function of ``stage`` with ``config``, logged by TRL under ``name``."""
    scorer, metrics, extra = _STAGES[stage]

    def reward(prompts: object = None, completions: object = None, completion_ids: object = None,
               ground_truth: object = None, log_metric: object = None, log_extra: object = None,
               **columns: Any) -> list[float]:
        completions = _completions(name, completions)
        targets = _targets(stage, name, ground_truth, len(completions))
        results = [scorer(c, t, config).as_dict() for c, t in zip(completions, targets)]
        _log(results, name, metrics, extra, log_metric, log_extra, fields=stage == "caption")
        return [r["score"] for r in results]

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = f"Stage {'I' if stage == 'caption' else 'II'} reward (TRL signature) with {config.to_json()}."
    reward.config = config
    return reward


def _settings(config_type: type, config: object, settings: dict[str, Any]):
    if config is not None and settings:
        raise ValueError("give either config or settings, not both")
    return config if config is not None else config_type.from_mapping(settings)


def make_caption_reward(
    config: CaptionRewardConfig | None = None, name: str = "caption_reward", **settings: Any
) -> RewardFunction:
    """A TRL reward function for Stage I with ``config`` (or the ``CaptionRewardConfig`` keys in ``settings``).

    ``name`` is the function's ``__name__``, which TRL logs the reward under.
    """
    return _make_reward("caption", _settings(CaptionRewardConfig, config, settings), name)


def make_diagnosis_reward(
    config: DiagnosisRewardConfig | None = None, name: str = "diagnosis_reward", **settings: Any
) -> RewardFunction:
    """A TRL reward function for Stage II with ``config`` (or the ``DiagnosisRewardConfig`` keys in ``settings``).

    ``name`` is the function's ``__name__``, which TRL logs the reward under.
    """
    return _make_reward("diagnosis", _settings(DiagnosisRewardConfig, config, settings), name)


_STAGES = {
    "caption": (score_caption, _CAPTION_METRICS, _CAPTION_EXTRA),
    "diagnosis": (score_diagnosis, _DIAGNOSIS_METRICS, _DIAGNOSIS_EXTRA),
}


caption_reward = make_caption_reward()
diagnosis_reward = make_diagnosis_reward()
