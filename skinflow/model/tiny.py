"""The embedded tiny default: a ~1M-parameter Qwen2.5-VL with the DVE and an offline processor (docs/design.md §3).

``build()`` makes, offline and in about a second:

- a tokenizer: byte-level BPE (Qwen2's pre-tokenizer, so any text encodes) trained on the project's own
  vocabulary — the caption schema and its terms, the 114 Fitzpatrick17k labels and their groups, the prompts,
  digits and punctuation — with the Qwen chat special tokens (``<|im_start|>``, ``<|im_end|>``,
  ``<|vision_start|>``, ``<|image_pad|>``, …) and a Qwen2-VL style chat template;
- an image processor: transformers' Qwen2-VL image processor (its PIL backend, no torchvision) at
  :data:`IMAGE_SIZE` px with 8-px patches;
- a processor: :class:`~skinflow.model.processor.ImageOnlyQwenVLProcessor` (the stock one needs torchvision);
- a randomly initialised ``Qwen2_5_VLForConditionalGeneration`` sized to that tokenizer, DVE applied.

Everything saves with ``save_pretrained`` and reloads with ``AutoProcessor`` / ``AutoModelForImageTextToText``
from a local directory (after ``import skinflow.model``), with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from skinflow.data.synthetic import IMAGE_SIZE
from skinflow.formats import CAPTION_FIELDS, CAPTION_PROMPT, FIELD_VALUES, diagnosis_prompt, format_diagnoses
from skinflow.model.dve import apply_dve
from skinflow.model.processor import ImageOnlyQwenVLProcessor
from skinflow.taxonomy import LABELS, NINE_GROUPS, THREE_GROUPS
from skinflow.util import check_int

"""Side of the square images the tiny default sees (pixels): 14 × 14 patches of 8 px, 7 × 7 = 49 image tokens."""

PATCH_SIZE = 8
SPATIAL_MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
VOCAB_SIZE = 2048
"""Target size of the BPE vocabulary (bytes + merges + special tokens); the corpus may stop it earlier."""

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""The Qwen2.5-VL special tokens, in Qwen's order; they take ids 0–13."""

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2-VL's conversation layout: ``<|im_start|>role\\n…<|im_end|>\\n``, a default system turn, one
``<|vision_start|><|image_pad|><|vision_end|>`` per image part, and the assistant header as generation prompt."""


def vision_config(image_size: int = IMAGE_SIZE) -> dict:
    """Keyword arguments of the tiny vision tower (a ``Qwen2_5_VLVisionConfig``) for ``image_size`` px images.

    The attention window is the whole image: with 8-px patches a window of Qwen2.5-VL's default share would hold
    a few tokens, and transformers runs every window as its own attention call, which costs more than the
    attention itself on a CPU."""
    return dict(
        depth=4,
        hidden_size=64,
        intermediate_size=128,
        num_heads=4,
        out_hidden_size=128,
        patch_size=PATCH_SIZE,
        spatial_merge_size=SPATIAL_MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        window_size=image_size,
        fullatt_block_indexes=[1, 3],
    )


def text_config(vocab_size: int, **token_ids: int) -> dict:
    """Keyword arguments of the tiny language model (a ``Qwen2_5_VLTextConfig``): 2 layers of width 128.

    ``token_ids``: ``bos_token_id``, ``eos_token_id``, ``pad_token_id`` of the tokenizer."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]},
        tie_word_embeddings=True,
        **token_ids,
    )


def vocabulary_corpus() -> list[str]:
    """The texts the tokenizer is trained on: the project's schema, labels, groups and prompts."""
    fields = [field.replace("_", " ") for field in CAPTION_FIELDS]
    caption_lines = [f"{name}: {', '.join(FIELD_VALUES[field])}" for name, field in zip(fields, CAPTION_FIELDS)]
    labels = list(LABELS) + list(NINE_GROUPS) + list(THREE_GROUPS)
    return [
        *caption_lines,
        *labels,
        format_diagnoses(list(LABELS)),
        CAPTION_PROMPT,
        *(diagnosis_prompt(k) for k in range(1, 11)),
        DEFAULT_SYSTEM_PROMPT,
        "system user assistant",
        "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
        "! \" # $ % & ' ( ) * + , - . / : ; < = > ? @ [ \\ ] ^ _ ` { | } ~",
    ]


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> Qwen2Tokenizer:
    """Train the byte-level BPE on :func:`vocabulary_corpus` and wrap it as a ``Qwen2Tokenizer``.

    Deterministic: the same corpus and ``vocab_size`` give the same vocabulary and merges.
    """
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(vocabulary_corpus(), trainer)
    merges = [tuple(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=bpe.get_vocab(), merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_image_processor(image_size: int = IMAGE_SIZE) -> Qwen2VLImageProcessorPil:
    """The image processor of the tiny default: Qwen2-VL's (PIL backend), images resized to about image_size²."""
    pixels = image_size * image_size
    return Qwen2VLImageProcessorPil(
        patch_size=PATCH_SIZE,
        merge_size=SPATIAL_MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        min_pixels=pixels,
        max_pixels=pixels,
    )


def build_processor(tokenizer: Qwen2Tokenizer | None = None, image_size: int = IMAGE_SIZE) -> ImageOnlyQwenVLProcessor:
    """The image-only Qwen2.5-VL processor of the tiny default (images resized to about image_size²)."""
    tokenizer = build_tokenizer() if tokenizer is None else tokenizer
    return ImageOnlyQwenVLProcessor(build_image_processor(image_size), tokenizer, chat_template=CHAT_TEMPLATE)


def special_token_ids(tokenizer: Qwen2Tokenizer) -> dict[str, int]:
    """``bos_token_id``, ``eos_token_id`` (``<|im_end|>``, which ends every turn) and ``pad_token_id`` of
    ``tokenizer``."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    return dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])


def build_config(tokenizer: Qwen2Tokenizer, image_size: int = IMAGE_SIZE) -> Qwen2_5_VLConfig:
    """The tiny model's config for ``image_size`` px images, with the special-token ids of ``tokenizer``."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    token_ids = special_token_ids(tokenizer)
    return Qwen2_5_VLConfig(
        vision_config=vision_config(image_size),
        text_config=text_config(len(tokenizer), **token_ids),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        **token_ids,
    )


def build(
    seed: int = 0, num_bases: int = 4, dve: bool = True, image_size: int = IMAGE_SIZE
) -> tuple[Qwen2_5_VLForConditionalGeneration, ImageOnlyQwenVLProcessor]:
    """The embedded default: ``(model, processor)``, random init, built offline.

    Args:
        seed: seed of the model's random initialisation (the processor does not depend on it).
        num_bases: K of the DVE layers.
        dve: apply the DVE (default blocks and projections of :func:`skinflow.model.dve.apply_dve`).
        image_size: side of the square images the processor resizes to, a multiple of 16 (patch 8 × merge 2),
            at least 32; :data:`IMAGE_SIZE` gives 7 × 7 = 49 image tokens, 64 gives 16.

    Returns the model in eval mode (float32, CPU) and its processor. Raises ``TypeError``/``ValueError`` naming the
    argument for a seed that is not an int in [0, 2**64) or a ``dve`` that is not a bool (``num_bases``: see
    :func:`skinflow.model.dve.apply_dve`).
    """
    check_int("seed", seed, minimum=0, maximum=2**64 - 1)
    if not isinstance(dve, bool):
        raise TypeError(f"dve must be a bool, got {dve!r}")
    image_size = check_int("image_size", image_size, minimum=32)
    if image_size % (PATCH_SIZE * SPATIAL_MERGE_SIZE):
        raise ValueError(f"image_size must be a multiple of {PATCH_SIZE * SPATIAL_MERGE_SIZE}, got {image_size}")
    processor = build_processor(image_size=image_size)
    config = build_config(processor.tokenizer, image_size)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        model = Qwen2_5_VLForConditionalGeneration(config)
        if dve:
            apply_dve(model, num_bases=num_bases)
    finally:
        torch.random.set_rng_state(generator_state)
    # from the tokenizer, not the config: some transformers 5 releases keep these ids on the text config only
    token_ids = special_token_ids(processor.tokenizer)
    model.generation_config.eos_token_id = [token_ids["eos_token_id"], token_ids["pad_token_id"]]
    model.generation_config.pad_token_id = token_ids["pad_token_id"]
    return model.eval(), processor
