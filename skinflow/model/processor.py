"""The image-only Qwen2.5-VL processor: the stock processor's behaviour without a video processor (no torchvision).

transformers' ``Qwen2_5_VLProcessor`` always builds a video processor, and its video processors import torchvision,
so the stock processor cannot be constructed where torchvision is missing (e.g. CPU-only installs of a torch release
that has no torchvision build). :class:`ImageOnlyQwenVLProcessor` keeps the stock processor's text and image
handling (the same ``<|image_pad|>`` expansion from ``image_grid_thw``, the same image processor and chat template)
and drops videos. It is registered with ``AutoProcessor`` when ``skinflow.model`` is imported, so a directory saved from it
reloads with ``AutoProcessor.from_pretrained`` (local files, no remote code).

:func:`load_processor` loads and checks the processor of a checkpoint directory (either class), with one clear
error naming the directory or file when it cannot be used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import AutoProcessor, ProcessorMixin, Qwen2_5_VLProcessor

from skinflow.util import error_summary

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
_REGISTRY_KEY = "skinflow_image_only_qwen_vl"


class ImageOnlyQwenVLProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` for images and text only.

    Args:
        image_processor: a Qwen2-VL image processor (``Qwen2VLImageProcessorPil`` needs no torchvision).
        tokenizer: a tokenizer holding ``<|image_pad|>`` (and ``<|video_pad|>``) as special tokens.
        chat_template: the Jinja chat template.
    """

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs):
        if tokenizer is None or image_processor is None:
            raise ValueError("ImageOnlyQwenVLProcessor needs both an image_processor and a tokenizer")
        self.image_token = IMAGE_TOKEN
        self.video_token = VIDEO_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer must hold {IMAGE_TOKEN} as a special token")
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def __call__(self, images: Any = None, text: Any = None, videos: Any = None, **kwargs):
        """Tokenize ``text`` (one ``<|image_pad|>`` per image, expanded to the image's token count) and
        preprocess ``images``; returns ``input_ids``, ``attention_mask``, ``pixel_values`` (patches, C·T·P·P),
        ``image_grid_thw`` (N, 3) and ``mm_token_type_ids`` like the stock processor."""
        if videos is not None:
            raise ValueError("videos are not supported by the image-only processor; pass images")
        return super().__call__(images=images, text=text, **kwargs)


def register_with_transformers() -> None:
    """Let ``AutoProcessor.from_pretrained`` find :class:`ImageOnlyQwenVLProcessor` by name."""
    AutoProcessor.register(_REGISTRY_KEY, ImageOnlyQwenVLProcessor, exist_ok=True)


TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
"""The files that hold a Qwen2 tokenizer: a fast ``tokenizer.json``, or a slow vocabulary and merges."""

IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
"""The files that can hold the image processor's settings (transformers 4 writes the first, 5 the second)."""


def _check_files(path: Path, label: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{label}: not a checkpoint directory")
    if not any(all((path / name).is_file() for name in files) for files in TOKENIZER_FILES):
        raise FileNotFoundError(f"{label}: no tokenizer files (tokenizer.json, or vocab.json and merges.txt)")
    if not any((path / name).is_file() for name in IMAGE_PROCESSOR_FILES):
        raise FileNotFoundError(f"{label}: no image processor settings ({' or '.join(IMAGE_PROCESSOR_FILES)})")


def check_processor(processor: Any, config: Any = None, name: str = "processor") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``processor`` can serve a Qwen2.5-VL model of ``config``.

    Checked: a tokenizer holding ``<|image_pad|>`` and a chat template; a Qwen2-VL style image processor
    (``patch_size``, ``merge_size``, ``temporal_patch_size``); with ``config`` (a ``Qwen2_5_VLConfig``), the same
    image token id, patch, merge and temporal patch sizes as the model's, and no token id beyond its vocabulary.
    """
    tokenizer = getattr(processor, "tokenizer", None)
    image_processor = getattr(processor, "image_processor", None)
    if tokenizer is None or image_processor is None:
        raise ValueError(f"{name}: a {type(processor).__name__}, not a processor with a tokenizer and an image "
                         "processor")
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise ValueError(f"{name}: the tokenizer has no {IMAGE_TOKEN} token")
    if not (getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)):
        raise ValueError(f"{name}: no chat template (chat_template.jinja or a chat_template entry)")
    sizes = {key: getattr(image_processor, key, None) for key in ("patch_size", "merge_size", "temporal_patch_size")}
    if not all(isinstance(value, int) and value >= 1 for value in sizes.values()):
        raise ValueError(f"{name}: not a Qwen2-VL image processor ({type(image_processor).__name__}, {sizes})")
    if config is None:
        return
    vision = config.vision_config
    expected = {"patch_size": vision.patch_size, "merge_size": vision.spatial_merge_size,
                "temporal_patch_size": vision.temporal_patch_size}
    different = {key: (sizes[key], expected[key]) for key in sizes if sizes[key] != expected[key]}
    if different:
        details = ", ".join(f"{key} {mine} vs the model's {theirs}" for key, (mine, theirs) in different.items())
        raise ValueError(f"{name}: the image processor does not match the model: {details}")
    if image_token_id != config.image_token_id:
        raise ValueError(f"{name}: the tokenizer's {IMAGE_TOKEN} is id {image_token_id}, the model's "
                         f"image_token_id is {config.image_token_id}")
    vocab_size = config.text_config.vocab_size
    if len(tokenizer) > vocab_size:
        raise ValueError(f"{name}: the tokenizer has {len(tokenizer)} tokens, more than the model's vocab_size "
                         f"{vocab_size}")


def load_processor(path: str | os.PathLike[str], *, config: Any = None, name: str = "path") -> ProcessorMixin:
    """The processor of a local checkpoint directory, checked (see :func:`check_processor`).

    ``AutoProcessor.from_pretrained`` with local files only and no remote code: the stock ``Qwen2_5_VLProcessor`` of
    a Qwen2.5-VL checkpoint, or :class:`ImageOnlyQwenVLProcessor` of a directory saved from it (the tiny default).

    Args:
        path: the checkpoint directory.
        config: the model's config, to check that the processor matches it.
        name: what to call the directory in errors (e.g. ``"--model"``).

    Raises ``FileNotFoundError`` (not a directory, no tokenizer files, no image processor settings) or
    ``ValueError`` (files that do not load, or a processor that does not fit the model), naming ``name`` and the
    directory on one line.
    """
    register_with_transformers()
    directory = Path(path)
    label = f"{name} {str(path)!r}"
    _check_files(directory, label)
    try:
        processor = AutoProcessor.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except MemoryError:
        raise
    except ImportError as error:
        raise ValueError(f"{label}: its processor needs a missing package ({error_summary(error)})") from error
    except Exception as error:  # tokenizers and the JSON readers raise many types for a corrupt file
        raise ValueError(f"{label}: cannot load the processor ({error_summary(error)})") from error
    check_processor(processor, config, label)
    return processor
