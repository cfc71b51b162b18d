"""Training (docs/training.md): the SFT warm start and the two GRPO stages of SkinFlow on TRL, unforked.

- :class:`TrainConfig` / :func:`load_config` (:mod:`skinflow.train.config`): the settings, from YAML recipes;
- :func:`run` (:mod:`skinflow.train.runner`): one stage from a JSONL data set into an output directory.

``import skinflow.train`` loads only the config; :func:`run` imports torch, transformers and TRL on first use.
"""

from __future__ import annotations

from typing import Any

from skinflow.train.config import STAGES, TrainConfig, field_help, load_config

__all__ = ["STAGES", "TrainConfig", "TrainResult", "field_help", "load_config", "run"]


def __getattr__(name: str) -> Any:
    if name in ("run", "TrainResult"):
        from skinflow.train import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'skinflow.train' has no attribute {name!r}")
