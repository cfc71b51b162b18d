"""The synthetic dermatology set: procedural lesions on skin of every Fitzpatrick type, labelled by documented rules.

``generate(n, seed=0)`` returns records (see ``skinflow.data.records``) whose images show exactly what their
captions say: colour, shape, lesion type, number, size, border, surface, texture, distribution and surrounding are
drawn; the location is the body-site backdrop (back: skin to the edges; scalp: hair strands; leg: a limb between
cloth; hand: palm and fingers). The diagnosis is a function of the describable attributes (``DIAGNOSES``), except for
two pairs whose describable attributes coincide and which differ only by an implicit fine texture (a dotted
micro-grid of 4 px) that no caption field names: psoriasis vs mycosis fungoides, eczema vs allergic contact
dermatitis. Stage I can learn the describable part, Stage II also needs the implicit cue.

Record ``i`` depends only on ``(seed, i)``: ``generate(10)`` is a prefix of ``generate(100)``. Splits are stratified:
labels cycle through shuffled rounds of all diagnoses, and each block of 20 rounds is divided between the splits in
the requested proportions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from rich.progress import track

from skinflow.data.records import atomic_write
from skinflow.data.synthetic_draw import SIZE_RADII, Lesion, render
from skinflow.formats import CAPTION_FIELDS
from skinflow.tiny import IMAGE_SIZE

__all__ = [
    "DIAGNOSES",
    "LOCATIONS",
    "TEXTURE_PAIRS",
    "Diagnosis",
    "contact_sheet",
    "diagnose_attributes",
    "generate",
]

LOCATIONS: tuple[str, ...] = ("back", "scalp", "leg", "hand")
SPLITS: tuple[str, ...] = ("train", "val", "test")
_ROUNDS_PER_BLOCK = 20
_DISTRIBUTIONS = {"single": ("localized",), "few": ("grouped", "scattered"), "multiple": ("scattered", "linear")}
_COUNTS = {"single": (1, 1), "few": (2, 4), "multiple": (6, 10)}


@dataclass(frozen=True)
class Diagnosis:
    """A diagnosis of the synthetic set: fixed (decisive) attributes, varying ones, and the implicit cue."""

    label: str
    fixed: dict[str, str]
    varying: dict[str, tuple[str, ...]] = field(default_factory=dict)
    implicit_cue: bool = False

    def describable(self) -> tuple[tuple[str, str], ...]:
        """The decisive describable attributes, sorted (what a caption reveals of the diagnosis)."""
        return tuple(sorted(self.fixed.items()))


_PSORIASIFORM = dict(color="red", lesion_type="plaque", surface="scaly", border="well-defined", texture="smooth",
                     surrounding="normal skin")
_ECZEMATOUS = dict(color="pink", lesion_type="patch", surface="crusted", border="ill-defined", texture="rough",
                   surrounding="erythema")

DIAGNOSES: tuple[Diagnosis, ...] = (
    Diagnosis("psoriasis", _PSORIASIFORM, {"shape": ("round", "oval"), "number": ("few", "multiple"),
                                           "size": ("medium", "large")}),
    Diagnosis("mycosis fungoides", _PSORIASIFORM, {"shape": ("round", "oval"), "number": ("few", "multiple"),
                                                   "size": ("medium", "large")}, implicit_cue=True),
    Diagnosis("eczema", _ECZEMATOUS, {"shape": ("oval", "irregular"), "number": ("single", "few"),
                                      "size": ("medium", "large")}),
    Diagnosis("allergic contact dermatitis", _ECZEMATOUS, {"shape": ("oval", "irregular"),
                                                           "number": ("single", "few"), "size": ("medium", "large")},
              implicit_cue=True),
    Diagnosis("lichen simplex", dict(color="brown", lesion_type="plaque", texture="lichenified", surface="smooth",
                                     border="ill-defined", shape="oval", number="single", size="large",
                                     surrounding="normal skin")),
    Diagnosis("melanoma", dict(color="black", lesion_type="macule", shape="irregular", border="irregular",
                               number="single", texture="smooth", surface="smooth", surrounding="normal skin"),
              {"size": ("medium", "large")}),
    Diagnosis("nevocytic nevus", dict(color="brown", lesion_type="papule", shape="round", border="well-defined",
                                      size="small", texture="smooth", surface="smooth", surrounding="normal skin"),
              {"number": ("single", "few")}),
    Diagnosis("basal cell carcinoma", dict(color="pearly", lesion_type="nodule", shape="round", border="rolled",
                                           surface="telangiectatic", number="single", texture="smooth",
                                           surrounding="normal skin"), {"size": ("medium", "large")}),
    Diagnosis("vitiligo", dict(color="depigmented", lesion_type="patch", shape="irregular", border="well-defined",
                               texture="smooth", surface="smooth", surrounding="normal skin"),
              {"number": ("few", "multiple"), "size": ("medium", "large")}),
    Diagnosis("granuloma annulare", dict(color="pink", lesion_type="papule", shape="annular", border="raised",
                                         texture="smooth", surface="smooth", surrounding="normal skin"),
              {"number": ("single", "few"), "size": ("large",)}),
    Diagnosis("acne vulgaris", dict(color="red", lesion_type="pustule", shape="round", border="well-defined",
                                    number="multiple", size="small", texture="smooth", surface="smooth",
                                    surrounding="erythema")),
)
"""The rules: each diagnosis fixes its decisive attributes; the listed ones vary; location and distribution always
vary (distribution follows the number: single → localized, few → grouped or scattered, multiple → scattered or
linear; multiple lesions are at most medium)."""

TEXTURE_PAIRS: tuple[tuple[str, str], ...] = (
    ("psoriasis", "mycosis fungoides"),
    ("eczema", "allergic contact dermatitis"),
)
"""Diagnoses with the same describable attributes, told apart only by the implicit cue (second of each pair)."""

def diagnose_attributes(caption: dict[str, str], implicit_cue: bool) -> str:
    """The rule: the diagnosis whose attributes the caption shows and whose implicit cue matches ``implicit_cue``.

    Raises ``ValueError`` when no diagnosis matches (a caption not produced by this generator).
    """
    for diagnosis in DIAGNOSES:
        if diagnosis.implicit_cue != implicit_cue:
            continue
        if all(caption.get(key) == value for key, value in diagnosis.fixed.items()) and all(
            caption.get(key) in values for key, values in diagnosis.varying.items()
        ):
            return diagnosis.label
    raise ValueError(f"caption matches no synthetic diagnosis (implicit_cue={implicit_cue}): {caption}")


def _check_arguments(n: Any, seed: Any, image_size: Any, splits: Any, label_noise: Any, skin_types: Any) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 56:
        raise ValueError(f"image_size must be an int >= 56, got {image_size!r}")
    if (not isinstance(splits, Sequence) or len(splits) != 3 or any(not isinstance(f, int | float) or f < 0
                                                                     for f in splits)
            or abs(sum(splits) - 1.0) > 1e-6):
        raise ValueError(f"splits must be three fractions >= 0 (train, val, test) summing to 1, got {splits!r}")
    if not isinstance(label_noise, int | float) or not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must be a fraction in [0, 1), got {label_noise!r}")
    if skin_types is not None and (not skin_types or any(t not in range(1, 7) for t in skin_types)):
        raise ValueError(f"skin_types must be a non-empty collection of Fitzpatrick types 1-6, got {skin_types!r}")


def _split_plan(splits: Sequence[float]) -> list[str]:
    """The split of each round of a block: ``_ROUNDS_PER_BLOCK`` entries in the requested proportions."""
    exact = [fraction * _ROUNDS_PER_BLOCK for fraction in splits]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(3), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: _ROUNDS_PER_BLOCK - sum(counts)]:
        counts[i] += 1
    return [name for name, count in zip(SPLITS, counts) for _ in range(count)]


def _assignment(seed: int, index: int, plan: list[str]) -> tuple[Diagnosis, str]:
    """Diagnosis and split of record ``index``: shuffled rounds of all diagnoses, blocks of rounds split by plan."""
    round_index, position = divmod(index, len(DIAGNOSES))
    order = np.random.default_rng([seed, 1, round_index]).permutation(len(DIAGNOSES))
    block, offset = divmod(round_index, _ROUNDS_PER_BLOCK)
    split_order = np.random.default_rng([seed, 2, block]).permutation(_ROUNDS_PER_BLOCK)
    return DIAGNOSES[order[position]], plan[split_order[offset]]


def _sample_caption(diagnosis: Diagnosis, rng: np.random.Generator) -> dict[str, str]:
    caption = dict.fromkeys(CAPTION_FIELDS, "")
    caption.update(diagnosis.fixed)
    for key, values in diagnosis.varying.items():
        caption[key] = values[rng.integers(len(values))]
    if caption["number"] == "multiple" and caption["size"] == "large":
        caption["size"] = "medium"
    caption["distribution"] = _DISTRIBUTIONS[caption["number"]][rng.integers(len(_DISTRIBUTIONS[caption["number"]]))]
    caption["location"] = LOCATIONS[rng.integers(len(LOCATIONS))]
    return caption


def _place_lesions(caption: dict[str, str], size: int, rng: np.random.Generator) -> list[Lesion]:
    """Lesion centres and radii following number, size and distribution, inside the skin of the backdrop."""
    scale = size / IMAGE_SIZE
    low, high = _COUNTS[caption["number"]]
    count = int(rng.integers(low, high + 1))
    radius_low, radius_high = SIZE_RADII[caption["size"]]
    top = 0.5 if caption["location"] == "hand" else 0.2  # lesions of the hand sit on the palm
    left, right = (0.3, 0.7) if caption["location"] == "leg" else (0.2, 0.8)
    centre = np.array([rng.uniform(top, 0.8), rng.uniform(left, right)])
    distribution = caption["distribution"]
    if distribution == "localized":
        points = np.array([[rng.uniform(max(top, 0.35), 0.7), rng.uniform(0.38, 0.62)]])
    elif distribution == "grouped":
        points = centre[None] + rng.normal(0, 0.07, (count, 2))
    elif distribution == "linear":
        angle = rng.uniform(0, np.pi)
        steps = np.linspace(-0.3, 0.3, count)[:, None]
        points = np.array([0.5 + 0.1 * (top - 0.2), 0.5]) + steps * np.array([np.sin(angle), np.cos(angle)])
    else:
        points = np.column_stack([rng.uniform(top, 0.85, count), rng.uniform(left - 0.05, right + 0.05, count)])
    points = np.clip(points, [top, left], [0.88, right])
    return [
        Lesion(y=float(y * size), x=float(x * size), radius=float(rng.uniform(radius_low, radius_high) * scale),
               angle=float(rng.uniform(0, np.pi)), phases=(float(rng.uniform(0, 6.3)), float(rng.uniform(0, 6.3))))
        for y, x in points
    ]


def _record(seed: int, index: int, size: int, plan: list[str], label_noise: float,
            skin_types: tuple[int, ...]) -> dict[str, Any]:
    diagnosis, split = _assignment(seed, index, plan)
    rng = np.random.default_rng([seed, 0, index])
    skin_type = int(skin_types[rng.integers(len(skin_types))])
    caption = _sample_caption(diagnosis, rng)
    lesions = _place_lesions(caption, size, rng)
    pixels = render(size, skin_type, caption["location"], caption, lesions, diagnosis.implicit_cue, rng)
    label = diagnosis.label
    if rng.uniform() < label_noise:
        others = [d.label for d in DIAGNOSES if d.label != label]
        label = others[rng.integers(len(others))]
    return {
        "id": f"synthetic-{seed}-{index:06d}",
        "image": Image.fromarray(pixels, "RGB"),
        "caption": caption,
        "label": label,
        "clean_label": diagnosis.label,
        "noisy_label": label != diagnosis.label,
        "implicit_cue": diagnosis.implicit_cue,
        "lesion_count": len(lesions),
        "skin_type": skin_type,
        "split": split,
        "source": "synthetic",
    }


def generate(
    n: int,
    seed: int = 0,
    *,
    image_size: int = IMAGE_SIZE,
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    label_noise: float = 0.0,
    skin_types: Iterable[int] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """``n`` synthetic records (see the module docstring), deterministic in ``(seed, index)``.

    Args:
        n: number of records.
        seed: data set seed.
        image_size: side of the square RGB images in pixels (the tiny default sees 112).
        splits: fractions of (train, val, test), stratified by diagnosis.
        label_noise: fraction of records whose ``label`` is replaced by another diagnosis; ``clean_label`` keeps the
            true one and ``noisy_label`` says which were replaced.
        skin_types: Fitzpatrick types to draw from (uniformly); default all of 1–6.
        progress: show a progress bar.

    Returns a list of record dicts: ``id``, ``image`` (PIL RGB, ``image_size`` square), ``caption`` (all twelve
    fields), ``label``, ``clean_label``, ``noisy_label``, ``implicit_cue``, ``lesion_count``, ``skin_type`` (1–6),
    ``split``, ``source`` ("synthetic").
    """
    skin_types = tuple(range(1, 7)) if skin_types is None else tuple(skin_types)
    _check_arguments(n, seed, image_size, splits, label_noise, skin_types)
    plan = _split_plan(splits)
    indices = range(n)
    if progress and n >= 200:
        indices = track(indices, description="synthetic images", total=n)
    return [_record(seed, index, image_size, plan, float(label_noise), skin_types) for index in indices]


def contact_sheet(records: Sequence[dict[str, Any]], path: str | os.PathLike[str], columns: int = 8) -> Path:
    """Write a PNG grid of the records' images with each label (and skin type) underneath; atomic. Returns the path."""
    if not records:
        raise ValueError("records must not be empty")
    if not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    size = max(record["image"].size[0] for record in records)
    caption_height = 24
    rows = -(-len(records) // columns)
    sheet = Image.new("RGB", (columns * (size + 4), rows * (size + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, record in enumerate(records):
        row, column = divmod(index, columns)
        x, y = column * (size + 4), row * (size + caption_height)
        sheet.paste(record["image"], (x, y))
        draw.text((x + 1, y + size + 1), record["label"][:22], fill="black")
        draw.text((x + 1, y + size + 11), f"type {record['skin_type']}", fill="gray")
    return atomic_write(path, lambda handle: sheet.save(handle, format="PNG"), binary=True)

