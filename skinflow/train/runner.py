"""Run one training stage on TRL, unforked: SFTTrainer (``sft``) or GRPOTrainer (``caption``, ``diagnosis``).

:func:`run` checks everything that depends on the input before any training (the output directory, the model
directory, every record and image), builds the TRL dataset (:func:`skinflow.data.export.to_trl_dataset`), the model
(the tiny default or a checkpoint, the DVE applied when asked), the trainer with the rewards of
:mod:`skinflow.rewards.trl`, trains, and writes the final model into the output directory (docs/training.md).

What a run writes besides the trainer's checkpoints (run.json, metrics.jsonl, TensorBoard, the reference, the
curves, the final model, the checkpoints' completion marks) is written by the main process only, so the same code
runs unchanged under ``accelerate launch`` / ``torchrun`` (:mod:`skinflow.train.callbacks`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skinflow.data.export import to_trl_dataset
from skinflow.data.records import load_jsonl
from skinflow.formats import format_caption, format_diagnoses
from skinflow.train.checkpoints import COMPLETE_FILE, checkpoint_problem, checkpoints
from skinflow.train.config import TrainConfig
from skinflow.train.curves import CURVES_FILE
from skinflow.util import atomic_write

__all__ = ["COMPLETE_FILE", "CURVES_FILE", "METRICS_FILE", "REFERENCE_DIR", "RUN_FILE", "TENSORBOARD_DIR", "Prepared",
           "TrainResult", "checkpoint_problem", "last_checkpoint", "prepare", "run", "train"]

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
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
    curves: Path | None = None
    """``reward_curves.png`` (drawn from the metrics at the end; ``None`` on other processes or without a log)."""
    world_size: int = 1
    main_process: bool = True
    """Whether this is the process that wrote the files (rank 0 of ``accelerate launch``; the only one otherwise)."""


def last_checkpoint(out: str | os.PathLike[str], skipped: list[tuple[Path, str]] | None = None) -> Path | None:
    """The complete ``checkpoint-N`` of ``out`` with the largest N (:func:`checkpoint_problem`), or ``None``.

    Newer directories that are not complete are passed over; when ``skipped`` is given, ``(directory, what is
    wrong)`` of each is appended to it.
    """
    for _, path in checkpoints(out):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if skipped is not None:
            skipped.append((path, problem))
    return None


def _main_process() -> bool:
    """Whether this is the launcher's rank 0 (``RANK`` of torchrun / ``accelerate launch``), known before the
    process group exists; a process started on its own is."""
    return os.environ.get("RANK", "0") == "0"


def _note(notes: list[str], text: str, quiet: bool) -> None:
    notes.append(text)
    if not quiet:
        print(f"note: {text}", file=sys.stderr)


def _check_out(config: TrainConfig, resume: bool, notes: list[str], quiet: bool) -> tuple[Path, Path | None]:
    out = Path(config.out)
    label = f"out {str(config.out)!r}"
    if out.exists() and not out.is_dir():
        raise ValueError(f"{label}: exists and is not a directory")
    if not out.exists() and not out.parent.is_dir():
        raise FileNotFoundError(f"{label}: parent directory {str(out.parent)!r} does not exist")
    skipped: list[tuple[Path, str]] = []
    checkpoint = last_checkpoint(out, skipped)
    if resume:
        if checkpoint is None:
            found = "; ".join(f"{path.name}: {problem}" for path, problem in skipped)
            raise ValueError(f"{label}: --resume given, but it holds no checkpoint-N"
                             + (f" that is complete ({found}; remove those or choose a new directory)" if found
                                else ""))
        for path, problem in skipped:
            _note(notes, f"{path} is incomplete ({problem}); resuming from {checkpoint.name}", quiet)
        recorded = out / RUN_FILE
        if recorded.is_file():
            try:
                previous = json.loads(recorded.read_text(encoding="utf-8")).get("config", {})
            except (ValueError, AttributeError):
                previous = {}
            if previous.get("stage") not in (None, config.stage):
                raise ValueError(f"{label}: holds a {previous.get('stage')!r} run; cannot resume it as "
                                 f"{config.stage!r}")
    elif checkpoints(out):
        raise ValueError(f"{label}: already holds {checkpoints(out)[0][1].name}; pass --resume to continue that run "
                         "or choose a new directory")
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


def _similar_labels(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """label -> the other labels of ``records``, most alike first: a differential diagnosis learnt from the data.

    Alike = the overlap of the two labels' caption-term distributions, summed over the caption fields
    (Σ_field Σ_term min(p_a(term), p_b(term))); ties keep the labels' sorted order."""
    from collections import Counter, defaultdict

    terms: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    totals: Counter = Counter()
    for record in records:
        totals[record["label"]] += 1
        for name, value in (record.get("caption") or {}).items():
            terms[record["label"]][name][value] += 1

    def overlap(a: str, b: str) -> float:
        return sum(min(count / totals[a], terms[b][name][term] / totals[b])
                   for name, counter in terms[a].items() for term, count in counter.items())

    labels = sorted(totals)
    return {a: sorted((b for b in labels if b != a), key=lambda b: -overlap(a, b)) for a in labels}


def _format_answers(records: Sequence[Mapping[str, Any]], target: str, config: TrainConfig) -> list[str]:
    """Answers that teach the format and not the content (``sft_answers: format``), seeded by ``config.seed``:
    captions whose fields outside ``sft_true_fields`` are another record's, drawn at random; diagnosis lists of
    ``k`` distinct labels of the data in random order (all of them when the data has fewer), with
    ``sft_differential`` the record's own label among them at a random rank."""
    import random

    rng = random.Random(f"skinflow-sft-format:{config.seed}:{target}")
    if target == "caption":
        answers = []
        for record in records:
            other = records[rng.randrange(len(records))]["caption"]
            caption = {name: record["caption"][name] if name in config.sft_true_fields else other[name]
                       for name in record["caption"]}
            answers.append(format_caption(caption))
        return answers
    labels = sorted({record["label"] for record in records})
    count = min(config.k, len(labels))
    similar = _similar_labels(records) if config.sft_diagnosis_truth else {}
    answers = []
    for record in records:
        if config.sft_diagnosis_truth and rng.random() < config.sft_diagnosis_truth:
            ranked = [record["label"], *similar[record["label"]][:count - 1]]
        elif config.sft_differential:  # the record's label at a random rank among count - 1 others
            ranked = rng.sample([label for label in labels if label != record["label"]], count - 1)
            ranked.insert(rng.randrange(count), record["label"])
        else:
            ranked = rng.sample(labels, count)
        answers.append(format_diagnoses(ranked))
    return answers


def build_dataset(records: Sequence[Mapping[str, Any]], config: TrainConfig, progress: bool = False):
    """The TRL dataset of the stage: :func:`to_trl_dataset`; for ``sft`` with a conversational ``completion``:
    the record's truth in the answer format (``format_caption`` or ``format_diagnoses([label])``), or with
    ``sft_answers: format`` answers that teach the format only (:func:`_format_answers`); ``sft_target: both``
    gives one caption and one diagnosis example per record, shuffled together (seeded)."""
    import datasets

    if config.stage != "sft":
        return to_trl_dataset(records, stage=config.stage, k=config.k, progress=progress)
    parts = []
    for target in (("caption", "diagnosis") if config.sft_target == "both" else (config.sft_target,)):
        dataset = to_trl_dataset(records, stage=target, k=config.k, progress=progress)
        answers = (_format_answers(records, target, config) if config.sft_answers == "format"
                   else [_answer(record, target) for record in records])
        completions = [[{"role": "assistant", "content": [{"type": "text", "text": answer}]}] for answer in answers]
        parts.append(dataset.select_columns(["prompt", "images"]).add_column("completion", completions))
    if len(parts) == 1:
        return parts[0]
    return datasets.concatenate_datasets(parts).shuffle(seed=config.seed).flatten_indices()


def _freeze_vision(model) -> None:
    """No gradient for the vision tower's patch embedding and blocks (the merger still trains)."""
    visual = model.model.visual
    for module in (visual.patch_embed, visual.blocks):
        for parameter in module.parameters():
            parameter.requires_grad_(False)


def _model_settings(model) -> dict[str, Any] | None:
    return getattr(model.config.vision_config, "dve", None) or None


def _apply_seeded_dve(model, config: TrainConfig) -> None:
    """The config's DVE on ``model``, its random init drawn from ``config.seed`` alone (not from whatever ran
    before in the process)."""
    import torch

    from skinflow.model.dve import apply_dve

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        apply_dve(model, blocks=config.dve_blocks, projections=config.dve_projections,
                  num_bases=config.dve_num_bases)


def _load_model(config: TrainConfig, notes: list[str], quiet: bool):
    """``(model, processor)`` of the start model, the DVE as the config asks."""
    import torch

    from skinflow.model.dve import check_checkpoint, load_pretrained
    from skinflow.model.processor import load_processor

    if config.model is None:
        from skinflow.model.tiny import build

        _note(notes, "no model given; using the embedded tiny default (random weights)", quiet)
        model, processor = build(seed=config.seed, num_bases=config.dve_num_bases, dve=False)
        if config.dve:
            _apply_seeded_dve(model, config)
        return model.train(), processor
    checkpoint_config = check_checkpoint(config.model, name="model")
    processor = load_processor(config.model, config=checkpoint_config, name="model")
    has_dve = bool(getattr(checkpoint_config.vision_config, "dve", None))
    if has_dve and not config.dve:
        raise ValueError(f"model {config.model!r}: has DVE layers ({checkpoint_config.vision_config.dve}); "
                         "--no-dve cannot remove them (start from a checkpoint without the DVE)")
    model = load_pretrained(config.model, name="model", dtype=torch.float32)
    if config.dve and not has_dve:
        _apply_seeded_dve(model, config)
        _note(notes, f"model {config.model!r} has no DVE; applied it ({_model_settings(model)})", quiet)
    return model.train(), processor


ReferenceSource = Callable[[], tuple[Any, Any]]
"""Builds ``(model, processor)`` of the start weights, for a reference directory that is still to be written."""


def _resumed_model(config: TrainConfig, checkpoint: Path, notes: list[str], quiet: bool):
    """``(model, processor, reference source)`` to resume from ``checkpoint``: its weights, loaded by
    :func:`load_pretrained`.

    The trainer's own resume reads ``model.safetensors`` with the model's runtime key names, but transformers 5
    saves Qwen2.5-VL checkpoints in the original layout (``visual.*``, ``model.layers.*``), so its load matches no
    key and would leave the start weights in place; the weights are therefore loaded here (the trainer then restores
    the optimizer, scheduler, RNG and data position). The reference model stays the start model: the start
    directory, or for the tiny default ``DIR/reference`` (rebuilt from the seed only if it is missing).
    """
    import torch

    from skinflow.model.dve import check_checkpoint, load_pretrained
    from skinflow.model.processor import load_processor

    if config.model is None:
        from skinflow.model.tiny import build_processor

        processor = build_processor()  # the tiny default's, as _load_model builds it
        source: ReferenceSource | None = lambda: _load_model(config, [], quiet=True)  # noqa: E731
        _note(notes, "no model given; resuming the embedded tiny default", quiet)
    else:
        processor = load_processor(config.model, config=check_checkpoint(config.model, name="model"), name="model")
        source = None
    model = load_pretrained(checkpoint, name="checkpoint", dtype=torch.float32)
    model.config._name_or_path = str(config.model) if config.model is not None else ""
    return model.train(), processor, source


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


@contextlib.contextmanager
def _transformers_bars(enabled: bool) -> Iterator[None]:
    """transformers' own progress bars (loading and writing weights) on only when ``enabled``."""
    from transformers.utils import logging

    before = logging.is_progress_bar_enabled()
    (logging.enable_progress_bar if enabled else logging.disable_progress_bar)()
    try:
        yield
    finally:
        (logging.enable_progress_bar if before else logging.disable_progress_bar)()


def _reward(config: TrainConfig):
    from skinflow.rewards.config import configs_from_mapping
    from skinflow.rewards.trl import make_caption_reward, make_diagnosis_reward

    caption, diagnosis = configs_from_mapping(config.reward)
    return make_caption_reward(caption) if config.stage == "caption" else make_diagnosis_reward(diagnosis)


def _common_args(config: TrainConfig) -> dict[str, Any]:
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
        "save_total_limit": None,  # applied by CompleteCheckpoints, after the new checkpoint is complete
        "logging_steps": config.logging_steps,
        "report_to": [],  # TensorBoard: our TensorBoardCallback into DIR/tensorboard (_callbacks)
        "disable_tqdm": True,  # the bar is ProgressBar's (HF's prints every log as a line)
        "dataloader_num_workers": 0,
        "gradient_checkpointing": config.gradient_checkpointing,
    }


def _callbacks(config: TrainConfig, out: Path, interrupt, progress: bool) -> list[Any]:
    """The callbacks of a run (:mod:`skinflow.train.callbacks`), TensorBoard's when it is on."""
    from skinflow.train.callbacks import CompleteCheckpoints, MetricsLog, ProgressBar, StopOnInterrupt

    callbacks = [MetricsLog(out / METRICS_FILE), StopOnInterrupt(interrupt),
                 CompleteCheckpoints(out, config.save_total_limit)]
    if progress:
        callbacks.append(ProgressBar(config.stage))
    if config.tensorboard:
        from transformers.integrations import TensorBoardCallback

        try:
            tensorboard = TensorBoardCallback()
        except (RuntimeError, ImportError) as error:
            raise ValueError("tensorboard: true needs the tensorboard package (pip install tensorboard); "
                             "or set tensorboard: false") from error
        tensorboard.logging_dir = str(out / TENSORBOARD_DIR)  # rather than HF's default DIR/runs/<time>_<host>
        callbacks.append(tensorboard)
    return callbacks


def _write_reference(source: ReferenceSource, reference: Path) -> None:
    """The start weights and processor into ``reference``, staged and moved in whole."""
    model, processor = source()
    staging = reference.parent / f".{reference.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    shutil.rmtree(reference, ignore_errors=True)
    os.replace(staging, reference)


def _shared_reference(args, source: ReferenceSource, out: Path) -> Path:
    """``DIR/reference`` holding the start weights (TRL builds the GRPO reference model by loading a directory):
    written once by the main process while the others wait, then seen by all."""
    reference = out / REFERENCE_DIR
    with args.main_process_first(local=False, desc="the reference model"):
        if args.should_save and not (reference / "config.json").is_file():
            _write_reference(source, reference)
    if not (reference / "config.json").is_file():
        raise RuntimeError(f"{reference}: the reference model written by the main process is not visible to "
                           f"process {args.process_index} (the output directory must be shared by all processes)")
    return reference


def _trainer(config: TrainConfig, model, processor, dataset, out: Path, source: ReferenceSource | None):
    import trl

    common = _common_args(config)
    if config.stage == "sft":
        args = trl.SFTConfig(**common, max_length=None, completion_only_loss=True)
        return trl.SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor), None
    args = trl.GRPOConfig(
        **common, num_generations=config.num_generations, max_completion_length=config.max_new_tokens,
        beta=config.beta, epsilon=config.epsilon, temperature=config.temperature, loss_type=config.loss_type,
        scale_rewards="group",
    )
    if config.beta > 0 and source is not None:
        model.config._name_or_path = str(_shared_reference(args, source, out))
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


def _write_run(out: Path, config: TrainConfig, reward, model, notes: list[str], resume_from: Path | None,
               world_size: int) -> None:
    previous: list[Any] = []
    if (out / RUN_FILE).is_file():
        with contextlib.suppress(ValueError, AttributeError):
            previous = json.loads((out / RUN_FILE).read_text(encoding="utf-8")).get("history", [])
    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "resumed_from": resume_from.name if resume_from else None, "max_steps": config.max_steps,
             "world_size": world_size}
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
    in last, so an interrupted save never leaves a directory that looks like a complete checkpoint. Every process
    takes part in the trainer's save (it gathers shards under FSDP/DeepSpeed); the main process writes and moves."""
    staging = out / _STAGING
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    if main:
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
    callbacks: list[Any]
    """Added to the trainer by :func:`train` (metrics, checkpoint marks, progress bar, TensorBoard)."""
    interrupt: Any
    progress: bool = False


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
    main = _main_process()
    progress, quiet = progress and main, quiet or not main  # one bar and one set of notes, from rank 0
    notes: list[str] = []
    out, checkpoint = _check_out(config, resume, notes, quiet)
    if config.model is not None:
        from skinflow.model.dve import check_checkpoint

        check_checkpoint(config.model, name="model")  # before the records are decoded
    records = _records(config, progress)
    dataset = build_dataset(records, config, progress)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from skinflow.train.callbacks import Interrupt

    interrupt = Interrupt(quiet=quiet)
    callbacks = _callbacks(config, out, interrupt, progress)
    if checkpoint is None:
        model, processor = _load_model(config, notes, quiet)
        source = (lambda: (model, processor)) if config.model is None else None  # the start weights, untrained yet
    else:
        model, processor, source = _resumed_model(config, checkpoint, notes, quiet)
    if config.freeze_vision:
        _freeze_vision(model)
    out.mkdir(exist_ok=True)
    with _transformers_bars(progress):
        trainer, reward = _trainer(config, model, processor, dataset, out, source)
    return Prepared(config, out, checkpoint, trainer, reward, notes, quiet, callbacks, interrupt, progress)


def train(prepared: Prepared) -> TrainResult:
    """Train a run built by :func:`prepare` and write the final model and the curves; see :func:`run`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from skinflow.train.curves import plot_curves

    config, out, checkpoint, trainer, notes, quiet = (prepared.config, prepared.out, prepared.checkpoint,
                                                      prepared.trainer, prepared.notes, prepared.quiet)
    metrics = out / METRICS_FILE
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    for callback in prepared.callbacks:
        trainer.add_callback(callback)
    main, world_size = trainer.is_world_process_zero(), trainer.args.world_size
    if checkpoint is not None:
        _note(notes, f"resuming from {checkpoint}", quiet)
    if main:
        for step, path in checkpoints(out):
            if checkpoint is None or step > int(checkpoint.name[11:]):
                (path / COMPLETE_FILE).unlink(missing_ok=True)  # incomplete (skipped): it will be written again
        _write_run(out, config, prepared.reward, trainer.model, notes, checkpoint, world_size)
    with prepared.interrupt.installed(), _quiet_resume_warnings(), _transformers_bars(prepared.progress):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        _save_final(trainer, out)
    curves = None
    if main and metrics.is_file():
        curves = plot_curves(metrics, out / CURVES_FILE, title=f"{config.stage}: {out.name}")
    trainer.accelerator.wait_for_everyone()  # every process returns once the files are written
    return TrainResult(out=out, global_step=trainer.state.global_step, checkpoint=last_checkpoint(out),
                       metrics=metrics, log_history=list(trainer.state.log_history), notes=tuple(notes),
                       interrupted=prepared.interrupt.received, curves=curves, world_size=world_size, main_process=main)


def run(config: TrainConfig, *, resume: bool = False, progress: bool | None = None,
        quiet: bool = False) -> TrainResult:
    """Train one stage as ``config`` says (:func:`prepare`, then :func:`train`); see docs/training.md.

    Args:
        config: the run's settings; ``data`` and ``out`` are required.
        resume: continue from the last ``checkpoint-N`` of ``out`` (optimizer, scheduler, RNG and data position),
            also after a finished run with a larger ``max_steps``.
        progress: show a progress bar of the steps with the latest reward, loss and KL (default: when stderr is a
            terminal; only on the main process).
        quiet: print no notes on stderr (they are still in the result and run.json).

    Returns a :class:`TrainResult`. A first SIGINT ends the step in flight, saves a checkpoint and returns
    (``interrupted=True``); a second one raises ``KeyboardInterrupt``.

    Raises:
        ValueError / FileNotFoundError: a bad setting, output directory, model directory, record or image, named,
            before any training step.
    """
    return train(prepare(config, resume=resume, progress=progress, quiet=quiet))
