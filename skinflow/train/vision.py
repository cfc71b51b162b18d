"""Pretrain a vision tower on generic visual attributes: the stand-in for a base model's pretrained encoder.

A real SkinFlow starts from Qwen2.5-VL-Instruct, whose vision tower was pretrained on generic images. The embedded
tiny default starts from random weights, and what its tower needs before any SkinFlow stage can help is the same:
features of what an image shows in lay terms (colours, shapes, how many, how large, where). :func:`pretrain_vision`
trains the tower with one linear head per such caption field on the mean of each image's merged tokens (the heads
are thrown away), on images seen exactly as the model's image processor packs them. It is supervised, fast and
knows neither the diagnosis nor the dermatological fields (lesion type, texture, border, surface, surrounding):
those are what Stage I and Stage II are for (docs/demo.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from skinflow.formats import CAPTION_FIELDS
from skinflow.model.inference import read_image
from skinflow.util import check_int, check_number, progress

__all__ = ["GENERIC_FIELDS", "pretrain_vision"]

GENERIC_FIELDS: tuple[str, ...] = ("color", "location", "shape", "number", "size", "distribution")
"""Caption fields a generalist model can describe without dermatology (lay terms)."""


class _Heads(nn.Module):
    """One linear head per field on the layer-normalised mean of each image's merged tokens."""

    def __init__(self, width: int, classes: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.heads = nn.ModuleDict({field: nn.Linear(width, len(values)) for field, values in classes.items()})

    def forward(self, tokens: Tensor, counts: list[int]) -> dict[str, Tensor]:
        pooled = self.norm(torch.stack([chunk.mean(0) for chunk in tokens.split(counts)]))
        return {field: head(pooled) for field, head in self.heads.items()}


def _pack(processor, records: Sequence[Mapping[str, Any]]) -> tuple[list[Tensor], list[Tensor]]:
    """Per record: ``pixel_values`` ``(patches, dim)`` and ``grid_thw`` ``(1, 3)`` from the model's image processor."""
    image_processor = processor.image_processor
    pixels, grids = [], []
    for record in records:
        image = record.get("image") or read_image(record["image_path"], f"record {record['id']!r}", image_processor)
        packed = image_processor(images=[image], return_tensors="pt")
        pixels.append(packed["pixel_values"])
        grids.append(packed["image_grid_thw"])
    return pixels, grids


def _targets(records: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> tuple[dict[str, list[str]], dict[str, Tensor]]:
    classes = {field: sorted({str(record["caption"].get(field, "")) for record in records}) for field in fields}
    targets = {field: torch.tensor([classes[field].index(str(r["caption"].get(field, ""))) for r in records])
               for field in fields}
    return classes, targets


def _accuracy(visual, heads: _Heads, pixels, grids, targets: Mapping[str, Tensor], merge_unit: int,
              batch_size: int) -> dict[str, float]:
    correct = {field: 0 for field in targets}
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            grid = torch.cat(grids[start:start + batch_size])
            tokens = visual(torch.cat(pixels[start:start + batch_size]), grid_thw=grid).pooler_output
            logits = heads(tokens, (grid.prod(-1) // merge_unit).tolist())
            for field, values in logits.items():
                correct[field] += int((values.argmax(-1) == targets[field][start:start + batch_size]).sum())
    return {field: correct[field] / max(1, len(pixels)) for field in targets}


def pretrain_vision(model, processor, records: Sequence[Mapping[str, Any]], *,
                    held_out: Sequence[Mapping[str, Any]] = (), fields: Sequence[str] = GENERIC_FIELDS,
                    steps: int = 600, lr: float = 3e-3, batch_size: int = 32, seed: int = 0,
                    show_progress: bool = False) -> dict[str, Any]:
    """Train ``model``'s vision tower (``model.model.visual``, in place) on ``fields`` of ``records``' captions.

    Args:
        model: a Qwen2.5-VL model; only its vision tower (patch embedding, blocks, merger) is trained.
        processor: its processor (the images are packed by its image processor, as in training and inference).
        records: training records with a ``caption`` and an in-memory ``image`` or an ``image_path``.
        held_out: records to measure each field's accuracy on afterwards (e.g. the validation split).
        fields: caption fields to learn (default :data:`GENERIC_FIELDS`); each gets a linear head.
        steps, lr, batch_size: AdamW (weight decay 0.01), a linear warm-up over the first tenth to ``lr``, then
            cosine to 0; each step
            draws ``batch_size`` records at random (seeded by ``seed``).
        show_progress: a progress bar on stderr.

    Returns ``{"fields", "steps", "final_loss", "held_out_accuracy", "chance"}`` (accuracy per field on
    ``held_out``, and the majority-class share there as chance). Raises ``ValueError`` for a bad argument or an
    unknown field, and ``model.inference.ImageReadError`` naming a record whose image cannot be read.
    """
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    if check_number("lr", lr, minimum=0.0) <= 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    unknown = [field for field in fields if field not in CAPTION_FIELDS]
    if unknown or not fields:
        raise ValueError(f"fields must be caption fields among {list(CAPTION_FIELDS)}, got {list(fields)}")
    if not records:
        raise ValueError("records must not be empty")
    visual = model.model.visual
    merge_unit = visual.spatial_merge_size ** 2
    classes, targets = _targets([*records, *held_out], fields)
    train_targets = {field: values[:len(records)] for field, values in targets.items()}
    pixels, grids = _pack(processor, records)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = _Heads(visual.merger.mlp[-1].out_features, classes)
    parameters = [*visual.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)

    def factor(step: int) -> float:  # linear warm-up over the first tenth, then cosine to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    was_training = visual.training
    visual.train()
    losses = []
    for _ in progress(range(steps), "vision pretraining", total=steps, enabled=show_progress):
        batch = torch.randint(len(records), (batch_size,), generator=generator).tolist()
        grid = torch.cat([grids[i] for i in batch])
        tokens = visual(torch.cat([pixels[i] for i in batch]), grid_thw=grid).pooler_output
        logits = heads(tokens, (grid.prod(-1) // merge_unit).tolist())
        rows = torch.tensor(batch)
        loss = sum(nn.functional.cross_entropy(logits[field], train_targets[field][rows]) for field in fields)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    visual.eval()
    result: dict[str, Any] = {"fields": list(fields), "steps": steps, "final_loss": sum(losses[-20:]) / len(losses[-20:])}
    if held_out:
        held_pixels, held_grids = _pack(processor, held_out)
        held_targets = {field: values[len(records):] for field, values in targets.items()}
        result["held_out_accuracy"] = _accuracy(visual, heads, held_pixels, held_grids, held_targets, merge_unit,
                                                batch_size=64)
        result["chance"] = {field: float(values.bincount().max()) / len(values) for field, values in held_targets.items()}
    visual.train(was_training)
    return result
