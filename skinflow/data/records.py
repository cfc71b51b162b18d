"""The record contract shared by every data source and exporter, its validation, and the local JSONL format.

A record is a plain dict (see ``docs/data.md``)::

    {"id": "a1b2", "image_path": "/data/img/a1b2.jpg",      # or "image": PIL.Image.Image (RGB)
     "caption": {field: str for field in CAPTION_FIELDS},    # all twelve fields, "" when empty
     "label": "psoriasis", "skin_type": 3,                   # one of taxonomy.LABELS; 1-6 or None
     "split": "train", "source": "fitzpatrick17k", ...}      # "train" | "val" | "test"; extras allowed

The JSONL format stores one record per line, with ``image_path`` relative to the JSONL file's directory when the
image lies under it (absolute otherwise). :func:`save_jsonl` writes in-memory images as PNG files first.
:func:`load_jsonl` checks every line and raises one :class:`RecordError` that names the file, the line and the field
of each bad line, one line of the message per bad line.

:func:`image_problem` is the one image check of the data layer (records, JSONL, exports, Fitzpatrick17k): an image
is accepted only when Pillow decodes it completely, within Pillow's decompression-bomb limit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.progress import track

from skinflow.formats import CAPTION_FIELDS
from skinflow.taxonomy import LABELS, match_label
from skinflow.util import ArgumentTypeError, atomic_write, describe, new_file_mode, shorten

__all__ = [
    "JSONL_OPTIONAL_FIELDS",
    "JSONL_REQUIRED_FIELDS",
    "SKIN_TYPES",
    "SPLITS",
    "RecordError",
    "empty_caption",
    "image_file_name",
    "image_problem",
    "image_problems",
    "load_jsonl",
    "record_problems",
    "save_jsonl",
    "undo_writes",
    "validate_records",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
SKIN_TYPES: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
JSONL_REQUIRED_FIELDS: tuple[str, ...] = ("id", "image_path", "label", "split")
JSONL_OPTIONAL_FIELDS: dict[str, Any] = {"caption": None, "skin_type": None, "source": "local"}
"""Optional JSONL fields and their defaults (a missing caption is twelve empty fields)."""

_MAX_SHOWN_ERRORS = 50
_LABEL_SET = frozenset(LABELS)
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME_STEM = 100
"""Longest image file name stem taken from an id as it is (longer or changed ids get a truncated stem + a hash)."""
_DECODE_WORKERS = 8
_BOM = b"\xef\xbb\xbf"


class RecordError(ValueError):
    """Bad records or JSONL lines; ``errors`` holds one message per bad record/line (the first 50 are in the text)."""

    def __init__(self, title: str, errors: Sequence[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        shown = list(self.errors[:_MAX_SHOWN_ERRORS])
        if len(self.errors) > _MAX_SHOWN_ERRORS:
            shown.append(f"... and {len(self.errors) - _MAX_SHOWN_ERRORS} more (see the exception's .errors)")
        super().__init__(f"{title}:\n" + "\n".join(shown))


def empty_caption() -> dict[str, str]:
    """A caption with all twelve ``CAPTION_FIELDS`` empty: ``{"color": "", ..., "other": ""}``."""
    return dict.fromkeys(CAPTION_FIELDS, "")


def _decode(image: Image.Image, *, draft: bool) -> None:
    """Decode ``image`` completely (raises on any failure); ``draft``: JPEGs at 1/8 scale (the whole stream is read)."""
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise Image.DecompressionBombError(
            f"{width}x{height} = {width * height:,} pixels, over the limit of {int(limit):,} (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    if draft:
        image.draft(None, (max(1, width // 8), max(1, height // 8)))
    image.load()
    image.convert("RGB")


def image_problem(image: object) -> str | None:
    """Why ``image`` is not an image the data layer accepts, or ``None`` when it decodes completely. Never raises.

    Args:
        image: an image file path (str or ``os.PathLike``), the encoded bytes of an image, or a ``PIL.Image.Image``
            (loaded if it is still lazy; a file image is not resized).

    Returns:
        ``None``, or a short reason that reads after the image's name, e.g. ``"cannot be decoded (OSError: image file
        is truncated (3 bytes not processed))"``, ``"is not an image file (no format Pillow knows)"``, ``"is over
        Pillow's decompression-bomb limit (40000x40000 = 1,600,000,000 pixels, ...)"``. JPEGs are decoded at 1/8
        scale, which still reads and checks the whole stream; every image is also converted to RGB.
    """
    try:
        if isinstance(image, Image.Image):
            _decode(image, draft=False)
            return None
        if isinstance(image, bytes | bytearray | memoryview):
            if not len(image):
                return "is empty (0 bytes)"
            source: Any = io.BytesIO(bytes(image))
        elif isinstance(image, str | os.PathLike):
            source = os.fspath(image)
            if isinstance(source, str) and "\x00" in source:
                return "is not a valid file name (it holds a NUL character)"
        else:
            return f"is not an image file path, image bytes or PIL image (got {type(image).__name__})"
        with Image.open(source) as opened:
            _decode(opened, draft=True)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return f"is over Pillow's decompression-bomb limit ({_error_text(error)})"
    except UnidentifiedImageError:
        return "is not an image file (no format Pillow knows)"
    except FileNotFoundError:
        return "does not exist"
    except IsADirectoryError:
        return "is a directory, not an image file"
    except Exception as error:  # any decoder failure (OSError, SyntaxError, ValueError, struct.error, ...)
        return f"cannot be decoded ({type(error).__name__}: {_error_text(error)})"
    return None


def _error_text(error: BaseException) -> str:
    """An exception's message, shortened like :func:`describe` (file names in OS errors are left out)."""
    return shorten(error.strerror if isinstance(error, OSError) and error.strerror else str(error))


def image_problems(
    images: Sequence[object], *, progress: bool = False, description: str = "Decoding images"
) -> list[str | None]:
    """:func:`image_problem` of every image, decoded on a thread pool (Pillow releases the GIL), in order.

    Args:
        images: image paths, bytes or PIL images.
        progress: show a progress bar on stderr.
        description: the progress bar's label.
    """
    if len(images) <= 1:
        return [image_problem(image) for image in images]
    with ThreadPoolExecutor(max_workers=min(_DECODE_WORKERS, os.cpu_count() or 1)) as pool:
        results = pool.map(image_problem, images)
        return list(
            track(
                results, description=description, total=len(images), disable=not progress, console=Console(stderr=True)
            )
        )


def _is_int(value: object) -> bool:
    """True for ints that are not bools."""
    return isinstance(value, int) and not isinstance(value, bool)


def _id_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return f"field 'id' must be a non-empty string, got {describe(value)}"
    return None


def _label_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"field 'label' must be a string, got {describe(value)}"
    if value not in _LABEL_SET:
        guess = match_label(value)
        hint = f" (did you mean {guess!r}?)" if guess is not None else ""
        return f"field 'label': {describe(value)} is not one of the {len(LABELS)} Fitzpatrick17k labels{hint}"
    return None


def _skin_type_problem(value: object) -> str | None:
    if value is not None and not (_is_int(value) and value in SKIN_TYPES):
        return f"field 'skin_type' must be an int 1-6 or null (unknown), got {describe(value)}"
    return None


def _split_problem(value: object) -> str | None:
    if not isinstance(value, str) or value not in SPLITS:
        return f"field 'split' must be one of {list(SPLITS)}, got {describe(value)}"
    return None


def _source_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return f"field 'source' must be a non-empty string, got {describe(value)}"
    return None


def _caption_problems(caption: object, *, require_all: bool, allow_lists: bool) -> list[str]:
    """Problems of a caption dict: unknown fields, non-string values, and (if ``require_all``) missing fields."""
    if not isinstance(caption, Mapping):
        return [f"field 'caption' must be an object of caption fields, got {type(caption).__name__}"]
    problems = [
        f"field 'caption' has unknown field {describe(key)} (allowed: {', '.join(CAPTION_FIELDS)})"
        for key in caption
        if key not in CAPTION_FIELDS
    ]
    if require_all:
        missing = [field for field in CAPTION_FIELDS if field not in caption]
        if missing:
            problems.append(f"field 'caption' lacks fields {missing} (all twelve are required, '' when empty)")
    for field in CAPTION_FIELDS:
        value = caption.get(field, "")
        is_list = allow_lists and isinstance(value, list) and all(isinstance(item, str) for item in value)
        if not isinstance(value, str) and not is_list:
            kind = "a string or a list of strings" if allow_lists else "a string"
            problems.append(f"field 'caption.{field}' must be {kind}, got {describe(value)}")
    return problems


def _caption_fields_problems(fields: object) -> list[str]:
    """Problems of ``caption_fields`` (the fields the caption knows): a non-empty list of distinct caption fields."""
    if not isinstance(fields, list | tuple) or not fields or not all(isinstance(f, str) for f in fields):
        return [f"field 'caption_fields' must be a non-empty list of caption fields, got {describe(fields)}"]
    unknown = [field for field in fields if field not in CAPTION_FIELDS]
    if unknown or len(set(fields)) != len(fields):
        return [f"field 'caption_fields' must list distinct fields of {list(CAPTION_FIELDS)}, got {describe(fields)}"]
    return []


def _path_text_problem(value: str) -> str | None:
    """Why the string ``value`` cannot name a file on this system (NUL, unencodable characters), or ``None``."""
    if "\x00" in value:
        return "holds a NUL character"
    try:
        os.fsencode(value)
    except UnicodeError:
        return "holds characters the file system cannot encode"
    return None


def _file_problem(path: Path) -> str | None:
    """``None`` when ``path`` is an existing file, else why not ("not found", "name too long", ...); never raises."""
    try:
        if path.is_file():
            return None
    except (OSError, ValueError) as error:  # a name too long for the file system, ...
        return f"cannot be used as a file name ({_error_text(error)})"
    return "image file not found"


def _lesion_mask_path_problem(value: object) -> str | None:
    """Why the optional ``lesion_mask_path`` (a mask image, absolute or relative to the image's directory) is bad."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        return f"field 'lesion_mask_path' must be a non-empty string or null, got {describe(value)}"
    problem = _path_text_problem(value)
    return f"field 'lesion_mask_path' {problem}: {describe(value)}" if problem else None


def _contract_problems(record: object) -> tuple[list[str], object]:
    """The contract problems of one record and the image to decode (its ``image`` or ``image_path``; ``None`` when
    the image fields are already wrong)."""
    if not isinstance(record, Mapping):
        return [f"must be a dict, got {type(record).__name__}"], None
    problems = []
    for field in ("id", "caption", "label", "split", "source"):
        if field not in record:
            problems.append(f"missing field {field!r}")
    image, image_path = record.get("image"), record.get("image_path")
    source: object = None
    if image is None and image_path is None:
        problems.append("needs an 'image' (PIL image) or an 'image_path'")
    elif image is not None and image_path is not None:
        problems.append("has both 'image' and 'image_path'; give one")
    elif image is not None and not isinstance(image, Image.Image):
        problems.append(f"field 'image' must be a PIL.Image.Image, got {type(image).__name__}")
    elif image is not None:
        source = image
    elif not isinstance(image_path, str) or not image_path:
        problems.append(f"field 'image_path' must be a non-empty string, got {describe(image_path)}")
    elif (problem := _path_text_problem(image_path)) is not None:
        problems.append(f"field 'image_path' {problem}: {describe(image_path)}")
    elif (problem := _file_problem(Path(image_path))) is not None:
        problems.append(f"field 'image_path': {problem}: {describe(image_path)}")
    else:
        source = image_path
    checks = {"id": _id_problem, "label": _label_problem, "split": _split_problem, "source": _source_problem}
    for field, check in checks.items():
        if field in record:
            problem = check(record[field])
            if problem:
                problems.append(problem)
    problem = _skin_type_problem(record.get("skin_type"))
    if problem:
        problems.append(problem)
    if "caption" in record:
        problems.extend(_caption_problems(record["caption"], require_all=True, allow_lists=False))
    if "caption_fields" in record:
        problems.extend(_caption_fields_problems(record["caption_fields"]))
    if (problem := _lesion_mask_path_problem(record.get("lesion_mask_path"))) is not None:
        problems.append(problem)
    return problems, source


def _decode_problem_text(source: object, problem: str) -> str:
    """The record problem for an image that does not decode."""
    if isinstance(source, Image.Image):
        return f"field 'image': the PIL image {problem}"
    return f"field 'image_path': image {describe(source)} {problem}"


def record_problems(record: object, *, check_images: bool = False) -> list[str]:
    """What is wrong with one in-memory record against the record contract (empty list when valid). Never raises.

    Args:
        record: a record dict (see the module docstring); any value is accepted and judged.
        check_images: also decode the image (:func:`image_problem`): the ``image_path`` file, or the in-memory
            ``image`` (loaded if lazy).

    Returns:
        one message per problem, each naming the field, e.g. ``["field 'split' must be one of [...], got 'dev'"]``.
        A missing ``image_path`` file is always a problem; the file is decoded only with ``check_images``.
    """
    problems, source = _contract_problems(record)
    if check_images and source is not None:
        problem = image_problem(source)
        if problem:
            problems.append(_decode_problem_text(source, problem))
    return problems


def _record_name(index: int, record: object) -> str:
    """``record 3 (id 'abc')`` for messages."""
    record_id = record.get("id") if isinstance(record, Mapping) else None
    return f"record {index} (id {describe(record_id)})" if isinstance(record_id, str) else f"record {index}"


def _duplicate_id_errors(records: Sequence[object]) -> dict[int, str]:
    """``{index: message}`` for every record whose id an earlier record already has."""
    first_index: dict[str, int] = {}
    duplicates = {}
    for index, record in enumerate(records):
        record_id = record.get("id") if isinstance(record, Mapping) else None
        if not isinstance(record_id, str):
            continue
        if record_id in first_index:
            duplicates[index] = f"duplicate id {describe(record_id)} (first used by record {first_index[record_id]})"
        else:
            first_index[record_id] = index
    return duplicates


def validate_records(
    records: Sequence[Mapping[str, Any]], *, name: str = "records", check_images: bool = False, progress: bool = False
) -> None:
    """Check every record against the contract and raise one :class:`RecordError` listing each bad record.

    Args:
        records: the records (a sequence of dicts); ids must be unique.
        name: what the records are called in the error title (the argument name of the caller).
        check_images: also decode every image (:func:`image_problem`, on a thread pool); the exporters do.
        progress: show a progress bar while images are decoded.

    Raises:
        ArgumentTypeError: ``records`` is not a sequence (a ``TypeError`` and a ``ValueError``).
        RecordError: one line per bad record, e.g. ``record 3 (id 'x'): field 'label': 'foo' is not one of ...``.
    """
    if isinstance(records, str | bytes | Mapping) or not isinstance(records, Sequence):
        raise ArgumentTypeError(f"{name} must be a sequence of record dicts, got {type(records).__name__}")
    duplicates = _duplicate_id_errors(records)
    checked = [_contract_problems(record) for record in records]
    if check_images:
        to_decode = [index for index, (_, source) in enumerate(checked) if source is not None]
        decoded = image_problems([checked[index][1] for index in to_decode], progress=progress)
        for index, problem in zip(to_decode, decoded):
            if problem:
                checked[index][0].append(_decode_problem_text(checked[index][1], problem))
    errors = []
    for index, (record, (problems, _)) in enumerate(zip(records, checked)):
        if index in duplicates:
            problems.append(duplicates[index])
        if problems:
            errors.append(f"{_record_name(index, record)}: " + "; ".join(problems))
    if errors:
        raise RecordError(f"{len(errors)} of {len(records)} {name} break the record contract", errors)


def image_file_name(record_id: str) -> str:
    """The PNG file name :func:`save_jsonl` gives a record's in-memory image: safe for any id.

    An id of at most 100 characters from ``[A-Za-z0-9._-]`` is used as it is (``syn-0`` -> ``syn-0.png``); any
    other id is cut to 83 characters, its other characters replaced by ``_``, and followed by ``-`` and 16 hex
    digits of its sha256 (``a/b`` -> ``a_b-<hash>.png``), so that distinct ids get distinct names of at most
    104 characters.
    """
    safe = _UNSAFE_FILENAME_CHARS.sub("_", record_id)
    if safe == record_id and len(safe) <= _MAX_NAME_STEM:
        return safe + ".png"
    digest = hashlib.sha256(record_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{safe[: _MAX_NAME_STEM - 17]}-{digest}.png"


def _stored_path(image_path: Path, base_dir: Path) -> str:
    """``image_path`` relative to ``base_dir`` (POSIX separators) when it lies under it, else absolute."""
    absolute = image_path.resolve()
    try:
        return absolute.relative_to(base_dir).as_posix()
    except ValueError:
        return str(absolute)


def _jsonl_line(record: Mapping[str, Any], image_path: str) -> str:
    """One JSONL line for ``record`` with the stored ``image_path``; extras follow the contract fields in order."""
    line = {
        "id": record["id"],
        "image_path": image_path,
        "label": record["label"],
        "split": record["split"],
        "skin_type": record.get("skin_type"),
        "source": record["source"],
        "caption": {field: record["caption"][field] for field in CAPTION_FIELDS},
    }
    line |= {key: value for key, value in record.items() if key not in line and key != "image"}
    return json.dumps(line, ensure_ascii=False, allow_nan=False)


_CONTRACT_FIELDS = frozenset({"id", "image", "image_path", "caption", "label", "skin_type", "split", "source"})


def _extras_errors(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One message per record with an extra field that JSON cannot hold."""
    errors = []
    for index, record in enumerate(records):
        bad = []
        for key, value in record.items():
            if key in _CONTRACT_FIELDS:
                continue
            if not isinstance(key, str):
                bad.append(f"extra field {describe(key)} has a key that is not a string")
                continue
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError, RecursionError) as error:
                reason = "nested too deeply" if isinstance(error, RecursionError) else type(value).__name__
                bad.append(f"extra field {describe(key)} is not JSON-serializable ({reason})")
        if bad:
            errors.append(f"{_record_name(index, record)}: " + "; ".join(bad))
    return errors


def _image_files(records: Sequence[Mapping[str, Any]], image_dir: Path | None) -> dict[int, Path]:
    """``{index: PNG path}`` for the records that hold an in-memory image; checks the file names are distinct."""
    with_image = [index for index, record in enumerate(records) if record.get("image") is not None]
    if not with_image:
        return {}
    if image_dir is None:
        raise ValueError(
            f"image_dir is required: {len(with_image)} records hold an in-memory 'image' that must be written as PNG"
        )
    files: dict[int, Path] = {}
    owner: dict[str, int] = {}
    for index in with_image:
        name = image_file_name(records[index]["id"])
        if name in owner:  # only ids built to collide with another id's hashed name get here
            raise ValueError(f"records {owner[name]} and {index} map to the same image file {name!r} in image_dir")
        owner[name] = index
        files[index] = image_dir / name
    return files


def _lines_or_errors(records: Sequence[Mapping[str, Any]], image_files: dict[int, Path], base_dir: Path) -> list[str]:
    """Every JSONL line (checked to encode as UTF-8), or a :class:`RecordError` naming the records that do not."""
    lines, errors = [], []
    for index, record in enumerate(records):
        target = image_files[index] if index in image_files else Path(record["image_path"])
        line = _jsonl_line(record, _stored_path(target, base_dir))
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            errors.append(f"{_record_name(index, record)}: holds a lone surrogate character, which UTF-8 cannot encode")
        lines.append(line)
    if errors:
        raise RecordError(f"{len(errors)} of {len(records)} records cannot be written as UTF-8 JSON", errors)
    return lines


def _make_directory(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; returns the directories created, outermost first."""
    created = []
    for folder in [*reversed(directory.parents), directory]:
        if not folder.exists():
            created.append(folder)
    directory.mkdir(parents=True, exist_ok=True)
    return created


def _write_png_file(image: Image.Image, path: Path) -> None:
    """Save ``image`` as an RGB PNG at the new file ``path``, synced to disk."""
    with open(path, "xb") as file:
        image.convert("RGB").save(file, format="PNG")
        file.flush()
        os.fsync(file.fileno())


def save_jsonl(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    image_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Write records as JSONL, one record per line, atomically; a failure leaves nothing behind.

    Args:
        records: records satisfying the contract (checked first, in-memory images decoded; nothing is written if
            any is bad).
        path: the JSONL file to write; its directory must exist.
        image_dir: where records holding an in-memory ``image`` get it written as a PNG named
            :func:`image_file_name` (``<id>.png`` for plain ids; created if needed); required when any record
            holds one.
        progress: show a progress bar while writing.

    Returns:
        the path written. Each line holds ``id``, ``image_path`` (relative to the JSONL file's directory when the
        image lies under it, absolute otherwise), ``label``, ``split``, ``skin_type``, ``source``, ``caption`` and
        the record's JSON-serializable extras. The PNGs are written to a hidden staging folder in ``image_dir``
        and moved in once all are written, then the JSONL replaces ``path``; on any failure the staging folder,
        the PNGs moved in so far that did not exist before, and the folders the call created are removed.

    Raises:
        FileNotFoundError: the directory of ``path`` does not exist.
        IsADirectoryError, NotADirectoryError: ``path`` is a directory, ``image_dir`` a file.
        RecordError: one line per bad record (contract, undecodable in-memory image, non-JSON extras).
        ValueError: ``image_dir`` missing although needed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"path: {str(path)!r} is a directory, not a JSONL file")
    if image_dir is not None and Path(image_dir).exists() and not Path(image_dir).is_dir():
        raise NotADirectoryError(f"image_dir: {str(image_dir)!r} exists and is not a directory")
    validate_records(records)
    extras_errors = _extras_errors(records)
    if extras_errors:
        raise RecordError(f"{len(extras_errors)} of {len(records)} records cannot be written as JSON", extras_errors)
    image_root = Path(image_dir).resolve() if image_dir is not None else None
    image_files = _image_files(records, image_root)
    decode_errors = [
        f"{_record_name(index, records[index])}: field 'image': the PIL image {problem}"
        for index, problem in zip(image_files, image_problems([records[index]["image"] for index in image_files]))
        if problem
    ]
    if decode_errors:
        raise RecordError(
            f"{len(decode_errors)} of {len(records)} records hold images that do not decode", decode_errors
        )
    lines = _lines_or_errors(records, image_files, path.parent.resolve())
    created: list[Path] = []
    moved: list[Path] = []
    staging: Path | None = None
    try:
        if image_root is not None and image_files:
            created = _make_directory(image_root)
            staging = Path(tempfile.mkdtemp(dir=image_root, prefix=".save_jsonl-", suffix=".tmp"))
            steps = track(
                list(image_files.items()),
                description="Writing images",
                total=len(image_files),
                disable=not progress,
                console=Console(stderr=True),
            )
            for index, target in steps:
                _write_png_file(records[index]["image"], staging / target.name)
            mode = new_file_mode()
            for target in image_files.values():
                existed = target.exists()
                os.chmod(staging / target.name, mode)
                os.replace(staging / target.name, target)
                if not existed:
                    moved.append(target)
        atomic_write(path, lambda file: file.write("".join(line + "\n" for line in lines)))
    except BaseException:
        undo_writes(staging, moved, created)
        staging = None
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return path


def undo_writes(staging: Path | None, moved: Sequence[Path], created: Sequence[Path]) -> None:
    """What a failed save does: remove its staging folder, the files it moved in that did not exist before, and the
    folders it created (innermost first, stopping at one that is not empty)."""
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    for target in moved:
        target.unlink(missing_ok=True)
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


def _caption_from_json(value: object) -> dict[str, str]:
    """A checked JSON caption with all twelve fields (lists joined with ``", "``, missing fields ``""``)."""
    caption = empty_caption()
    if value is None:
        return caption
    for field in CAPTION_FIELDS:
        item = value.get(field, "")
        caption[field] = ", ".join(item) if isinstance(item, list) else item
    return caption


def _json_line_problems(line: dict[str, Any], base_dir: Path, check_files: bool) -> tuple[list[str], Path | None]:
    """Problems of one parsed JSONL object, each naming the field, and the image file to decode (``None`` when
    ``image_path`` is already wrong or files are not checked)."""
    problems = [f"missing field {field!r}" for field in JSONL_REQUIRED_FIELDS if field not in line]
    if "image" in line:
        problems.append("field 'image' is not allowed in JSONL; reference the image file with 'image_path'")
    checks = {"id": _id_problem, "label": _label_problem, "split": _split_problem, "source": _source_problem}
    for field, check in checks.items():
        if field in line:
            problem = check(line[field])
            if problem:
                problems.append(problem)
    problem = _skin_type_problem(line.get("skin_type"))
    if problem:
        problems.append(problem)
    if line.get("caption") is not None:
        problems.extend(_caption_problems(line["caption"], require_all=False, allow_lists=True))
    to_decode = None
    if "image_path" in line:
        image_path = line["image_path"]
        if not isinstance(image_path, str) or not image_path:
            problems.append(f"field 'image_path' must be a non-empty string, got {describe(image_path)}")
        elif (problem := _path_text_problem(image_path)) is not None:
            problems.append(f"field 'image_path' {problem}: {describe(image_path)}")
        elif check_files:
            problem = _file_problem(base_dir / image_path)
            if problem:
                problems.append(f"field 'image_path': {problem}: {describe(str(base_dir / image_path))}")
            else:
                to_decode = base_dir / image_path
    mask = line.get("lesion_mask_path")
    if (problem := _lesion_mask_path_problem(mask)) is not None:
        problems.append(problem)
    elif mask is not None and to_decode is not None:  # the file exists when files are checked (not decoded here)
        mask_file = to_decode.parent / mask
        if (problem := _file_problem(mask_file)) is not None:
            problem = problem.replace("image file", "lesion mask file")
            problems.append(f"field 'lesion_mask_path': {problem}: {describe(str(mask_file))}")
    return problems, to_decode


def _record_from_json(line: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The record of a checked JSONL object: defaults filled, ``image_path`` absolute."""
    record = dict(line)
    for field, default in JSONL_OPTIONAL_FIELDS.items():
        record.setdefault(field, default)
    record["caption"] = _caption_from_json(line.get("caption"))
    record["image_path"] = str((base_dir / line["image_path"]).resolve())
    return record


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse_json(text: str) -> tuple[object, str | None]:
    """The JSON value of one line, or ``(None, reason)``; never raises."""
    try:
        return json.loads(text, parse_constant=_refuse_constant), None
    except json.JSONDecodeError as error:
        return None, f"not valid JSON ({error.msg} at column {error.colno})"
    except RecursionError:
        return None, "not valid JSON here (nested too deeply)"
    except ValueError as error:  # NaN / Infinity, integers of more than 4300 digits
        return None, f"not valid JSON ({_error_text(error)})"


def _decode_line(raw: bytes) -> tuple[str | None, str | None]:
    """The text of one raw line (a leading BOM dropped), or ``(None, reason)`` when it is not UTF-8."""
    try:
        return raw.removeprefix(_BOM).decode("utf-8"), None
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 text (byte 0x{raw[error.start]:02x} at byte {error.start + 1} of the line)"


def _parse_lines(
    lines: Iterable[bytes], name: str, base_dir: Path, check_files: bool, progress: bool
) -> tuple[list[dict], list[str]]:
    """Records and one error message per bad line of a JSONL file's raw lines."""
    entries: list[tuple[int, dict[str, Any], list[str], Path | None]] = []
    bad_lines: list[tuple[int, str]] = []
    first_line_of_id: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        text, reason = _decode_line(raw)
        if text is None or not text.strip():
            if reason:
                bad_lines.append((number, reason))
            continue
        line, reason = _parse_json(text)
        if reason:
            bad_lines.append((number, reason))
            continue
        if not isinstance(line, dict):
            bad_lines.append((number, f"must be a JSON object, got {type(line).__name__}"))
            continue
        problems, to_decode = _json_line_problems(line, base_dir, check_files)
        record_id = line.get("id")
        if isinstance(record_id, str) and record_id:
            if record_id in first_line_of_id:
                problems.append(
                    f"field 'id': duplicate id {describe(record_id)} (first on line {first_line_of_id[record_id]})"
                )
            else:
                first_line_of_id[record_id] = number
        entries.append((number, line, problems, to_decode))
    if check_files:
        to_check = [entry for entry in entries if entry[3] is not None]
        decoded = image_problems([entry[3] for entry in to_check], progress=progress)
        for (_, _, problems, image_file), problem in zip(to_check, decoded):
            if problem:
                problems.append(f"field 'image_path': image {describe(str(image_file))} {problem}")
    records = []
    for number, line, problems, _ in entries:
        if problems:
            bad_lines.append((number, "; ".join(problems)))
        else:
            records.append(_record_from_json(line, base_dir))
    errors = [f"{name}:{number}: {reason}" for number, reason in sorted(bad_lines)]
    return records, errors


def load_jsonl(
    path: str | os.PathLike[str], *, check_files: bool = True, progress: bool = True
) -> list[dict[str, Any]]:
    """Read and validate a JSONL data set.

    The file is UTF-8 (a byte-order mark is accepted). Each non-blank line is a JSON object with the required fields
    ``id`` (unique), ``image_path`` (relative to the JSONL file's directory, or absolute), ``label`` (one of
    ``taxonomy.LABELS``) and ``split`` (``train``/``val``/``test``), and the optional ``skin_type`` (1-6 or null),
    ``source`` (default ``"local"``) and ``caption`` (an object over ``CAPTION_FIELDS``; values are strings or lists
    of strings; missing fields are empty). Other fields are kept as extras.

    Args:
        path: the JSONL file.
        check_files: check that every ``image_path`` names an image file that decodes (:func:`image_problem`, on a
            thread pool); ``False`` checks neither existence nor content.
        progress: show a progress bar while images are decoded.

    Returns:
        the records, in file order, with ``image_path`` absolute and ``caption`` holding all twelve fields.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        RecordError: one line per bad JSONL line, ``<path>:<line>: field 'x' ...`` (all bad lines, not just the first),
            including lines that are not UTF-8 and lines that are not JSON (NaN and Infinity are not JSON).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: JSONL file {str(path)!r} does not exist or is not a file")
    data = path.read_bytes()
    records, errors = _parse_lines(data.split(b"\n"), str(path), path.parent.resolve(), check_files, progress)
    if errors:
        raise RecordError(f"{len(errors)} bad lines in {path}", errors)
    return records
