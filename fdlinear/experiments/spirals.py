"""The "virtual width" experiment: FDLinear vs nn.Linear on two spirals and concentric circles.

Every point is its own sample (the 2-D per-row input form), so an FDLinear network gives each point its own
modulated weights. Three networks of the same depth are compared: FDLinear hidden layers, nn.Linear of the same
width, and a wider nn.Linear network with (about) the same parameter count as the FDLinear one.

    python -m fdlinear.experiments.spirals [--out DIR] [--steps N] [--seeds N] [--width W]

writes ``results.json`` (every figure), ``results.md`` (accuracy table) and ``decision_boundaries.png`` into
``--out`` (default ``runs/spirals``, untracked; ``--out docs/figures/spirals`` regenerates the docs' figures).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fdlinear import FDLinear

DATASETS = ("two_spirals", "circles")
MODELS = ("fdlinear", "linear_same_width", "linear_param_matched")
DEFAULT_OUT = Path("runs/spirals")
"""Where ``python -m fdlinear.experiments.spirals`` and ``make spirals`` write by default: an untracked folder (runs/ is
in .gitignore). The figures of the docs are regenerated with ``--out docs/figures/spirals``."""


def make_dataset(name: str, n: int, noise: float, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` points (n, 2) in about [-1, 1]^2 with binary labels (n,), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    if name == "two_spirals":
        t = np.sqrt(rng.uniform(0.0, 1.0, n)) * 3.0 * math.pi
        angle = t + labels * math.pi
        points = np.stack([t * np.cos(angle), t * np.sin(angle)], 1) / (3.0 * math.pi)
    elif name == "circles":
        radius = np.where(labels == 1, 0.45, 0.9) + rng.normal(0.0, 0.05, n)
        angle = rng.uniform(0.0, 2 * math.pi, n)
        points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    else:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    points = points + rng.normal(0.0, noise, points.shape)
    return torch.tensor(points, dtype=torch.float32), torch.tensor(labels)


def _mlp(layer, width: int) -> nn.Sequential:
    return nn.Sequential(layer(2, width), nn.ReLU(), layer(width, width), nn.ReLU(), nn.Linear(width, 2))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(name: str, width: int) -> nn.Sequential:
    """One of MODELS; the param-matched linear network is widened until it has as many parameters as FDLinear's."""
    if name == "fdlinear":
        return _mlp(lambda i, o: FDLinear(i, o, num_bases=4), width)
    if name == "linear_same_width":
        return _mlp(nn.Linear, width)
    if name == "linear_param_matched":
        target = parameter_count(build_model("fdlinear", width))
        wide = width
        while parameter_count(_mlp(nn.Linear, wide + 1)) <= target:
            wide += 1
        return _mlp(nn.Linear, wide)
    raise ValueError(f"name must be one of {MODELS}, got {name!r}")


def train(model: nn.Module, x: Tensor, y: Tensor, steps: int, lr: float = 1e-2) -> None:
    """Full-batch Adam on cross-entropy."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return (model(x).argmax(-1) == y).float().mean().item()


def run(steps: int, seeds: int, width: int, n: int = 1000, noise: float = 0.03) -> tuple[dict, dict]:
    """Train every (dataset, model, seed); returns (results, models of seed 0 for plotting)."""
    results: dict = {"config": {"steps": steps, "seeds": seeds, "width": width, "points": n, "noise": noise},
                     "runs": {}}
    keep = {}
    for dataset in DATASETS:
        x_train, y_train = make_dataset(dataset, n, noise, seed=0)
        x_test, y_test = make_dataset(dataset, n, noise, seed=1)
        for model_name in MODELS:
            accuracies, seconds = [], []
            for seed in range(seeds):
                torch.manual_seed(seed)
                model = build_model(model_name, width)
                start = time.perf_counter()
                train(model, x_train, y_train, steps)
                seconds.append(time.perf_counter() - start)
                accuracies.append(accuracy(model, x_test, y_test))
                if seed == 0:
                    keep[(dataset, model_name)] = model
            results["runs"][f"{dataset}/{model_name}"] = {
                "parameters": parameter_count(model),
                "test_accuracy": accuracies,
                "mean": float(np.mean(accuracies)),
                "std": float(np.std(accuracies)),
                "train_seconds": float(np.mean(seconds)),
            }
    return results, keep


def markdown_table(results: dict) -> str:
    """Accuracy table: rows = models, columns = datasets (mean ± std over seeds) plus parameter counts."""
    lines = ["| model | parameters | " + " | ".join(DATASETS) + " |", "|---|---|" + "---|" * len(DATASETS)]
    for model in MODELS:
        cells = []
        for dataset in DATASETS:
            run_ = results["runs"][f"{dataset}/{model}"]
            cells.append(f"{100 * run_['mean']:.1f} ± {100 * run_['std']:.1f} %")
        params = results["runs"][f"{DATASETS[0]}/{model}"]["parameters"]
        lines.append(f"| {model} | {params} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(models: dict, path: Path, noise: float) -> None:
    """Decision boundaries: rows = datasets, columns = models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.linspace(-1.2, 1.2, 200)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([gx.flatten(), gy.flatten()], 1)
    fig, axes = plt.subplots(len(DATASETS), len(MODELS), figsize=(4 * len(MODELS), 4 * len(DATASETS)))
    for row, dataset in enumerate(DATASETS):
        x, y = make_dataset(dataset, 400, noise, seed=1)
        for col, name in enumerate(MODELS):
            ax = axes[row, col]
            with torch.no_grad():
                prob = models[(dataset, name)](points).softmax(-1)[:, 1].reshape(gx.shape)
            ax.contourf(gx, gy, prob, levels=20, cmap="RdBu", alpha=0.7)
            ax.scatter(x[:, 0], x[:, 1], c=y, cmap="RdBu", edgecolors="k", s=8, linewidths=0.3)
            ax.set_title(f"{dataset} / {name}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def _new_file_mode() -> int:
    """The permission bits a newly created file gets under the current umask (``mkstemp`` makes 0600 files)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file.

    The file gets the usual permissions (``0666 & ~umask``, e.g. 0644), not the 0600 of the temporary file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT}, untracked; the figures of the docs are "
                             "docs/figures/spirals)")
    parser.add_argument("--steps", type=int, default=1000, help="Adam steps per run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per (dataset, model)")
    parser.add_argument("--width", type=int, default=6, help="hidden width of the FDLinear network")
    args = parser.parse_args(argv)
    for name in ("steps", "seeds", "width"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--out {str(args.out)!r}: cannot create the folder ({error.strerror or error})")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    results, models = run(args.steps, args.seeds, args.width)
    table = markdown_table(results)
    _atomic(args.out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2)))
    _atomic(args.out / "results.md", lambda tmp: Path(tmp).write_text(table))
    plot(models, args.out / "decision_boundaries.png", results["config"]["noise"])
    print(table)
    print(f"wrote {args.out}/results.json, results.md, decision_boundaries.png")
    return results


if __name__ == "__main__":
    main()
