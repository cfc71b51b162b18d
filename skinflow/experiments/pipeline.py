"""The whole SkinFlow pipeline on the embedded default (``make demo``), and the paper's ablation on it (``skinflow
ablate``, ``make ablation``); docs/demo.md.

One run of the pipeline, into ``OUT``:

1. ``data``: the synthetic set (train/val/test), with lesion masks (:func:`skinflow.data.synthetic.save`);
2. ``base``: the tiny default (random init) with its vision tower pretrained on the generic visual attributes
   (:func:`skinflow.train.vision.pretrain_vision`): the stand-in for the pretrained encoder of a real base model;
3. ``warm``: the SFT warm start on both answer formats, as the recipe's ``warm`` settings say; the demo's teaches
   the format and the generic attributes, not the dermatology (lesion type, texture, border, surface and
   surrounding come from a random other record, ``sft_answers: format``), and a generalist's differential
   (``sft_diagnosis_truth``: the label, then the labels whose captions are most alike);
4. ``stage1``: Stage I caption GRPO (optional, per arm); 5. ``stage2``: Stage II diagnosis GRPO;
6. ``eval``: the evaluation protocol on the held-out test split (predictions, report.json/report.md, plots, the
   attention analysis with lesion focus), and the same scoring of two baselines: a constant answer (the training
   set's most frequent caption terms and labels) and the warm start itself (the model before any RL).

Every stage writes ``stage.json`` (its settings and results) last; a rerun reuses a finished stage with the same
settings, resumes a training stage from its last checkpoint, and refuses a finished stage whose settings differ
(naming it). An ablation shares data, base and warm start across arms (one base and warm start per seed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from skinflow.formats import CAPTION_FIELDS, DEFAULT_K, format_caption, format_diagnoses
from skinflow.util import atomic_save, atomic_write, check_int, describe

__all__ = ["ARMS", "PAPER_TOP1", "Arm", "PipelineConfig", "load_pipeline_config", "run_ablation", "run_pipeline"]

STAGE_FILE = "stage.json"


@dataclass(frozen=True)
class Arm:
    """One arm of the ablation: whether the DVE is used and whether Stage I runs before Stage II."""

    name: str
    dve: bool
    stage1: bool
    description: str


ARMS: tuple[Arm, ...] = (
    Arm("stage2-only", dve=False, stage1=False, description="Stage II only, without the DVE"),
    Arm("stage1+2", dve=False, stage1=True, description="Stage I + Stage II, without the DVE"),
    Arm("full", dve=True, stage1=True, description="the full model: DVE, Stage I + Stage II"),
    Arm("dve-no-stage1", dve=True, stage1=False, description="the DVE without Stage I (Stage II only)"),
)
"""The paper's ablation arms, in the paper's order (the last one is not in the paper's table)."""

PAPER_TOP1: dict[str, float | None] = {"stage2-only": 15.22, "stage1+2": 24.45, "full": 29.19, "dve-no-stage1": None}
"""The paper's Fitzpatrick17k Top-1 (%) of each arm (None: not reported)."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class PipelineConfig:
    """Data, budgets and settings of the pipeline; a YAML recipe is a flat mapping of these names (recipes/)."""

    records: int = field(default=1600, metadata=_help("synthetic records in all (80/10/10 train/val/test)"))
    data_seed: int = field(default=0, metadata=_help("seed of the synthetic set (the same for every model seed)"))
    image_size: int = field(default=64, metadata=_help("image side in pixels (64: 16 image tokens)"))
    seed: int = field(default=0, metadata=_help("model seed: initialisation, data order, sampling"))
    vision_steps: int = field(default=600, metadata=_help("vision pretraining steps (0: none)"))
    vision_lr: float = field(default=3e-3, metadata=_help("vision pretraining peak learning rate"))
    vision_batch_size: int = field(default=32, metadata=_help("vision pretraining images per step"))
    warm: Mapping[str, Any] = field(default_factory=dict, metadata=_help(
        "skinflow.train settings of the SFT warm start (stage sft; sft_target both, sft_answers format)"))
    stage1: Mapping[str, Any] = field(default_factory=dict, metadata=_help("settings of Stage I (caption GRPO)"))
    stage2: Mapping[str, Any] = field(default_factory=dict, metadata=_help("settings of Stage II (diagnosis GRPO)"))
    k: int = field(default=DEFAULT_K, metadata=_help("ranked diagnoses asked for (training and evaluation)"))
    eval_batch_size: int = field(default=32, metadata=_help("images per generation batch in the evaluation"))
    max_new_tokens: int = field(default=96, metadata=_help("generation budget per answer in the evaluation"))
    bootstrap: int = field(default=1000, metadata=_help("bootstrap resamples of the evaluation's intervals"))
    attention_records: int = field(default=32, metadata=_help("test records of the attention analysis (0: none)"))
    show: int = field(default=4, metadata=_help("test images diagnosed and printed at the end of the demo"))
    threads: int = field(default=1, metadata=_help(
        "torch threads per process (1: the tiny model is latency-bound; more threads mostly add overhead)"))

    def __post_init__(self) -> None:
        for name, minimum in (("records", 20), ("data_seed", 0), ("seed", 0), ("vision_steps", 0),
                              ("vision_batch_size", 1), ("k", 1), ("eval_batch_size", 1), ("max_new_tokens", 1),
                              ("bootstrap", 0), ("attention_records", 0), ("show", 0), ("threads", 1),
                              ("image_size", 32)):
            check_int(name, getattr(self, name), minimum=minimum)
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        if not isinstance(self.vision_lr, (int, float)) or isinstance(self.vision_lr, bool) or \
                not math.isfinite(self.vision_lr) or self.vision_lr <= 0:
            raise ValueError(f"vision_lr must be a positive number, got {describe(self.vision_lr)}")
        for name in ("warm", "stage1", "stage2"):
            settings = getattr(self, name)
            if not isinstance(settings, Mapping):
                raise ValueError(f"{name} must be a mapping of training settings, got {describe(settings)}")
            reserved = sorted(set(settings) & {"stage", "model", "data", "out", "seed", "dve", "k"})
            if reserved:
                raise ValueError(f"{name}: {reserved} are set by the pipeline")
            self._train_config(name, settings, data="data.jsonl", out="out", model=None, dve=False)
            object.__setattr__(self, name, dict(settings))

    def _train_config(self, name: str, settings: Mapping[str, Any], **paths: Any):
        from skinflow.train.config import TrainConfig

        stage = {"warm": "sft", "stage1": "caption", "stage2": "diagnosis"}[name]
        return TrainConfig.from_mapping({**settings, "stage": stage, "seed": self.seed, "k": self.k, **paths},
                                        where=name)

    def to_json(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    def replace(self, **changes: Any) -> PipelineConfig:
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})


def load_pipeline_config(path: str | os.PathLike[str], **overrides: Any) -> PipelineConfig:
    """A :class:`PipelineConfig` from a YAML recipe, with ``overrides`` (``None`` ignored); unknown keys, bad
    values and unreadable files raise ``ValueError``/``FileNotFoundError`` naming the file and key."""
    from skinflow.train.config import read_settings

    settings, where = read_settings(path, **overrides)
    names = [item.name for item in fields(PipelineConfig)]
    unknown = sorted(str(key) for key in settings if key not in names)
    if unknown:
        raise ValueError(f"{where}: unknown settings {unknown}; known: {names}")
    try:
        return PipelineConfig(**settings)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from error


# ---------------------------------------------------------------------------------------------------- stages


class _Log:
    """One line per stage on stdout (and every line in OUT/pipeline.log)."""

    def __init__(self, out: Path, quiet: bool) -> None:
        self.path, self.quiet = out / "pipeline.log", quiet

    def __call__(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        if not self.quiet:
            print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line + "\n")


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


def _stage(directory: Path, label: str, settings: Mapping[str, Any], work: Callable[[Path], dict[str, Any]],
           log: _Log, summary: Callable[[dict[str, Any]], str] = lambda result: "") -> dict[str, Any]:
    """Run ``work(directory)`` unless ``directory/stage.json`` says it ran with ``settings``; returns its result."""
    settings = json.loads(json.dumps(settings))
    marker = directory / STAGE_FILE
    if marker.is_file():
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        changed = _differences(recorded.get("settings", {}), settings)
        if changed:
            raise ValueError(f"{directory}: a finished {label} made with other settings ({', '.join(changed)}); "
                             "remove it or choose another --out")
        log(f"{label}: reused {directory}")
        return recorded["result"]
    started = time.perf_counter()
    log(f"{label}: running ...")
    result = work(directory)
    seconds = round(time.perf_counter() - started, 1)
    record = {"settings": settings, "result": result, "seconds": seconds}
    atomic_write(marker, lambda file: json.dump(record, file, indent=2, ensure_ascii=False))
    text = summary(result)
    log(f"{label}: done in {seconds:.0f} s" + (f"; {text}" if text else ""))
    return result


def _data(config: PipelineConfig, directory: Path) -> dict[str, Any]:
    from skinflow.data.synthetic import generate, save

    if directory.exists():
        shutil.rmtree(directory)  # a half-written set from an interrupted run (save itself is atomic)
    directory.mkdir(parents=True)
    records = generate(config.records, seed=config.data_seed, image_size=config.image_size, progress=False)
    save(records, directory / "synthetic.jsonl", directory / "images", progress=False)
    counts = {split: sum(record["split"] == split for record in records) for split in ("train", "val", "test")}
    return {"jsonl": str(directory / "synthetic.jsonl"), "splits": counts,
            "labels": len({record["label"] for record in records})}


def _records(data: Mapping[str, Any], split: str | None = None) -> list[dict[str, Any]]:
    from skinflow.data.records import load_jsonl

    records = load_jsonl(data["jsonl"], progress=False)
    return [record for record in records if split is None or record["split"] == split]


def _base(config: PipelineConfig, data: Mapping[str, Any], directory: Path) -> dict[str, Any]:
    from skinflow.model import tiny
    from skinflow.train.vision import pretrain_vision

    model, processor = tiny.build(seed=config.seed, dve=False, image_size=config.image_size)
    result: dict[str, Any] = {"vision": None}
    if config.vision_steps:
        result["vision"] = pretrain_vision(
            model, processor, _records(data, "train"), held_out=_records(data, "val"), steps=config.vision_steps,
            lr=config.vision_lr, batch_size=config.vision_batch_size, seed=config.seed)
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)
    return result


def _train(config: PipelineConfig, name: str, data: Mapping[str, Any], start: Path, directory: Path,
           dve: bool) -> dict[str, Any]:
    from skinflow.train.runner import last_checkpoint, run

    settings = getattr(config, name)
    train_config = config._train_config(name, settings, data=data["jsonl"], out=str(directory), model=str(start),
                                        dve=dve)
    resume = last_checkpoint(directory) is not None
    if directory.exists() and not resume:
        shutil.rmtree(directory)  # started but never reached a checkpoint
    directory.parent.mkdir(parents=True, exist_ok=True)
    result = run(train_config, resume=resume, progress=False, quiet=True)
    rewards = [entry["reward"] for entry in result.log_history if "reward" in entry]
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    head = max(1, len(rewards) // 5)
    return {"model": str(directory), "steps": result.global_step,
            "reward_first": statistics.fmean(rewards[:head]) if rewards else None,
            "reward_last": statistics.fmean(rewards[-head:]) if rewards else None,
            "loss_last": losses[-1] if losses else None, "notes": list(result.notes)}


def _train_summary(result: Mapping[str, Any]) -> str:
    text = f"{result['steps']} steps"
    if result.get("reward_first") is not None:
        text += f", reward {result['reward_first']:.3f} -> {result['reward_last']:.3f} (first/last fifth)"
    elif result.get("loss_last") is not None:
        text += f", loss {result['loss_last']:.3f}"
    return text


def _load(model_dir: str | Path):
    from skinflow.model.dve import load_pretrained
    from skinflow.model.processor import load_processor

    return load_pretrained(model_dir, name="model").eval(), load_processor(model_dir, name="model")


def _constant_predictions(config: PipelineConfig, data: Mapping[str, Any], path: Path) -> Path:
    """The predictions file of the constant answer: every caption field's most frequent training term, and the K
    most frequent training labels, for every test image."""
    from collections import Counter

    from skinflow.eval.predict import prediction_row

    train = _records(data, "train")
    caption = {name: Counter(r["caption"].get(name, "") for r in train).most_common(1)[0][0] for name in CAPTION_FIELDS}
    labels = [label for label, _ in Counter(r["label"] for r in train).most_common(config.k)]
    rows = [prediction_row(record, format_caption(caption), format_diagnoses(labels), config.k, "constant answer")
            for record in _records(data, "test")]
    atomic_write(path, lambda file: file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def _evaluate(config: PipelineConfig, data: Mapping[str, Any], model_dir: str | None, directory: Path,
              attention: bool) -> dict[str, Any]:
    from skinflow.eval.metrics import EvalSettings
    from skinflow.eval.predict import predict
    from skinflow.eval.report import evaluate_predictions

    directory.mkdir(parents=True, exist_ok=True)
    test = _records(data, "test")
    settings = EvalSettings(k=config.k, bootstrap=config.bootstrap, seed=0)
    if model_dir is None:
        predictions = _constant_predictions(config, data, directory / "predictions.jsonl")
    else:
        model, processor = _load(model_dir)
        predictions = predict(model, processor, test, directory / "predictions.jsonl", k=config.k,
                              batch_size=config.eval_batch_size, max_new_tokens=config.max_new_tokens,
                              model_name=str(model_dir))
    report = evaluate_predictions(predictions, directory / "report", settings,
                                  data={"jsonl": data["jsonl"], "split": "test"})
    result = {"report": str(directory / "report" / "report.json"), **_metrics_of(report, config.k)}
    if attention and model_dir is not None and config.attention_records:
        from skinflow.eval.attention import attention_analysis

        (directory / "attention").mkdir(exist_ok=True)
        summary = attention_analysis(model, processor, test[:config.attention_records], directory / "attention",
                                     k=config.k, max_new_tokens=config.max_new_tokens, overlays=8,
                                     model_name=str(model_dir), bootstrap=config.bootstrap)
        result["attention"] = {"relative_bins": summary["relative_bins"], "bins": summary["bins"],
                               "lesion": {key: summary["lesion"].get(key) for key in ("focus", "focus_ci", "records")}
                               if summary.get("lesion") else None}
    return result


def _metrics_of(report: Mapping[str, Any], k: int) -> dict[str, Any]:
    """Top-1 and Top-K (synonym level, with intervals), the caption content score, the mean Stage II reward, the
    skin-type gap and the share of unparseable answers of a report."""
    caption = report.get("caption") or {}
    return {"top1": report["overall"]["top1"], "topk": report["overall"]["topk"], "caption": caption.get("content"),
            "caption_fields": {name: entry.get("value") for name, entry in (caption.get("fields") or {}).items()},
            "reward": report["reward"]["mean"], "gap": report["skin_type_gap"],
            "unparseable": report["unparseable"]["rate"]}


def _eval_summary(result: Mapping[str, Any]) -> str:
    text = f"top-1 {result['top1']['value']:.3f}, top-K {result['topk']['value']:.3f}"
    if result.get("caption") is not None:
        text += f", caption {result['caption']:.3f}"
    return text


# ---------------------------------------------------------------------------------------------------- runs


def _set_threads(config: PipelineConfig) -> None:
    """The pipeline's torch threads, and one line per stage: the libraries' own progress bars and deprecation
    warnings off (the training stages log to their metrics.jsonl and TensorBoard)."""
    import warnings

    import datasets
    import torch
    import transformers

    torch.set_num_threads(config.threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|trl|torch)\b")


def _data_settings(config: PipelineConfig) -> dict[str, Any]:
    return {"records": config.records, "data_seed": config.data_seed, "image_size": config.image_size}


def _data_stage(out: Path, config: PipelineConfig, log: _Log) -> dict[str, Any]:
    return _stage(out / "data", "data", _data_settings(config), lambda d: _data(config, d), log,
                  lambda r: f"{r['splits']} records, {r['labels']} diagnoses")


def _prefix(out: Path, config: PipelineConfig, log: _Log) -> tuple[dict[str, Any], Path]:
    """Data, base and warm start (shared by every arm of a seed); returns the data result and the warm model."""
    data = _data_stage(out, config, log)
    seed_dir = out / f"seed-{config.seed}"
    base_settings = {**_data_settings(config), "seed": config.seed, "vision_steps": config.vision_steps,
                     "vision_lr": config.vision_lr, "vision_batch_size": config.vision_batch_size}
    _stage(seed_dir / "base", f"seed {config.seed} base (vision pretraining)", base_settings,
           lambda d: _base(config, data, d), log, _vision_summary)
    warm_settings = {**base_settings, "k": config.k, "train": dict(config.warm)}
    _stage(seed_dir / "warm", f"seed {config.seed} warm start (SFT)", warm_settings,
           lambda d: _train(config, "warm", data, seed_dir / "base", d, dve=False), log, _train_summary)
    return data, seed_dir


def _vision_summary(result: Mapping[str, Any]) -> str:
    vision = result.get("vision")
    if not vision or "held_out_accuracy" not in vision:
        return "no vision pretraining"
    shown = ", ".join(f"{name} {value:.2f}" for name, value in vision["held_out_accuracy"].items())
    return f"held-out accuracy {shown}"


def _arm(out: Path, config: PipelineConfig, arm: Arm, data: Mapping[str, Any], seed_dir: Path, log: _Log,
         attention: bool = True) -> dict[str, Any]:
    """Stage I (if the arm has it), Stage II and the evaluation of one arm; returns the evaluation's result."""
    settings = {"data": data["jsonl"], "seed": config.seed, "warm": dict(config.warm), "k": config.k,
                "vision_steps": config.vision_steps}
    start = seed_dir / "warm"
    if arm.stage1:
        stage1_dir = seed_dir / ("stage1-dve" if arm.dve else "stage1")
        stage1_settings = {**settings, "dve": arm.dve, "train": dict(config.stage1)}
        _stage(stage1_dir, f"seed {config.seed} Stage I ({'DVE' if arm.dve else 'no DVE'})", stage1_settings,
               lambda d: _train(config, "stage1", data, start, d, dve=arm.dve), log, _train_summary)
        start, settings = stage1_dir, stage1_settings
    stage2_dir = seed_dir / arm.name / "stage2"
    stage2_settings = {**settings, "arm": arm.name, "dve": arm.dve, "stage2": dict(config.stage2)}
    _stage(stage2_dir, f"seed {config.seed} {arm.name}: Stage II", stage2_settings,
           lambda d: _train(config, "stage2", data, start, d, dve=arm.dve), log, _train_summary)
    eval_settings = {**stage2_settings, "eval": [config.eval_batch_size, config.max_new_tokens, config.bootstrap,
                                                 config.attention_records if attention else 0]}
    return _stage(seed_dir / arm.name / "eval", f"seed {config.seed} {arm.name}: evaluation", eval_settings,
                  lambda d: _evaluate(config, data, str(stage2_dir), d, attention), log, _eval_summary)


def _baseline_eval(config: PipelineConfig) -> list[int]:
    return [config.eval_batch_size, config.max_new_tokens, config.bootstrap]


def _constant_baseline(out: Path, config: PipelineConfig, data: Mapping[str, Any], log: _Log) -> dict[str, Any]:
    return _stage(out / "baselines" / "constant", "baseline: constant answer",
                  {"data": data["jsonl"], "k": config.k, "eval": _baseline_eval(config)},
                  lambda d: _evaluate(config, data, None, d, False), log, _eval_summary)


def _warm_baseline(config: PipelineConfig, data: Mapping[str, Any], seed_dir: Path, log: _Log) -> dict[str, Any]:
    return _stage(seed_dir / "warm-eval", f"seed {config.seed} baseline: the warm start (no RL)",
                  {"data": data["jsonl"], "seed": config.seed, "warm": dict(config.warm), "k": config.k,
                   "vision_steps": config.vision_steps, "eval": _baseline_eval(config)},
                  lambda d: _evaluate(config, data, str(seed_dir / "warm"), d, False), log, _eval_summary)


def _chance(config: PipelineConfig, data: Mapping[str, Any]) -> dict[str, float]:
    return {"top1": 1 / data["labels"], "topk": min(1.0, config.k / data["labels"])}


def run_pipeline(config: PipelineConfig, out: str | os.PathLike[str], *, arm: str = "full", quiet: bool = False,
                 show: bool = True) -> dict[str, Any]:
    """The demo: data → base → warm start → (Stage I) → Stage II → evaluation of ``arm``, and the baselines, into
    ``out``; writes ``out/summary.json`` and ``out/summary.md`` and returns the summary (see the module docstring).

    A rerun reuses finished stages; a stage made with other settings is a ``ValueError`` naming it.
    """
    chosen = _arm_named(arm)
    out = _output(out)
    _set_threads(config)
    log = _Log(out, quiet)
    started = time.perf_counter()
    data, seed_dir = _prefix(out, config, log)
    result = _arm(out, config, chosen, data, seed_dir, log)
    baselines = {"chance": _chance(config, data), "constant": _constant_baseline(out, config, data, log),
                 "warm": _warm_baseline(config, data, seed_dir, log)}
    summary = {"config": config.to_json(), "arm": chosen.name, "result": result, "baselines": baselines,
               "model": str(seed_dir / chosen.name / "stage2"), "seconds": round(time.perf_counter() - started, 1)}
    atomic_write(out / "summary.json", lambda file: json.dump(summary, file, indent=2, ensure_ascii=False))
    atomic_write(out / "summary.md", lambda file: file.write(_summary_markdown(summary)))
    if show and config.show:
        _show(summary["model"], _records(data, "test")[:config.show], config, log)
    log(f"report: {result['report']}; summary: {out / 'summary.md'}")
    return summary


def _arm_named(name: str) -> Arm:
    for arm in ARMS:
        if arm.name == name:
            return arm
    raise ValueError(f"arm must be one of {[arm.name for arm in ARMS]}, got {describe(name)}")


def _output(out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r}: exists and is not a directory")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--out {str(out)!r}: {str(parent)!r} is not a directory")
    out.mkdir(parents=True, exist_ok=True)  # like mkdir -p: `make demo` in a fresh clone has no runs/ yet
    return out


def _show(model_dir: str, records: Sequence[Mapping[str, Any]], config: PipelineConfig, log: _Log) -> None:
    from skinflow.model.inference import diagnose

    model, processor = _load(model_dir)
    answers = diagnose(model, processor, [record["image_path"] for record in records], k=config.k,
                       max_new_tokens=config.max_new_tokens)
    for record, answer in zip(records, answers):
        ranked = ", ".join(candidate.text for candidate in answer.candidates[:3]) or "(nothing parsed)"
        log(f"diagnose {Path(record['image_path']).name}: truth {record['label']!r}; model: {ranked}")


def _estimate(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "–"
    ci = entry.get("ci")
    return f"{entry['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _summary_markdown(summary: Mapping[str, Any]) -> str:
    result, baselines = summary["result"], summary["baselines"]
    lines = [f"# SkinFlow demo ({summary['arm']})", "",
             f"Held-out test split; 95% bootstrap intervals. Model: `{summary['model']}`.", "",
             "| | Top-1 | Top-K | caption content |", "|---|---|---|---|",
             f"| chance | {baselines['chance']['top1']:.3f} | {baselines['chance']['topk']:.3f} | – |"]
    for name, entry in (("constant answer", baselines["constant"]), ("warm start (no RL)", baselines["warm"]),
                        (summary["arm"], result)):
        caption = "–" if entry.get("caption") is None else f"{entry['caption']:.3f}"
        lines.append(f"| {name} | {_estimate(entry['top1'])} | {_estimate(entry['topk'])} | {caption} |")
    lines += ["", f"Report: `{result['report']}`; {summary['seconds']:.0f} s in all.", ""]
    return "\n".join(lines)


def _seed_run(config_json: Mapping[str, Any], out: str, arm_names: Sequence[str],
              quiet: bool) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """One seed of the ablation — base, warm start, every arm and the warm-start baseline — possibly in a process
    of its own; returns ``({arm: evaluation result}, warm-start baseline)``."""
    config = PipelineConfig(**config_json)
    _set_threads(config)
    log = _Log(Path(out), quiet)
    data, seed_dir = _prefix(Path(out), config, log)
    results = {name: _arm(Path(out), config, _arm_named(name), data, seed_dir, log) for name in arm_names}
    return results, _warm_baseline(config, data, seed_dir, log)


def run_ablation(config: PipelineConfig, out: str | os.PathLike[str], seeds: Sequence[int] = (0, 1, 2), *,
                 arms: Sequence[str] | None = None, jobs: int = 1, quiet: bool = False) -> dict[str, Any]:
    """Train and evaluate every arm (:data:`ARMS`) for every seed on the same data and budgets; writes
    ``ablation.json``, ``ablation.md`` and ``attention.png`` into ``out`` and returns the table.

    Seeds are replicates: each arm's numbers are the mean over seeds with a 95% t-interval (none with one seed).
    ``jobs`` > 1 runs that many seeds at once, each in a process of its own (``config.threads`` torch threads
    each; the shared data set is made first). Resumable: finished stages are reused (:func:`run_pipeline`'s rules).
    """
    chosen = [_arm_named(name) for name in (arms or [arm.name for arm in ARMS])]
    seeds = [check_int(f"seeds[{index}]", seed, minimum=0) for index, seed in enumerate(seeds)]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    jobs = check_int("jobs", jobs, minimum=1)
    out = _output(out)
    _set_threads(config)
    log = _Log(out, quiet)
    started = time.perf_counter()
    data = _data_stage(out, config, log)
    constant = _constant_baseline(out, config, data, log)
    tasks = [(config.replace(seed=seed).to_json(), str(out), [arm.name for arm in chosen], quiet) for seed in seeds]
    if jobs > 1 and len(seeds) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(jobs, len(seeds)), mp_context=multiprocessing.get_context("spawn")) as pool:
            outcomes = list(pool.map(_seed_run, *zip(*tasks)))
    else:
        outcomes = [_seed_run(*task) for task in tasks]
    results = {arm.name: [outcome[0][arm.name] for outcome in outcomes] for arm in chosen}
    warm = [outcome[1] for outcome in outcomes]
    table = {arm.name: {**_replicates(results[arm.name]), **_paired(results[arm.name], warm)} for arm in chosen}
    ablation = {"config": config.to_json(), "seeds": seeds, "arms": {arm.name: dataclasses.asdict(arm) for arm in chosen},
                "table": table, "per_seed": results, "paper_top1": PAPER_TOP1,
                "baselines": {"chance": _chance(config, data), "constant": constant,
                              "warm": _replicates(warm)},
                "seconds": round(time.perf_counter() - started, 1)}
    atomic_write(out / "ablation.json", lambda file: json.dump(ablation, file, indent=2, ensure_ascii=False))
    atomic_write(out / "ablation.md", lambda file: file.write(ablation_markdown(ablation)))
    _attention_figure(results, out / "attention.png")
    log(f"ablation table: {out / 'ablation.md'}")
    return ablation


_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_ci(values: Sequence[float], bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Mean of ``values`` with a 95% Student-t interval (``ci`` None for fewer than 2 values), clipped to
    ``bounds`` (e.g. ``(0, 1)`` for accuracies) when given."""
    values = [float(value) for value in values if value is not None]
    if not values:
        return {"value": None, "ci": None, "n": 0}
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"value": mean, "ci": None, "n": 1}
    half = _T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"value": mean, "ci": [low, high], "n": len(values)}


def _replicates(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    def value(entry: Any) -> float | None:
        return entry.get("value") if isinstance(entry, Mapping) else entry

    table = {name: mean_ci([value(result.get(name)) for result in results], bounds=(0.0, 1.0))
             for name in ("top1", "topk", "caption", "reward")}
    table["gap"] = mean_ci([value((result.get("gap") or {}).get("top1")) for result in results])
    focus = [((result.get("attention") or {}).get("lesion") or {}).get("focus") for result in results]
    table["lesion_focus"] = mean_ci(focus)
    focused = [_focused_share(result) for result in results]
    table["focused_attention"] = mean_ci(focused)
    return table


def _paired(results: Sequence[Mapping[str, Any]], warm: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The arm minus the warm start of the same seed, Top-1 and Top-K: the seeds' paired differences, with a
    95% t-interval (the arms of a seed share its warm start)."""
    def differences(name: str) -> list[float]:
        return [result[name]["value"] - start[name]["value"] for result, start in zip(results, warm)]

    return {"top1_vs_warm": mean_ci(differences("top1")), "topk_vs_warm": mean_ci(differences("topk"))}


def _focused_share(result: Mapping[str, Any]) -> float | None:
    """The share of answer-to-image attention weights at least twice uniform (w·N ≥ 2)."""
    bins = (result.get("attention") or {}).get("relative_bins")
    if not bins:
        return None
    return sum(share for name, share in bins.items() if _lower_edge(name) >= 2.0)


def _lower_edge(name: str) -> float:
    return float(name.lstrip(">").split("-")[0])


def ablation_markdown(ablation: Mapping[str, Any]) -> str:
    """The ablation table as Markdown (mean over seeds [95% t-interval]) beside the paper's Top-1."""
    seeds = ablation["seeds"]
    lines = [f"Seeds {seeds} (replicates); held-out test split of the synthetic set; mean [95% t-interval].", "",
             "| arm | Top-1 | Top-6 | Top-1 − warm start (paired) | Top-6 − warm start (paired) | caption content "
             "| skin-type gap (I–II − V–VI, Top-1) | attention ≥ 2× uniform | lesion focus "
             "| paper Top-1 (Fitzpatrick17k) |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(entry: Mapping[str, Any]) -> str:
        if entry.get("value") is None:
            return "–"
        ci = entry.get("ci")
        return f"{entry['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    for name, row in ablation["table"].items():
        paper = ablation["paper_top1"].get(name)
        cells = [cell(row[key]) for key in ("top1", "topk", "top1_vs_warm", "topk_vs_warm", "caption", "gap",
                                            "focused_attention", "lesion_focus")]
        lines.append(f"| {ablation['arms'][name]['description']} | {' | '.join(cells)} | "
                     f"{'–' if paper is None else f'{paper:.2f}%'} |")
    base = ablation["baselines"]
    lines += ["", f"Baselines: chance Top-1 {base['chance']['top1']:.3f}, Top-6 {base['chance']['topk']:.3f}; "
              f"constant answer Top-1 {_estimate(base['constant']['top1'])}, "
              f"Top-6 {_estimate(base['constant']['topk'])}, caption content {base['constant'].get('caption') or 0:.3f}; "
              f"warm start (no RL) Top-1 {cell(base['warm']['top1'])}, "
              f"Top-6 {cell(base['warm']['topk'])}, caption content {cell(base['warm']['caption'])}.", ""]
    return "\n".join(lines)


def _attention_figure(results: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> None:
    """Bars of the relative-attention histogram (w·N bins) of every arm, averaged over seeds; atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = {name: [r["attention"]["relative_bins"] for r in runs if r.get("attention")]
            for name, runs in results.items()}
    arms = {name: bins for name, bins in arms.items() if bins}
    if not arms:
        return
    labels = list(next(iter(arms.values()))[0])
    figure, axis = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(arms)
    for index, (name, bins) in enumerate(arms.items()):
        heights = [statistics.fmean(entry[label] for entry in bins) for label in labels]
        axis.bar([position + index * width for position in range(len(labels))], heights, width, label=name)
    axis.set_xticks([position + 0.4 - width / 2 for position in range(len(labels))], labels)
    axis.set_xlabel("attention weight relative to uniform (w·N)")
    axis.set_ylabel("share of weights")
    axis.legend()
    figure.tight_layout()
    atomic_save(path, lambda name: figure.savefig(name, format="png", dpi=120))
    plt.close(figure)
