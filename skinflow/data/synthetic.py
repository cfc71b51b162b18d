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

Every record knows where its lesions are: :func:`lesion_mask` gives the lesion pixels of a record, drawn by the same
code as its image (:func:`skinflow.data.synthetic_draw.draw`) from the record's ``generator`` field, and
:func:`save` writes the set as JSONL with PNG images and one PNG lesion mask per record (``lesion_mask_path``).
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.progress import track

from skinflow.data.records import (
    SKIN_TYPES,
    SPLITS,
    RecordError,
    image_file_name,
    save_jsonl,
    undo_writes,
    validate_records,
)
from skinflow.data.synthetic_draw import (
    SIZE_RADII,
    Lesion,
    Rendering,
    draw,
    lesion_region,
    outline_extent,
    place_lesions,
)
from skinflow.formats import CAPTION_FIELDS
from skinflow.util import atomic_write, check_fraction, check_int, describe, new_file_mode

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
    "lesion_mask",
    "lesion_mask_file_name",
    "save",
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


def _diagnosis(seed: int, index: int) -> Diagnosis:
    """Diagnosis of record ``index``: shuffled rounds of all diagnoses (its own random stream)."""
    round_index, position = divmod(index, len(DIAGNOSES))
    order = np.random.default_rng([seed, 1, round_index]).permutation(len(DIAGNOSES))
    return DIAGNOSES[order[position]]


def _split(seed: int, index: int, plan: list[str]) -> str:
    """Split of record ``index``: each block of rounds is divided between the splits by ``plan`` (own stream)."""
    block, offset = divmod(index // len(DIAGNOSES), _ROUNDS_PER_BLOCK)
    split_order = np.random.default_rng([seed, 2, block]).permutation(_ROUNDS_PER_BLOCK)
    return plan[split_order[offset]]


def _noisy_label(seed: int, index: int, label: str, label_noise: float) -> str:
    """``label``, or with probability ``label_noise`` another diagnosis (uniformly); its own random stream."""
    rng = np.random.default_rng([seed, 3, index])
    if rng.uniform() >= label_noise:
        return label
    others = [diagnosis.label for diagnosis in DIAGNOSES if diagnosis.label != label]
    return others[int(rng.integers(len(others)))]


@dataclass(frozen=True)
class _Drawn:
    """Everything drawn for one record: its diagnosis, skin type, caption, lesions and rendering (image + mask)."""

    diagnosis: Diagnosis
    skin_type: int
    caption: dict[str, str]
    lesions: list[Lesion]
    rendering: Rendering


def _draw_record(seed: int, index: int, size: int, skin_types: tuple[int, ...]) -> _Drawn:
    """The drawing of record ``index`` of the data set ``seed``: a function of these four arguments only (splits and
    label noise have their own streams)."""
    diagnosis = _diagnosis(seed, index)
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
    rendering = draw(size, skin_type, caption, lesions, diagnosis.implicit_cue, rng)
    return _Drawn(diagnosis, skin_type, caption, lesions, rendering)


def _record(seed: int, index: int, size: int, plan: list[str], label_noise: float,
            skin_types: tuple[int, ...]) -> dict[str, Any]:
    """Record ``index`` of the data set ``seed`` (see :func:`generate`)."""
    drawn = _draw_record(seed, index, size, skin_types)
    diagnosis = drawn.diagnosis
    label = _noisy_label(seed, index, diagnosis.label, label_noise)
    return {
        "id": f"synthetic-{seed}-{index:06d}",
        "image": Image.fromarray(drawn.rendering.pixels, "RGB"),
        "caption": drawn.caption,
        "label": label,
        "clean_label": diagnosis.label,
        "noisy_label": label != diagnosis.label,
        "implicit_cue": diagnosis.implicit_cue,
        "lesion_count": len(drawn.lesions),
        "generator": {"seed": seed, "index": index, "image_size": size, "skin_types": list(skin_types)},
        "skin_type": drawn.skin_type,
        "split": _split(seed, index, plan),
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
    ``generator`` (``{"seed", "index", "image_size", "skin_types"}``: what the image is a function of, which
    :func:`lesion_mask` redraws), ``skin_type`` (1–6), ``split``, ``source`` (``"synthetic"``). The lesion masks are
    not held in the records (JSON could not carry them): :func:`lesion_mask` gives one, :func:`save` writes them.
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


def _record_label(record: Mapping[str, Any]) -> str:
    return f"record {describe(record.get('id'))}" if isinstance(record, Mapping) else "record"


def _generator_of(record: Mapping[str, Any]) -> tuple[int, int, int, tuple[int, ...]]:
    """``(seed, index, image_size, skin_types)`` of a synthetic record's ``generator`` field, or a ``ValueError``."""
    generator = record.get("generator")
    if not isinstance(generator, Mapping):
        raise ValueError(f"{_record_label(record)}: no 'generator' field (not a record of skinflow.data.synthetic."
                         f"generate, or one written before lesion masks existed; regenerate the set)")

    def is_int(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    seed, index, size = (generator.get(key) for key in ("seed", "index", "image_size"))
    skin_types = generator.get("skin_types")
    if (not (is_int(seed) and seed >= 0 and is_int(index) and index >= 0 and is_int(size) and size >= 56)
            or not isinstance(skin_types, Sequence) or isinstance(skin_types, str) or not skin_types
            or not all(is_int(t) and t in SKIN_TYPES for t in skin_types)):
        raise ValueError(f"{_record_label(record)}: field 'generator' must be {{'seed': int >= 0, 'index': int >= 0, "
                         f"'image_size': int >= 56, 'skin_types': [1-6, ...]}}, got {describe(generator)}")
    return int(seed), int(index), int(size), tuple(int(t) for t in skin_types)


def _record_pixels(record: Mapping[str, Any]) -> np.ndarray | None:
    """The record's image ``(H, W, 3)`` uint8 (its ``image``, or the file ``image_path``), or ``None`` if it has none."""
    image = record.get("image")
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    path = record.get("image_path")
    if isinstance(path, str | os.PathLike) and str(path):
        try:
            with Image.open(path) as opened:
                return np.asarray(opened.convert("RGB"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{_record_label(record)}: cannot read its image {str(path)!r} ({error})") from error
    return None


def lesion_mask(record: Mapping[str, Any], *, check_image: bool = True) -> np.ndarray:
    """The lesion mask of a synthetic record: ``(image_size, image_size)`` bool, true on the lesions' pixels.

    The record is redrawn from its ``generator`` field (seed, index, image size, skin types: what record ``index``
    of :func:`generate` is a function of) by the code that drew its image, and the mask is the pixels the lesion
    layer covers at least half (:data:`skinflow.data.synthetic_draw.LESION_MASK_OPACITY`): exactly the drawn
    lesions, their soft edges cut at the nominal outline, never the surrounding halo. Deterministic; about 3 ms at
    112 px.

    Args:
        record: a record of :func:`generate`, in memory (``image``) or loaded from JSONL (``image_path``).
        check_image: check that the redrawn image equals the record's image pixel for pixel, so that the mask
            belongs to that image (an edited image, or one drawn by another version of this module, is refused).

    Raises ``ValueError`` naming the record: no or a malformed ``generator`` field, an image that cannot be read,
    or (``check_image``) an image that is not the one the generator draws.
    """
    seed, index, size, skin_types = _generator_of(record)
    rendering = _draw_record(seed, index, size, skin_types).rendering
    if check_image:
        pixels = _record_pixels(record)
        if pixels is None:
            raise ValueError(f"{_record_label(record)}: has no 'image' or 'image_path' to check the mask against")
        if pixels.shape != rendering.pixels.shape or not np.array_equal(pixels, rendering.pixels):
            raise ValueError(f"{_record_label(record)}: its image is not the one skinflow.data.synthetic draws for "
                             f"{describe(record.get('generator'))} (edited, resized or drawn by another version), "
                             "so its lesion mask is unknown")
    return rendering.lesion


def lesion_mask_file_name(record_id: str) -> str:
    """The PNG name of a record's lesion mask: its image's name (:func:`skinflow.data.records.image_file_name`)
    with ``.lesion.png`` for ``.png``, e.g. ``synthetic-0-000003.lesion.png``."""
    return image_file_name(record_id).removesuffix(".png") + ".lesion.png"


def _write_mask(mask: np.ndarray, path: Path) -> None:
    """``mask`` (H, W) bool as an 8-bit greyscale PNG (255 = lesion, 0 elsewhere) at the new file ``path``, synced."""
    with open(path, "xb") as file:
        Image.fromarray(mask.astype(np.uint8) * 255).save(file, format="PNG")
        file.flush()
        os.fsync(file.fileno())


def save(records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], image_dir: str | os.PathLike[str], *,
         progress: bool = True) -> Path:
    """Write synthetic records as JSONL with their PNG images and one PNG lesion mask each; a failure leaves nothing.

    Args:
        records: records of :func:`generate` (in memory, or loaded from JSONL); every one needs its ``generator``.
        path: the JSONL file (its directory must exist).
        image_dir: where the images (:func:`skinflow.data.records.save_jsonl`) and the masks go; created if missing.
        progress: show progress bars.

    Each record's mask (:func:`lesion_mask`, checked against its image) is written as ``image_dir /``
    :func:`lesion_mask_file_name` (8-bit greyscale, 255 on lesion pixels, the image's size), and its line gets
    ``lesion_mask_path``: the file name, relative to the image's directory (absolute when the record's image lies
    elsewhere). The records are checked and every mask computed before anything is written; the masks go to a
    hidden staging folder in ``image_dir`` and are moved in together, then :func:`save_jsonl` writes the images and
    the JSONL atomically. On any failure the staging folder, the new masks and the folders this call created are
    removed (an older mask of the same name that was replaced stays replaced). Returns ``path``.

    Raises what :func:`save_jsonl` raises, and :class:`~skinflow.data.records.RecordError` listing every record whose
    mask cannot be drawn (no ``generator``, an image that is not the generator's).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"path: {str(path)!r} is a directory, not a JSONL file")
    if image_dir is None:
        raise ValueError("image_dir is required: the lesion masks are written there")
    if Path(image_dir).exists() and not Path(image_dir).is_dir():
        raise NotADirectoryError(f"image_dir: {str(image_dir)!r} exists and is not a directory")
    validate_records(records)
    masks, errors = [], []
    for record in track(records, description="lesion masks", total=len(records), disable=not progress,
                        console=Console(stderr=True)):
        try:
            masks.append(lesion_mask(record))
        except ValueError as error:
            errors.append(str(error))
    if errors:
        raise RecordError(f"{len(errors)} of {len(records)} records have no lesion mask", errors)
    root = Path(image_dir).resolve()
    names = [lesion_mask_file_name(record["id"]) for record in records]
    clashes = sorted(set(names) & {image_file_name(record["id"]) for record in records})
    if clashes:
        raise ValueError(f"lesion mask file names {clashes[:5]} are also image file names of other records")
    saved = []
    for record, name in zip(records, names):
        image_parent = root if record.get("image") is not None else Path(record["image_path"]).resolve().parent
        saved.append({**record, "lesion_mask_path": name if image_parent == root else str(root / name)})
    created = [folder for folder in [*reversed(root.parents), root] if not folder.exists()]
    moved: list[Path] = []
    staging: Path | None = None
    try:
        if records:
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=root, prefix=".synthetic-masks-", suffix=".tmp"))
            for mask, name in zip(masks, names):
                _write_mask(mask, staging / name)
            mode = new_file_mode()
            for name in names:
                target = root / name
                existed = target.exists()
                os.chmod(staging / name, mode)
                os.replace(staging / name, target)
                if not existed:
                    moved.append(target)
            shutil.rmtree(staging, ignore_errors=True)
            staging = None
        return save_jsonl(saved, path, image_dir=root, progress=progress)
    except BaseException:
        undo_writes(staging, moved, created)
        staging = None
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


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
