"""Where the model looks: the attention of the answer tokens to the image tokens (docs/evaluation.md, §3b).

For each record: (1) the answer is generated with the model's normal attention (``model.inference.generate_answers``,
greedy, the Stage II prompt by default); (2) one teacher-forced forward pass with eager attention over the prompt and
that answer (the chat template's prompt followed by the answer text, tokenised by the processor) returns every
decoder layer's attention. For each answer token, the attention of the query that predicts it (the position before
it: the attention that produced the token) to the N image tokens (``<|image_pad|>`` positions) is
averaged over **all decoder layers and all heads**, then **renormalised over the image tokens**: the mass that goes to
other tokens — the attention sinks (the first token, the system prompt, chat markers) and the text — is removed that
way, and no image token is excluded. The weights (one distribution over N per answer token) are binned as in the
paper (0–0.01, …, 0.05–0.06, > 0.06) and, relative to uniform, as w·N (uniform attention is w·N = 1; the tiny
default has 49 image tokens on a 112 px image, a 7B at 448 px 256). A heat-map overlay per image shows the mean over
the answer tokens on the merged patch grid.

The share of attention on the lesion (:func:`lesion_share`) is reported for records that name a lesion mask image in
``lesion_mask_path`` (absolute, or relative to the record's image directory); the synthetic set does not write one
yet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from skinflow.formats import CAPTION_PROMPT, DEFAULT_K, diagnosis_prompt
from skinflow.model.inference import generate_answers, read_image
from skinflow.util import atomic_save, atomic_write, check_int

__all__ = ["BINS", "RELATIVE_BINS", "answer_image_attention", "attention_analysis", "bin_shares", "lesion_share"]

BINS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06)
"""Lower edges of the paper's bins of attention weights (the last bin is > 0.06)."""
RELATIVE_BINS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
"""Lower edges of the bins of w·N, the weight relative to uniform attention 1/N (the last bin is ≥ 4)."""


def _labels(edges: Sequence[float]) -> list[str]:
    names = [f"{low:g}-{high:g}" for low, high in zip(edges, edges[1:])]
    return [*names, f">{edges[-1]:g}"]


def bin_shares(values: torch.Tensor, edges: Sequence[float]) -> dict[str, float]:
    """The share of ``values`` in each bin ``[edges[i], edges[i+1])`` and ``>= edges[-1]`` (labelled
    ``">edges[-1]"``, as in the paper)."""
    flat = values.detach().reshape(-1)
    if not flat.is_floating_point():
        flat = flat.double()
    if flat.numel() == 0:
        return dict.fromkeys(_labels(edges), 0.0)
    # the edges in the values' dtype, so that a float32 0.01 falls in the bin that starts at 0.01
    index = torch.bucketize(flat, torch.tensor(edges[1:], dtype=flat.dtype, device=flat.device), right=True)
    counts = torch.bincount(index, minlength=len(edges)).double() / flat.numel()
    return dict(zip(_labels(edges), counts.tolist()))


def lesion_share(weights: torch.Tensor, grid: tuple[int, int], mask: torch.Tensor) -> dict[str, float]:
    """How much of the attention is on the lesion, against the lesion's share of the image.

    Args:
        weights: answer tokens × N attention over the image tokens (rows summing to 1), N = rows · columns of ``grid``.
        grid: the merged patch grid (rows, columns).
        mask: a 2-D bool (or 0/1) tensor over the image's pixels, true on lesion pixels, any size (it is averaged
            onto the grid: each image token's lesion fraction is the share of its pixels that are lesion).

    Returns ``attention`` (the mean over answer tokens of Σ_token weight · lesion fraction: the attention mass on
    lesion pixels), ``area`` (the mean lesion fraction of the tokens: what uniform attention would give) and
    ``ratio`` = attention / area (1: no preference; 0 when the image has no lesion).
    """
    rows, columns = grid
    if weights.ndim != 2 or weights.shape[1] != rows * columns:
        raise ValueError(f"weights must be (answer tokens, {rows * columns}), got {tuple(weights.shape)}")
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (height, width), got {tuple(mask.shape)}")
    fraction = torch.nn.functional.adaptive_avg_pool2d(mask.float()[None, None], (rows, columns))[0, 0].reshape(-1)
    attention = float((weights.float() @ fraction).mean())
    area = float(fraction.mean())
    return {"attention": attention, "area": area, "ratio": attention / area if area > 0 else 0.0}


def _lesion_mask(record: Mapping[str, Any]) -> torch.Tensor | None:
    """The record's lesion mask (``lesion_mask_path``: an image, non-zero on lesion pixels), or ``None``."""
    path = record.get("lesion_mask_path")
    if not isinstance(path, str) or not path:
        return None
    from PIL import Image

    full = Path(path) if Path(path).is_absolute() else Path(record["image_path"]).parent / path
    with Image.open(full) as opened:
        gray = opened.convert("L")
        values = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).reshape(gray.height, gray.width)
    return values > 0


def _prompt_text(processor, prompt: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def answer_image_attention(model, processor, image, prompt: str, answer: str) -> dict[str, Any] | None:
    """The teacher-forced attention of ``answer``'s tokens to the image tokens (module docstring).

    Returns ``None`` when the answer has no token; else ``weights`` (answer tokens × N, rows summing to 1, on the
    CPU, float32), ``grid`` (the merged patch grid, rows × columns, N = rows · columns), ``image_share`` (the mean
    share of the answer tokens' raw attention that goes to image tokens, before renormalising), ``layers`` and
    ``heads``.
    """
    text = _prompt_text(processor, prompt)
    prompt_batch = processor(images=[image], text=[text], return_tensors="pt")
    batch = processor(images=[image], text=[text + answer], return_tensors="pt")
    start = prompt_batch["input_ids"].shape[1]
    length = batch["input_ids"].shape[1]
    if length <= start:
        return None
    batch = batch.to(model.device)
    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        output = model(**batch, output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation(previous)
    image_columns = (batch["input_ids"][0] == model.config.image_token_id).nonzero().squeeze(-1)
    # queries: the positions whose output predicts each answer token (the attention that produced the answer:
    # the last prompt token for the first answer token, then each answer token but the last)
    stacked = torch.stack([layer[0, :, start - 1:length - 1, :].float() for layer in output.attentions])  # L,H,A,T
    mean = stacked.mean(dim=(0, 1))  # A, T
    to_image = mean[:, image_columns]
    totals = to_image.sum(dim=-1, keepdim=True)
    weights = to_image / totals.clamp_min(torch.finfo(torch.float32).tiny)
    merge = model.config.vision_config.spatial_merge_size
    _, height, width = (int(v) for v in batch["image_grid_thw"][0])
    return {"weights": weights.cpu(), "grid": (height // merge, width // merge),
            "image_share": float(totals.mean()), "layers": int(stacked.shape[0]), "heads": int(stacked.shape[1])}


def _mean_lesion(entries: list[dict[str, float]]) -> dict[str, Any] | None:
    if not entries:
        return None
    attention = sum(e["attention"] for e in entries) / len(entries)
    area = sum(e["area"] for e in entries) / len(entries)
    return {"records": len(entries), "attention": attention, "area": area,
            "ratio": attention / area if area > 0 else 0.0}


def _save_overlay(image, weights: torch.Tensor, grid: tuple[int, int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    heat = weights.mean(dim=0).reshape(grid).numpy()
    figure, axes = plt.subplots(figsize=(3.2, 3.2))
    axes.imshow(image)
    axes.imshow(heat, cmap="jet", alpha=0.45, extent=(0, image.width, image.height, 0), interpolation="nearest")
    axes.set_title(title, fontsize=7)
    axes.axis("off")
    try:
        atomic_save(path, lambda name: figure.savefig(name, format="png", dpi=100, bbox_inches="tight"))
    finally:
        plt.close(figure)


def attention_analysis(model, processor, records: Sequence[Mapping[str, Any]], out: str | os.PathLike[str], *,
                       stage: str = "diagnosis", k: int = DEFAULT_K, max_new_tokens: int = 160,
                       overlays: int = 8, model_name: str = "model") -> dict[str, Any]:
    """Attention of the answers to the images for ``records``; writes ``attention.json`` (and overlays
    ``overlays/<n>.png`` for the first ``overlays`` records) into the existing directory ``out``; returns the
    summary."""
    if stage not in ("diagnosis", "caption"):
        raise ValueError(f"stage must be 'diagnosis' or 'caption', got {stage!r}")
    k = check_int("k", k, minimum=1)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
    overlays = check_int("overlays", overlays, minimum=0)
    out = Path(out)
    prompt = diagnosis_prompt(k) if stage == "diagnosis" else CAPTION_PROMPT
    image_processor = getattr(processor, "image_processor", None)
    all_weights, all_relative, per_record = [], [], []
    overlay_dir = out / "overlays"
    for index, record in enumerate(records):
        image = read_image(record["image_path"], f"record {record['id']!r}", image_processor)
        answer = generate_answers(model, processor, [image], prompt, max_new_tokens, 1)[0]
        result = answer_image_attention(model, processor, image, prompt, answer)
        entry: dict[str, Any] = {"id": record["id"], "answer_tokens": 0}
        if result is not None:
            weights = result["weights"]
            n = weights.shape[1]
            all_weights.append(weights.reshape(-1))
            all_relative.append((weights * n).reshape(-1))
            entry.update(answer_tokens=int(weights.shape[0]), image_tokens=int(n), grid=list(result["grid"]),
                         image_share=result["image_share"], max_weight=float(weights.max()),
                         above_uniform=float((weights > 1.0 / n).double().mean()))
            mask = _lesion_mask(record)
            if mask is not None:
                entry["lesion"] = lesion_share(weights, result["grid"], mask)
            if index < overlays:
                overlay_dir.mkdir(exist_ok=True)
                name = f"{index:04d}.png"
                _save_overlay(image.resize((result["grid"][1] * 16, result["grid"][0] * 16)), weights,
                              result["grid"], overlay_dir / name, f"{record['id']} ({record['label']})")
                entry["overlay"] = f"overlays/{name}"
        per_record.append(entry)
    weights = torch.cat(all_weights) if all_weights else torch.zeros(0)
    relative = torch.cat(all_relative) if all_relative else torch.zeros(0)
    analysed = [entry for entry in per_record if entry["answer_tokens"]]
    summary = {
        "model": model_name,
        "records": len(per_record),
        "analysed": len(analysed),
        "image_tokens": sorted({entry["image_tokens"] for entry in analysed}),
        "bins": bin_shares(weights, BINS),
        "relative_bins": bin_shares(relative, RELATIVE_BINS),
        "mean_image_share": sum(e["image_share"] for e in analysed) / len(analysed) if analysed else None,
        "lesion": _mean_lesion([entry["lesion"] for entry in analysed if "lesion" in entry]),
        "settings": {
            "stage": stage, "k": k, "max_new_tokens": max_new_tokens,
            "generation": "greedy, the model's own attention implementation",
            "teacher_forced": "one eager pass over the chat prompt + the answer text (re-tokenised)",
            "queries": "the positions predicting each answer token", "layers": "all decoder layers, averaged",
            "heads": "all heads, averaged",
            "sinks": "attention to non-image tokens (sinks, text) removed by renormalising over the image tokens",
            "relative": "w * N (1 = uniform attention over the N image tokens)",
        },
        "per_record": per_record,
    }
    text = json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write(out / "attention.json", lambda file: file.write(text))
    return summary
