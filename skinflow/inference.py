"""Inference: a structured caption and ranked candidate diagnoses for each image (``skinflow.diagnose``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from skinflow.formats import CAPTION_PROMPT, DEFAULT_K, diagnosis_prompt, parse_caption, parse_diagnoses
from skinflow.taxonomy import match_label, nine_group, three_group

ImageLike = Image.Image | str | Path


class ImageReadError(ValueError):
    """An input image could not be read (missing, not an image, or corrupt)."""


@dataclass(frozen=True)
class Candidate:
    """One ranked diagnosis: the model's text and, when it names a Fitzpatrick17k label, that label's groups."""

    rank: int
    text: str
    label: str | None
    nine_group: str | None
    three_group: str | None


@dataclass(frozen=True)
class Diagnosis:
    """The model's answers for one image: the parsed caption and the ranked candidates, with the raw texts."""

    caption: dict[str, str]
    candidates: list[Candidate]
    caption_text: str
    diagnosis_text: str

    def to_dict(self) -> dict:
        """A JSON-serialisable dict."""
        return asdict(self)


def read_image(image: ImageLike, name: str = "image") -> Image.Image:
    """A PIL image or an image file path → an RGB PIL image; :class:`ImageReadError` naming ``name`` otherwise."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, str | Path):
        raise ImageReadError(f"{name} must be a PIL image or a file path, got {type(image).__name__}")
    try:
        with Image.open(image) as opened:
            opened.load()
            return opened.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ImageReadError(f"{name}: cannot read image {str(image)!r}: {error}") from error


def candidates_from_text(text: str, k: int) -> list[Candidate]:
    """Parse a ranked-diagnosis answer into at most ``k`` candidates with their taxonomy groups."""
    candidates = []
    for rank, entry in enumerate(parse_diagnoses(text, k), start=1):
        label = match_label(entry)
        groups = (nine_group(label), three_group(label)) if label is not None else (None, None)
        candidates.append(Candidate(rank, entry, label, *groups))
    return candidates


@torch.no_grad()
def generate_answers(
    model: nn.Module, processor, images: Sequence[Image.Image], prompt: str, max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy answers of ``model`` to one user turn (an image + ``prompt``) per image, in order."""
    tokenizer = processor.tokenizer
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers: list[str] = []
    try:
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            batch = processor(images=chunk, text=[text] * len(chunk), padding=True, return_tensors="pt")
            batch = batch.to(model.device)
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
            answers += processor.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = padding_side
    return answers


def diagnose(
    model: nn.Module,
    processor,
    images: ImageLike | Sequence[ImageLike],
    k: int = DEFAULT_K,
    batch_size: int = 8,
    max_new_tokens: int = 160,
) -> list[Diagnosis]:
    """Caption and diagnose each image with a (DVE) Qwen2.5-VL model.

    Two greedy generations per image: the Stage I caption prompt and the Stage II top-``k`` prompt. The answers are
    parsed with the never-raising parsers of :mod:`skinflow.formats`; candidates naming a Fitzpatrick17k label
    carry its 9-way and 3-way groups.

    Args:
        model: a Qwen2.5-VL model (e.g. from :func:`skinflow.tiny.build` or :func:`skinflow.dve.load_pretrained`).
        processor: its processor.
        images: one image or a sequence; each a PIL image or an image file path.
        k: number of ranked candidates asked for (and kept).
        batch_size: images per generate call.
        max_new_tokens: generation budget per answer.

    Returns one :class:`Diagnosis` per image, in order. Raises :class:`ImageReadError` naming the first unreadable
    image before anything runs.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if isinstance(images, Image.Image | str | Path):
        images = [images]
    pictures = [read_image(image, f"images[{index}]") for index, image in enumerate(images)]
    if not pictures:
        return []
    caption_texts = generate_answers(model, processor, pictures, CAPTION_PROMPT, max_new_tokens, batch_size)
    diagnosis_texts = generate_answers(model, processor, pictures, diagnosis_prompt(k), max_new_tokens, batch_size)
    return [
        Diagnosis(parse_caption(caption), candidates_from_text(answer, k), caption, answer)
        for caption, answer in zip(caption_texts, diagnosis_texts)
    ]
