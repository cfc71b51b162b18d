"""Inference: a structured caption and ranked candidate diagnoses for each image (``skinflow.diagnose``)."""

from __future__ import annotations

import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from skinflow.formats import CAPTION_PROMPT, DEFAULT_K, diagnosis_prompt, parse_caption, parse_diagnoses
from skinflow.taxonomy import match_label, nine_group, three_group
from skinflow.util import check_int

ImageLike = Image.Image | str | Path


class ImageReadError(ValueError):
    """An input image could not be used: missing, not an image, corrupt, too large, or refused by the processor.

    The message names the argument and the file, on one line."""


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


def _describe(name: str, image: object) -> str:
    """``name`` and, for a file path, the path: ``IMAGE 'lesion.jpg'``."""
    return f"{name} {str(image)!r}" if isinstance(image, str | Path) else name


def _open_problem(path: Path) -> str | None:
    """Why ``path`` cannot be opened as an image file, or ``None`` (a regular file, not a directory or a FIFO)."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return error.strerror or str(error)
    if stat.S_ISDIR(mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    return None


def _decode(path: Path) -> Image.Image:
    """Open and fully decode ``path`` as an RGB image; the reason as an ``ImageReadError`` message otherwise."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as opened:
            opened.load()
            return opened.convert("RGB")


def read_image(image: ImageLike, name: str = "image", image_processor: Any = None) -> Image.Image:
    """A PIL image or an image file path → an RGB PIL image, fully decoded.

    Args:
        image: a PIL image or the path of an image file.
        name: what to call it in errors (e.g. ``"IMAGE"`` or ``"images[3]"``); a path is added after it.
        image_processor: optional Qwen2-VL image processor whose limits the image must meet (see
            :func:`check_image`), so that a refused image fails here, not in the middle of a batch.

    Raises :class:`ImageReadError` naming ``name`` and the file: not a PIL image or path, missing, a directory or
    another non-regular file, unreadable, not an image, truncated or corrupt, over PIL's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS`` pixels), or refused by ``image_processor``.
    """
    if isinstance(image, Image.Image):
        picture = image.convert("RGB")
    elif isinstance(image, str | Path):
        label = _describe(name, image)
        problem = _open_problem(Path(image)) if str(image) else "the path is empty"
        if problem is not None:
            raise ImageReadError(f"{label}: {problem}")
        try:
            picture = _decode(Path(image))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            message = str(error).rstrip(".")
            raise ImageReadError(f"{label}: image too large ({message}; the limit is PIL.Image.MAX_IMAGE_PIXELS)") \
                from error
        except UnidentifiedImageError as error:
            raise ImageReadError(f"{label}: not an image file PIL can identify") from error
        except OSError as error:
            reason = error.strerror if error.errno is not None and error.strerror else str(error)
            raise ImageReadError(f"{label}: cannot read image: {reason}") from error
        except MemoryError:
            raise
        except Exception as error:  # a corrupt file can make a decoder raise anything (SyntaxError, struct.error...)
            raise ImageReadError(f"{label}: cannot decode image ({type(error).__name__}: {error})") from error
    else:
        raise ImageReadError(f"{name} must be a PIL image or a file path, got {type(image).__name__}")
    if image_processor is not None:
        check_image(picture, image_processor, _describe(name, image))
    return picture


def check_image(image: Image.Image, image_processor: Any, name: str = "image") -> None:
    """Raise :class:`ImageReadError` naming ``name`` when ``image_processor`` would refuse ``image``.

    The Qwen2-VL image processors resize every image with ``smart_resize``, which raises for an aspect ratio over
    200 (other transformers releases also refuse sides shorter than a patch); this asks the processor itself, with
    its own limits (``patch_size``, ``merge_size``, ``min_pixels``/``max_pixels``), before any model runs.
    """
    count = getattr(image_processor, "get_number_of_image_patches", None)
    if count is None:
        return
    width, height = image.size
    try:
        patches = count(height, width, {})
    except (ValueError, ZeroDivisionError) as error:
        raise ImageReadError(f"{name}: the image processor refuses a {width}x{height} image: {error}") from error
    if not isinstance(patches, int) or patches < 1:
        raise ImageReadError(f"{name}: the image processor makes no patches of a {width}x{height} image")


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
        model: a Qwen2.5-VL model (e.g. from :func:`skinflow.model.tiny.build` or :func:`skinflow.model.dve.load_pretrained`).
        processor: its processor.
        images: one image or a sequence; each a PIL image or an image file path.
        k: number of ranked candidates asked for (and kept).
        batch_size: images per generate call.
        max_new_tokens: generation budget per answer.

    Returns one :class:`Diagnosis` per image, in order. Raises :class:`ImageReadError` naming the first image that
    cannot be read or that the processor would refuse (see :func:`read_image`), and ``ValueError`` for a bad
    ``k``, ``batch_size`` or ``max_new_tokens``, before anything runs.
    """
    k, batch_size, max_new_tokens = (
        check_int(argument, value, minimum=1)
        for argument, value in (("k", k), ("batch_size", batch_size), ("max_new_tokens", max_new_tokens))
    )
    if isinstance(images, Image.Image | str | Path):
        images = [images]
    elif not isinstance(images, Iterable) or isinstance(images, bytes):
        raise TypeError(f"images must be an image, a file path or a sequence of them, got {type(images).__name__}")
    image_processor = getattr(processor, "image_processor", None)
    pictures = [read_image(image, f"images[{index}]", image_processor) for index, image in enumerate(images)]
    if not pictures:
        return []
    caption_texts = generate_answers(model, processor, pictures, CAPTION_PROMPT, max_new_tokens, batch_size)
    diagnosis_texts = generate_answers(model, processor, pictures, diagnosis_prompt(k), max_new_tokens, batch_size)
    return [
        Diagnosis(parse_caption(caption), candidates_from_text(answer, k), caption, answer)
        for caption, answer in zip(caption_texts, diagnosis_texts)
    ]
