"""The image-only Qwen2.5-VL processor: the stock processor's behaviour without a video processor (no torchvision).

transformers' ``Qwen2_5_VLProcessor`` always builds a video processor, and its video processors import torchvision,
so the stock processor cannot be constructed where torchvision is missing (e.g. CPU-only installs of a torch release
that has no torchvision build). :class:`ImageOnlyQwenVLProcessor` keeps the stock processor's text and image
handling (the same ``<|image_pad|>`` expansion from ``image_grid_thw``, the same image processor and chat template)
and drops videos. It is registered with ``AutoProcessor`` when skinflow is imported, so a directory saved from it
reloads with ``AutoProcessor.from_pretrained`` (local files, no remote code).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoProcessor, ProcessorMixin, Qwen2_5_VLProcessor

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
