"""Run one training stage on TRL, unforked: SFTTrainer (``sft``) or GRPOTrainer (``caption``, ``diagnosis``).

:func:`run` checks everything that depends on the input before any training (the output directory, the model
directory, every record and image), builds the TRL dataset (:func:`skinflow.data.export.to_trl_dataset`), the model
(the tiny default or a checkpoint, the DVE applied when asked), the trainer with the rewards of
:mod:`skinflow.rewards.trl`, trains, and writes the final model into the output directory (docs/training.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skinflow.data.export import to_trl_dataset
from skinflow.data.records import load_jsonl
from skinflow.formats import format_caption, format_diagnoses
from skinflow.train.config import TrainConfig
from skinflow.util import atomic_write, describe

__all__ = ["METRICS_FILE", "REFERENCE_DIR", "RUN_FILE", "Prepared", "TrainResult", "last_checkpoint", "prepare", "run",
           "train"]

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
REFERENCE_DIR = "reference"
"""Where the tiny default's start weights go when GRPO needs a reference model (TRL loads it from a directory)."""
_STAGING = ".final.tmp"


@dataclass(frozen=True)
class TrainResult:
    """What a run left: the output directory (the final model), the step reached, the last checkpoint, the
    metrics log, TRL's log history and the notes printed (e.g. the DVE applied to a checkpoint)."""

    out: Path
    global_step: int
    checkpoint: Path | None
    metrics: Path
    log_history: list[dict[str, Any]]
    notes: tuple[str, ...]
    interrupted: bool = False


def last_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    """The ``checkpoint-N`` of ``out`` with the largest N that holds a ``trainer_state.json``, or ``None``."""
    out = Path(out)
    if not out.is_dir():
        return None
    found = []
    for child in out.iterdir():
        name = child.name
        if name.startswith("checkpoint-") and name[11:].isdigit() and (child / "trainer_state.json").is_file():
            found.append((int(name[11:]), child))
    return max(found)[1] if found else None


def _note(notes: list[str], text: str, quiet: bool) -> None:
    notes.append(text)
    if not quiet:
        print(f"note: {text}", file=sys.stderr)


def _check_out(config: TrainConfig, resume: bool) -> tuple[Path, Path | None]:
    out = Path(config.out)
    label = f"out {str(config.out)!r}"
    if out.exists() and not out.is_dir():
        raise ValueError(f"{label}: exists and is not a directory")
    if not out.exists() and not out.parent.is_dir():
        raise FileNotFoundError(f"{label}: parent directory {str(out.parent)!r} does not exist")
    checkpoint = last_checkpoint(out)
    if resume:
        if checkpoint is None:
            raise ValueError(f"{label}: --resume given, but it holds no checkpoint-N with trainer_state.json")
        recorded = out / RUN_FILE
        if recorded.is_file():
            try:
                previous = json.loads(recorded.read_text(encoding="utf-8")).get("config", {})
            except (ValueError, AttributeError):
                previous = {}
            if previous.get("stage") not in (None, config.stage):
                raise ValueError(f"{label}: holds a {previous.get('stage')!r} run; cannot resume it as "
                                 f"{config.stage!r}")
    elif checkpoint is not None:
        raise ValueError(f"{label}: already holds {checkpoint.name}; pass --resume to continue that run or choose "
                         "a new directory")
    return out, checkpoint


def _records(config: TrainConfig, progress: bool) -> list[dict[str, Any]]:
    records = load_jsonl(config.data, progress=progress)
    if config.split is not None:
        records = [record for record in records if record["split"] == config.split]
    if not records:
        where = f" in split {config.split!r}" if config.split else ""
        raise ValueError(f"data {str(config.data)!r}: no records{where}")
    return records


def _answer(record: Mapping[str, Any], target: str) -> str:
    return format_caption(record["caption"]) if target == "caption" else format_diagnoses([record["label"]])


def build_dataset(records: Sequence[Mapping[str, Any]], config: TrainConfig, progress: bool = False):
    """The TRL dataset of the stage: :func:`to_trl_dataset`; for ``sft`` with a conversational ``completion``
    holding the record's truth in the answer format (``format_caption`` or ``format_diagnoses([label])``)."""
    stage = config.sft_target if config.stage == "sft" else config.stage
    dataset = to_trl_dataset(records, stage=stage, k=config.k, progress=progress)
    if config.stage != "sft":
        return dataset
    answers = [_answer(record, config.sft_target) for record in records]
    completions = [[{"role": "assistant", "content": [{"type": "text", "text": answer}]}] for answer in answers]
    return dataset.select_columns(["prompt", "images"]).add_column("completion", completions)


def _model_settings(model) -> dict[str, Any] | None:
    return getattr(model.config.vision_config, "dve", None) or None


def _load_model(config: TrainConfig, notes: list[str], quiet: bool):
    """``(model, processor)`` of the start model, the DVE as the config asks."""
    import torch

    from skinflow.model.dve import apply_dve, check_checkpoint, load_pretrained
    from skinflow.model.processor import load_processor

    if config.model is None:
        from skinflow.model.tiny import build

        _note(notes, "no model given; using the embedded tiny default (random weights)", quiet)
        model, processor = build(seed=config.seed, num_bases=config.dve_num_bases, dve=False)
        if config.dve:
            with torch.random.fork_rng(devices=[]):  # the DVE's random init depends on the seed only
                torch.manual_seed(config.seed)
                apply_dve(model, blocks=config.dve_blocks, projections=config.dve_projections,
                          num_bases=config.dve_num_bases)
        return model.train(), processor
    checkpoint_config = check_checkpoint(config.model, name="model")
    processor = load_processor(config.model, config=checkpoint_config, name="model")
    has_dve = bool(getattr(checkpoint_config.vision_config, "dve", None))
    if has_dve and not config.dve:
        raise ValueError(f"model {config.model!r}: has DVE layers ({checkpoint_config.vision_config.dve}); "
                         "--no-dve cannot remove them (start from a checkpoint without the DVE)")
    model = load_pretrained(config.model, name="model", dtype=torch.float32)
    if config.dve and not has_dve:
        apply_dve(model, blocks=config.dve_blocks, projections=config.dve_projections,
                  num_bases=config.dve_num_bases)
        _note(notes, f"model {config.model!r} has no DVE; applied it ({_model_settings(model)})", quiet)
    return model.train(), processor


def _resumed_model(config: TrainConfig, checkpoint: Path, out: Path, notes: list[str], quiet: bool):
    """``(model, processor)`` to resume from ``checkpoint``: its weights, loaded by :func:`load_pretrained`.

    The trainer's own resume reads ``model.safetensors`` with the model's runtime key names, but transformers 5
    saves Qwen2.5-VL checkpoints in the original layout (``visual.*``, ``model.layers.*``), so its load matches no
    key and would leave the start weights in place; the weights are therefore loaded here (the trainer then restores
    the optimizer, scheduler, RNG and data position). The reference model stays the start model.
    """
    import torch

    from skinflow.model.dve import check_checkpoint, load_pretrained
    from skinflow.model.processor import load_processor

    if config.model is None:
        start, processor = _load_model(config, [], quiet=True)
        reference = str(_reference_dir(start, processor, out)) if config.stage != "sft" and config.beta > 0 else ""
        del start
    else:
        processor = load_processor(config.model, config=check_checkpoint(config.model, name="model"), name="model")
        reference = str(config.model)
    model = load_pretrained(checkpoint, name="checkpoint", dtype=torch.float32)
    model.config._name_or_path = reference
    if config.model is None:
        _note(notes, "no model given; resuming the embedded tiny default", quiet)
    return model.train(), processor


@contextlib.contextmanager
def _quiet_resume_warnings() -> Iterator[None]:
    """Hide the trainer's "missing keys / unexpected keys in the checkpoint" warnings of a resume (see
    :func:`_resumed_model`: the weights are already loaded)."""
    import logging

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = record.getMessage()
            return not message.startswith(("There were missing keys in the checkpoint model loaded",
                                           "There were unexpected keys in the checkpoint model loaded"))

    logger = logging.getLogger("transformers.trainer")
    drop = Drop()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _reward(config: TrainConfig):
    from skinflow.rewards.config import configs_from_mapping
    from skinflow.rewards.trl import make_caption_reward, make_diagnosis_reward

    caption, diagnosis = configs_from_mapping(config.reward)
    return make_caption_reward(caption) if config.stage == "caption" else make_diagnosis_reward(diagnosis)


def _common_args(config: TrainConfig, progress: bool) -> dict[str, Any]:
    import torch

    return {
        "output_dir": str(config.out),
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler,
        "warmup_steps": config.warmup_steps,
        "optim": config.optimizer,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": config.bf16,
        "use_cpu": not torch.cuda.is_available(),
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "logging_steps": config.logging_steps,
        "report_to": [],
        "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
    }


def _callbacks(metrics: Path, interrupt: _Interrupt):
    from transformers import TrainerCallback

    class MetricsLog(TrainerCallback):
        """Appends every log entry of the trainer (loss, rewards, KL, ...) to metrics.jsonl, with its step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                entry = {"step": state.global_step, "time": round(time.time(), 3)}
                entry.update({key: _plain(value) for key, value in logs.items()})
                with open(metrics, "a", encoding="utf-8") as file:
                    file.write(json.dumps(entry, allow_nan=False) + "\n")

    class StopOnInterrupt(TrainerCallback):
        """After a SIGINT, the step in flight ends, a checkpoint is saved and training stops."""

        def on_step_end(self, args, state, control, **kwargs):
            if interrupt.received:
                control.should_save = True
                control.should_training_stop = True
            return control

    return [MetricsLog(), StopOnInterrupt()]


def _plain(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    try:
        number = float(value)  # tensors and numpy scalars
    except (TypeError, ValueError):
        return describe(value)
    return number if math.isfinite(number) else str(number)


class _Interrupt:
    """A SIGINT handler for the training loop: the first Ctrl-C asks for a checkpoint and a clean stop, a second
    one interrupts at once."""

    def __init__(self) -> None:
        self.received = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.received:
                raise KeyboardInterrupt
            self.received = True
            print("\nnote: interrupted; finishing this step and saving a checkpoint (Ctrl-C again to abort)",
                  file=sys.stderr)

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _reference_dir(model, processor, out: Path) -> Path:
    """A directory holding the start weights (TRL builds the GRPO reference model by loading one)."""
    reference = out / REFERENCE_DIR
    if not (reference / "config.json").is_file():
        staging = out / f".{REFERENCE_DIR}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        shutil.rmtree(reference, ignore_errors=True)
        os.replace(staging, reference)
    return reference


def _trainer(config: TrainConfig, model, processor, dataset, out: Path, progress: bool):
    import trl

    common = _common_args(config, progress)
    if config.stage == "sft":
        args = trl.SFTConfig(**common, max_length=None, completion_only_loss=True)
        return trl.SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor), None
    start = str(getattr(model.config, "_name_or_path", "") or "")
    if config.beta > 0 and not (start and Path(start).is_dir()):
        model.config._name_or_path = str(_reference_dir(model, processor, out))
    args = trl.GRPOConfig(
        **common, num_generations=config.num_generations, max_completion_length=config.max_new_tokens,
        beta=config.beta, epsilon=config.epsilon, temperature=config.temperature, loss_type=config.loss_type,
        scale_rewards="group",
    )
    reward = _reward(config)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                              processing_class=processor)
    return trainer, reward


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "trl", "accelerate", "datasets", "fdlinear", "skinflow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _write_run(out: Path, config: TrainConfig, reward, model, notes: list[str], resume_from: Path | None) -> None:
    previous: list[Any] = []
    if (out / RUN_FILE).is_file():
        with contextlib.suppress(ValueError, AttributeError):
            previous = json.loads((out / RUN_FILE).read_text(encoding="utf-8")).get("history", [])
    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "resumed_from": resume_from.name if resume_from else None, "max_steps": config.max_steps}
    record = {
        "config": config.to_json(),
        "reward": None if reward is None else {"name": reward.__name__, "config": reward.config.to_json()},
        "dve": _model_settings(model),
        "start_model": config.model or "tiny-default",
        "notes": notes,
        "versions": _versions(),
        "history": [*previous, entry],
    }
    atomic_write(out / RUN_FILE, lambda file: json.dump(record, file, indent=2, ensure_ascii=False))


def _save_final(trainer, out: Path) -> None:
    """The final model (safetensors, config with the DVE settings, processor) into ``out``; config.json is moved
    in last, so an interrupted save never leaves a directory that looks like a complete checkpoint."""
    staging = out / _STAGING
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    (out / "config.json").unlink(missing_ok=True)
    names = sorted(path.name for path in staging.iterdir())
    for name in [n for n in names if n != "config.json"] + ["config.json"]:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    staging.rmdir()


@dataclass
class Prepared:
    """A run ready to train (:func:`prepare`): everything that depends on the input has been checked."""

    config: TrainConfig
    out: Path
    checkpoint: Path | None
    trainer: Any
    reward: Any
    notes: list[str]
    quiet: bool


def prepare(config: TrainConfig, *, resume: bool = False, progress: bool | None = None,
            quiet: bool = False) -> Prepared:
    """Check the input and build the trainer of :func:`run` without training (arguments as for :func:`run`).

    Raises ``ValueError``/``FileNotFoundError`` naming the setting, directory, record or image that is wrong.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    for name in ("data", "out"):
        if getattr(config, name) is None:
            raise ValueError(f"{name} is required (the JSONL data set and the output directory)")
    if progress is None:
        from skinflow.util import stderr_is_terminal

        progress = stderr_is_terminal()
    out, checkpoint = _check_out(config, resume)
    notes: list[str] = []
    if config.model is not None:
        from skinflow.model.dve import check_checkpoint

        check_checkpoint(config.model, name="model")  # before the records are decoded
    records = _records(config, progress)
    dataset = build_dataset(records, config, progress)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if checkpoint is None:
        model, processor = _load_model(config, notes, quiet)
    else:
        model, processor = _resumed_model(config, checkpoint, out, notes, quiet)
    out.mkdir(exist_ok=True)
    trainer, reward = _trainer(config, model, processor, dataset, out, progress)
    return Prepared(config, out, checkpoint, trainer, reward, notes, quiet)


def train(prepared: Prepared) -> TrainResult:
    """Train a run built by :func:`prepare` and write the final model; see :func:`run`."""
    config, out, checkpoint, trainer, notes, quiet = (prepared.config, prepared.out, prepared.checkpoint,
                                                      prepared.trainer, prepared.notes, prepared.quiet)
    metrics = out / METRICS_FILE
    interrupt = _Interrupt()
    for callback in _callbacks(metrics, interrupt):
        trainer.add_callback(callback)
    if checkpoint is not None:
        _note(notes, f"resuming from {checkpoint}", quiet)
    _write_run(out, config, prepared.reward, trainer.model, notes, checkpoint)
    with interrupt.installed(), _quiet_resume_warnings():
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    _save_final(trainer, out)
    final = last_checkpoint(out)
    return TrainResult(out=out, global_step=trainer.state.global_step, checkpoint=final, metrics=metrics,
                       log_history=list(trainer.state.log_history), notes=tuple(notes),
                       interrupted=interrupt.received)


def run(config: TrainConfig, *, resume: bool = False, progress: bool | None = None,
        quiet: bool = False) -> TrainResult:
    """Train one stage as ``config`` says (:func:`prepare`, then :func:`train`); see docs/training.md.

    Args:
        config: the run's settings; ``data`` and ``out`` are required.
        resume: continue from the last ``checkpoint-N`` of ``out`` (optimizer, scheduler, RNG and data position),
            also after a finished run with a larger ``max_steps``.
        progress: show the trainer's progress bar (default: when stderr is a terminal).
        quiet: print no notes on stderr (they are still in the result and run.json).

    Returns a :class:`TrainResult`. A first SIGINT ends the step in flight, saves a checkpoint and returns
    (``interrupted=True``); a second one raises ``KeyboardInterrupt``.

    Raises:
        ValueError / FileNotFoundError: a bad setting, output directory, model directory, record or image, named,
            before any training step.
    """
    return train(prepare(config, resume=resume, progress=progress, quiet=quiet))
