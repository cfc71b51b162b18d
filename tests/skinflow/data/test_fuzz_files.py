"""Fuzz tests (hypothesis) of everything in the data layer that reads untrusted text or files: JSONL loading, record
validation, image decoding and the verl / TRL export validators.

Property everywhere: the call either succeeds with its documented return type or raises its documented error
(``RecordError`` / ``ExportValidationError``, both ``ValueError``; ``ArgumentTypeError`` for a non-sequence), never
anything else (no RecursionError, TypeError, KeyError, UnicodeDecodeError, ...), and it returns in bounded time.
"""

import io
import json
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from skinflow.data import export
from skinflow.data.export import (
    TRL_COLUMNS,
    VERL_SCHEMA,
    ExportValidationError,
    validate_trl_dataset,
    validate_verl_parquet,
)
from skinflow.data.records import (
    JSONL_REQUIRED_FIELDS,
    ArgumentTypeError,
    RecordError,
    image_problem,
    load_jsonl,
    record_problems,
    validate_records,
)
from skinflow.formats import CAPTION_FIELDS
from skinflow.taxonomy import LABELS

TIME_LIMIT_S = 10.0


def fuzz(examples: int) -> settings:
    """Hypothesis settings of these tests: ``examples`` examples, no per-example deadline (``_timed`` bounds time)."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


def _noisy_image(fmt: str, size: int = 24) -> bytes:
    pixels = np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


PNG, JPEG = _noisy_image("PNG"), _noisy_image("JPEG")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with one good image, one truncated image and a text file named .jpg (referenced by fuzzed lines)."""
    root = tmp_path_factory.mktemp("fuzz_files")
    (root / "good.png").write_bytes(PNG)
    (root / "cut.jpg").write_bytes(JPEG[: len(JPEG) * 3 // 4])
    (root / "text.jpg").write_text("not an image\n")
    return root


def _timed(call, *args, **kwargs):
    """``call(*args, **kwargs)`` (its result or exception), checking that it returns within ``TIME_LIMIT_S``."""
    start = time.perf_counter()
    try:
        return call(*args, **kwargs)
    finally:
        assert time.perf_counter() - start < TIME_LIMIT_S, f"{call.__name__} took too long"


# ---- strategies ----

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
image_paths = st.sampled_from(
    ["good.png", "cut.jpg", "text.jpg", "absent.png", "a\x00b.png", "\ud800.png", "x" * 5000 + ".png", "", "/", "."]
) | st.text(max_size=30)
near_values = {
    "id": st.text(max_size=12) | json_values,
    "image_path": image_paths | json_values,
    "label": st.sampled_from(LABELS[:5]) | st.text(max_size=20) | json_values,
    "split": st.sampled_from(["train", "val", "test", "dev"]) | json_values,
    "skin_type": st.integers(-1, 8) | json_values,
    "source": st.text(max_size=10) | json_values,
    "caption": st.dictionaries(
        st.sampled_from([*CAPTION_FIELDS, "colour"]), st.text(max_size=10) | st.lists(st.text(max_size=5)) | json_values
    )
    | json_values,
    "image": json_values,
}
record_like = st.fixed_dictionaries({}, optional={key: value for key, value in near_values.items()})


def _deep(depth: int, opener: str) -> str:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return opener * depth + "1" + closer * depth


deep_lines = st.builds(_deep, st.integers(1, 60_000), st.sampled_from(["[", '{"a":']))
json_lines = st.one_of(
    record_like.map(lambda value: json.dumps(value, ensure_ascii=False)),
    json_values.map(json.dumps),
    deep_lines,
    st.text(max_size=80),
)
raw_files = st.one_of(
    st.binary(max_size=600),
    st.lists(json_lines, max_size=6).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    st.lists(json_lines, max_size=4).map(lambda lines: b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8", "replace")),
    st.lists(json_lines, max_size=4).map(lambda lines: "\n".join(lines).encode("latin-1", "replace")),
    st.binary(max_size=300).map(lambda data: data.decode("utf-8", "replace").encode("utf-8")),  # lenient decode
)

_GOOD_LINE = {"id": "a", "image_path": "good.png", "label": "melanoma", "split": "train"}
_MEGABYTE = 1_000_000


# ---- JSONL ----


@fuzz(300)
@given(data=raw_files, check_files=st.booleans())
@example(data=b"\xef\xbb\xbf" + json.dumps(_GOOD_LINE).encode(), check_files=True)
@example(data=json.dumps(_GOOD_LINE | {"label": "x" * _MEGABYTE}).encode(), check_files=True)
@example(data=b"[" * _MEGABYTE, check_files=True)
@example(data=json.dumps({"id": "z" * _MEGABYTE, "note": ["y"] * 100_000}).encode(), check_files=False)
@example(data=b'{"id": "caf\xe9"}\n\xff\xfe\x00', check_files=True)
@example(data=("[" * 50_000 + "]" * 50_000).encode(), check_files=True)
@example(data=b"1" * 5000, check_files=True)
@example(data=b'{"id": NaN, "a": Infinity}', check_files=True)
def test_load_jsonl_never_raises_anything_else(workdir, data, check_files):
    path = workdir / "fuzz.jsonl"
    path.write_bytes(data)
    try:
        records = _timed(load_jsonl, path, check_files=check_files, progress=False)
    except RecordError as error:
        assert error.errors and all(isinstance(line, str) and line.startswith(f"{path}:") for line in error.errors)
        assert len(str(error)) < 60 * 1000, "the message shows at most 50 bounded lines"
        return
    assert isinstance(records, list)
    for record in records:
        assert isinstance(record, dict) and set(JSONL_REQUIRED_FIELDS) <= set(record)
        assert list(record["caption"]) == list(CAPTION_FIELDS)
        if check_files:
            assert record["image_path"] == str(workdir / "good.png")


def test_load_jsonl_accepts_the_good_line_with_a_bom(workdir):
    path = workdir / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_GOOD_LINE).encode())
    assert [record["id"] for record in load_jsonl(path, progress=False)] == ["a"]


# ---- record validation ----


@fuzz(200)
@given(record=record_like | json_values)
def test_record_problems_never_raise(workdir, record):
    if isinstance(record, dict) and isinstance(record.get("image_path"), str) and "\x00" not in record["image_path"]:
        record = record | {"image_path": str(workdir / record["image_path"])}
    problems = _timed(record_problems, record, check_images=True)
    assert isinstance(problems, list) and all(isinstance(problem, str) and len(problem) < 2000 for problem in problems)


@fuzz(150)
@given(records=st.lists(record_like, max_size=5) | json_values, check_images=st.booleans())
@example(
    records=[{"id": "a" * _MEGABYTE, "label": "b" * _MEGABYTE, "caption": {"c" * _MEGABYTE: 1}}], check_images=True
)
@example(records=[{"id": _deep(5000, "[")}], check_images=False)
def test_validate_records_raises_only_record_errors(records, check_images):
    try:
        assert _timed(validate_records, records, check_images=check_images) is None
    except RecordError as error:
        assert all(isinstance(line, str) and line.startswith("record ") for line in error.errors)
        assert len(str(error)) < 60 * 1000
    except ArgumentTypeError:
        assert not isinstance(records, list)


# ---- images ----

image_bytes = st.one_of(
    st.binary(max_size=400),
    st.integers(0, len(PNG)).map(lambda n: PNG[:n]),
    st.integers(0, len(JPEG)).map(lambda n: JPEG[:n]),
    st.tuples(st.sampled_from([PNG, JPEG]), st.integers(0, 10**6), st.integers(0, 255)).map(
        lambda t: t[0][: t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1 :]
    ),
)


@fuzz(200)
@given(data=image_bytes)
def test_image_problem_never_raises(data):
    problem = _timed(image_problem, data)
    assert problem is None or isinstance(problem, str)


# ---- export validators ----

texts = st.none() | st.text(max_size=30)
ground_truths = st.one_of(
    texts,
    json_values.map(json.dumps),
    deep_lines,
    st.fixed_dictionaries(
        {"stage": st.sampled_from(["caption", "diagnosis"]) | json_values},
        optional={
            "label": st.sampled_from(LABELS[:3]) | json_values,
            "caption": st.dictionaries(st.sampled_from(CAPTION_FIELDS), json_values) | json_values,
            "k": st.integers(-2, 10) | json_values,
            "canonical": json_values,
        },
    ).map(json.dumps),
)
verl_rows = st.fixed_dictionaries(
    {
        "data_source": texts,
        "prompt": st.none()
        | st.lists(
            st.none() | st.fixed_dictionaries({"role": texts, "content": texts | st.just("<image>x")}), max_size=3
        ),
        "images": st.none()
        | st.lists(st.none() | st.fixed_dictionaries({"bytes": st.none() | image_bytes, "path": texts}), max_size=2),
        "ability": texts,
        "reward_model": st.none()
        | st.fixed_dictionaries({"style": texts | st.just("rule"), "ground_truth": ground_truths}),
        "extra_info": st.none()
        | st.fixed_dictionaries(
            {
                "index": st.none() | st.integers(-(2**63), 2**63 - 1),
                "split": texts | st.sampled_from(["train", "val"]),
                "stage": texts | st.sampled_from(["caption", "diagnosis"]),
                "id": texts,
                "source": texts,
                "label": texts,
                "skin_type": st.none() | st.integers(-(2**63), 2**63 - 1),
                "k": st.none() | st.integers(-(2**63), 2**63 - 1),
            }
        ),
    }
)


@fuzz(60)
@given(rows=st.lists(verl_rows, max_size=4))
def test_validate_verl_parquet_raises_only_export_validation_errors(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("verl", numbered=True) / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=VERL_SCHEMA), path)
    try:
        assert _timed(validate_verl_parquet, path, progress=False) == len(rows)
    except ExportValidationError as error:
        assert all(isinstance(line, str) and len(line) < 2000 for line in error.errors)


@fuzz(40)
@given(data=st.binary(max_size=300))
@example(data=b"PAR1" + b"\x00" * 64 + b"PAR1")
def test_validate_verl_parquet_on_arbitrary_files(workdir, data):
    path = workdir / "arbitrary.parquet"
    path.write_bytes(data)
    with pytest.raises(ExportValidationError):
        _timed(validate_verl_parquet, path, progress=False)


arrow_paths = image_paths.filter(lambda path: "\ud800" not in path)  # arrow strings are UTF-8: no lone surrogates
trl_rows = st.fixed_dictionaries(
    {
        "prompt": st.lists(
            st.fixed_dictionaries(
                {
                    "role": texts | st.just("user"),
                    "content": st.lists(
                        st.fixed_dictionaries({"type": texts | st.sampled_from(["image", "text"]), "text": texts}),
                        max_size=3,
                    ),
                }
            ),
            max_size=2,
        ),
        "images": st.lists(
            st.fixed_dictionaries({"bytes": st.none() | image_bytes, "path": st.none() | arrow_paths}), max_size=2
        ),
        "ground_truth": ground_truths,
        "stage": texts | st.sampled_from(["caption", "diagnosis"]),
        "data_source": texts,
        "id": texts,
        "split": texts | st.just("train"),
        "label": texts | st.sampled_from(LABELS[:3]),
        "skin_type": st.none() | st.integers(-5, 10),
    }
)


@fuzz(60)
@given(rows=st.lists(trl_rows, min_size=1, max_size=3))
def test_validate_trl_dataset_raises_only_export_validation_errors(rows):
    columns = {name: [row[name] for row in rows] for name in TRL_COLUMNS}
    dataset = datasets.Dataset.from_dict(columns, features=export._trl_features())  # images stay undecoded
    try:
        assert _timed(validate_trl_dataset, dataset) == len(rows)
    except ExportValidationError as error:
        assert all(isinstance(line, str) and len(line) < 2000 for line in error.errors)


@fuzz(300)
@given(text=ground_truths | json_values, stage=st.sampled_from(["caption", "diagnosis"]) | json_values)
@example(text="[" * _MEGABYTE, stage="diagnosis")
@example(
    text=json.dumps({"stage": "caption", "caption": dict.fromkeys(CAPTION_FIELDS, "x" * _MEGABYTE)}), stage="caption"
)
def test_ground_truth_check_never_raises(text, stage):
    problem = _timed(export._ground_truth_problem, text, stage)
    assert problem is None or (isinstance(problem, str) and len(problem) < 1000)
