"""The trainer callbacks of :mod:`skinflow.train.runner` (HF ``TrainerCallback``s; the trainers stay unforked).

- :class:`MetricsLog`: every trainer log entry as one JSON line of ``metrics.jsonl`` (main process);
- :class:`ProgressBar`: a tqdm bar on stderr whose postfix shows the latest reward, loss and KL (main process);
- :class:`StopOnInterrupt`: after a SIGINT on any process, every process ends the same step and saves;
- :class:`CompleteCheckpoints`: marks each ``checkpoint-N`` complete once every process has written its part, and
  applies ``save_total_limit`` only after that (:mod:`skinflow.train.checkpoints`).

Every process runs every callback (the trainer's loop is in lockstep); the files are written by the main process only.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from skinflow.train.checkpoints import COMPLETE_FILE, checkpoint_problem, checkpoint_step
from skinflow.util import atomic_write, describe

__all__ = ["CompleteCheckpoints", "Interrupt", "MetricsLog", "ProgressBar", "StopOnInterrupt", "plain"]

_SHOWN = ("reward", "loss", "kl")
"""The logged values the progress bar shows, when present."""


def plain(value: object) -> object:
    """A JSON value of a logged value: numbers (tensors, numpy scalars) as floats, non-finite ones as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    try:
        number = float(value)  # tensors and numpy scalars
    except (TypeError, ValueError):
        return describe(value)
    return number if math.isfinite(number) else str(number)


def _barrier(args) -> None:
    if args.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


class MetricsLog(TrainerCallback):
    """Appends every log entry of the trainer (loss, rewards, KL, ...) to ``path`` as one JSON line with its step
    and time (main process only)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            entry = {"step": state.global_step, "time": round(time.time(), 3)}
            entry.update({key: plain(value) for key, value in logs.items()})
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps(entry, allow_nan=False) + "\n")


class ProgressBar(TrainerCallback):
    """A tqdm bar of the optimizer steps on stderr (main process only), its postfix the latest logged reward, loss
    and KL (those present: SFT logs no reward and no KL). Replaces HF's ProgressCallback, which prints every log
    dictionary as a line."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar = None
        self.shown: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.description, unit="step",
                            dynamic_ncols=True, file=sys.stderr)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        for key in _SHOWN:
            value = logs.get(key)
            if isinstance(value, (int, float)):
                self.shown[key] = f"{value:.4g}"
        if self.shown:
            self.bar.set_postfix(self.shown, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Interrupt:
    """A SIGINT handler for the training loop of one process: the first Ctrl-C asks for a checkpoint and a clean
    stop (:class:`StopOnInterrupt` spreads it to every process), a second one raises ``KeyboardInterrupt``."""

    def __init__(self, quiet: bool = False) -> None:
        self.received = False
        self.quiet = quiet

    @contextmanager
    def installed(self) -> Iterator[None]:
        """The handler, while the block runs (only in the main thread, where Python delivers signals)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.received:
                raise KeyboardInterrupt
            self.received = True
            if not self.quiet:
                print("\nnote: interrupted; finishing this step and saving a checkpoint (Ctrl-C again to abort)",
                      file=sys.stderr)

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class StopOnInterrupt(TrainerCallback):
    """After a SIGINT, the step in flight ends, a checkpoint is saved and training stops; with several processes the
    flag is reduced (max) over all of them at every step, so that they stop at the same step whichever of them got
    the signal (a launcher forwards Ctrl-C to every worker, a ``kill -INT`` reaches one)."""

    def __init__(self, interrupt: Interrupt) -> None:
        self.interrupt = interrupt

    def on_step_end(self, args, state, control, **kwargs):
        stop = self.interrupt.received
        if args.world_size > 1:
            import torch
            import torch.distributed as dist

            flag = torch.tensor([1.0 if stop else 0.0], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
            self.interrupt.received = self.interrupt.received or stop
        if stop:
            control.should_save = True
            control.should_training_stop = True
        return control


class CompleteCheckpoints(TrainerCallback):
    """After the trainer saved ``checkpoint-N`` (``on_save``): wait for every process, then (main process) write
    :data:`COMPLETE_FILE` atomically with every file's size, then keep only the newest ``save_total_limit``
    complete checkpoints (the trainer's own rotation is turned off: it runs before the new checkpoint is marked)."""

    def __init__(self, out: Path, save_total_limit: int | None) -> None:
        self.out = out
        self.save_total_limit = save_total_limit

    def on_save(self, args, state, control, **kwargs):
        _barrier(args)  # every process has written its RNG state (and its shards)
        if state.is_world_process_zero:
            folder = self.out / f"checkpoint-{state.global_step}"
            files = {str(path.relative_to(folder)): path.stat().st_size
                     for path in sorted(folder.rglob("*")) if path.is_file() and path.name != COMPLETE_FILE}
            record: dict[str, Any] = {"global_step": state.global_step, "world_size": args.world_size,
                                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}
            atomic_write(folder / COMPLETE_FILE, lambda file: json.dump(record, file, indent=1, sort_keys=True))
            if self.save_total_limit is not None:
                self._rotate(state.global_step)
        _barrier(args)
        return control

    def _rotate(self, newest: int) -> None:
        steps = sorted(step for path in self.out.iterdir() if path.is_dir()
                       and (step := checkpoint_step(path)) is not None and step <= newest)
        complete = [step for step in steps if checkpoint_problem(self.out / f"checkpoint-{step}") is None]
        kept = complete[-self.save_total_limit:]
        if not kept:
            return
        for step in steps:
            if step < kept[0]:
                shutil.rmtree(self.out / f"checkpoint-{step}", ignore_errors=True)
