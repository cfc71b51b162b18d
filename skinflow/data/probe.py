"""Can the tiny default see the synthetic cues? A supervised probe of its vision tower.

The tiny default's vision tower (DVE included), fed by its own image processor, is trained jointly with one linear
head per varying caption field and one for the diagnosis, on the mean of each image's output tokens. Held-out
accuracy per field says which describable attributes the tower can learn at 112 px; accuracy within each
texture pair says whether it sees the implicit cue. Run ``python -m skinflow.data.probe`` (about 3 minutes on 2
CPU cores); it writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.progress import track
from torch import Tensor, nn

from skinflow import tiny
from skinflow.data.records import atomic_write
from skinflow.data.synthetic import DIAGNOSES, TEXTURE_PAIRS, generate
from skinflow.formats import CAPTION_FIELDS

__all__ = ["run_probe"]


def _targets(records: Sequence[dict], fields: Sequence[str], classes: dict[str, list[str]]) -> dict[str, Tensor]:
    return {name: torch.tensor([classes[name].index(_value(r, name)) for r in records]) for name in fields}


def _value(record: dict, name: str) -> str:
    return record["clean_label"] if name == "diagnosis" else record["caption"][name]


def _pixels(processor, records: Sequence[dict]) -> tuple[Tensor, Tensor]:
    """Packed pixel patches (P, C·T·p·p) and grid_thw (N, 3) from the tiny default's image processor."""
    batch = processor.image_processor([r["image"] for r in records], return_tensors="pt")
    return batch["pixel_values"], batch["image_grid_thw"]


class _Probe(nn.Module):
    def __init__(self, tower: nn.Module, width: int, classes: dict[str, list[str]]) -> None:
        super().__init__()
        self.tower = tower
        self.heads = nn.ModuleDict({name: nn.Linear(width, len(values)) for name, values in classes.items()})

    def forward(self, pixels: Tensor, grid_thw: Tensor) -> dict[str, Tensor]:
        tokens = self.tower(pixels, grid_thw=grid_thw).pooler_output
        counts = (grid_thw.prod(-1) // tiny.SPATIAL_MERGE_SIZE**2).tolist()
        pooled = torch.stack([chunk.mean(0) for chunk in tokens.split(counts)])
        return {name: head(pooled) for name, head in self.heads.items()}


def _evaluate(probe: _Probe, processor, records: Sequence[dict], targets: dict[str, Tensor],
              batch_size: int) -> dict[str, Tensor]:
    probe.eval()
    predictions: dict[str, list[Tensor]] = {name: [] for name in targets}
    with torch.no_grad():
        for start in range(0, len(records), batch_size):
            logits = probe(*_pixels(processor, records[start : start + batch_size]))
            for name in targets:
                predictions[name].append(logits[name].argmax(-1))
    probe.train()
    return {name: torch.cat(values) for name, values in predictions.items()}


def _pair_accuracy(records: Sequence[dict], predicted: Tensor, labels: list[str]) -> dict[str, float]:
    """Accuracy of telling each texture pair apart, on held-out images of the pair that the probe put in the pair."""
    result = {}
    for first, second in TEXTURE_PAIRS:
        pair = {labels.index(first), labels.index(second)}
        rows = [i for i, r in enumerate(records) if r["clean_label"] in (first, second)]
        inside = [i for i in rows if int(predicted[i]) in pair]
        correct = sum(labels[int(predicted[i])] == records[i]["clean_label"] for i in inside)
        result[f"{first} vs {second}"] = correct / max(len(inside), 1)
    return result


def run_probe(train: int = 2000, test: int = 400, steps: int = 600, batch_size: int = 32, lr: float = 2e-3,
              seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Train the probe on ``train`` synthetic images and report held-out accuracy on ``test`` others.

    Returns a dict with per-field accuracy, chance level (majority class), diagnosis accuracy, per-pair accuracy,
    settings, versions and wall time.
    """
    started = time.perf_counter()
    records = generate(train + test, seed=seed, progress=progress, splits=(1.0, 0.0, 0.0))
    train_records, test_records = records[:train], records[train:]
    fields = [f for f in CAPTION_FIELDS if len({r["caption"][f] for r in records}) > 1]
    classes = {f: sorted({r["caption"][f] for r in records}) for f in fields}
    classes["diagnosis"] = [d.label for d in DIAGNOSES]
    train_targets = _targets(train_records, list(classes), classes)
    test_targets = _targets(test_records, list(classes), classes)

    model, processor = tiny.build(seed=seed)
    probe = _Probe(model.model.visual, model.config.vision_config.out_hidden_size, classes).train()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    iterator = track(range(steps), description="probe steps") if progress else range(steps)
    losses = []
    for _ in iterator:
        batch = torch.randint(0, train, (batch_size,), generator=generator).tolist()
        logits = probe(*_pixels(processor, [train_records[i] for i in batch]))
        loss = sum(nn.functional.cross_entropy(logits[name], train_targets[name][batch]) for name in classes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())

    predicted = _evaluate(probe, processor, test_records, test_targets, batch_size=64)
    accuracy = {name: float((predicted[name] == test_targets[name]).float().mean()) for name in classes}
    chance = {name: float(test_targets[name].bincount().max()) / len(test_records) for name in classes}
    return {
        "command": "python -m skinflow.data.probe " + " ".join(sys.argv[1:]),
        "settings": dict(train=train, test=test, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                         image_size=tiny.IMAGE_SIZE),
        "accuracy": accuracy,
        "chance": chance,
        "texture_pairs": _pair_accuracy(test_records, predicted["diagnosis"], classes["diagnosis"]),
        "final_loss": sum(losses[-20:]) / min(len(losses), 20),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads".strip(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the probe and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/figures/synthetic/probe.json"))
    args = parser.parse_args(argv)
    report = run_probe(train=args.train, test=args.test, steps=args.steps, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda handle: json.dump(report, handle, indent=2))
    width = max(len(name) for name in report["accuracy"])
    for name, value in report["accuracy"].items():
        print(f"{name:<{width}}  {value:6.1%}   (chance {report['chance'][name]:5.1%})")
    for name, value in report["texture_pairs"].items():
        print(f"pair {name}: {value:6.1%}")
    print(f"wrote {args.out} ({report['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
