"""SkinCon concept annotations of Fitzpatrick17k images as Stage I caption targets.

SkinCon (Daneshjou et al., NeurIPS 2022 Datasets & Benchmarks) marks 48 clinical concepts (papule, plaque, scale,
erythema, ...) as present (1) or absent (0) on 3,690 Fitzpatrick17k images; 460 of them carry the flag
``Do not consider this image`` and are dropped here, leaving 3,230 annotated images. Each concept maps to one term
of one caption field through :data:`skinflow.formats.SKINCON_CONCEPTS` (``"Scale"`` -> ``surface: scaly``,
``"Erythema"`` -> ``color: red``); the terms of one field are joined with ``", "`` in the order of
:data:`skinflow.formats.FIELD_VALUES`, so a caption does not depend on the column order of the annotation file.

The annotations ship as package data (``skinflow/resources/skincon_fitzpatrick17k.csv.gz``; source and terms in
``skinflow/resources/NOTICE.md``). SkinCon describes morphology only: the fields ``location``, ``number``,
``size``, ``border``, ``distribution`` and ``surrounding`` stay empty in these captions.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import NamedTuple

from skinflow.formats import CAPTION_FIELDS, FIELD_VALUES, SKINCON_CONCEPTS
from skinflow.util import ArgumentTypeError, describe, read_resource_csv

__all__ = [
    "ANNOTATIONS_FILE",
    "CONCEPT_COLUMNS",
    "EXCLUDE_COLUMN",
    "Annotation",
    "annotations",
    "caption_from_concepts",
    "captions",
    "excluded_images",
]

ANNOTATIONS_FILE = "skincon_fitzpatrick17k.csv.gz"
"""Package data under ``skinflow/resources/``: the SkinCon Fitzpatrick17k table (index column dropped)."""

IMAGE_COLUMN = "ImageID"
EXCLUDE_COLUMN = "Do not consider this image"


class Annotation(NamedTuple):
    """One row of the SkinCon Fitzpatrick17k table.

    Attributes:
        md5hash: the Fitzpatrick17k image id (``ImageID`` without ``.jpg``), 32 hex digits.
        concepts: the concept columns marked 1, in the column order of the file.
        excluded: whether the annotators flagged the image ``Do not consider this image``.
    """

    md5hash: str
    concepts: tuple[str, ...]
    excluded: bool


def _read_table() -> tuple[list[str], list[list[str]]]:
    """Header and rows of the packaged annotation file."""
    return read_resource_csv(ANNOTATIONS_FILE)


def _concept_columns(header: list[str]) -> tuple[str, ...]:
    """The concept columns of ``header``, checked against ``SKINCON_CONCEPTS`` (a mismatch is broken package data)."""
    if header[:1] != [IMAGE_COLUMN] or header[-1:] != [EXCLUDE_COLUMN]:
        raise RuntimeError(
            f"{ANNOTATIONS_FILE}: expected columns {IMAGE_COLUMN!r}, the concepts, {EXCLUDE_COLUMN!r}; got {header}"
        )
    columns = tuple(header[1:-1])
    if sorted(columns) != sorted(SKINCON_CONCEPTS):
        missing = sorted(set(SKINCON_CONCEPTS) - set(columns))
        extra = sorted(set(columns) - set(SKINCON_CONCEPTS))
        raise RuntimeError(
            f"{ANNOTATIONS_FILE}: concept columns differ from SKINCON_CONCEPTS: missing {missing}, extra {extra}"
        )
    return columns


def _parse_flag(value: str, column: str, line: int) -> bool:
    """A 0/1 cell as bool; anything else is broken package data."""
    if value not in ("0", "1"):
        raise RuntimeError(f"{ANNOTATIONS_FILE}:{line}: column {column!r} must be 0 or 1, got {value!r}")
    return value == "1"


@functools.lru_cache(maxsize=1)
def _load() -> tuple[tuple[str, ...], tuple[Annotation, ...]]:
    """The concept columns and every annotation row (read once)."""
    header, rows = _read_table()
    columns = _concept_columns(header)
    parsed = []
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise RuntimeError(f"{ANNOTATIONS_FILE}:{line}: {len(row)} cells, expected {len(header)}")
        image_id = row[0]
        if not image_id.endswith(".jpg") or len(image_id) != 36:
            raise RuntimeError(f"{ANNOTATIONS_FILE}:{line}: {IMAGE_COLUMN} must be '<md5hash>.jpg', got {image_id!r}")
        flags = [_parse_flag(value, column, line) for column, value in zip(columns, row[1:-1])]
        parsed.append(
            Annotation(
                md5hash=image_id[: -len(".jpg")],
                concepts=tuple(column for column, flag in zip(columns, flags) if flag),
                excluded=_parse_flag(row[-1], EXCLUDE_COLUMN, line),
            )
        )
    return columns, tuple(parsed)


CONCEPT_COLUMNS: tuple[str, ...] = _load()[0]
"""The 48 SkinCon concept columns in the order of the annotation file."""


def annotations() -> tuple[Annotation, ...]:
    """Every row of the SkinCon Fitzpatrick17k table (3,690), including the excluded ones, in file order."""
    return _load()[1]


def excluded_images() -> frozenset[str]:
    """md5 hashes of the images flagged ``Do not consider this image`` (460); they get no caption."""
    return frozenset(row.md5hash for row in annotations() if row.excluded)


def caption_from_concepts(concepts: Iterable[str]) -> dict[str, str]:
    """The caption that a set of SkinCon concepts describes.

    Args:
        concepts: SkinCon concept names (keys of ``SKINCON_CONCEPTS``), e.g. ``["Plaque", "Scale", "Erythema"]``.

    Returns:
        a dict over all twelve ``CAPTION_FIELDS``: the mapped terms of each field joined with ``", "`` in
        ``FIELD_VALUES[field]`` order, ``""`` for fields no concept maps to, e.g.
        ``{"color": "red", "lesion_type": "plaque", "surface": "scaly", "location": "", ...}``.

    Raises:
        ArgumentTypeError: ``concepts`` is a single string or not iterable (a ``TypeError`` and a ``ValueError``).
        ValueError: a name that is not a SkinCon concept.
    """
    if isinstance(concepts, str | bytes) or not isinstance(concepts, Iterable):
        raise ArgumentTypeError(
            f"concepts must be an iterable of concept names, not a single {type(concepts).__name__}"
        )
    terms: dict[str, set[str]] = {field: set() for field in CAPTION_FIELDS}
    for concept in concepts:
        if not isinstance(concept, str) or concept not in SKINCON_CONCEPTS:
            raise ValueError(f"unknown SkinCon concept {describe(concept)}; known: {sorted(SKINCON_CONCEPTS)}")
        field, term = SKINCON_CONCEPTS[concept]
        terms[field].add(term)
    return {field: ", ".join(term for term in FIELD_VALUES[field] if term in terms[field]) for field in CAPTION_FIELDS}


@functools.lru_cache(maxsize=1)
def _captions() -> dict[str, dict[str, str]]:
    """Captions of the usable images (built once)."""
    return {row.md5hash: caption_from_concepts(row.concepts) for row in annotations() if not row.excluded}


def captions() -> dict[str, dict[str, str]]:
    """Structured captions of the 3,230 usable SkinCon images.

    Returns:
        ``{md5hash: caption}`` where ``md5hash`` is the Fitzpatrick17k image id and ``caption`` a fresh dict over all
        twelve ``CAPTION_FIELDS`` (see :func:`caption_from_concepts`). Images flagged ``Do not consider this image``
        are left out.
    """
    return {md5hash: dict(caption) for md5hash, caption in _captions().items()}
