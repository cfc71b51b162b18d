"""Which ``checkpoint-N`` directories of a run are complete (pure Python: no torch, no transformers).

HF's Trainer writes a checkpoint in place: the weights, the optimizer, scheduler and the RNG state of every process,
then ``trainer_state.json`` with a plain ``open``/``write`` (transformers 5.24, ``Trainer._save_checkpoint``), and
nothing waits for the other processes' RNG files. A crash during a save can therefore leave a directory that holds a
``trainer_state.json`` (even a truncated one) but misses files, which the Trainer's resume would not notice (a
missing ``optimizer.pt`` is skipped silently). :class:`skinflow.train.callbacks.CompleteCheckpoints` writes
:data:`COMPLETE_FILE` after every process has finished its part; this module checks it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["COMPLETE_FILE", "checkpoint_problem", "checkpoint_step", "checkpoints"]

COMPLETE_FILE = "checkpoint_complete.json"
"""Written (atomically) into ``checkpoint-N`` once every process finished saving it: every file and its size."""


def checkpoint_step(path: Path) -> int | None:
    """N of a ``checkpoint-N`` directory name, else ``None``."""
    name = path.name
    return int(name[11:]) if name.startswith("checkpoint-") and name[11:].isdigit() else None


def checkpoint_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` (a ``checkpoint-N``) cannot be resumed from, or ``None`` when it is complete.

    HF's Trainer writes a checkpoint in place (weights, optimizer, scheduler, RNG states of every process, then
    ``trainer_state.json`` with a plain ``open``/``write``), so a crash during a save can leave a directory that
    holds ``trainer_state.json`` but misses files, or a truncated one. :class:`CompleteCheckpoints` writes
    :data:`COMPLETE_FILE` (atomically, after a barrier of all processes) listing every file with its size; a
    checkpoint is complete when that list is there and every listed file exists with its size.
    """
    path = Path(path)
    marker = path / COMPLETE_FILE
    if not marker.is_file():
        return f"no {COMPLETE_FILE} (its save did not finish)"
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
        files = record["files"]
        if not isinstance(files, dict) or "trainer_state.json" not in files:
            raise ValueError("no file list")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{COMPLETE_FILE} is unreadable ({error})"
    for name, size in sorted(files.items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} were written"
    return None


def checkpoints(out: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(N, path)`` of every ``checkpoint-N`` directory of ``out``, newest first (complete or not)."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [(step, child) for child in out.iterdir() if child.is_dir() and (step := checkpoint_step(child)) is not None]
    return sorted(found, reverse=True)
