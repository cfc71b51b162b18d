"""Fitzpatrick17k from a local image directory: metadata, filters, checked images, splits and SkinCon captions.

The metadata of the 16,577 images ships as package data (``skinflow/resources/fitzpatrick17k_metadata.csv.gz``:
md5hash, label, Fitzpatrick skin type from Scale AI and from Centaur Labs, quality-control rating, atlas url;
CC BY-NC-SA 3.0, see ``skinflow/resources/NOTICE.md``). The images do not: :func:`load` reads them from a
directory the user provides, where each image is a file named ``<md5hash>.jpg`` (``.jpeg``/``.png`` are accepted
too; subfolders are searched). Missing and undecodable images (:func:`skinflow.data.records.image_problem`: truncated,
not an image, over Pillow's decompression-bomb limit) are counted, listed in the report and skipped.

Quality control (``qc``): 504 images carry a rating from a dermatologist review reported with the data set, the
rest (16,073) are unrated (``None``). ``"1 Diagnostic"`` (348 images) marks images the reviewer found diagnostic of
their label; they are the expert-reviewed hold-out test set of the Fitzpatrick17k authors (``holdout="diagnostic"``).
``"3 Wrongly labelled"`` (17) marks images whose label the reviewer found wrong; :data:`DEFAULT_QC` drops them.
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
import os
import re
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from skinflow.data import skincon
from skinflow.data.records import SKIN_TYPES, SPLITS, empty_caption, image_problems
from skinflow.targets import SKINCON_FIELDS
from skinflow.taxonomy import LABELS, match_label
from skinflow.util import ArgumentTypeError, check_int, describe, read_resource_records

__all__ = [
    "DEFAULT_QC",
    "DEFAULT_SPLIT_FRACTIONS",
    "DIAGNOSTIC",
    "HOLDOUTS",
    "IMAGE_SUFFIXES",
    "METADATA_FILE",
    "QC_RATINGS",
    "SOURCE",
    "LoadReport",
    "LoadResult",
    "MetadataRow",
    "assign_splits",
    "load",
    "metadata",
]

SOURCE = "fitzpatrick17k"
METADATA_FILE = "fitzpatrick17k_metadata.csv.gz"
QC_RATINGS: tuple[str, ...] = ("1 Diagnostic", "2 Characteristic", "3 Wrongly labelled", "4 Other", "5 Potentially")
"""The quality-control ratings of the ``qc`` column; unrated images have ``qc=None``."""
DIAGNOSTIC = "1 Diagnostic"
DEFAULT_QC: frozenset[str | None] = frozenset({None, "1 Diagnostic", "2 Characteristic", "4 Other", "5 Potentially"})
"""Every qc value except ``"3 Wrongly labelled"``."""
DEFAULT_SPLIT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
HOLDOUTS: tuple[str, ...] = ("diagnostic",)
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")

_MD5 = re.compile(r"[0-9a-f]{32}")
_SHOWN_IDS = 5


class MetadataRow(NamedTuple):
    """One Fitzpatrick17k image as described by the packaged metadata.

    Attributes:
        md5hash: md5 of the image, 32 lowercase hex digits; the image file is ``<md5hash>.jpg``.
        label: one of ``taxonomy.LABELS``.
        skin_type: Fitzpatrick skin type 1-6 from Scale AI annotators (the ``fitzpatrick_scale`` column), or
            ``None`` when not determinable (-1 in the source).
        skin_type_centaur: the same from Centaur Labs annotators (``fitzpatrick_centaur``), or ``None``.
        qc: one of :data:`QC_RATINGS`, or ``None`` for the unrated images.
        url: the atlas page the image came from, or ``None`` (41 rows have none).
    """

    md5hash: str
    label: str
    skin_type: int | None
    skin_type_centaur: int | None
    qc: str | None
    url: str | None


def _skin_type(text: str, column: str, line: int) -> int | None:
    """A skin type cell: ``"-1"`` -> ``None``, ``"1"``..``"6"`` -> int; anything else is broken package data."""
    if text == "-1":
        return None
    if text not in {str(value) for value in SKIN_TYPES}:
        raise RuntimeError(f"{METADATA_FILE}:{line}: column {column!r} must be -1 or 1-6, got {text!r}")
    return int(text)


@functools.lru_cache(maxsize=1)
def metadata() -> tuple[MetadataRow, ...]:
    """The 16,577 rows of the packaged Fitzpatrick17k metadata, in the order of the original CSV."""
    reader = read_resource_records(METADATA_FILE)
    labels = frozenset(LABELS)
    rows = []
    for line, row in enumerate(reader, start=2):
        if not _MD5.fullmatch(row["md5hash"]) or row["label"] not in labels or row["qc"] not in ("", *QC_RATINGS):
            raise RuntimeError(f"{METADATA_FILE}:{line}: bad md5hash, label or qc in {row}")
        rows.append(
            MetadataRow(
                md5hash=row["md5hash"],
                label=row["label"],
                skin_type=_skin_type(row["fitzpatrick_scale"], "fitzpatrick_scale", line),
                skin_type_centaur=_skin_type(row["fitzpatrick_centaur"], "fitzpatrick_centaur", line),
                qc=row["qc"] or None,
                url=row["url"] or None,
            )
        )
    return tuple(rows)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load` kept and dropped, and why.

    Attributes:
        image_dir: the image directory read (absolute).
        total: rows in the metadata (16,577).
        dropped_qc, dropped_skin_type, dropped_label: rows removed by each filter, applied in that order.
        missing: rows left by the filters whose image file is not in ``image_dir``.
        corrupt: rows whose image file could not be decoded (only counted when images are checked).
        kept: records returned.
        with_caption: kept records with a SkinCon caption.
        splits: kept records per split, ``{"train": n, "val": n, "test": n}``.
        holdout: the ``holdout`` argument (``"diagnostic"`` or ``None``).
        images_checked: whether every image was decoded (``check_images``).
        unmatched_files: image files in ``image_dir`` whose name is no metadata md5hash.
        missing_ids: md5 hashes of the missing images.
        corrupt_files: ``(path, reason)`` of each undecodable image.
    """

    image_dir: str
    total: int
    dropped_qc: int
    dropped_skin_type: int
    dropped_label: int
    missing: int
    corrupt: int
    kept: int
    with_caption: int
    splits: dict[str, int]
    holdout: str | None
    images_checked: bool
    unmatched_files: int
    missing_ids: tuple[str, ...] = field(repr=False)
    corrupt_files: tuple[tuple[str, str], ...] = field(repr=False)

    def summary(self) -> str:
        """A readable multi-line account of the load: counts per step, splits, and the first problem files."""
        width = len(f"{self.total:,}")
        lines = [f"Fitzpatrick17k images from {self.image_dir}"]

        def count(name: str, value: int, note: str = "") -> None:
            lines.append(f"  {name:<28}{value:>{width},}{note}")

        count("metadata rows", self.total)
        count("dropped by qc filter", self.dropped_qc)
        count("dropped by skin-type filter", self.dropped_skin_type)
        count("dropped by label filter", self.dropped_label)
        count("image missing (skipped)", self.missing)
        checked = "" if self.images_checked else "  (images not decoded: check_images=False)"
        count("image corrupt (skipped)", self.corrupt, checked)
        count("kept", self.kept, f"  ({self.with_caption:,} with a SkinCon caption)")
        split_text = ", ".join(f"{name} {self.splits.get(name, 0):,}" for name in SPLITS)
        rule = "test = the '1 Diagnostic' hold-out" if self.holdout == "diagnostic" else "stratified by label"
        lines.append(f"  splits: {split_text}  ({rule})")
        if self.unmatched_files:
            lines.append(f"  {self.unmatched_files:,} image files in the directory are not in the metadata")
        if self.missing_ids:
            shown = ", ".join(f"{md5}.jpg" for md5 in self.missing_ids[:_SHOWN_IDS])
            more = f" and {len(self.missing_ids) - _SHOWN_IDS:,} more" if len(self.missing_ids) > _SHOWN_IDS else ""
            lines.append(f"  missing: {shown}{more}")
        for path, reason in self.corrupt_files[:_SHOWN_IDS]:
            lines.append(f"  corrupt: {path}: {reason}")
        if len(self.corrupt_files) > _SHOWN_IDS:
            lines.append(f"  ... and {len(self.corrupt_files) - _SHOWN_IDS:,} more corrupt files")
        after_filters = self.total - self.dropped_qc - self.dropped_skin_type - self.dropped_label
        if after_filters and self.missing == after_filters:
            lines.append(
                "  no image of the metadata was found: is this the Fitzpatrick17k image directory "
                "(files named <md5hash>.jpg)?"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class LoadResult:
    """The records :func:`load` built and its :class:`LoadReport`."""

    records: list[dict[str, Any]]
    report: LoadReport

    def summary(self) -> str:
        """The report's readable summary."""
        return self.report.summary()


def _check_image_dir(image_dir: str | os.PathLike[str]) -> Path:
    """``image_dir`` as an absolute path, or a clear error."""
    if not isinstance(image_dir, str | os.PathLike):
        raise ArgumentTypeError(f"image_dir must be a path, got {type(image_dir).__name__}")
    path = Path(image_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"image_dir {str(path)!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"image_dir {str(path)!r} is not a directory")
    return path.resolve()


def _check_collection(name: str, value: object, allowed: Collection[Any], kind: str) -> frozenset[Any] | None:
    """A filter argument as a frozenset of allowed values (``None`` = no filter), or a ``ValueError`` naming it."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise ArgumentTypeError(f"{name} must be None or a collection of {kind}, got {describe(value)}")
    unknown = [
        item for item in value if not isinstance(item, Hashable) or isinstance(item, bool) or item not in allowed
    ]
    if unknown:
        hints = {item: match_label(item) for item in unknown if isinstance(item, str) and name == "labels"}
        hint = "".join(f" ({describe(item)}: did you mean {guess!r}?)" for item, guess in hints.items() if guess)
        raise ValueError(f"{name} has values that are not {kind}: {describe(unknown)}{hint}")
    return frozenset(value)


def _check_fractions(split_fractions: object) -> tuple[float, float, float]:
    """``(train, val, test)`` fractions: three finite numbers >= 0 summing to 1, train > 0 (no bools, NaN or inf)."""
    items = (
        tuple(split_fractions) if isinstance(split_fractions, Iterable) and not isinstance(split_fractions, str) else ()
    )
    if len(items) != 3 or not all(isinstance(item, numbers.Real) and not isinstance(item, bool) for item in items):
        raise ArgumentTypeError(
            f"split_fractions must be three numbers (train, val, test), got {describe(split_fractions)}"
        )
    train, val, test = (float(item) for item in items)
    if (
        not all(math.isfinite(item) for item in (train, val, test))
        or min(train, val, test) < 0
        or train <= 0
        or abs(train + val + test - 1.0) > 1e-6
    ):
        raise ValueError(
            f"split_fractions must be finite, >= 0, with train > 0 and sum to 1, got {describe(split_fractions)}"
        )
    return train, val, test


def _index_directory(image_dir: Path) -> tuple[dict[str, Path], list[Path]]:
    """Image files under ``image_dir`` by lowercase md5 stem, and the image files whose stem is no md5.

    Subfolders are searched in sorted order; when two files share a stem the first found wins.
    """
    by_stem: dict[str, Path] = {}
    others: list[Path] = []
    for root, dirs, files in os.walk(image_dir):
        dirs.sort()
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(root, name)
            if _MD5.fullmatch(stem.lower()):
                by_stem.setdefault(stem.lower(), path)
            else:
                others.append(path)
    return by_stem, others


def _check_split_arguments(split_seed: object, split_fractions: object, holdout: object) -> tuple[float, float, float]:
    """The ``(train, val, test)`` fractions; rejects a non-int seed, bad fractions or an unknown hold-out by name."""
    check_int("split_seed", split_seed)
    fractions = _check_fractions(split_fractions)
    if holdout is not None and (not isinstance(holdout, str) or holdout not in HOLDOUTS):
        raise ValueError(f"holdout must be None or one of {list(HOLDOUTS)}, got {describe(holdout)}")
    return fractions


def _eval_counts(size: int, train: float, val: float, test: float) -> tuple[int, int]:
    """``(n_val, n_test)`` for a label with ``size`` images: rounded shares, leaving train at least one image."""
    n_test = int(size * test + 0.5)
    n_val = int(size * val + 0.5)
    room = size - 1 if train > 0 and size > 0 else size
    excess = max(0, n_val + n_test - room)
    cut_val = min(n_val, excess)
    return n_val - cut_val, n_test - (excess - cut_val)


def _order_key(seed: int, md5hash: str) -> str:
    """A seeded pseudo-random sort key of one image, independent of the other images."""
    return hashlib.sha256(f"{seed}:{md5hash}".encode()).hexdigest()


def assign_splits(
    rows: Sequence[MetadataRow],
    *,
    split_seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    holdout: str | None = None,
) -> dict[str, str]:
    """Split images into train/val/test, stratified by label, deterministically.

    Within each label the images are ordered by ``sha256(f"{split_seed}:{md5hash}")``; the first
    ``round(n * test)`` go to test, the next ``round(n * val)`` to val, the rest to train (a label keeps at least one
    training image; val gives way first). The result depends only on the seed and each label's images, not on their
    order or on other labels, and adding an image moves at most the images around a cut.

    Args:
        rows: the images to split (md5 hashes unique).
        split_seed: the split seed (an int).
        split_fractions: ``(train, val, test)``, >= 0, summing to 1, train > 0.
        holdout: ``"diagnostic"`` puts every ``"1 Diagnostic"`` image in test and splits the others between train
            and val in the ratio train : val (the test fraction is not used); ``None`` splits all images.

    Returns:
        ``{md5hash: "train" | "val" | "test"}`` for every row.
    """
    train, val, test = _check_split_arguments(split_seed, split_fractions, holdout)
    split_seed = int(split_seed)
    splits: dict[str, str] = {}
    if holdout == "diagnostic":
        splits |= {row.md5hash: "test" for row in rows if row.qc == DIAGNOSTIC}
        train, val, test = train / (train + val), val / (train + val), 0.0
    by_label: dict[str, list[str]] = {}
    for row in rows:
        if row.md5hash not in splits:
            by_label.setdefault(row.label, []).append(row.md5hash)
    for members in by_label.values():
        members.sort(key=lambda md5hash: _order_key(split_seed, md5hash))
        n_val, n_test = _eval_counts(len(members), train, val, test)
        for position, md5hash in enumerate(members):
            splits[md5hash] = "test" if position < n_test else "val" if position < n_test + n_val else "train"
    return splits


def _record(row: MetadataRow, path: Path, split: str, caption: dict[str, str] | None) -> dict[str, Any]:
    """The record of one kept image (the image is referenced by path, not loaded)."""
    return {
        "id": row.md5hash,
        "image_path": str(path),
        "caption": caption if caption is not None else empty_caption(),
        "caption_fields": list(SKINCON_FIELDS),  # what SkinCon's concepts can say; location, size, ... are unknown
        "has_caption": caption is not None,
        "label": row.label,
        "skin_type": row.skin_type,
        "split": split,
        "source": SOURCE,
        "qc": row.qc,
        "skin_type_centaur": row.skin_type_centaur,
        "url": row.url,
    }


def load(
    image_dir: str | os.PathLike[str],
    *,
    qc: Collection[str | None] | None = DEFAULT_QC,
    skin_types: Collection[int | None] | None = None,
    labels: Collection[str] | None = None,
    split_seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    holdout: str | None = None,
    check_images: bool = True,
    progress: bool = True,
) -> LoadResult:
    """Fitzpatrick17k records for the images present in ``image_dir``, with SkinCon captions where annotated.

    Args:
        image_dir: directory holding the images as ``<md5hash>.jpg`` (``.jpeg``/``.png`` too; subfolders searched).
        qc: quality-control values to keep (:data:`QC_RATINGS` and ``None`` for unrated images); ``None`` keeps all.
            Default :data:`DEFAULT_QC` drops ``"3 Wrongly labelled"``.
        skin_types: Fitzpatrick skin types to keep (1-6, ``None`` = unknown); ``None`` keeps all.
        labels: labels to keep (of ``taxonomy.LABELS``); ``None`` keeps all.
        split_seed: seed of the split (see :func:`assign_splits`).
        split_fractions: ``(train, val, test)`` fractions, stratified by label.
        holdout: ``"diagnostic"``: test is exactly the expert-reviewed ``"1 Diagnostic"`` images and the rest is
            split train/val; ``None``: every image is split by ``split_fractions``.
        check_images: decode every image (:func:`skinflow.data.records.image_problem`: JPEGs at 1/8 scale, which
            still reads the whole stream; on a thread pool) and skip undecodable ones and those over Pillow's
            decompression-bomb limit; ``False`` only checks that the files exist.
        progress: show a progress bar while checking images.

    Returns:
        a :class:`LoadResult`: ``records`` (one dict per kept image, in metadata order: ``id`` = md5hash,
        ``image_path`` (absolute), ``caption`` (twelve fields, all ``""`` without SkinCon annotation),
        ``has_caption``, ``label``, ``skin_type``, ``split``, ``source="fitzpatrick17k"``, ``qc``,
        ``skin_type_centaur``, ``url``) and ``report`` (a :class:`LoadReport`; ``result.summary()`` prints it).
        Missing or undecodable images never raise; they are counted and listed in the report.
    """
    root = _check_image_dir(image_dir)
    qc_keep = _check_collection("qc", qc, (None, *QC_RATINGS), f"qc ratings {QC_RATINGS} or None")
    skin_keep = _check_collection("skin_types", skin_types, (None, *SKIN_TYPES), "skin types 1-6 or None")
    label_keep = _check_collection("labels", labels, frozenset(LABELS), "Fitzpatrick17k labels")
    if holdout == "diagnostic" and qc_keep is not None and DIAGNOSTIC not in qc_keep:
        raise ValueError(f"holdout='diagnostic' needs {DIAGNOSTIC!r} in qc, got qc={sorted(qc_keep, key=str)}")
    _check_split_arguments(split_seed, split_fractions, holdout)

    rows = list(metadata())
    dropped: Counter[str] = Counter()
    for name, keep, attribute in (
        ("qc", qc_keep, "qc"),
        ("skin_type", skin_keep, "skin_type"),
        ("label", label_keep, "label"),
    ):
        if keep is not None:
            kept_rows = [row for row in rows if getattr(row, attribute) in keep]
            dropped[name] = len(rows) - len(kept_rows)
            rows = kept_rows

    files, others = _index_directory(root)
    metadata_ids = {row.md5hash for row in metadata()}
    unmatched = len(others) + sum(1 for stem in files if stem not in metadata_ids)
    present = [row for row in rows if row.md5hash in files]
    missing_ids = tuple(row.md5hash for row in rows if row.md5hash not in files)
    corrupt_files: list[tuple[str, str]] = []
    if check_images:
        problems = image_problems(
            [files[row.md5hash] for row in present], progress=progress, description="Checking images"
        )
        corrupt_files = [(str(files[row.md5hash]), problem) for row, problem in zip(present, problems) if problem]
        present = [row for row, problem in zip(present, problems) if problem is None]

    splits = assign_splits(present, split_seed=split_seed, split_fractions=split_fractions, holdout=holdout)
    captions = skincon.captions()
    records = [_record(row, files[row.md5hash], splits[row.md5hash], captions.get(row.md5hash)) for row in present]
    split_counts = Counter(record["split"] for record in records)
    report = LoadReport(
        image_dir=str(root),
        total=len(metadata()),
        dropped_qc=dropped["qc"],
        dropped_skin_type=dropped["skin_type"],
        dropped_label=dropped["label"],
        missing=len(missing_ids),
        corrupt=len(corrupt_files),
        kept=len(records),
        with_caption=sum(record["has_caption"] for record in records),
        splits={name: split_counts.get(name, 0) for name in SPLITS},
        holdout=holdout,
        images_checked=check_images,
        unmatched_files=unmatched,
        missing_ids=missing_ids,
        corrupt_files=tuple(corrupt_files),
    )
    return LoadResult(records=records, report=report)
