"""Exports of records for GRPO training: verl's multimodal parquet and TRL's vision dataset, with validators.

Both exports hold, per record, the stage's user prompt with one image and a JSON ground truth the rewards read:

- caption stage: ``{"stage": "caption", "caption": {field: value, ...}}`` (the fields the record's caption knows:
  its ``caption_fields``, all twelve ``CAPTION_FIELDS`` when absent; see :mod:`skinflow.targets`);
- diagnosis stage: ``{"stage": "diagnosis", "label": ..., "canonical": ..., "nine_group": ..., "three_group": ...,
  "k": k}`` (the label, its synonym class representative and its two hierarchy levels, for synonym- and
  hierarchy-aware matching).

verl (``to_verl_parquet``), the schema of verl's ``RLHFDataset``: ``data_source`` (str), ``prompt`` (chat messages;
the user text holds one ``<image>`` placeholder), ``images`` (one ``{"bytes": <encoded image>, "path": <name>}`` per
row; PIL images are stored as PNG, image files as their original bytes), ``ability`` (str), ``reward_model``
(``{"style": "rule", "ground_truth": <JSON string>}``) and ``extra_info`` (``index``, ``split``, ``stage``, ``id``,
``source``, ``label``, ``skin_type``, ``k``). Images are embedded, so the parquet file is self-contained.

TRL (``to_trl_dataset``), the format of ``GRPOTrainer`` for vision-language models: a conversational ``prompt``
whose user content is ``[{"type": "image"}, {"type": "text", "text": ...}]``, an ``images`` column (a list of one
``datasets.Image``), and the columns ``ground_truth`` (the same JSON string), ``stage``, ``data_source``, ``id``,
``split``, ``label`` and ``skin_type``, which the trainer passes to reward functions as keyword arguments.
:func:`save_trl_dataset` writes it as a ``datasets`` directory (``Dataset.load_from_disk``), refusing a non-empty one.

Every image is decoded completely before it is accepted (:func:`skinflow.data.records.image_problem`), by the
exporters and by both validators: an image that does not decode is refused with the record or row that holds it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from rich.console import Console
from rich.progress import track

from skinflow.data.records import SPLITS, RecordError, image_problems, validate_records
from skinflow.formats import CAPTION_PROMPT, DEFAULT_K, diagnosis_prompt
from skinflow.targets import CaptionTarget, TargetError, caption_target_of, diagnosis_target_of, target_from_json
from skinflow.taxonomy import LABELS
from skinflow.util import ArgumentTypeError, atomic_write, check_int, describe, new_directory_mode

if TYPE_CHECKING:
    import datasets

__all__ = [
    "ABILITY",
    "IMAGE_PLACEHOLDER",
    "STAGES",
    "TRL_COLUMNS",
    "VERL_SCHEMA",
    "ExportValidationError",
    "ground_truth",
    "prompt_text",
    "save_trl_dataset",
    "to_trl_dataset",
    "to_verl_parquet",
    "validate_trl_dataset",
    "validate_verl_parquet",
]

STAGES: tuple[str, ...] = ("caption", "diagnosis")
IMAGE_PLACEHOLDER = "<image>"
ABILITY = "dermatology"
ROW_GROUP_SIZE = 256
"""Rows per parquet row group: images of one group are read and held in memory together."""

_PROMPT_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_IMAGES_TYPE = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
_REWARD_TYPE = pa.struct([("style", pa.string()), ("ground_truth", pa.string())])
_EXTRA_TYPE = pa.struct(
    [
        ("index", pa.int64()),
        ("split", pa.string()),
        ("stage", pa.string()),
        ("id", pa.string()),
        ("source", pa.string()),
        ("label", pa.string()),
        ("skin_type", pa.int64()),
        ("k", pa.int64()),
    ]
)
VERL_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", _PROMPT_TYPE),
        ("images", _IMAGES_TYPE),
        ("ability", pa.string()),
        ("reward_model", _REWARD_TYPE),
        ("extra_info", _EXTRA_TYPE),
    ]
)
"""The arrow schema :func:`to_verl_parquet` writes (no Hugging Face feature metadata: readable by any datasets)."""

TRL_COLUMNS: tuple[str, ...] = (
    "prompt",
    "images",
    "ground_truth",
    "stage",
    "data_source",
    "id",
    "split",
    "label",
    "skin_type",
)
_MAX_SHOWN_ERRORS = 50
_LABEL_SET = frozenset(LABELS)


class ExportValidationError(ValueError):
    """A verl parquet file or TRL dataset that breaks the schema; ``errors`` holds one message per problem."""

    def __init__(self, title: str, errors: Sequence[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        shown = list(self.errors[:_MAX_SHOWN_ERRORS])
        if len(self.errors) > _MAX_SHOWN_ERRORS:
            shown.append(f"... and {len(self.errors) - _MAX_SHOWN_ERRORS} more (see the exception's .errors)")
        super().__init__(f"{title}:\n" + "\n".join(shown))


def _check_stage(stage: object, k: object) -> int:
    """``k`` as an int; rejects an unknown stage or a bad ``k`` (not an int >= 1, a bool) with errors naming them."""
    if not isinstance(stage, str) or stage not in STAGES:
        raise ValueError(f"stage must be one of {list(STAGES)}, got {describe(stage)}")
    return check_int("k", k, minimum=1)


def prompt_text(stage: str, k: int = DEFAULT_K) -> str:
    """The user instruction of ``stage``: ``formats.CAPTION_PROMPT`` or ``formats.diagnosis_prompt(k)``."""
    k = _check_stage(stage, k)
    return CAPTION_PROMPT if stage == "caption" else diagnosis_prompt(k)


def ground_truth(record: Mapping[str, Any], stage: str, k: int = DEFAULT_K) -> dict[str, Any]:
    """The reward target of one record as JSON (:mod:`skinflow.targets`: see the module docstring for both layouts).

    Args:
        record: a valid record.
        stage: ``"caption"`` or ``"diagnosis"``.
        k: the number of ranked diagnoses asked for (diagnosis stage).

    Returns:
        ``{"stage": "caption", "caption": {...the fields the record's caption knows}}`` or
        ``{"stage": "diagnosis", "label", "canonical", "nine_group", "three_group", "k"}``.
    """
    k = _check_stage(stage, k)
    target = caption_target_of(record) if stage == "caption" else diagnosis_target_of(record, k)
    return target.to_json()


def _check_records(records: Sequence[Mapping[str, Any]], stage: str, progress: bool) -> None:
    """Contract check with every image decoded, plus (caption stage) a non-empty caption target for every record."""
    validate_records(records, check_images=True, progress=progress)
    if stage != "caption":
        return
    empty = [
        f"record {index} (id {describe(record['id'])}): caption is empty in every field it knows"
        for index, record in enumerate(records)
        if caption_target_of(record).is_empty
    ]
    if empty:
        raise RecordError(
            f"{len(empty)} of {len(records)} records have no caption target for the caption stage "
            "(keep records with a caption, e.g. [r for r in records if r.get('has_caption', True)])",
            empty,
        )


def _data_source(record: Mapping[str, Any], data_source: str | None) -> str:
    """``data_source`` if given, else ``skinflow/<record source>``."""
    return data_source if data_source is not None else f"skinflow/{record['source']}"


def _png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as an RGB PNG."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _image_entry(record: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``({"bytes": ..., "path": ...}, problem)`` for the record's (already decoded) image: PNG for a PIL image,
    the file's bytes otherwise; ``problem`` when the file can no longer be read."""
    image = record.get("image")
    if image is not None:
        return {"bytes": _png_bytes(image), "path": None}, None
    path = Path(record["image_path"])
    try:
        data = path.read_bytes()
    except OSError as error:
        return {"bytes": b"", "path": path.name}, f"image {path} cannot be read ({type(error).__name__})"
    return {"bytes": data, "path": path.name}, None


def _check_data_source(data_source: object) -> None:
    if data_source is not None and (not isinstance(data_source, str) or not data_source):
        raise ValueError(f"data_source must be None or a non-empty string, got {describe(data_source)}")


def _verl_row(record: Mapping[str, Any], index: int, stage: str, k: int, data_source: str | None) -> dict[str, Any]:
    """One verl row without its image (added by the caller)."""
    return {
        "data_source": _data_source(record, data_source),
        "prompt": [{"role": "user", "content": IMAGE_PLACEHOLDER + prompt_text(stage, k)}],
        "ability": ABILITY,
        "reward_model": {
            "style": "rule",
            "ground_truth": json.dumps(ground_truth(record, stage, k), ensure_ascii=False),
        },
        "extra_info": {
            "index": index,
            "split": record["split"],
            "stage": stage,
            "id": record["id"],
            "source": record["source"],
            "label": record["label"],
            "skin_type": record.get("skin_type"),
            "k": k if stage == "diagnosis" else None,
        },
    }


def to_verl_parquet(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    stage: str,
    k: int = DEFAULT_K,
    data_source: str | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Write records as a verl multimodal parquet file (the schema of ``RLHFDataset``), atomically.

    Args:
        records: valid records (in-memory ``image`` or ``image_path``); for ``stage="caption"`` every record needs a
            non-empty caption. Write one file per split (e.g. ``train.parquet``, ``val.parquet``).
        path: the parquet file to write; its directory must exist.
        stage: ``"caption"`` (Stage I) or ``"diagnosis"`` (Stage II).
        k: ranked diagnoses asked for in the diagnosis prompt (an int >= 1).
        data_source: the ``data_source`` of every row; ``None`` uses ``"skinflow/<record source>"``
            (verl reports validation metrics per data source).
        progress: show a progress bar while images are decoded and written.

    Returns:
        the path written: ``len(records)`` rows in :data:`VERL_SCHEMA`, row ``i`` with ``extra_info.index == i``.

    Raises:
        ValueError: a bad ``stage``, ``k`` or ``data_source`` (before anything is read or written).
        FileNotFoundError: the directory of ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory.
        RecordError: records that break the contract, lack a caption target, or whose image does not decode
            (every image is decoded before anything is written).
    """
    k = _check_stage(stage, k)
    _check_data_source(data_source)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"path: {str(path)!r} is a directory, not a parquet file")
    _check_records(records, stage, progress)
    errors: list[str] = []

    def write(file: IO[bytes]) -> None:
        with pq.ParquetWriter(file, VERL_SCHEMA) as writer:
            rows: list[dict[str, Any]] = []
            steps = track(
                range(len(records)),
                description=f"Writing verl parquet ({stage})",
                total=len(records),
                disable=not progress,
                console=Console(stderr=True),
            )
            for index in steps:
                record = records[index]
                image, problem = _image_entry(record)
                if problem:
                    errors.append(f"record {index} (id {describe(record['id'])}): {problem}")
                rows.append(_verl_row(record, index, stage, k, data_source) | {"images": [image]})
                if len(rows) == ROW_GROUP_SIZE or index == len(records) - 1:
                    writer.write_table(pa.Table.from_pylist(rows, schema=VERL_SCHEMA))
                    rows = []
        if errors:
            raise RecordError(f"{len(errors)} of {len(records)} records have unreadable images", errors)

    return atomic_write(path, write, binary=True)


def _trl_features() -> datasets.Features:
    """The ``datasets.Features`` of :func:`to_trl_dataset` (list syntax, valid for datasets 2.x to 5.x)."""
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    return Features(
        {
            "prompt": [{"role": Value("string"), "content": [{"type": Value("string"), "text": Value("string")}]}],
            "images": [ImageFeature()],
            "ground_truth": Value("string"),
            "stage": Value("string"),
            "data_source": Value("string"),
            "id": Value("string"),
            "split": Value("string"),
            "label": Value("string"),
            "skin_type": Value("int64"),
        }
    )


def to_trl_dataset(
    records: Sequence[Mapping[str, Any]],
    stage: str,
    k: int = DEFAULT_K,
    data_source: str | None = None,
    *,
    progress: bool = True,
) -> datasets.Dataset:
    """The records as a ``datasets.Dataset`` for TRL's ``GRPOTrainer`` with a vision-language model.

    Args:
        records: valid records; for ``stage="caption"`` every record needs a non-empty caption.
        stage: ``"caption"`` or ``"diagnosis"``.
        k: ranked diagnoses asked for in the diagnosis prompt (an int >= 1).
        data_source: the ``data_source`` column; ``None`` uses ``"skinflow/<record source>"``.
        progress: show a progress bar while images are decoded and in-memory images encoded.

    Returns:
        a dataset with the columns :data:`TRL_COLUMNS`: ``prompt`` = ``[{"role": "user", "content":
        [{"type": "image", "text": None}, {"type": "text", "text": <prompt>}]}]``, ``images`` = ``[image]``
        (in-memory images stored as PNG; image files referenced by path and decoded on access), ``ground_truth``
        (JSON string, see :func:`ground_truth`), ``stage``, ``data_source``, ``id``, ``split``, ``label``,
        ``skin_type`` (int or None). Row order is record order.

    Raises:
        ValueError: a bad ``stage``, ``k`` or ``data_source``.
        RecordError: records that break the contract, lack a caption target, or whose image does not decode.
    """
    from datasets import Dataset

    k = _check_stage(stage, k)
    _check_data_source(data_source)
    _check_records(records, stage, progress)
    text = prompt_text(stage, k)
    columns: dict[str, list[Any]] = {name: [] for name in TRL_COLUMNS}
    steps = track(
        records,
        description=f"Building TRL dataset ({stage})",
        total=len(records),
        disable=not progress,
        console=Console(stderr=True),
    )
    for record in steps:
        image = record.get("image")
        if image is not None:
            image_value = {"bytes": _png_bytes(image), "path": None}
        else:
            image_value = {"bytes": None, "path": str(Path(record["image_path"]).resolve())}
        columns["prompt"].append(
            [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": text}]}]
        )
        columns["images"].append([image_value])
        columns["ground_truth"].append(json.dumps(ground_truth(record, stage, k), ensure_ascii=False))
        columns["stage"].append(stage)
        columns["data_source"].append(_data_source(record, data_source))
        columns["id"].append(record["id"])
        columns["split"].append(record["split"])
        columns["label"].append(record["label"])
        columns["skin_type"].append(record.get("skin_type"))
    return Dataset.from_dict(columns, features=_trl_features())


def _check_output_directory(directory: Path, overwrite: object) -> None:
    """Refuse an output directory that cannot be written: missing parent, a file, or non-empty without overwrite."""
    if not isinstance(overwrite, bool):
        raise ArgumentTypeError(f"overwrite must be a bool, got {describe(overwrite)}")
    if not directory.parent.is_dir():
        raise FileNotFoundError(
            f"directory: cannot write {str(directory)!r}: parent directory {str(directory.parent)!r} does not exist"
        )
    if directory.exists() or directory.is_symlink():
        if not directory.is_dir():
            raise FileExistsError(f"directory: {str(directory)!r} exists and is not a directory")
        if not overwrite and any(directory.iterdir()):
            raise FileExistsError(f"directory: {str(directory)!r} is not empty (pass overwrite=True to replace it)")


@contextlib.contextmanager
def _datasets_progress(enabled: bool) -> Iterator[None]:
    """``datasets``' own progress bars on or off for the block (restored after)."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_enabled = not are_progress_bars_disabled()
    if not enabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            enable_progress_bars()


def save_trl_dataset(
    records: Sequence[Mapping[str, Any]],
    directory: str | os.PathLike[str],
    stage: str,
    k: int = DEFAULT_K,
    data_source: str | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """:func:`to_trl_dataset` saved as a ``datasets`` directory (read it with ``datasets.load_from_disk``), atomically.

    Args:
        records, stage, k, data_source, progress: as for :func:`to_trl_dataset`.
        directory: the output directory. Its parent must exist; it may be missing or empty, and a non-empty one is
            refused unless ``overwrite``.
        overwrite: replace a non-empty ``directory`` (its old content is removed only once the new dataset is
            complete).

    Returns:
        ``directory`` as a ``Path``. The dataset is written to a hidden staging directory next to it and renamed
        into place, so a failure leaves ``directory`` as it was and nothing else behind.

    Raises:
        ValueError: a bad ``stage``, ``k``, ``data_source`` or ``overwrite`` (before anything is read or written).
        FileNotFoundError: the parent of ``directory`` does not exist.
        FileExistsError: ``directory`` is a file, or a non-empty directory and ``overwrite`` is False.
        RecordError: as for :func:`to_trl_dataset`.
    """
    k = _check_stage(stage, k)
    _check_data_source(data_source)
    directory = Path(directory)
    _check_output_directory(directory, overwrite)
    dataset = to_trl_dataset(records, stage, k, data_source, progress=progress)
    parent, name = directory.parent, directory.name[:200]
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".tmp"))
    old: Path | None = None
    try:
        with _datasets_progress(progress):
            dataset.save_to_disk(str(staging))
        os.chmod(staging, new_directory_mode())
        if directory.is_dir() and any(directory.iterdir()):
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".old"))
            os.replace(directory, old)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not directory.exists():
            os.replace(old, directory)
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return directory


def _ground_truth_problem(text: object, stage: object) -> str | None:
    """Why a ground-truth JSON string is not a valid target of ``stage`` (:func:`targets.target_from_json`), or
    ``None``. Never raises."""
    if not isinstance(text, str):
        return f"ground_truth must be a JSON string, got {type(text).__name__}"
    if not isinstance(stage, str) or stage not in STAGES:
        return f"ground_truth cannot be checked against the row's stage {describe(stage)}"
    try:
        target = target_from_json(text, stage)
    except TargetError as error:
        return f"ground_truth: {error}"
    if isinstance(target, CaptionTarget) and target.is_empty:
        return "ground_truth: caption is empty in every field it knows"
    return None


def _verl_schema_problems(schema: pa.Schema) -> list[str]:
    """Missing columns and column types that differ from :data:`VERL_SCHEMA` (extra columns are allowed)."""
    problems = []
    for expected in VERL_SCHEMA:
        if expected.name not in schema.names:
            problems.append(f"missing column {expected.name!r}")
        elif not schema.field(expected.name).type.equals(expected.type):
            problems.append(
                f"column {expected.name!r} has type {schema.field(expected.name).type}, expected {expected.type}"
            )
    return problems


def _dicts(value: object) -> list[dict[str, Any]] | None:
    """``value`` when it is a list of dicts (an arrow list of structs), else ``None``."""
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return value
    return None


def _verl_image_bytes(row: Mapping[str, Any]) -> tuple[object, str | None]:
    """The bytes of the row's one image to decode, or ``(None, problem)``."""
    images = _dicts(row.get("images") or [])
    if images is None:
        return None, "images must be a list of {bytes, path} entries"
    if len(images) != 1:
        return None, f"images must hold one image, got {len(images)}"
    data = images[0].get("bytes")
    if not isinstance(data, bytes) or not data:
        return None, "image bytes are empty"
    return data, None


def _verl_row_problems(row: Mapping[str, Any], image_problem: str | None) -> list[str]:
    """Problems of one verl row (as read by pyarrow's ``to_pylist``); ``image_problem``: its image's, if any."""
    problems = []
    if not row.get("data_source"):
        problems.append("data_source is empty")
    messages = _dicts(row.get("prompt") or [])
    if messages is None:
        problems.append("prompt must be a list of {role, content} messages, some are null")
        messages = []
    user_texts = [message.get("content") or "" for message in messages if message.get("role") == "user"]
    contents = [message.get("content") for message in messages]
    placeholders = sum(content.count(IMAGE_PLACEHOLDER) for content in contents if isinstance(content, str))
    if len(user_texts) != 1:
        problems.append(f"prompt must hold one user message, got {len(user_texts)}")
    if placeholders != 1 or (user_texts and user_texts[0].count(IMAGE_PLACEHOLDER) != 1):
        problems.append(f"the user text must hold exactly one {IMAGE_PLACEHOLDER}, the prompt holds {placeholders}")
    if image_problem:
        problems.append(image_problem)
    reward = row.get("reward_model") or {}
    if reward.get("style") != "rule":
        problems.append(f"reward_model.style must be 'rule', got {describe(reward.get('style'))}")
    extra = row.get("extra_info") or {}
    split, stage = extra.get("split"), extra.get("stage")
    if not isinstance(split, str) or split not in SPLITS:
        problems.append(f"extra_info.split must be one of {list(SPLITS)}, got {describe(split)}")
    if not isinstance(stage, str) or stage not in STAGES:
        problems.append(f"extra_info.stage must be one of {list(STAGES)}, got {describe(stage)}")
    else:
        problem = _ground_truth_problem(reward.get("ground_truth"), stage)
        if problem:
            problems.append(problem)
    return problems


def _iter_parquet_groups(parquet: pq.ParquetFile) -> Iterator[list[dict[str, Any]]]:
    """The rows of the schema columns, one row group at a time."""
    columns = [field.name for field in VERL_SCHEMA]
    for group in range(parquet.num_row_groups):
        yield parquet.read_row_group(group, columns=columns).to_pylist()


def _image_name(source: object) -> str:
    """How a message names an image: ``image bytes`` or ``image '<path>'``."""
    return "image bytes" if isinstance(source, bytes) else f"image {describe(source)}"


def _decoded_problems(sources: list[tuple[object, str | None]], name: Callable[[object], str]) -> list[str | None]:
    """Per ``(image, problem)`` entry: ``problem``, or else the decode problem of ``image`` after ``name(image)``;
    the images are decoded on a thread pool."""
    to_decode = [index for index, (_, problem) in enumerate(sources) if problem is None]
    decoded = image_problems([sources[index][0] for index in to_decode])
    problems: list[str | None] = [problem for _, problem in sources]
    for index, problem in zip(to_decode, decoded):
        if problem:
            problems[index] = f"{name(sources[index][0])} {problem}"
    return problems


def validate_verl_parquet(path: str | os.PathLike[str], *, progress: bool = True) -> int:
    """Check a verl parquet file written by :func:`to_verl_parquet` (or by hand) row by row.

    Checks the column types against :data:`VERL_SCHEMA`, and per row: one user message whose text holds exactly one
    ``<image>``; one image whose bytes decode completely (:func:`skinflow.data.records.image_problem`);
    ``reward_model.style == "rule"``; a ground truth that parses as the JSON target of ``extra_info.stage``;
    ``extra_info.split`` in train/val/test; ``extra_info.index`` unique.

    Args:
        path: the parquet file.
        progress: show a progress bar over the rows.

    Returns:
        the number of rows.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ExportValidationError: one line per problem (``<path> row 7: ...``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: parquet file {str(path)!r} does not exist")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise ExportValidationError(
            f"{path} is not a verl parquet file", [f"{path}: not a parquet file ({error})"]
        ) from error
    schema_problems = _verl_schema_problems(parquet.schema_arrow)
    if schema_problems:
        raise ExportValidationError(
            f"{path} does not have verl's multimodal schema", [f"{path}: {p}" for p in schema_problems]
        )
    errors = []
    seen_index: dict[int, int] = {}
    number = 0
    groups = track(
        _iter_parquet_groups(parquet),
        description="Validating verl parquet",
        total=parquet.num_row_groups,
        disable=not progress,
        console=Console(stderr=True),
    )
    try:
        for rows in groups:
            images = _decoded_problems([_verl_image_bytes(row) for row in rows], _image_name)
            for row, image_problem in zip(rows, images):
                problems = _verl_row_problems(row, image_problem)
                index = (row.get("extra_info") or {}).get("index")
                if index in seen_index:
                    problems.append(f"extra_info.index {index} repeats row {seen_index[index]}")
                elif index is not None:
                    seen_index[index] = number
                errors.extend(f"{path} row {number}: {problem}" for problem in problems)
                number += 1
    except (pa.ArrowException, OSError) as error:  # a corrupt row group
        errors.append(f"{path}: row group after row {number} cannot be read ({error})")
    if errors:
        raise ExportValidationError(f"{len(errors)} problems in {path}", errors)
    return parquet.metadata.num_rows


def _trl_image_source(row: Mapping[str, Any]) -> tuple[object, str | None]:
    """The row's one image to decode (bytes, else its file path), or ``(None, problem)``."""
    images = _dicts(row.get("images") or [])
    if images is None:
        return None, "images must be a list of images"
    if len(images) != 1:
        return None, f"images must hold one image, got {len(images)}"
    data, path = images[0].get("bytes"), images[0].get("path")
    if isinstance(data, bytes) and data:
        return data, None
    if isinstance(path, str) and path:
        return path, None
    return None, f"image has no bytes and no file ({describe(path)})"


def _trl_row_problems(row: Mapping[str, Any], image_problem: str | None) -> list[str]:
    """Problems of one TRL row (as read from arrow); ``image_problem``: its image's, if any. Never raises."""
    problems = []
    messages = _dicts(row.get("prompt") or [])
    users = [message for message in messages or [] if message.get("role") == "user"]
    if messages is None or len(users) != 1:
        problems.append(f"prompt must hold one user message, got {len(users) if messages is not None else 'none'}")
    else:
        parts = _dicts(users[0].get("content") or []) or []
        image_parts = [part for part in parts if part.get("type") == "image"]
        text_parts = [part for part in parts if part.get("type") == "text" and isinstance(part.get("text"), str)]
        if len(image_parts) != 1 or not any(part["text"] for part in text_parts):
            problems.append(
                f"the user content must hold one image part and a text part, got {describe(users[0].get('content'))}"
            )
    if image_problem:
        problems.append(image_problem)
    split, label, stage = row.get("split"), row.get("label"), row.get("stage")
    if not isinstance(split, str) or split not in SPLITS:
        problems.append(f"split must be one of {list(SPLITS)}, got {describe(split)}")
    if not isinstance(label, str) or label not in _LABEL_SET:
        problems.append(f"label {describe(label)} is not a Fitzpatrick17k label")
    if not isinstance(stage, str) or stage not in STAGES:
        problems.append(f"stage must be one of {list(STAGES)}, got {describe(stage)}")
    else:
        problem = _ground_truth_problem(row.get("ground_truth"), stage)
        if problem:
            problems.append(problem)
    return problems


def validate_trl_dataset(dataset: datasets.Dataset) -> int:
    """Check a dataset built by :func:`to_trl_dataset` (or by hand) for TRL's ``GRPOTrainer``.

    Checks that the columns :data:`TRL_COLUMNS` exist, that ``images`` is a list of ``datasets.Image``, and per row:
    one user message with one image part and a text part; one image (bytes or a file) that decodes completely
    (:func:`skinflow.data.records.image_problem`); ``split``, ``label`` and ``stage`` valid; a ground truth that
    parses as the JSON target of ``stage``.

    Args:
        dataset: a ``datasets.Dataset``.

    Returns:
        the number of rows.

    Raises:
        ArgumentTypeError: ``dataset`` is not a ``datasets.Dataset`` (a ``TypeError`` and a ``ValueError``).
        ExportValidationError: one line per problem (``row 7: ...``).
    """
    from datasets import Dataset
    from datasets import Image as ImageFeature

    if not isinstance(dataset, Dataset):
        raise ArgumentTypeError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}")
    missing = [name for name in TRL_COLUMNS if name not in dataset.column_names]
    if missing:
        raise ExportValidationError("the dataset lacks TRL columns", [f"missing column {name!r}" for name in missing])
    images_feature = dataset.features["images"]
    inner = getattr(images_feature, "feature", None)
    if inner is None and isinstance(images_feature, list) and len(images_feature) == 1:
        inner = images_feature[0]
    if not isinstance(inner, ImageFeature):
        raise ExportValidationError(
            "the dataset's images are not images", [f"column 'images' has feature {images_feature}"]
        )
    errors = []
    undecoded = dataset.select_columns(list(TRL_COLUMNS)).with_format("arrow")
    for start in range(0, len(undecoded), ROW_GROUP_SIZE):
        rows = undecoded[start : start + ROW_GROUP_SIZE].to_pylist()
        images = _decoded_problems([_trl_image_source(row) for row in rows], _image_name)
        for number, (row, image_problem) in enumerate(zip(rows, images), start=start):
            errors.extend(f"row {number}: {problem}" for problem in _trl_row_problems(row, image_problem))
    if errors:
        raise ExportValidationError(f"{len(errors)} problems in the TRL dataset", errors)
    return len(dataset)
