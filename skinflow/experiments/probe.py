"""Can the tiny default's vision tower see the synthetic cues? A supervised probe.

The vision tower of the tiny default (``Qwen2_5_VisionTransformerPretrainedModel`` built from
:func:`skinflow.model.tiny.vision_config`, random init; ``dve=True`` adds the DVE layers of the tiny default) is trained from
scratch jointly with linear heads on the mean of each image's output tokens: one head per caption field that varies
in the synthetic set, and one for the diagnosis. Held-out accuracy per field says which describable attributes the
tower learns at 112 px; within each texture pair, the diagnosis head's choice between the two says whether it sees
the implicit cue. Images reach the tower exactly as the Qwen2-VL image processor would pack them (:func:`patchify`).

``python -m skinflow.experiments.probe`` runs the default (2,000 training and 400 held-out images, 1,000 steps of 32; about
4 minutes on 2 CPU cores) and writes a JSON report (``docs/figures/synthetic/probe.json``).
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

import numpy as np
import torch
import transformers
from PIL import Image
from rich.progress import Progress
from torch import Tensor, nn
from transformers import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

from skinflow.data.synthetic import DIAGNOSES, TEXTURE_PAIRS, generate
from skinflow.formats import CAPTION_FIELDS
from skinflow.model import tiny
from skinflow.model.dve import apply_dve
from skinflow.util import atomic_write, check_int, check_number

__all__ = ["CLIP_MEAN", "CLIP_STD", "DEFAULT_OUT", "main", "patchify", "run_probe"]

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
"""Per-channel mean the Qwen2-VL image processor normalises with (OpenAI CLIP's)."""

CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
"""Per-channel standard deviation the Qwen2-VL image processor normalises with (OpenAI CLIP's)."""

DEFAULT_OUT = Path("docs/figures/synthetic/probe.json")


def patchify(
    images: Sequence[Image.Image | np.ndarray],
    patch_size: int = tiny.PATCH_SIZE,
    merge_size: int = tiny.SPATIAL_MERGE_SIZE,
    temporal_patch_size: int = tiny.TEMPORAL_PATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Pack images the way transformers' Qwen2-VL image processor does, for images that need no resizing.

    Each image is scaled to [0, 1], normalised with :data:`CLIP_MEAN` / :data:`CLIP_STD`, repeated
    ``temporal_patch_size`` times as a still video frame and cut into ``patch_size`` patches listed merge block by
    merge block (the ``merge_size × merge_size`` patches that the merger joins into one token are consecutive).

    Args:
        images: RGB PIL images or uint8 arrays ``(H, W, 3)``; H and W must be multiples of
            ``patch_size * merge_size`` (the processor would resize anything else).
        patch_size, merge_size, temporal_patch_size: the vision tower's settings.

    Returns:
        ``pixel_values`` float32 ``(sum of H·W / patch_size², 3 · temporal_patch_size · patch_size²)`` and
        ``grid_thw`` int64 ``(len(images), 3)`` rows ``(1, H / patch_size, W / patch_size)``.
    """
    mean = np.asarray(CLIP_MEAN, np.float32)[:, None, None]
    std = np.asarray(CLIP_STD, np.float32)[:, None, None]
    factor = patch_size * merge_size
    packed, grids = [], []
    for index, image in enumerate(images):
        array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"images[{index}] must be an RGB image or a uint8 (H, W, 3) array, got {array.shape}")
        height, width = array.shape[:2]
        if height % factor or width % factor:
            raise ValueError(f"images[{index}] is {width}x{height}; both sides must be multiples of {factor}")
        # the processor's arithmetic: rescale in float64, cast to float32, then normalise in float32
        channels = ((array.transpose(2, 0, 1).astype(np.float64) * (1 / 255)).astype(np.float32) - mean) / std
        grid_h, grid_w = height // patch_size, width // patch_size
        blocks = channels.reshape(3, grid_h // merge_size, merge_size, patch_size,
                                  grid_w // merge_size, merge_size, patch_size)
        blocks = blocks.transpose(1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, C, p, p)
        frames = np.broadcast_to(blocks[:, :, :, :, :, None], (*blocks.shape[:5], temporal_patch_size,
                                                               patch_size, patch_size))
        packed.append(frames.reshape(grid_h * grid_w, 3 * temporal_patch_size * patch_size * patch_size))
        grids.append((1, grid_h, grid_w))
    if not packed:
        raise ValueError("images must not be empty")
    return np.concatenate(packed), np.asarray(grids, np.int64)


class _Probe(nn.Module):
    """The vision tower with one linear head per target on the mean of each image's output tokens.

    The mean token is layer-normalised first (as the language model's RMSNorm does with every image token): at random
    init the tokens of all images share a large common component, and without the norm the heads wait a few hundred
    steps for the tower to outgrow it.
    """

    def __init__(self, tower: Qwen2_5_VisionTransformerPretrainedModel, classes: dict[str, list[str]]) -> None:
        super().__init__()
        self.tower = tower
        width = tower.config.out_hidden_size
        self.norm = nn.LayerNorm(width)
        self.heads = nn.ModuleDict({name: nn.Linear(width, len(values)) for name, values in classes.items()})

    def forward(self, pixel_values: Tensor, grid_thw: Tensor) -> dict[str, Tensor]:
        """Logits ``(images, classes)`` per head, from packed ``pixel_values`` and ``grid_thw`` ``(images, 3)``."""
        tokens = self.tower(pixel_values, grid_thw=grid_thw).pooler_output
        counts = (grid_thw.prod(-1) // self.tower.spatial_merge_unit).tolist()
        pooled = self.norm(torch.stack([chunk.mean(0) for chunk in tokens.split(counts)]))
        return {name: head(pooled) for name, head in self.heads.items()}


def _tower(seed: int, dve: bool) -> Qwen2_5_VisionTransformerPretrainedModel:
    """The tiny default's vision tower, randomly initialised from ``seed`` (the global RNG is left as it was)."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        tower = Qwen2_5_VisionTransformerPretrainedModel(Qwen2_5_VLVisionConfig(**tiny.vision_config()))
        if dve:
            apply_dve(tower)
    finally:
        torch.random.set_rng_state(state)
    return tower


def _targets(records: Sequence[dict[str, Any]], classes: dict[str, list[str]]) -> dict[str, Tensor]:
    """Class indices ``(len(records),)`` per head: caption terms, and the clean label for ``diagnosis``."""
    def value(record: dict[str, Any], name: str) -> str:
        return record["clean_label"] if name == "diagnosis" else record["caption"][name]

    return {name: torch.tensor([values.index(value(r, name)) for r in records]) for name, values in classes.items()}


def _logits(probe: _Probe, images: np.ndarray, batch_size: int) -> dict[str, Tensor]:
    """Evaluation logits per head for uint8 images ``(N, H, W, 3)``."""
    probe.eval()
    chunks: dict[str, list[Tensor]] = {name: [] for name in probe.heads}
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            pixel_values, grid_thw = patchify(images[start : start + batch_size])
            for name, logits in probe(torch.from_numpy(pixel_values), torch.from_numpy(grid_thw)).items():
                chunks[name].append(logits)
    probe.train()
    return {name: torch.cat(values) for name, values in chunks.items()}


def _pair_accuracy(logits: Tensor, labels: Tensor, diagnoses: list[str]) -> dict[str, float | None]:
    """Per texture pair: on held-out images of the pair, how often the diagnosis head ranks the true diagnosis above
    its partner (chance 0.5; ``None`` when the held-out set has no image of the pair). Only the pair's two logits are
    compared, so other confusions do not count."""
    result: dict[str, float | None] = {}
    for first, second in TEXTURE_PAIRS:
        a, b = diagnoses.index(first), diagnoses.index(second)
        rows = (labels == a) | (labels == b)
        says_first = logits[rows, a] > logits[rows, b]
        agree = says_first == (labels[rows] == a)
        result[f"{first} vs {second}"] = float(agree.float().mean()) if len(agree) else None
    return result


def _confusion(truth: Tensor, predicted: Tensor, classes: int) -> list[list[int]]:
    """Counts ``[true class][predicted class]``."""
    return torch.bincount(truth * classes + predicted, minlength=classes * classes).view(classes, classes).tolist()


def _check(train: int, test: int, steps: int, batch_size: int, lr: float, seed: int, eval_points: int) -> None:
    for name, value, low in (("train", train, 1), ("test", test, 1), ("steps", steps, 1), ("batch_size", batch_size, 1),
                             ("seed", seed, 0), ("eval_points", eval_points, 0)):
        check_int(name, value, minimum=low)
    if check_number("lr", lr) <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")


def run_probe(
    train: int = 2000,
    test: int = 400,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    dve: bool = False,
    eval_points: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the probe on ``train`` synthetic images and measure it on ``test`` others.

    Args:
        train, test: numbers of training and held-out images (records ``0..train-1`` and ``train..train+test-1`` of
            ``generate(train + test, seed)``, so both are class-balanced).
        steps: optimiser steps (AdamW, weight decay 0.01, one-cycle schedule peaking at ``lr``); each draws
            ``batch_size`` training images at random.
        seed: seed of the data, the tower's initialisation and the batch order.
        dve: convert the tower's default layers to DVE layers first (as in the tiny default).
        eval_points: also measure the diagnosis and the pairs at this many evenly spaced steps before the end.
        progress: show progress bars.

    Returns a JSON-ready dict: ``accuracy`` and ``chance`` (majority class of the held-out set) per head,
    ``confusion`` per head (``classes`` and ``matrix[true][predicted]`` counts on the held-out set),
    ``texture_pairs`` (pair accuracy, chance 0.5), ``diagnosis_without_cue`` (the best diagnosis accuracy a model
    blind to the implicit cue can reach on this held-out set), ``diagnosis_by_skin_type``, ``curve`` (step →
    diagnosis and pair accuracy), ``final_loss``, ``settings``, ``torch``, ``transformers``, ``machine``,
    ``wall_seconds``.
    """
    _check(train, test, steps, batch_size, lr, seed, eval_points)
    started = time.perf_counter()
    records = generate(train + test, seed=seed, splits=(1.0, 0.0, 0.0), progress=progress)
    images = np.stack([np.asarray(record["image"]) for record in records])
    fields = [field for field in CAPTION_FIELDS if len({r["caption"][field] for r in records}) > 1]
    classes = {field: sorted({r["caption"][field] for r in records}) for field in fields}
    classes["diagnosis"] = [diagnosis.label for diagnosis in DIAGNOSES]
    targets = _targets(records, classes)
    train_targets = {name: values[:train] for name, values in targets.items()}
    test_targets = {name: values[train:] for name, values in targets.items()}
    test_images = images[train:]

    probe = _Probe(_tower(seed, dve), classes).train()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = np.random.default_rng([seed, 7])
    checkpoints = {int(round(steps * k / (eval_points + 1))) for k in range(1, eval_points + 1)} - {0, steps}
    curve, losses = [], []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("probe steps", total=steps)
        for step in range(1, steps + 1):
            batch = generator.integers(0, train, batch_size)
            pixel_values, grid_thw = patchify(images[batch])
            logits = probe(torch.from_numpy(pixel_values), torch.from_numpy(grid_thw))
            rows = torch.from_numpy(batch)
            loss = sum(nn.functional.cross_entropy(logits[name], train_targets[name][rows]) for name in classes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if step in checkpoints or step == steps:
                held_out = _logits(probe, test_images, batch_size=100)
                diagnosis = held_out["diagnosis"]
                curve.append({"step": step,
                              "diagnosis": float((diagnosis.argmax(-1) == test_targets["diagnosis"]).float().mean()),
                              "texture_pairs": _pair_accuracy(diagnosis, test_targets["diagnosis"],
                                                              classes["diagnosis"])})
            bar.advance(task)

    predicted = {name: logits.argmax(-1) for name, logits in held_out.items()}
    correct = {name: predicted[name] == test_targets[name] for name in classes}
    skin_types = torch.tensor([record["skin_type"] for record in records[train:]])
    in_pairs = sum(label in pair for pair in TEXTURE_PAIRS for label in (r["clean_label"] for r in records[train:]))
    return {
        "settings": dict(train=train, test=test, steps=steps, batch_size=batch_size, lr=lr, seed=seed, dve=dve,
                         image_size=tiny.IMAGE_SIZE, optimizer="AdamW(weight_decay=0.01), one-cycle schedule"),
        "accuracy": {name: float(values.float().mean()) for name, values in correct.items()},
        "chance": {name: float(test_targets[name].bincount().max()) / test for name in classes},
        "confusion": {name: {"classes": values, "matrix": _confusion(test_targets[name], predicted[name],
                                                                     len(values))}
                      for name, values in classes.items()},
        "texture_pairs": curve[-1]["texture_pairs"],
        "diagnosis_without_cue": 1.0 - 0.5 * in_pairs / test,
        "diagnosis_by_skin_type": {int(t): float(correct["diagnosis"][skin_types == t].float().mean())
                                   for t in sorted(set(skin_types.tolist()))},
        "curve": curve,
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the probe, print the table and write the JSON report (atomically)."""
    parser = argparse.ArgumentParser(prog="python -m skinflow.experiments.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    parser.add_argument("--test", type=int, default=400, help="held-out images (default 400)")
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps (default 1000)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, init and batches (default 0)")
    parser.add_argument("--dve", action="store_true", help="use the DVE tower of the tiny default")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        report = run_probe(train=args.train, test=args.test, steps=args.steps, batch_size=args.batch_size,
                           lr=args.lr, seed=args.seed, dve=args.dve)
    except ValueError as error:
        parser.error(str(error))
    command = " ".join(["python -m skinflow.experiments.probe", *(sys.argv[1:] if argv is None else argv)])
    report = {"command": command, **report}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda handle: json.dump(report, handle, indent=2))
    width = max(len(name) for name in report["accuracy"])
    for name, value in report["accuracy"].items():
        print(f"{name:<{width}}  {value:6.1%}   (chance {report['chance'][name]:5.1%})")
    for name, value in report["texture_pairs"].items():
        print(f"pair {name}: " + ("no held-out image" if value is None else f"{value:6.1%}   (chance 50.0%)"))
    print(f"diagnosis ceiling without the implicit cue: {report['diagnosis_without_cue']:.1%}")
    print(f"wrote {args.out} ({report['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
