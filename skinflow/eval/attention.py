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
``lesion_mask_path`` (absolute, or relative to the record's image directory; the synthetic set writes one per record,
``skinflow.data.synthetic.save``): each image token's lesion fraction is the share of its footprint on the lesion,
the attention share is the answer tokens' mean Σ weight · fraction, the area share the mean fraction (what uniform
attention gives), and the focus their ratio (1: no preference for the lesion; > 1: the model looks at it). Over the
set, the focus is the mean attention share over the mean area share, with a seeded percentile bootstrap interval.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from skinflow.eval.metrics import percentile
from skinflow.formats import CAPTION_PROMPT, DEFAULT_K, diagnosis_prompt
from skinflow.model.inference import generate_answers, read_image
from skinflow.util import atomic_save, atomic_write, check_int

__all__ = ["BINS", "RELATIVE_BINS", "answer_image_attention", "attention_analysis", "bin_shares", "lesion_focus",
           "lesion_fractions", "lesion_mask_problems", "lesion_share", "load_lesion_mask"]

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


def _overlap(pixels: int, cells: int) -> torch.Tensor:
    """``(cells, pixels)``: the share of cell ``i``'s extent covered by pixel ``p`` when ``pixels`` unit pixels are
    stretched onto ``cells`` equal cells (rows sum to 1)."""
    edges = torch.arange(cells + 1, dtype=torch.float64) * (pixels / cells)
    low, high = edges[:-1, None], edges[1:, None]
    start = torch.arange(pixels, dtype=torch.float64)[None, :]
    covered = (torch.minimum(high, start + 1) - torch.maximum(low, start)).clamp_min(0.0)
    return covered / covered.sum(dim=1, keepdim=True)


def lesion_fractions(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Each image token's lesion fraction: ``(rows · columns,)`` float64 in [0, 1], row-major like the image tokens.

    Args:
        mask: ``(height, width)`` bool (or 0/1) over the image's pixels, true on lesion pixels.
        grid: the merged patch grid ``(rows, columns)``.

    The image is stretched onto the grid, as the processor resizes it to the grid before cutting patches (no crop,
    no padding), and each token's fraction is the area-weighted share of its footprint covered by lesion pixels
    (exact: pixels cut by a footprint's edge count by the part inside). When the grid divides the image this is the
    plain mean of the token's block of pixels. The fractions' mean is the lesion's share of the image.
    """
    rows, columns = grid
    if mask.ndim != 2 or min(mask.shape) < 1:
        raise ValueError(f"mask must be 2-D (height, width), got {tuple(mask.shape)}")
    values = mask.detach().to("cpu", torch.float64)
    return (_overlap(mask.shape[0], rows) @ values @ _overlap(mask.shape[1], columns).T).reshape(-1).clamp(0.0, 1.0)


def lesion_share(weights: torch.Tensor, grid: tuple[int, int], mask: torch.Tensor) -> dict[str, float | None]:
    """How much of the attention is on the lesion, against the lesion's share of the image.

    Args:
        weights: ``(answer tokens, N)`` attention over the image tokens (rows summing to 1), N = rows · columns.
        grid: the merged patch grid ``(rows, columns)``.
        mask: ``(height, width)`` bool (or 0/1) over the image's pixels, true on lesion pixels, any size
            (:func:`lesion_fractions` maps it onto the grid).

    Returns ``attention``: the mean over answer tokens of Σ_token weight · lesion fraction (the attention mass on
    lesion pixels, each token weighted by its lesion fraction, so a token half on the lesion counts half);
    ``area``: the mean lesion fraction of the tokens (the lesion's share of the image: what uniform attention gives);
    ``focus`` = attention / area (1: uniform, no preference for the lesion; at most 1 / area). An empty
    mask (no lesion pixel) gives attention 0, area 0 and ``focus`` ``None``: the ratio is undefined.
    """
    rows, columns = grid
    if weights.ndim != 2 or weights.shape[1] != rows * columns:
        raise ValueError(f"weights must be (answer tokens, {rows * columns}), got {tuple(weights.shape)}")
    fraction = lesion_fractions(mask, grid)
    attention = float((weights.detach().to("cpu", torch.float64) @ fraction).mean()) if weights.shape[0] else 0.0
    area = float(fraction.mean())
    return {"attention": attention, "area": area, "focus": attention / area if area > 0 else None}


def _mask_file(record: Mapping[str, Any]) -> Path | None:
    path = record.get("lesion_mask_path")
    if path is None:
        return None
    if not isinstance(path, str) or not path:
        raise ValueError(f"record {record.get('id')!r}: 'lesion_mask_path' must be a non-empty string or null, "
                         f"got {path!r}")
    if Path(path).is_absolute():
        return Path(path)
    if not isinstance(record.get("image_path"), str | os.PathLike):
        raise ValueError(f"record {record.get('id')!r}: 'lesion_mask_path' {path!r} is relative, but the record has "
                         "no 'image_path' to be relative to")
    return Path(record["image_path"]).parent / path


def load_lesion_mask(record: Mapping[str, Any]) -> torch.Tensor | None:
    """The record's lesion mask ``(height, width)`` bool, or ``None`` when ``lesion_mask_path`` is absent or null.

    ``lesion_mask_path`` names an image file, absolute or relative to the directory of the record's
    ``image_path``; its pixels whose grey level (Pillow's ``convert("L")``) is non-zero are lesion. The mask must
    have the image's size. Raises ``ValueError`` naming the record's id and the file: missing, not an image, or
    another size than the image.
    """
    full = _mask_file(record)
    if full is None:
        return None
    from PIL import Image

    name = f"record {record.get('id')!r}: lesion mask {str(full)!r}"
    try:
        with Image.open(full) as opened:
            gray = opened.convert("L")
        if isinstance(record.get("image"), Image.Image):
            size = record["image"].size
        else:
            with Image.open(record["image_path"]) as image:  # the header only
                size = image.size
    except FileNotFoundError as error:
        raise ValueError(f"{name}: file not found ({error.filename})") from error
    except (OSError, ValueError) as error:
        raise ValueError(f"{name}: cannot be read ({type(error).__name__}: {error})") from error
    if gray.size != size:
        raise ValueError(f"{name}: is {gray.width} x {gray.height} px, the image {size[0]} x {size[1]} px")
    values = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).reshape(gray.height, gray.width)
    return values > 0


def lesion_mask_problems(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One message per record whose lesion mask cannot be used (:func:`load_lesion_mask`), naming its id and file;
    empty when every mask is fine. Decodes each mask (small PNGs: cheap); records without a mask are fine."""
    problems = []
    for record in records:
        try:
            load_lesion_mask(record)
        except ValueError as error:
            problems.append(str(error))
    return problems


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


def lesion_focus(entries: Sequence[Mapping[str, Any]], *, bootstrap: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, Any] | None:
    """The set's lesion focus from per-record :func:`lesion_share` results; ``None`` when there are none.

    Records with an empty mask (``focus`` ``None``) are counted in ``empty_masks`` and left out of the rest.
    ``records``: the records counted; ``attention``, ``area``: their mean attention and area shares; ``focus`` =
    attention / area (the ratio of the means, so that records with larger lesions do not weigh less;
    1 = uniform); ``focus_ci``: the percentile bootstrap interval of that ratio, the records resampled with
    replacement ``bootstrap`` times by ``random.Random("skinflow-attention:<seed>:lesion_focus")`` (the same seed
    gives the same interval everywhere; ``None`` when ``bootstrap`` is 0); ``record_focus``: the mean of the
    per-record focus; ``above_uniform``: the share of records whose focus exceeds 1.
    """
    bootstrap = check_int("bootstrap", bootstrap, minimum=0)
    seed = check_int("seed", seed, minimum=0)
    counted = [entry for entry in entries if entry["focus"] is not None]
    if not entries:
        return None
    summary: dict[str, Any] = {"records": len(counted), "empty_masks": len(entries) - len(counted),
                               "attention": None, "area": None, "focus": None, "focus_ci": None,
                               "record_focus": None, "above_uniform": None}
    if not counted:
        return summary
    attention = [entry["attention"] for entry in counted]
    area = [entry["area"] for entry in counted]
    summary.update(attention=math.fsum(attention) / len(counted), area=math.fsum(area) / len(counted),
                   focus=math.fsum(attention) / math.fsum(area),
                   record_focus=math.fsum(entry["focus"] for entry in counted) / len(counted),
                   above_uniform=sum(entry["focus"] > 1.0 for entry in counted) / len(counted))
    if bootstrap:
        rng = random.Random(f"skinflow-attention:{seed}:lesion_focus")
        ratios = []
        for _ in range(bootstrap):
            drawn = rng.choices(range(len(counted)), k=len(counted))
            ratios.append(math.fsum(attention[i] for i in drawn) / math.fsum(area[i] for i in drawn))
        ratios.sort()
        tail = (1.0 - confidence) / 2
        summary["focus_ci"] = [percentile(ratios, tail), percentile(ratios, 1.0 - tail)]
    return summary


def _save_overlay(image, weights: torch.Tensor, grid: tuple[int, int], path: Path, title: str,
                  mask: torch.Tensor | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    heat = weights.mean(dim=0).reshape(grid).numpy()
    figure, axes = plt.subplots(figsize=(3.2, 3.2))
    axes.imshow(image)
    axes.imshow(heat, cmap="jet", alpha=0.45, extent=(0, image.width, image.height, 0), interpolation="nearest")
    if mask is not None and bool(mask.any()) and not bool(mask.all()):  # the lesions' outline, in white
        height, width = mask.shape
        xs = (torch.arange(width, dtype=torch.float64) + 0.5) * (image.width / width)
        ys = (torch.arange(height, dtype=torch.float64) + 0.5) * (image.height / height)
        axes.contour(xs.numpy(), ys.numpy(), mask.double().numpy(), levels=[0.5], colors="white", linewidths=0.8)
    axes.set_title(title, fontsize=7)
    axes.axis("off")
    try:
        atomic_save(path, lambda name: figure.savefig(name, format="png", dpi=100, bbox_inches="tight"))
    finally:
        plt.close(figure)


def attention_analysis(model, processor, records: Sequence[Mapping[str, Any]], out: str | os.PathLike[str], *,
                       stage: str = "diagnosis", k: int = DEFAULT_K, max_new_tokens: int = 160,
                       overlays: int = 8, model_name: str = "model", bootstrap: int = 1000,
                       seed: int = 0) -> dict[str, Any]:
    """Attention of the answers to the images for ``records``; writes ``attention.json`` (and overlays
    ``overlays/<n>.png`` for the first ``overlays`` records, with the lesions' outline when the record has a mask)
    into the existing directory ``out``; returns the summary.

    ``bootstrap`` resamples (0: none) and ``seed`` give the interval of the set's lesion focus (:func:`lesion_focus`).
    Every record's lesion mask is checked before any record is analysed: a mask that is missing, unreadable or of
    another size than its image is a ``ValueError`` listing every such record's id and file.
    """
    if stage not in ("diagnosis", "caption"):
        raise ValueError(f"stage must be 'diagnosis' or 'caption', got {stage!r}")
    k = check_int("k", k, minimum=1)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
    overlays = check_int("overlays", overlays, minimum=0)
    bootstrap = check_int("bootstrap", bootstrap, minimum=0)
    seed = check_int("seed", seed, minimum=0)
    problems = lesion_mask_problems(records)
    if problems:
        shown = "\n".join(problems[:20]) + (f"\n... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ValueError(f"{len(problems)} of {len(records)} records have an unusable lesion mask:\n{shown}")
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
            mask = load_lesion_mask(record)
            if mask is not None:
                entry["lesion"] = lesion_share(weights, result["grid"], mask)
            if index < overlays:
                overlay_dir.mkdir(exist_ok=True)
                name = f"{index:04d}.png"
                _save_overlay(image.resize((result["grid"][1] * 16, result["grid"][0] * 16)), weights,
                              result["grid"], overlay_dir / name, f"{record['id']} ({record['label']})", mask)
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
        "lesion": lesion_focus([entry["lesion"] for entry in analysed if "lesion" in entry], bootstrap=bootstrap,
                               seed=seed),
        "settings": {
            "stage": stage, "k": k, "max_new_tokens": max_new_tokens,
            "generation": "greedy, the model's own attention implementation",
            "teacher_forced": "one eager pass over the chat prompt + the answer text (re-tokenised)",
            "queries": "the positions predicting each answer token", "layers": "all decoder layers, averaged",
            "heads": "all heads, averaged",
            "sinks": "attention to non-image tokens (sinks, text) removed by renormalising over the image tokens",
            "relative": "w * N (1 = uniform attention over the N image tokens)",
            "lesion": "lesion fraction of an image token = the share of its footprint (the image stretched onto the "
                      "merged patch grid) covered by lesion-mask pixels; attention = mean over answer tokens of "
                      "sum(weight * fraction); area = mean fraction; focus = attention / area (1 = uniform); "
                      "set: mean attention / mean area over the records with a non-empty mask",
            "bootstrap": bootstrap, "seed": seed,
            "focus_ci": "95% percentile bootstrap over records of the set's focus",
        },
        "per_record": per_record,
    }
    text = json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write(out / "attention.json", lambda file: file.write(text))
    return summary
