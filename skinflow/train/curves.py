"""The training curves of a run (``reward_curves.png``), drawn from its ``metrics.jsonl``.

GRPO: the reward and its parts per step (``rewards/<name>/<part>``, the caption fields in their own panel), the
loss and the KL to the reference. SFT logs no reward: its loss and mean token accuracy. matplotlib (Agg, no
pyplot: nothing global changes), written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from skinflow.util import atomic_save

__all__ = ["CURVES_FILE", "curves_from_metrics", "plot_curves"]

CURVES_FILE = "reward_curves.png"


def curves_from_metrics(path: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """``name -> [(step, value), ...]`` of the per-step entries of a ``metrics.jsonl`` (those with a loss), sorted
    by step; a step logged twice (a run resumed from an earlier checkpoint) keeps its last entry. Lines that are
    not JSON objects (a write cut short) are skipped."""
    last: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as file:
        for line in file:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and "loss" in entry and isinstance(entry.get("step"), int):
                last[entry["step"]] = entry
    curves: dict[str, list[tuple[int, float]]] = {}
    for step in sorted(last):
        for key, value in last[step].items():
            if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                curves.setdefault(key, []).append((step, float(value)))
    return curves


def _panels(curves: dict[str, list[tuple[int, float]]]) -> list[tuple[str, list[str]]]:
    parts = sorted(key for key in curves if key.startswith("rewards/") and not key.endswith(("/std", "/mean"))
                   and "/field/" not in key)
    fields = sorted(key for key in curves if key.startswith("rewards/") and "/field/" in key)
    panels = []
    if "reward" in curves:
        panels.append(("reward and its parts", ["reward", *parts]))
    if fields:
        panels.append(("caption fields (reward parts)", fields))
    panels.append(("loss", ["loss"]))
    if "kl" in curves:
        panels.append(("KL to the reference", ["kl"]))
    elif "mean_token_accuracy" in curves:
        panels.append(("mean token accuracy", ["mean_token_accuracy"]))
    return panels


def plot_curves(metrics: str | os.PathLike[str], path: str | os.PathLike[str], title: str = "") -> Path | None:
    """Draw the curves of ``metrics`` (a ``metrics.jsonl``) into the PNG ``path``, atomically; ``None`` (and no
    file) when it holds no per-step entry."""
    curves = curves_from_metrics(metrics)
    if "loss" not in curves:
        return None
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = _panels(curves)
    figure = Figure(figsize=(6.4, 2.4 * len(panels)), layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    colors = matplotlib.colormaps["tab20"].colors
    for axis, (name, keys) in zip(axes, panels):
        for index, key in enumerate(keys):
            steps, values = zip(*curves[key])
            label = key.split("/", 2)[-1] if key.startswith("rewards/") else key
            style = {"color": "black", "linewidth": 2.0, "zorder": 3} if key == "reward" else {
                "color": colors[index % len(colors)], "linewidth": 1.0}
            axis.plot(steps, values, marker="." if len(steps) < 30 else None, label=label, **style)
        axis.set_title(name, fontsize=9)
        axis.grid(alpha=0.3)
        if len(keys) > 1:
            axis.legend(fontsize=6, ncol=2)
    axes[-1].set_xlabel("step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        figure.suptitle(title, fontsize=10)
    return atomic_save(path, lambda name: figure.savefig(name, format="png", dpi=100))
