"""The evaluation's report: ``report.json`` (every number, §3b keys), ``report.md`` (tables) and the plots.

:func:`evaluate_predictions` reads a predictions file, computes :func:`skinflow.eval.metrics.compute_metrics` and
writes :func:`write_report`. Every file is written atomically (``util.atomic_write``; a plot is saved to a temporary
file in the same directory, then moved over the old one with ``os.replace``), so a reader sees the old report or the
new one, never half of one. matplotlib (Agg backend) is imported only when plots are drawn.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from skinflow.eval.metrics import LEVELS, SKIN_GROUPS, EvalSettings, compute_metrics, load_predictions
from skinflow.formats import CAPTION_FIELDS
from skinflow.util import atomic_save, atomic_write

__all__ = ["PLOTS", "evaluate_predictions", "file_sha256", "output_directory", "render_markdown", "write_report"]

PLOTS = ("topk.png", "skin_type.png", "confusion.png")


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_directory(path: str | os.PathLike[str], name: str = "--out") -> Path:
    """``path`` as a directory to write into: created when its parent exists; ``ValueError`` naming ``name``
    otherwise (or when it exists and is not a directory). Call it after every input check, so that a failed
    command leaves nothing behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} {str(path)!r}: exists and is not a directory")
    if not path.exists():
        if not path.parent.is_dir():
            raise ValueError(f"{name} {str(path)!r}: directory {str(path.parent)!r} does not exist")
        path.mkdir()
    return path


def _number(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _estimate(entry: Mapping[str, Any]) -> str:
    ci = entry.get("ci")
    text = _number(entry.get("value"))
    return text if ci is None else f"{text} [{_number(ci[0])}, {_number(ci[1])}]"


def render_markdown(report: Mapping[str, Any]) -> str:
    """report.md: the headline numbers and tables of a report (as :func:`write_report` builds it)."""
    k = report["k"]
    lines = ["# SkinFlow evaluation", ""]
    lines += [f"- model: {report.get('model')}", f"- data: {report.get('data', {}).get('predictions')}",
              f"- cases: {report['n']} (splits: {report.get('splits')}), K = {k}",
              f"- mean Stage II reward: {_number(report['reward']['mean'])}",
              f"- unparseable answers: {_number(report['unparseable']['rate'])} "
              f"({report['unparseable']['count']} of {report['unparseable']['n']})", ""]
    lines += ["## Top-k accuracy", "", "| level | " + " | ".join(f"acc@{j}" for j in range(1, k + 1)) + " |",
              "|---|" + "---|" * k]
    lines += [f"| {level} | " + " | ".join(_number(v) for v in report["topk"][level]) + " |" for level in LEVELS]
    safety = report["safety"]
    lines += ["", "## Safety", "", "| metric | rate | count | n |", "|---|---|---|---|"]
    for name, label in (("missed_malignancy", "missed malignancy (no malignant candidate in the first K)"),
                        ("overcall", "over-call (first candidate malignant, truth not)")):
        entry = safety[name]
        lines.append(f"| {label} | {_number(entry['rate'])} | {entry['count']} | {entry['n']} |")
    settings = report["settings"]
    confidence = int(round(settings["confidence"] * 100))
    lines += ["", f"## By Fitzpatrick skin type (synonym level, {confidence}% bootstrap CI, "
              f"{settings['bootstrap']} resamples, seed {settings['seed']})", "",
              f"| skin type | n | top-1 | top-{k} | malignant n | missed malignancy |", "|---|---|---|---|---|---|"]
    for group in SKIN_GROUPS:
        entry = report["by_skin_type"][group]
        missed = entry["missed_malignancy"]
        lines.append(f"| {group} | {entry['n']} | {_estimate(entry['top1'])} | {_estimate(entry['topk'])} | "
                     f"{missed['n']} | {_estimate(missed)} |")
    gap = report["skin_type_gap"]
    worst = report["worst_group"]
    lines += ["", f"- I-II minus V-VI: top-1 {_estimate(gap['top1'])}, top-{k} {_estimate(gap['topk'])} "
              f"(n = {gap['n'][0]} vs {gap['n'][1]})"]
    for kind in ("type", "pair"):
        entry = worst[kind]
        if entry is not None:
            lines.append(f"- worst {kind}: {entry['group']} (top-{k} {_number(entry['topk'])}, "
                         f"top-1 {_number(entry['top1'])}, n = {entry['n']})")
    caption = report["caption"]
    lines += ["", "## Stage I captions", "", f"- answers scored: {caption['n']}; mean caption reward "
              f"{_number(caption['reward'])}, content {_number(caption['content'])}, "
              f"format {_number(caption['format'])}", "", "| field | mean score | n (target knows it) |",
              "|---|---|---|"]
    lines += [f"| {field} | {_number(caption['fields'][field]['value'])} | {caption['fields'][field]['n']} |"
              for field in CAPTION_FIELDS]
    confusion = report["confusion"]
    lines += ["", "## 9-way confusion (rows: truth; columns: first candidate)", "",
              "| truth \\ first | " + " | ".join(confusion["columns"]) + " |",
              "|---|" + "---|" * len(confusion["columns"])]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |"
              for name, row in zip(confusion["rows"], confusion["matrix"])]
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in report["plots"]]
    return "\n".join(lines) + "\n"


def _save_figure(figure, path: Path) -> None:
    """Save a matplotlib figure atomically (:func:`skinflow.util.atomic_save`)."""
    atomic_save(path, lambda name: figure.savefig(name, format="png", dpi=120, bbox_inches="tight"))


def write_plots(report: Mapping[str, Any], out: Path) -> list[str]:
    """The three plots of :data:`PLOTS` in ``out``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    k = report["k"]
    ks = list(range(1, k + 1))
    figure, axes = plt.subplots(figsize=(5, 4))
    for level in LEVELS:
        axes.plot(ks, report["topk"][level], marker="o", label=level)
    axes.set(xlabel="k", ylabel="accuracy", ylim=(0, 1.02), xticks=ks, title=f"Top-k accuracy (n = {report['n']})")
    axes.legend()
    _save_figure(figure, out / PLOTS[0])
    plt.close(figure)

    groups = list(SKIN_GROUPS)
    figure, axes = plt.subplots(figsize=(8, 4))
    width = 0.38
    for offset, metric in ((-width / 2, "top1"), (width / 2, "topk")):
        xs, values, low, high = [], [], [], []
        for index, group in enumerate(groups):
            entry = report["by_skin_type"][group][metric]
            if entry["value"] is None:
                continue
            xs.append(index + offset)
            values.append(entry["value"])
            ci = entry["ci"] or [entry["value"], entry["value"]]
            low.append(max(0.0, entry["value"] - ci[0]))
            high.append(max(0.0, ci[1] - entry["value"]))
        axes.bar(xs, values, width, yerr=[low, high], capsize=3, label="top-1" if metric == "top1" else f"top-{k}")
    axes.set_xticks(range(len(groups)), [f"{g}\n(n={report['by_skin_type'][g]['n']})" for g in groups], fontsize=8)
    axes.set(ylabel="accuracy (synonym level)", ylim=(0, 1.05), title="Accuracy per Fitzpatrick skin type")
    axes.legend()
    _save_figure(figure, out / PLOTS[1])
    plt.close(figure)

    confusion = report["confusion"]
    matrix = confusion["matrix"]
    figure, axes = plt.subplots(figsize=(8, 7))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(confusion["columns"])), confusion["columns"], rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(confusion["rows"])), confusion["rows"], fontsize=8)
    peak = max((value for row in matrix for value in row), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value:
                axes.text(j, i, str(value), ha="center", va="center", fontsize=7,
                          color="white" if value > peak / 2 else "black")
    axes.set(xlabel="first candidate's 9-way group", ylabel="truth's 9-way group", title="9-way confusion")
    figure.colorbar(image, ax=axes, fraction=0.046)
    _save_figure(figure, out / PLOTS[2])
    plt.close(figure)
    return list(PLOTS)


def write_report(metrics: Mapping[str, Any], out: str | os.PathLike[str], *, model: Any = None,
                 data: Mapping[str, Any] | None = None, plots: bool = True) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and (``plots``) the plots into the directory ``out`` (created when its
    parent exists); returns the report.

    The report is ``metrics`` plus ``model`` (what produced the answers), ``data`` (the predictions file and its
    SHA-256, the data set when known), ``plots`` (file names), ``created`` (UTC time) and ``skinflow`` (version).
    """
    out = output_directory(out)
    report: dict[str, Any] = dict(metrics)
    report["model"] = model
    report["data"] = dict(data or {})
    report["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report["skinflow"] = _version()
    report["plots"] = write_plots(report, out) if plots else []
    text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write(out / "report.json", lambda file: file.write(text))
    markdown = render_markdown(report)
    atomic_write(out / "report.md", lambda file: file.write(markdown))
    return report


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("fdlinear")
    except metadata.PackageNotFoundError:
        return None


def _models_of(rows: list[Mapping[str, Any]]) -> Any:
    names = sorted({str(row["model"]) for row in rows if row.get("model") is not None})
    if not names:
        return None
    return names[0] if len(names) == 1 else names


def evaluate_predictions(predictions: str | os.PathLike[str], out: str | os.PathLike[str] | None,
                         settings: EvalSettings | None = None, *, plots: bool = True,
                         data: Mapping[str, Any] | None = None, split: str | None = None) -> dict[str, Any]:
    """Score a predictions file (only the rows of ``split`` when given) and write the report into ``out``
    (``None``: write nothing); returns the report (or, without ``out``, the metrics). Every input check runs before
    ``out`` is created."""
    rows = load_predictions(predictions)
    if split is not None:
        rows = [row for row in rows if row["split"] == split]
        if not rows:
            raise ValueError(f"{predictions}: no rows in split {split!r}")
        data = {**(data or {}), "split": split}
    metrics = compute_metrics(rows, settings, source=str(predictions))
    if out is None:
        return metrics
    provenance = {"predictions": str(predictions), "predictions_sha256": file_sha256(predictions), **(data or {})}
    return write_report(metrics, out, model=_models_of(rows), data=provenance, plots=plots)
