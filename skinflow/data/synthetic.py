"""The synthetic dermatology set: procedural lesions on skin of every Fitzpatrick type, labelled by documented rules.

``generate(n, seed=0)`` returns records (see :mod:`skinflow.data.records`) whose images show exactly what their
captions say: colour, shape, lesion type, number, size, texture, border, surface, distribution and surrounding are
drawn (:mod:`skinflow.data.synthetic_draw`), and the location is the body-site backdrop (back: skin to the edges;
scalp: hair strands; leg: a limb between cloth; hand: palm and fingers). The diagnosis is a
function of the describable attributes (:data:`DIAGNOSES`), except for the pairs of :data:`TEXTURE_PAIRS`, whose
describable attributes coincide and which differ only by an implicit fine texture (a dotted micro-grid of 4-px period)
that no caption field names. Stage I can learn the describable part; Stage II also needs the implicit cue.

Record ``i`` depends only on ``(seed, i)``: ``generate(10)`` is a prefix of ``generate(100)``. Labels cycle through
shuffled rounds of all diagnoses (balanced classes), and each block of 20 rounds is divided between the splits in the
requested proportions (exactly stratified by label).
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rich.progress import track

from skinflow.data.records import SKIN_TYPES, SPLITS
from skinflow.data.synthetic_draw import SIZE_RADII, lesion_region, outline_extent, place_lesions, render
from skinflow.formats import CAPTION_FIELDS
from skinflow.util import atomic_write, check_fraction, check_int, describe

IMAGE_SIZE = 112
"""Side of the synthetic images in pixels: what the tiny default sees (``skinflow.model.tiny`` uses it)."""

__all__ = [
    "COUNTS",
    "DIAGNOSES",
    "DISTRIBUTIONS",
    "LOCATIONS",
    "SIZES_FOR_NUMBER",
    "TEXTURE_PAIRS",
    "Diagnosis",
    "contact_sheet",
    "diagnose_attributes",
    "diagnosis_captions",
    "generate",
]

LOCATIONS: tuple[str, ...] = ("back", "scalp", "leg", "hand")
"""Body sites, each with its own backdrop; drawn uniformly for every diagnosis (never decisive)."""

COUNTS: dict[str, tuple[int, int]] = {"single": (1, 1), "few": (2, 3), "multiple": (6, 9)}
"""Inclusive range of the number of lesions drawn for each ``number`` term."""

DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "single": ("localized",),
    "few": ("grouped", "scattered"),
    "multiple": ("grouped", "scattered", "linear"),
}
"""The ``distribution`` terms each ``number`` allows (drawn uniformly among them; never decisive)."""

SIZES_FOR_NUMBER: dict[str, tuple[str, ...]] = {"multiple": ("small", "medium")}
"""Sizes allowed for a number (default: all): multiple lesions are at most medium."""

_ROUNDS_PER_BLOCK = 20
_DESCRIBED_FIELDS = ("color", "shape", "lesion_type", "number", "size", "texture", "border", "surface", "surrounding")


@dataclass(frozen=True)
class Diagnosis:
    """One diagnosis of the synthetic set and its rule.

    label: a Fitzpatrick17k label. fixed: ``(field, term)`` pairs the diagnosis always shows (decisive).
    varying: ``(field, terms)`` pairs, one term drawn uniformly per image (not decisive within the diagnosis).
    Every field of ``_DESCRIBED_FIELDS`` is in exactly one of the two; the location always varies and ``other`` is
    always empty. distributions: the distribution terms the diagnosis may show (among those its number allows,
    :data:`DISTRIBUTIONS`); empty: all of them. The distribution never decides a diagnosis.
    implicit_cue: the lesions carry the micro-grid that no caption names.
    """

    label: str
    fixed: tuple[tuple[str, str], ...]
    varying: tuple[tuple[str, tuple[str, ...]], ...] = ()
    distributions: tuple[str, ...] = ()
    implicit_cue: bool = False

    def __post_init__(self) -> None:
        fields = [field for field, _ in self.fixed] + [field for field, _ in self.varying]
        if sorted(fields) != sorted(_DESCRIBED_FIELDS):
            raise ValueError(f"rule {self.label!r} must give each of {_DESCRIBED_FIELDS} once, got {fields}")

    def allowed(self, field: str) -> tuple[str, ...]:
        """The terms this diagnosis may show in ``field`` (one of ``_DESCRIBED_FIELDS``)."""
        fixed = dict(self.fixed)
        return (fixed[field],) if field in fixed else dict(self.varying)[field]

    def allowed_distributions(self, number: str) -> tuple[str, ...]:
        """The distribution terms this diagnosis may show with ``number`` lesions."""
        return tuple(d for d in DISTRIBUTIONS[number] if not self.distributions or d in self.distributions)

    def describable(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Everything a caption can reveal about the diagnosis: ``(field, allowed terms)`` for each described field."""
        return tuple((field, self.allowed(field)) for field in _DESCRIBED_FIELDS)

    def matches(self, caption: Mapping[str, str]) -> bool:
        """Whether ``caption`` shows attributes this diagnosis allows (ignoring location and distribution)."""
        return all(caption.get(field) in self.allowed(field) for field in _DESCRIBED_FIELDS)


def _rule(label: str, *, implicit_cue: bool = False, varying: Mapping[str, Sequence[str]] | None = None,
          distributions: Sequence[str] = (), **fixed: str) -> Diagnosis:
    """A :class:`Diagnosis` from keyword arguments (fixed attributes) and a dict of varying ones."""
    varying_items = tuple((field, tuple(terms)) for field, terms in (varying or {}).items())
    return Diagnosis(label, tuple(fixed.items()), varying_items, tuple(distributions), implicit_cue)


_PSORIASIFORM = dict(color="red", lesion_type="plaque", texture="smooth", border="well-defined", surface="scaly",
                     surrounding="normal skin",
                     varying={"shape": ("round", "oval"), "number": ("few", "multiple"), "size": ("medium", "large")})
_ECZEMATOUS = dict(color="pink", lesion_type="patch", texture="rough", border="ill-defined", surface="crusted",
                   surrounding="erythema",
                   varying={"shape": ("oval", "irregular"), "number": ("single", "few"), "size": ("medium", "large")})

DIAGNOSES: tuple[Diagnosis, ...] = (
    _rule("psoriasis", **_PSORIASIFORM),
    _rule("mycosis fungoides", implicit_cue=True, **_PSORIASIFORM),
    _rule("eczema", **_ECZEMATOUS),
    _rule("allergic contact dermatitis", implicit_cue=True, **_ECZEMATOUS),
    _rule("lichen simplex", color="brown", lesion_type="plaque", shape="oval", number="single", size="large",
          texture="lichenified", border="ill-defined", surface="smooth", surrounding="hyperpigmentation"),
    _rule("melanoma", color="black", lesion_type="patch", shape="irregular", number="single", texture="smooth",
          border="irregular", surface="smooth", surrounding="normal skin", varying={"size": ("medium", "large")}),
    _rule("nevocytic nevus", color="brown", lesion_type="papule", shape="round", size="small", texture="smooth",
          border="well-defined", surface="smooth", surrounding="normal skin", varying={"number": ("single", "few")}),
    _rule("seborrheic keratosis", color="brown", lesion_type="plaque", size="medium", texture="rough",
          border="well-defined", surface="warty", surrounding="normal skin",
          varying={"shape": ("round", "oval"), "number": ("single", "few")}),
    _rule("basal cell carcinoma", color="pearly", lesion_type="nodule", shape="round", number="single",
          texture="smooth", border="rolled", surface="telangiectatic", surrounding="normal skin",
          varying={"size": ("medium", "large")}),
    _rule("vitiligo", color="depigmented", lesion_type="patch", shape="irregular", texture="smooth",
          border="well-defined", surface="smooth", surrounding="normal skin",
          varying={"number": ("few", "multiple"), "size": ("medium", "large")}),
    _rule("granuloma annulare", color="pink", lesion_type="papule", shape="annular", size="large", texture="smooth",
          border="raised", surface="smooth", surrounding="normal skin", varying={"number": ("single", "few")}),
    _rule("acne vulgaris", color="red", lesion_type="pustule", shape="round", number="multiple", size="small",
          texture="smooth", border="well-defined", surface="smooth", surrounding="erythema",
          distributions=("grouped", "scattered")),
)
"""The rules, one per diagnosis (see ``docs/synthetic.md`` for the table and the dermatology behind it)."""

TEXTURE_PAIRS: tuple[tuple[str, str], ...] = (
    ("psoriasis", "mycosis fungoides"),
    ("eczema", "allergic contact dermatitis"),
)
"""Diagnoses with the same describable attributes, told apart only by the implicit cue (second of each pair)."""

def diagnose_attributes(caption: Mapping[str, str], implicit_cue: bool) -> str:
    """Apply the rules: the diagnosis whose attributes ``caption`` shows and whose implicit cue is ``implicit_cue``.

    Args:
        caption: field -> term (a record's ``caption``); location, distribution and other are ignored.
        implicit_cue: whether the image carries the implicit micro-grid.

    Returns the label. Raises ``ValueError`` when no rule matches (a caption this generator never produces).
    """
    for diagnosis in DIAGNOSES:
        if diagnosis.implicit_cue == bool(implicit_cue) and diagnosis.matches(caption):
            return diagnosis.label
    raise ValueError(f"caption matches no synthetic diagnosis (implicit_cue={implicit_cue}): {dict(caption)}")


def _compatible_sizes(diagnosis: Diagnosis, number: str) -> tuple[str, ...]:
    allowed = SIZES_FOR_NUMBER.get(number, tuple(SIZE_RADII))
    return tuple(size for size in diagnosis.allowed("size") if size in allowed)


def diagnosis_captions(diagnosis: Diagnosis) -> list[dict[str, str]]:
    """Every caption ``diagnosis`` can produce (all combinations of its varying terms, locations and distributions).

    Returns a list of caption dicts over all of ``CAPTION_FIELDS``.
    """
    captions = []
    choices = [diagnosis.allowed(field) for field in _DESCRIBED_FIELDS]
    for terms in itertools.product(*choices):
        described = dict(zip(_DESCRIBED_FIELDS, terms))
        if described["size"] not in _compatible_sizes(diagnosis, described["number"]):
            continue
        distributions = diagnosis.allowed_distributions(described["number"])
        for location, distribution in itertools.product(LOCATIONS, distributions):
            caption = dict.fromkeys(CAPTION_FIELDS, "")
            caption.update(described, location=location, distribution=distribution)
            captions.append(caption)
    return captions


def _sample_caption(diagnosis: Diagnosis, rng: np.random.Generator) -> dict[str, str]:
    """One caption of ``diagnosis``: its fixed terms, one of each varying field's terms, a location, a distribution."""

    def pick(terms: Sequence[str]) -> str:
        return terms[int(rng.integers(len(terms)))]

    caption = dict.fromkeys(CAPTION_FIELDS, "")
    caption["number"] = pick(diagnosis.allowed("number"))
    caption["size"] = pick(_compatible_sizes(diagnosis, caption["number"]))
    for field in _DESCRIBED_FIELDS:
        if field not in ("number", "size"):
            caption[field] = pick(diagnosis.allowed(field))
    caption["distribution"] = pick(diagnosis.allowed_distributions(caption["number"]))
    caption["location"] = pick(LOCATIONS)
    return caption


def _check_arguments(n: Any, seed: Any, image_size: Any, splits: Any, label_noise: Any,
                     skin_types: tuple[Any, ...]) -> tuple[float, float, float]:
    """The ``splits`` as floats; refuses bad arguments of :func:`generate` with a ``ValueError`` naming the argument.

    Ints may be numpy integers, numbers numpy floats (``splits`` a numpy array); bools, NaN and infinities are
    refused everywhere.
    """
    def is_int(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    def is_fraction(value: Any) -> bool:
        return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                and value >= 0)

    check_int("n", n, minimum=0)
    check_int("seed", seed, minimum=0)
    check_int("image_size", image_size, minimum=56)
    fractions = tuple(splits) if isinstance(splits, Iterable) and not isinstance(splits, str | bytes) else ()
    if (len(fractions) != 3 or not all(is_fraction(f) for f in fractions)
            or abs(sum(float(f) for f in fractions) - 1.0) > 1e-6):
        raise ValueError(f"splits must be three finite fractions >= 0 (train, val, test) summing to 1, "
                         f"got {describe(splits)}")
    check_fraction("label_noise", label_noise, below_one=True)
    if not skin_types or not all(is_int(t) and t in SKIN_TYPES for t in skin_types):
        raise ValueError(f"skin_types must be a non-empty collection of Fitzpatrick types 1-6, got {describe(skin_types)}")
    return tuple(float(f) for f in fractions)


def _split_plan(splits: Sequence[float]) -> list[str]:
    """The split of each round of a block: ``_ROUNDS_PER_BLOCK`` names in the requested proportions (largest
    remainders), e.g. 16 × train, 2 × val, 2 × test for (0.8, 0.1, 0.1)."""
    exact = [fraction * _ROUNDS_PER_BLOCK for fraction in splits]
    counts = [int(value + 1e-9) for value in exact]
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


def _noisy_label(seed: int, index: int, label: str, label_noise: float) -> str:
    """``label``, or with probability ``label_noise`` another diagnosis (uniformly); its own random stream."""
    rng = np.random.default_rng([seed, 3, index])
    if rng.uniform() >= label_noise:
        return label
    others = [diagnosis.label for diagnosis in DIAGNOSES if diagnosis.label != label]
    return others[int(rng.integers(len(others)))]


def _record(seed: int, index: int, size: int, plan: list[str], label_noise: float,
            skin_types: tuple[int, ...]) -> dict[str, Any]:
    """Record ``index`` of the data set ``seed`` (see :func:`generate`)."""
    diagnosis, split = _assignment(seed, index, plan)
    rng = np.random.default_rng([seed, 0, index])
    skin_type = int(skin_types[int(rng.integers(len(skin_types)))])
    caption = _sample_caption(diagnosis, rng)
    radii = SIZE_RADII[caption["size"]]
    region = lesion_region(size, caption["location"])
    lesions = place_lesions(
        COUNTS[caption["number"]],
        (radii[0] * region.scale, radii[1] * region.scale),
        outline_extent(caption["shape"], caption["border"]),
        caption["distribution"],
        region,
        rng,
    )
    pixels = render(size, skin_type, caption, lesions, diagnosis.implicit_cue, rng)
    label = _noisy_label(seed, index, diagnosis.label, label_noise)
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
        n: number of records (int >= 0).
        seed: data set seed (int >= 0).
        image_size: side of the square RGB images in pixels (>= 56; the tiny default sees 112). Geometry scales
            with it; the implicit cue keeps its 4-px period.
        splits: fractions of (train, val, test), summing to 1, stratified by diagnosis; they are applied per block
            of 20 rounds of all diagnoses, so they are rounded to multiples of 1/20.
        label_noise: fraction in [0, 1) of records whose ``label`` is replaced by another diagnosis (drawn per
            record, so the realised rate is close to it); ``clean_label`` keeps the true one and ``noisy_label``
            says which were replaced. Images, captions and splits do not depend on it.
        skin_types: Fitzpatrick types to draw from, uniformly; default all of 1–6.
        progress: show a progress bar.

    Returns a list of ``n`` record dicts: ``id``, ``image`` (PIL RGB, ``image_size`` square), ``caption`` (all twelve
    fields), ``label``, ``clean_label``, ``noisy_label`` (bool), ``implicit_cue`` (bool), ``lesion_count``,
    ``skin_type`` (1–6), ``split``, ``source`` (``"synthetic"``).
    """
    try:
        skin_types = tuple(SKIN_TYPES) if skin_types is None else tuple(skin_types)
    except TypeError:
        raise ValueError(f"skin_types must be a collection of Fitzpatrick types 1-6, got {skin_types!r}") from None
    plan = _split_plan(_check_arguments(n, seed, image_size, splits, label_noise, skin_types))
    indices: Iterable[int] = range(n)
    if progress:
        indices = track(indices, description="synthetic images", total=n)
    return [_record(int(seed), index, int(image_size), plan, float(label_noise),
                    tuple(int(t) for t in skin_types)) for index in indices]


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int, draw: ImageDraw.ImageDraw,
          lines: int) -> list[str]:
    """``text`` broken at spaces into at most ``lines`` lines of at most ``width`` pixels (the last one cut)."""
    wrapped: list[str] = []
    for word in text.split():
        if wrapped and draw.textlength(f"{wrapped[-1]} {word}", font=font) <= width:
            wrapped[-1] = f"{wrapped[-1]} {word}"
        else:
            wrapped.append(word)
    shown = wrapped[:lines]
    while shown and draw.textlength(shown[-1], font=font) > width:
        shown[-1] = shown[-1][:-1]
    return shown


def contact_sheet(records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], columns: int = 8) -> Path:
    """Write a PNG grid of the records' images with the label (two lines at most) and skin type under each; atomic.

    Args:
        records: records with an in-memory ``image`` (PIL), a ``label`` and a ``skin_type``; at least one.
        path: the PNG file to write (its directory must exist).
        columns: images per row (>= 1).

    Returns ``path`` as a ``Path``. The sheet is ``columns × (side + 4)`` pixels wide, side being the largest image.
    """
    if isinstance(records, str | bytes) or not isinstance(records, Sequence) or not records:
        raise ValueError("records must be a non-empty sequence of records")
    columns = check_int("columns", columns, minimum=1)
    missing = [index for index, record in enumerate(records) if not isinstance(record.get("image"), Image.Image)]
    if missing:
        raise ValueError(f"records must carry a PIL image under 'image'; records {missing[:5]} do not")
    side = max(max(record["image"].size) for record in records)
    font = ImageFont.load_default(size=10)
    line_height, text_height = 11, 36
    rows = -(-len(records) // columns)
    sheet = Image.new("RGB", (columns * (side + 4), rows * (side + text_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, record in enumerate(records):
        row, column = divmod(index, columns)
        x, y = column * (side + 4), row * (side + text_height)
        sheet.paste(record["image"].convert("RGB"), (x, y))
        lines = _wrap(str(record["label"]), font, side - 2, draw, lines=2)
        for number, line in enumerate(lines):
            draw.text((x + 1, y + side + 1 + number * line_height), line, fill="black", font=font)
        draw.text((x + 1, y + side + 1 + len(lines) * line_height), f"type {record.get('skin_type')}", fill="gray",
                  font=font)
    return atomic_write(path, lambda handle: sheet.save(handle, format="PNG"), binary=True)
