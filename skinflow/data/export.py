"""Exports of records for GRPO training: verl's multimodal parquet and TRL's vision dataset, with validators.

Both exports hold, per record, the stage's user prompt with one image and a JSON ground truth the rewards read:

- caption stage: ``{"stage": "caption", "caption": {field: value, ...}}`` (all twelve ``CAPTION_FIELDS``);
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
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from rich.console import Console
from rich.progress import track

from skinflow.data.records import SPLITS, RecordError, atomic_write, validate_records
from skinflow.formats import CAPTION_FIELDS, CAPTION_PROMPT, DEFAULT_K, diagnosis_prompt
from skinflow.taxonomy import LABELS, canonical, nine_group, three_group

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


def _check_stage(stage: object, k: object) -> None:
    """Reject an unknown stage or a bad ``k`` with errors naming the argument."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {list(STAGES)}, got {stage!r}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")


def prompt_text(stage: str, k: int = DEFAULT_K) -> str:
    """The user instruction of ``stage``: ``formats.CAPTION_PROMPT`` or ``formats.diagnosis_prompt(k)``."""
    _check_stage(stage, k)
    return CAPTION_PROMPT if stage == "caption" else diagnosis_prompt(k)


def ground_truth(record: Mapping[str, Any], stage: str, k: int = DEFAULT_K) -> dict[str, Any]:
    """The reward target of one record (see the module docstring for both layouts).

    Args:
        record: a valid record.
        stage: ``"caption"`` or ``"diagnosis"``.
        k: the number of ranked diagnoses asked for (diagnosis stage).

    Returns:
        ``{"stage": "caption", "caption": {...}}`` or
        ``{"stage": "diagnosis", "label", "canonical", "nine_group", "three_group", "k"}``.
    """
    _check_stage(stage, k)
    if stage == "caption":
        return {"stage": "caption", "caption": {field: record["caption"][field] for field in CAPTION_FIELDS}}
    label = record["label"]
    return {
        "stage": "diagnosis",
        "label": label,
        "canonical": canonical(label),
        "nine_group": nine_group(label),
        "three_group": three_group(label),
        "k": k,
    }


def _check_records(records: Sequence[Mapping[str, Any]], stage: str) -> None:
    """Contract check, plus (caption stage) a non-empty caption target for every record."""
    validate_records(records)
    if stage != "caption":
        return
    empty = [
        f"record {index} (id {record['id']!r}): caption is empty in all twelve fields"
        for index, record in enumerate(records)
        if not any(record["caption"].values())
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
    """``({"bytes": ..., "path": ...}, problem)`` for the record's image: PNG for a PIL image, file bytes otherwise."""
    image = record.get("image")
    if image is not None:
        return {"bytes": _png_bytes(image), "path": None}, None
    path = Path(record["image_path"])
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as opened:
            opened.verify()
    except Exception as error:  # any read/format failure is reported per record
        problem = f"image {path} is not a readable image ({type(error).__name__}: {error})"
        return {"bytes": b"", "path": path.name}, problem
    return {"bytes": data, "path": path.name}, None


def _check_data_source(data_source: object) -> None:
    if data_source is not None and (not isinstance(data_source, str) or not data_source):
        raise ValueError(f"data_source must be None or a non-empty string, got {data_source!r}")


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
        k: ranked diagnoses asked for in the diagnosis prompt.
        data_source: the ``data_source`` of every row; ``None`` uses ``"skinflow/<record source>"``
            (verl reports validation metrics per data source).
        progress: show a progress bar while images are read and encoded.

    Returns:
        the path written: ``len(records)`` rows in :data:`VERL_SCHEMA`, row ``i`` with ``extra_info.index == i``.

    Raises:
        RecordError: records that break the contract, lack a caption target, or whose image file does not read.
    """
    _check_stage(stage, k)
    _check_data_source(data_source)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: directory {path.parent} does not exist")
    _check_records(records, stage)
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
                    errors.append(f"record {index} (id {record['id']!r}): {problem}")
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
        k: ranked diagnoses asked for in the diagnosis prompt.
        data_source: the ``data_source`` column; ``None`` uses ``"skinflow/<record source>"``.
        progress: show a progress bar while in-memory images are encoded.

    Returns:
        a dataset with the columns :data:`TRL_COLUMNS`: ``prompt`` = ``[{"role": "user", "content":
        [{"type": "image", "text": None}, {"type": "text", "text": <prompt>}]}]``, ``images`` = ``[image]``
        (in-memory images stored as PNG; image files referenced by path and decoded on access), ``ground_truth``
        (JSON string, see :func:`ground_truth`), ``stage``, ``data_source``, ``id``, ``split``, ``label``,
        ``skin_type`` (int or None). Row order is record order.
    """
    from datasets import Dataset

    _check_stage(stage, k)
    _check_data_source(data_source)
    _check_records(records, stage)
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


def _ground_truth_problem(text: object, stage: object) -> str | None:
    """Why a ground-truth JSON string is not a valid target of ``stage``, or ``None``."""
    if not isinstance(text, str):
        return f"ground_truth must be a JSON string, got {type(text).__name__}"
    try:
        target = json.loads(text)
    except json.JSONDecodeError as error:
        return f"ground_truth is not valid JSON ({error.msg})"
    if not isinstance(target, dict) or target.get("stage") not in STAGES:
        return f"ground_truth must be an object with 'stage' in {list(STAGES)}, got {text[:80]!r}"
    if target["stage"] != stage:
        return f"ground_truth stage {target['stage']!r} differs from the row's stage {stage!r}"
    if stage == "caption":
        caption = target.get("caption")
        if not isinstance(caption, dict) or set(caption) != set(CAPTION_FIELDS):
            return "ground_truth.caption must hold exactly the twelve caption fields"
        if not all(isinstance(value, str) for value in caption.values()) or not any(caption.values()):
            return "ground_truth.caption values must be strings, not all empty"
        return None
    label = target.get("label")
    if label not in _LABEL_SET:
        return f"ground_truth.label {label!r} is not a Fitzpatrick17k label"
    expected = {"canonical": canonical(label), "nine_group": nine_group(label), "three_group": three_group(label)}
    wrong = [key for key, value in expected.items() if target.get(key) != value]
    if wrong:
        return f"ground_truth {wrong} do not match the label {label!r}"
    if not isinstance(target.get("k"), int) or target["k"] < 1:
        return f"ground_truth.k must be a positive int, got {target.get('k')!r}"
    return None


def _image_bytes_problem(data: object) -> str | None:
    """Why embedded image bytes are not a readable image, or ``None``."""
    if not isinstance(data, bytes) or not data:
        return "image bytes are empty"
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.verify()
    except Exception as error:  # any format failure is a schema problem of this row
        return f"image bytes are not a readable image ({type(error).__name__})"
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


def _verl_row_problems(row: Mapping[str, Any]) -> list[str]:
    """Problems of one verl row (as read by pyarrow's ``to_pylist``)."""
    problems = []
    if not row["data_source"]:
        problems.append("data_source is empty")
    messages = row["prompt"] or []
    user_texts = [message["content"] or "" for message in messages if message["role"] == "user"]
    placeholders = sum(message["content"].count(IMAGE_PLACEHOLDER) for message in messages if message["content"])
    if len(user_texts) != 1:
        problems.append(f"prompt must hold one user message, got {len(user_texts)}")
    if placeholders != 1 or (user_texts and user_texts[0].count(IMAGE_PLACEHOLDER) != 1):
        problems.append(f"the user text must hold exactly one {IMAGE_PLACEHOLDER}, the prompt holds {placeholders}")
    images = row["images"] or []
    if len(images) != 1:
        problems.append(f"images must hold one image, got {len(images)}")
    else:
        problem = _image_bytes_problem(images[0]["bytes"])
        if problem:
            problems.append(problem)
    reward = row["reward_model"] or {}
    if reward.get("style") != "rule":
        problems.append(f"reward_model.style must be 'rule', got {reward.get('style')!r}")
    extra = row["extra_info"] or {}
    if extra.get("split") not in SPLITS:
        problems.append(f"extra_info.split must be one of {list(SPLITS)}, got {extra.get('split')!r}")
    if extra.get("stage") not in STAGES:
        problems.append(f"extra_info.stage must be one of {list(STAGES)}, got {extra.get('stage')!r}")
    else:
        problem = _ground_truth_problem(reward.get("ground_truth"), extra["stage"])
        if problem:
            problems.append(problem)
    return problems


def _iter_parquet_rows(parquet: pq.ParquetFile) -> Iterator[dict[str, Any]]:
    """The rows of the schema columns, one row group at a time."""
    columns = [field.name for field in VERL_SCHEMA]
    for group in range(parquet.num_row_groups):
        yield from parquet.read_row_group(group, columns=columns).to_pylist()


def validate_verl_parquet(path: str | os.PathLike[str], *, progress: bool = True) -> int:
    """Check a verl parquet file written by :func:`to_verl_parquet` (or by hand) row by row.

    Checks the column types against :data:`VERL_SCHEMA`, and per row: one user message whose text holds exactly one
    ``<image>``; one image whose bytes decode; ``reward_model.style == "rule"``; a ground truth that parses as the
    JSON target of ``extra_info.stage``; ``extra_info.split`` in train/val/test; ``extra_info.index`` unique.

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
        raise FileNotFoundError(f"path: parquet file {path} does not exist")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
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
    rows = track(
        enumerate(_iter_parquet_rows(parquet)),
        description="Validating verl parquet",
        total=parquet.metadata.num_rows,
        disable=not progress,
        console=Console(stderr=True),
    )
    for number, row in rows:
        problems = _verl_row_problems(row)
        index = (row["extra_info"] or {}).get("index")
        if index in seen_index:
            problems.append(f"extra_info.index {index} repeats row {seen_index[index]}")
        elif index is not None:
            seen_index[index] = number
        errors.extend(f"{path} row {number}: {problem}" for problem in problems)
    if errors:
        raise ExportValidationError(f"{len(errors)} problems in {path}", errors)
    return parquet.metadata.num_rows


def _trl_row_problems(row: Mapping[str, Any]) -> list[str]:
    """Problems of one TRL row (images not decoded)."""
    problems = []
    messages = row["prompt"] or []
    users = [message for message in messages if message["role"] == "user"]
    if len(users) != 1:
        problems.append(f"prompt must hold one user message, got {len(users)}")
    else:
        parts = users[0]["content"] or []
        image_parts = [part for part in parts if part["type"] == "image"]
        text_parts = [part for part in parts if part["type"] == "text" and part["text"]]
        if len(image_parts) != 1 or not text_parts:
            problems.append(f"the user content must hold one image part and a text part, got {parts!r:.120}")
    images = row["images"] or []
    if len(images) != 1:
        problems.append(f"images must hold one image, got {len(images)}")
    elif not images[0].get("bytes") and not (images[0].get("path") and os.path.isfile(images[0]["path"])):
        problems.append(f"image has no bytes and no existing file ({images[0].get('path')!r})")
    if row["split"] not in SPLITS:
        problems.append(f"split must be one of {list(SPLITS)}, got {row['split']!r}")
    if row["label"] not in _LABEL_SET:
        problems.append(f"label {row['label']!r} is not a Fitzpatrick17k label")
    if row["stage"] not in STAGES:
        problems.append(f"stage must be one of {list(STAGES)}, got {row['stage']!r}")
    else:
        problem = _ground_truth_problem(row["ground_truth"], row["stage"])
        if problem:
            problems.append(problem)
    return problems


def validate_trl_dataset(dataset: datasets.Dataset) -> int:
    """Check a dataset built by :func:`to_trl_dataset` (or by hand) for TRL's ``GRPOTrainer``.

    Checks that the columns :data:`TRL_COLUMNS` exist, that ``images`` is a list of ``datasets.Image``, and per row:
    one user message with one image part and a text part; one image with bytes or an existing file; ``split``,
    ``label`` and ``stage`` valid; a ground truth that parses as the JSON target of ``stage``. Images are not decoded.

    Args:
        dataset: a ``datasets.Dataset``.

    Returns:
        the number of rows.

    Raises:
        TypeError: ``dataset`` is not a ``datasets.Dataset``.
        ExportValidationError: one line per problem (``row 7: ...``).
    """
    from datasets import Dataset
    from datasets import Image as ImageFeature

    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}")
    missing = [name for name in TRL_COLUMNS if name not in dataset.column_names]
    if missing:
        raise ExportValidationError("the dataset lacks TRL columns", [f"missing column {name!r}" for name in missing])
    images_feature = dataset.features["images"]
    inner = getattr(images_feature, "feature", images_feature[0] if isinstance(images_feature, list) else None)
    if not isinstance(inner, ImageFeature):
        raise ExportValidationError(
            "the dataset's images are not images", [f"column 'images' has feature {images_feature}"]
        )
    errors = []
    undecoded = dataset.select_columns(list(TRL_COLUMNS)).with_format("arrow")
    for start in range(0, len(undecoded), ROW_GROUP_SIZE):
        rows = undecoded[start : start + ROW_GROUP_SIZE].to_pylist()
        for number, row in enumerate(rows, start=start):
            errors.extend(f"row {number}: {problem}" for problem in _trl_row_problems(row))
    if errors:
        raise ExportValidationError(f"{len(errors)} problems in the TRL dataset", errors)
    return len(dataset)
