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
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from PIL import Image
from rich.console import Console
from rich.progress import track

from skinflow.formats import CAPTION_FIELDS
from skinflow.taxonomy import LABELS, match_label

__all__ = [
    "JSONL_OPTIONAL_FIELDS",
    "JSONL_REQUIRED_FIELDS",
    "SKIN_TYPES",
    "SPLITS",
    "RecordError",
    "atomic_write",
    "empty_caption",
    "load_jsonl",
    "record_problems",
    "save_jsonl",
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


def _is_int(value: object) -> bool:
    """True for ints that are not bools."""
    return isinstance(value, int) and not isinstance(value, bool)


def _id_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return f"field 'id' must be a non-empty string, got {value!r}"
    return None


def _label_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"field 'label' must be a string, got {value!r}"
    if value not in _LABEL_SET:
        guess = match_label(value)
        hint = f" (did you mean {guess!r}?)" if guess is not None else ""
        return f"field 'label': {value!r} is not one of the {len(LABELS)} Fitzpatrick17k labels{hint}"
    return None


def _skin_type_problem(value: object) -> str | None:
    if value is not None and not (_is_int(value) and value in SKIN_TYPES):
        return f"field 'skin_type' must be an int 1-6 or null (unknown), got {value!r}"
    return None


def _split_problem(value: object) -> str | None:
    if value not in SPLITS:
        return f"field 'split' must be one of {list(SPLITS)}, got {value!r}"
    return None


def _source_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return f"field 'source' must be a non-empty string, got {value!r}"
    return None


def _caption_problems(caption: object, *, require_all: bool, allow_lists: bool) -> list[str]:
    """Problems of a caption dict: unknown fields, non-string values, and (if ``require_all``) missing fields."""
    if not isinstance(caption, Mapping):
        return [f"field 'caption' must be an object of caption fields, got {type(caption).__name__}"]
    problems = [
        f"field 'caption' has unknown field {key!r} (allowed: {', '.join(CAPTION_FIELDS)})"
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
            problems.append(f"field 'caption.{field}' must be {kind}, got {value!r}")
    return problems


def record_problems(record: object) -> list[str]:
    """What is wrong with one in-memory record against the record contract (empty list when valid).

    Args:
        record: a record dict (see the module docstring).

    Returns:
        one message per problem, each naming the field, e.g. ``["field 'split' must be one of [...], got 'dev'"]``.
        Image files are not opened; a missing ``image_path`` file is a problem.
    """
    if not isinstance(record, Mapping):
        return [f"must be a dict, got {type(record).__name__}"]
    problems = []
    for field in ("id", "caption", "label", "split", "source"):
        if field not in record:
            problems.append(f"missing field {field!r}")
    image, image_path = record.get("image"), record.get("image_path")
    if image is None and image_path is None:
        problems.append("needs an 'image' (PIL image) or an 'image_path'")
    elif image is not None and image_path is not None:
        problems.append("has both 'image' and 'image_path'; give one")
    elif image is not None and not isinstance(image, Image.Image):
        problems.append(f"field 'image' must be a PIL.Image.Image, got {type(image).__name__}")
    elif image_path is not None:
        if not isinstance(image_path, str) or not image_path:
            problems.append(f"field 'image_path' must be a non-empty string, got {image_path!r}")
        elif not os.path.isfile(image_path):
            problems.append(f"field 'image_path': image file not found: {image_path}")
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
    return problems


def _record_name(index: int, record: object) -> str:
    """``record 3 (id 'abc')`` for messages."""
    record_id = record.get("id") if isinstance(record, Mapping) else None
    return f"record {index} (id {record_id!r})" if isinstance(record_id, str) else f"record {index}"


def _duplicate_id_errors(records: Sequence[object]) -> dict[int, str]:
    """``{index: message}`` for every record whose id an earlier record already has."""
    first_index: dict[str, int] = {}
    duplicates = {}
    for index, record in enumerate(records):
        record_id = record.get("id") if isinstance(record, Mapping) else None
        if not isinstance(record_id, str):
            continue
        if record_id in first_index:
            duplicates[index] = f"duplicate id {record_id!r} (first used by record {first_index[record_id]})"
        else:
            first_index[record_id] = index
    return duplicates


def validate_records(records: Sequence[Mapping[str, Any]], *, name: str = "records") -> None:
    """Check every record against the contract and raise one :class:`RecordError` listing each bad record.

    Args:
        records: the records (a sequence of dicts); ids must be unique.
        name: what the records are called in the error title (the argument name of the caller).

    Raises:
        TypeError: ``records`` is not a sequence.
        RecordError: one line per bad record, e.g. ``record 3 (id 'x'): field 'label': 'foo' is not one of ...``.
    """
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence):
        raise TypeError(f"{name} must be a sequence of record dicts, got {type(records).__name__}")
    duplicates = _duplicate_id_errors(records)
    errors = []
    for index, record in enumerate(records):
        problems = record_problems(record)
        if index in duplicates:
            problems.append(duplicates[index])
        if problems:
            errors.append(f"{_record_name(index, record)}: " + "; ".join(problems))
    if errors:
        raise RecordError(f"{len(errors)} of {len(records)} {name} break the record contract", errors)


def _safe_filename(record_id: str) -> str:
    """A file name for a record's PNG: unsafe characters of the id replaced by ``_``."""
    return _UNSAFE_FILENAME_CHARS.sub("_", record_id) + ".png"


def _stored_path(image_path: Path, base_dir: Path) -> str:
    """``image_path`` relative to ``base_dir`` (POSIX separators) when it lies under it, else absolute."""
    absolute = image_path.resolve()
    try:
        return absolute.relative_to(base_dir).as_posix()
    except ValueError:
        return str(absolute)


def _new_file_mode() -> int:
    """The permission bits a newly created file gets under the current umask (mkstemp's files are 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], object], *, binary: bool = False) -> Path:
    """Write a file so that readers see either the old file or the complete new one, never a partial file.

    Args:
        path: the file to write; its directory must exist.
        write: called with an open file object (text UTF-8 with ``\n`` line ends, or binary); whatever it raises
            propagates and leaves ``path`` untouched.
        binary: open the file in binary mode.

    Returns:
        ``path`` as a ``Path``. The data goes to a temporary file in the same directory, which is flushed, synced,
        given the usual permissions (``0666 & ~umask``) and moved over ``path`` with ``os.replace``.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        options: dict[str, Any] = {} if binary else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(handle, "wb" if binary else "w", **options) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _new_file_mode())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


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


def _extras_errors(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One message per record with an extra field that JSON cannot hold."""
    contract = {"id", "image", "image_path", "caption", "label", "skin_type", "split", "source"}
    errors = []
    for index, record in enumerate(records):
        bad = []
        for key, value in record.items():
            if key in contract:
                continue
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                bad.append(f"extra field {key!r} is not JSON-serializable ({type(value).__name__})")
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
        name = _safe_filename(records[index]["id"])
        if name in owner:
            raise ValueError(
                f"records {owner[name]} and {index} map to the same image file {name!r} in image_dir "
                "(ids that differ only in characters outside [A-Za-z0-9._-])"
            )
        owner[name] = index
        files[index] = image_dir / name
    return files


def _write_png(image: Image.Image, path: Path) -> None:
    """Save ``image`` as an RGB PNG at ``path`` atomically."""
    atomic_write(path, lambda file: image.convert("RGB").save(file, format="PNG"), binary=True)


def save_jsonl(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    image_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Write records as JSONL, one record per line, atomically.

    Args:
        records: records satisfying the contract (checked first; nothing is written if any is bad).
        path: the JSONL file to write; its directory must exist.
        image_dir: where records holding an in-memory ``image`` get it written as ``<id>.png`` (created if needed);
            required when any record holds one.
        progress: show a progress bar while writing.

    Returns:
        the path written. Each line holds ``id``, ``image_path`` (relative to the JSONL file's directory when the
        image lies under it, absolute otherwise), ``label``, ``split``, ``skin_type``, ``source``, ``caption`` and
        the record's JSON-serializable extras.

    Raises:
        RecordError: one line per bad record (contract, non-JSON extras).
        ValueError: ``image_dir`` missing although needed, or two ids that give the same PNG name.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: directory {path.parent} does not exist")
    validate_records(records)
    extras_errors = _extras_errors(records)
    if extras_errors:
        raise RecordError(f"{len(extras_errors)} of {len(records)} records cannot be written as JSON", extras_errors)
    image_root = Path(image_dir).resolve() if image_dir is not None else None
    image_files = _image_files(records, image_root)
    if image_root is not None and image_files:
        image_root.mkdir(parents=True, exist_ok=True)
    base_dir = path.parent.resolve()
    lines = []
    steps = track(
        range(len(records)),
        description="Writing JSONL",
        total=len(records),
        disable=not progress,
        console=Console(stderr=True),
    )
    for index in steps:
        record = records[index]
        if index in image_files:
            _write_png(record["image"], image_files[index])
            stored = _stored_path(image_files[index], base_dir)
        else:
            stored = _stored_path(Path(record["image_path"]), base_dir)
        lines.append(_jsonl_line(record, stored))
    atomic_write(path, lambda file: file.write("".join(line + "\n" for line in lines)))
    return path


def _caption_from_json(value: object) -> dict[str, str]:
    """A checked JSON caption with all twelve fields (lists joined with ``", "``, missing fields ``""``)."""
    caption = empty_caption()
    if value is None:
        return caption
    for field in CAPTION_FIELDS:
        item = value.get(field, "")
        caption[field] = ", ".join(item) if isinstance(item, list) else item
    return caption


def _json_line_problems(line: dict[str, Any], base_dir: Path, check_files: bool) -> list[str]:
    """Problems of one parsed JSONL object, each naming the field."""
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
    if "image_path" in line:
        image_path = line["image_path"]
        if not isinstance(image_path, str) or not image_path:
            problems.append(f"field 'image_path' must be a non-empty string, got {image_path!r}")
        elif check_files and not (base_dir / image_path).is_file():
            problems.append(f"field 'image_path': image file not found: {base_dir / image_path}")
    return problems


def _record_from_json(line: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The record of a checked JSONL object: defaults filled, ``image_path`` absolute."""
    record = dict(line)
    for field, default in JSONL_OPTIONAL_FIELDS.items():
        record.setdefault(field, default)
    record["caption"] = _caption_from_json(line.get("caption"))
    record["image_path"] = str((base_dir / line["image_path"]).resolve())
    return record


def _parse_lines(lines: Iterable[str], name: str, base_dir: Path, check_files: bool) -> tuple[list[dict], list[str]]:
    """Records and one error message per bad line of a JSONL text."""
    records, errors = [], []
    first_line_of_id: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as error:
            errors.append(f"{name}:{number}: not valid JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(line, dict):
            errors.append(f"{name}:{number}: must be a JSON object, got {type(line).__name__}")
            continue
        problems = _json_line_problems(line, base_dir, check_files)
        record_id = line.get("id")
        if isinstance(record_id, str) and record_id:
            if record_id in first_line_of_id:
                problems.append(f"field 'id': duplicate id {record_id!r} (first on line {first_line_of_id[record_id]})")
            else:
                first_line_of_id[record_id] = number
        if problems:
            errors.append(f"{name}:{number}: " + "; ".join(problems))
        else:
            records.append(_record_from_json(line, base_dir))
    return records, errors


def load_jsonl(path: str | os.PathLike[str], *, check_files: bool = True) -> list[dict[str, Any]]:
    """Read and validate a JSONL data set.

    Each non-blank line is a JSON object with the required fields ``id`` (unique), ``image_path`` (relative to the
    JSONL file's directory, or absolute), ``label`` (one of ``taxonomy.LABELS``) and ``split``
    (``train``/``val``/``test``), and the optional ``skin_type`` (1-6 or null), ``source`` (default ``"local"``)
    and ``caption`` (an object over ``CAPTION_FIELDS``; values are strings or lists of strings; missing fields are
    empty). Other fields are kept as extras.

    Args:
        path: the JSONL file.
        check_files: check that every ``image_path`` names an existing file (images are not opened).

    Returns:
        the records, in file order, with ``image_path`` absolute and ``caption`` holding all twelve fields.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        RecordError: one line per bad JSONL line, ``<path>:<line>: field 'x' ...`` (all bad lines, not just the first).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: JSONL file {path} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"path: {path} is not UTF-8 text ({error})") from error
    records, errors = _parse_lines(text.split("\n"), str(path), path.parent.resolve(), check_files)
    if errors:
        raise RecordError(f"{len(errors)} bad lines in {path}", errors)
    return records
