"""Exports: verl's multimodal parquet (read back with pyarrow and datasets) and TRL's vision dataset, and the
validators of both catching broken inputs."""

import io
import json
import os

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from trl.data_utils import is_conversational, prepare_multimodal_messages

from skinflow.data.export import (
    IMAGE_PLACEHOLDER,
    TRL_COLUMNS,
    VERL_SCHEMA,
    ExportValidationError,
    ground_truth,
    save_trl_dataset,
    to_trl_dataset,
    to_verl_parquet,
    validate_trl_dataset,
    validate_verl_parquet,
)
from skinflow.data.records import RecordError, empty_caption
from skinflow.formats import CAPTION_FIELDS, CAPTION_PROMPT, diagnosis_prompt


def _memory_record(index, **changes):
    record = {
        "id": f"syn-{index}",
        "image": Image.new("RGB", (8, 8), (30 * index, 90, 200)),
        "caption": empty_caption() | {"color": "red", "surface": "scaly"},
        "label": "psoriasis",
        "skin_type": 1 + index % 6,
        "split": "train",
        "source": "synthetic",
    }
    return record | changes


@pytest.fixture
def records(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), (5, 6, 7)).save(photo, format="JPEG")
    path_record = {
        "id": "f17k-1",
        "image_path": str(photo),
        "caption": empty_caption() | {"lesion_type": "nodule"},
        "label": "malignant melanoma",
        "skin_type": None,
        "split": "test",
        "source": "fitzpatrick17k",
    }
    return [_memory_record(0), _memory_record(1, split="val"), path_record]


def test_ground_truth_layouts(records):
    assert ground_truth(records[0], "caption") == {"stage": "caption", "caption": records[0]["caption"]}
    assert ground_truth(records[2], "diagnosis", k=3) == {
        "stage": "diagnosis",
        "label": "malignant melanoma",
        "canonical": "melanoma",
        "nine_group": "malignant melanoma",
        "three_group": "malignant",
        "k": 3,
    }
    with pytest.raises(ValueError, match="stage must be one of"):
        ground_truth(records[0], "captions")
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        ground_truth(records[0], "diagnosis", k=0)


@pytest.mark.parametrize("stage", ["caption", "diagnosis"])
def test_verl_parquet_schema_and_rows(tmp_path, records, stage):
    path = to_verl_parquet(records, tmp_path / f"{stage}.parquet", stage=stage, k=4, progress=False)
    table = pq.read_table(path)
    assert table.schema.names == ["data_source", "prompt", "images", "ability", "reward_model", "extra_info"]
    assert table.schema.equals(VERL_SCHEMA)
    rows = table.to_pylist()
    assert len(rows) == len(records)
    prompt = CAPTION_PROMPT if stage == "caption" else diagnosis_prompt(4)
    for index, (row, record) in enumerate(zip(rows, records)):
        [message] = row["prompt"]
        assert message == {"role": "user", "content": IMAGE_PLACEHOLDER + prompt}
        assert message["content"].count(IMAGE_PLACEHOLDER) == 1
        [image] = row["images"]
        with Image.open(io.BytesIO(image["bytes"])) as decoded:
            assert decoded.size == (8, 8)
        assert row["ability"] == "dermatology"
        assert row["reward_model"]["style"] == "rule"
        target = json.loads(row["reward_model"]["ground_truth"])
        assert target == ground_truth(record, stage, k=4)
        assert row["data_source"] == f"skinflow/{record['source']}"
        assert row["extra_info"] == {
            "index": index,
            "split": record["split"],
            "stage": stage,
            "id": record["id"],
            "source": record["source"],
            "label": record["label"],
            "skin_type": record["skin_type"],
            "k": 4 if stage == "diagnosis" else None,
        }
    with Image.open(io.BytesIO(rows[0]["images"][0]["bytes"])) as decoded:
        assert decoded.format == "PNG" and decoded.tobytes() == records[0]["image"].tobytes()
    assert rows[2]["images"][0] == {"bytes": open(records[2]["image_path"], "rb").read(), "path": "photo.jpg"}
    assert validate_verl_parquet(path, progress=False) == len(records)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_verl_parquet_reads_back_with_datasets_as_verl_does(tmp_path, records):
    path = to_verl_parquet(records, tmp_path / "train.parquet", "diagnosis", data_source="derm", progress=False)
    loaded = datasets.load_dataset("parquet", data_files=str(path))["train"]
    row = loaded[2]
    assert row["data_source"] == "derm"
    assert isinstance(row["images"][0], dict) and isinstance(row["images"][0]["bytes"], bytes)
    assert row["prompt"][0]["content"].startswith(IMAGE_PLACEHOLDER)
    assert isinstance(row["reward_model"]["ground_truth"], str)


def test_verl_parquet_refuses_bad_input(tmp_path, records):
    target = tmp_path / "out.parquet"
    with pytest.raises(RecordError, match="no caption target"):
        to_verl_parquet([*records, _memory_record(5, caption=empty_caption())], target, "caption", progress=False)
    with pytest.raises(RecordError, match="field 'label'"):
        to_verl_parquet([_memory_record(0, label="eczema vulgaris")], target, "diagnosis", progress=False)
    with pytest.raises(ValueError, match="stage must be one of"):
        to_verl_parquet(records, target, "captions", progress=False)
    with pytest.raises(ValueError, match="data_source"):
        to_verl_parquet(records, target, "caption", data_source="", progress=False)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"no image")
    bad_file = records[2] | {"image_path": str(broken)}
    with pytest.raises(
        RecordError, match="record 1 \\(id 'f17k-1'\\): field 'image_path': image .*broken.jpg' is not an"
    ):
        to_verl_parquet([records[0], bad_file], target, "diagnosis", progress=False)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _write_rows(path, rows, schema=VERL_SCHEMA):
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def test_validate_verl_parquet_catches_broken_rows(tmp_path, records):
    good = pq.read_table(to_verl_parquet(records, tmp_path / "good.parquet", "diagnosis", progress=False)).to_pylist()
    row = good[0]
    two_images = row | {"prompt": [{"role": "user", "content": IMAGE_PLACEHOLDER * 2 + "x"}]}
    no_image = row | {"images": []}
    bad_bytes = row | {"images": [{"bytes": b"garbage", "path": None}]}
    bad_json = row | {"reward_model": {"style": "rule", "ground_truth": "{not json"}}
    wrong_style = row | {"reward_model": {"style": "model", "ground_truth": row["reward_model"]["ground_truth"]}}
    bad_split = row | {"extra_info": row["extra_info"] | {"split": "dev", "index": 6}}
    stage_mismatch = row | {"extra_info": row["extra_info"] | {"stage": "caption", "index": 7}}
    bad_label = row | {
        "reward_model": {"style": "rule", "ground_truth": json.dumps({"stage": "diagnosis", "label": "x"})}
    }
    rows = [row, two_images, no_image, bad_bytes, bad_json, wrong_style, bad_split, stage_mismatch, bad_label]
    for index, broken in enumerate(rows[1:6], start=1):
        broken["extra_info"] = broken["extra_info"] | {"index": index}
    path = _write_rows(tmp_path / "broken.parquet", rows)
    with pytest.raises(ExportValidationError) as caught:
        validate_verl_parquet(path, progress=False)
    messages: dict[int, str] = {}
    for error in caught.value.errors:
        number = int(error.split(" row ")[1].split(":")[0])
        messages[number] = messages.get(number, "") + error
    assert sorted(messages) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert "exactly one <image>" in messages[1]
    assert "images must hold one image, got 0" in messages[2]
    assert "image bytes is not an image file" in messages[3]
    assert "ground_truth: not valid JSON" in messages[4]
    assert "reward_model.style must be 'rule'" in messages[5]
    assert "extra_info.split" in messages[6]
    assert "differs from the row's stage" in messages[7]
    assert "ground_truth: label 'x'" in messages[8]
    assert "extra_info.index 0 repeats row 0" in messages[8]  # row 8 kept row 0's index


def test_validate_verl_parquet_catches_schema_problems(tmp_path, records):
    good = pq.read_table(to_verl_parquet(records, tmp_path / "good.parquet", "caption", progress=False))
    missing = tmp_path / "missing.parquet"
    pq.write_table(good.drop_columns(["reward_model"]), missing)
    with pytest.raises(ExportValidationError, match="missing column 'reward_model'"):
        validate_verl_parquet(missing, progress=False)
    paths = tmp_path / "paths.parquet"
    pq.write_table(good.set_column(2, "images", pa.array([["a.png"]] * len(good))), paths)
    with pytest.raises(ExportValidationError, match="column 'images' has type list<.*: string>, expected"):
        validate_verl_parquet(paths, progress=False)
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("hello")
    with pytest.raises(ExportValidationError, match="not a parquet file"):
        validate_verl_parquet(not_parquet, progress=False)
    with pytest.raises(FileNotFoundError):
        validate_verl_parquet(tmp_path / "absent.parquet", progress=False)


def test_trl_dataset_columns_and_rows(records):
    dataset = to_trl_dataset(records, stage="caption", progress=False)
    assert dataset.column_names == list(TRL_COLUMNS)
    assert isinstance(dataset.features["images"].feature, datasets.Image)
    row = dataset[2]
    [message] = row["prompt"]
    assert message["role"] == "user"
    assert message["content"] == [{"type": "image", "text": None}, {"type": "text", "text": CAPTION_PROMPT}]
    assert [image.size for image in row["images"]] == [(8, 8)]
    assert json.loads(row["ground_truth"]) == {"stage": "caption", "caption": records[2]["caption"]}
    assert (row["stage"], row["id"], row["split"], row["label"], row["skin_type"]) == (
        "caption",
        "f17k-1",
        "test",
        "malignant melanoma",
        None,
    )
    assert dataset[0]["images"][0].tobytes() == records[0]["image"].tobytes()
    assert validate_trl_dataset(dataset) == 3


def test_trl_rows_are_what_grpo_trainer_expects(records):
    dataset = to_trl_dataset(records, "diagnosis", k=3, progress=False)
    row = dataset[0]
    assert is_conversational(row)
    messages = prepare_multimodal_messages(row["prompt"], images=row["images"])
    parts = messages[0]["content"]
    assert [part["type"] for part in parts] == ["image", "text"]
    assert parts[0]["image"] is row["images"][0] and parts[1]["text"] == diagnosis_prompt(3)
    assert set(CAPTION_FIELDS).isdisjoint(json.loads(row["ground_truth"]))


def test_validate_trl_dataset_catches_broken_datasets(records):
    dataset = to_trl_dataset(records, "diagnosis", progress=False)
    with pytest.raises(ExportValidationError, match="missing column 'ground_truth'"):
        validate_trl_dataset(dataset.remove_columns("ground_truth"))

    def damage(row, index):
        if index == 0:
            row["label"] = "eczema vulgaris"
        if index == 1:
            row["ground_truth"] = json.dumps({"stage": "caption", "caption": {}})
        if index == 2:
            row["prompt"] = [{"role": "user", "content": [{"type": "text", "text": "no image"}]}]
        return row

    broken = dataset.map(damage, with_indices=True)
    with pytest.raises(ExportValidationError) as caught:
        validate_trl_dataset(broken)
    errors = caught.value.errors
    assert errors[0].startswith("row 0: label 'eczema vulgaris'")
    assert errors[1].startswith("row 1: ground_truth: stage 'caption' differs")
    assert errors[2].startswith("row 2: the user content must hold one image part")
    with pytest.raises(TypeError, match="datasets.Dataset"):
        validate_trl_dataset([dict(row) for row in dataset])
    with pytest.raises(ValueError, match="datasets.Dataset"):  # an ArgumentTypeError: both
        validate_trl_dataset(None)
    with pytest.raises(RecordError, match="no caption target"):
        to_trl_dataset([_memory_record(0, caption=empty_caption())], "caption", progress=False)


# ---- images are decoded before they are accepted (issue 12) ----


def _noisy(fmt, size=64):
    buffer = io.BytesIO()
    pixels = np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def truncated_jpeg(tmp_path):
    """A JPEG cut at three quarters: Image.verify() accepts it, decoding fails."""
    path = tmp_path / "truncated.jpg"
    data = _noisy("JPEG")
    path.write_bytes(data[: len(data) * 3 // 4])
    with Image.open(path) as opened:
        opened.verify()
    return path


def test_exporters_refuse_images_that_do_not_decode(tmp_path, records, truncated_jpeg):
    text_file = tmp_path / "text.jpg"
    text_file.write_text("not an image\n")
    bad = [records[2] | {"image_path": str(truncated_jpeg)}, records[2] | {"id": "t", "image_path": str(text_file)}]
    target = tmp_path / "out.parquet"
    with pytest.raises(RecordError) as caught:
        to_verl_parquet([records[0], *bad], target, "diagnosis", progress=False)
    assert [error.split(":")[0] for error in caught.value.errors] == ["record 1 (id 'f17k-1')", "record 2 (id 't')"]
    assert "truncated.jpg' cannot be decoded" in caught.value.errors[0]
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(RecordError, match="truncated.jpg' cannot be decoded"):
        to_trl_dataset([records[0], bad[0]], "diagnosis", progress=False)
    with pytest.raises(RecordError, match="truncated.jpg' cannot be decoded"):
        save_trl_dataset([records[0], bad[0]], tmp_path / "trl", "diagnosis", progress=False)
    assert not (tmp_path / "trl").exists()


def test_exporters_refuse_images_over_the_decompression_bomb_limit(tmp_path, records, monkeypatch):
    big = tmp_path / "big.png"
    big.write_bytes(_noisy("PNG", size=64))  # 4,096 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    record = records[2] | {"image_path": str(big)}
    with pytest.raises(RecordError, match="big.png' is over Pillow's decompression-bomb limit"):
        to_verl_parquet([record], tmp_path / "out.parquet", "diagnosis", progress=False)
    with pytest.raises(RecordError, match="big.png' is over Pillow's decompression-bomb limit"):
        to_trl_dataset([record], "diagnosis", progress=False)


def test_validators_decode_the_images(tmp_path, records, truncated_jpeg):
    good = pq.read_table(to_verl_parquet(records, tmp_path / "good.parquet", "diagnosis", progress=False)).to_pylist()
    cut = good[1] | {"images": [{"bytes": truncated_jpeg.read_bytes(), "path": "t.jpg"}]}
    path = _write_rows(tmp_path / "cut.parquet", [good[0], cut])
    with pytest.raises(ExportValidationError) as caught:
        validate_verl_parquet(path, progress=False)
    [error] = caught.value.errors
    assert error.startswith(f"{path} row 1: image bytes cannot be decoded (OSError: image file is truncated")

    dataset = to_trl_dataset(records, "diagnosis", progress=False)
    swapped = truncated_jpeg.with_name("swapped.jpg")
    swapped.write_bytes(open(records[2]["image_path"], "rb").read())
    by_path = to_trl_dataset([records[0], records[2] | {"image_path": str(swapped)}], "diagnosis", progress=False)
    assert validate_trl_dataset(dataset) == 3 and validate_trl_dataset(by_path) == 2
    swapped.write_bytes(truncated_jpeg.read_bytes())  # the file changes after the export: the validator decodes it
    with pytest.raises(ExportValidationError, match="row 1: image '.*swapped.jpg' cannot be decoded"):
        validate_trl_dataset(by_path)
    os.unlink(swapped)
    with pytest.raises(ExportValidationError, match="row 1: image '.*swapped.jpg' does not exist"):
        validate_trl_dataset(by_path)

    def cut_bytes(row, index):
        if index == 0:
            row["images"] = [{"bytes": truncated_jpeg.read_bytes(), "path": None}]
        return row

    broken = dataset.cast_column("images", datasets.Sequence(datasets.Image(decode=False))).map(
        cut_bytes, with_indices=True
    )
    broken = broken.cast_column("images", datasets.Sequence(datasets.Image()))
    with pytest.raises(ExportValidationError, match="row 0: image bytes cannot be decoded"):
        validate_trl_dataset(broken)


def test_validators_survive_hostile_ground_truths(tmp_path, records):
    good = pq.read_table(to_verl_parquet(records, tmp_path / "good.parquet", "diagnosis", progress=False)).to_pylist()
    truths = [
        json.dumps({"stage": "diagnosis", "label": ["melanoma"]}),  # an unhashable label
        "[" * 100_000 + "]" * 100_000,  # deeper than the recursion limit
        "9" * 5000,  # more digits than Python converts
        json.dumps({"stage": ["caption"]}),
        json.dumps(ground_truth(records[0], "diagnosis") | {"k": True}),  # a bool is no k
    ]
    rows = [good[0] | {"reward_model": {"style": "rule", "ground_truth": truth}} for truth in truths]
    for index, row in enumerate(rows):
        row["extra_info"] = row["extra_info"] | {"index": index}
    path = _write_rows(tmp_path / "hostile.parquet", rows)
    with pytest.raises(ExportValidationError) as caught:
        validate_verl_parquet(path, progress=False)
    errors = caught.value.errors
    assert [int(error.split(" row ")[1].split(":")[0]) for error in errors] == [0, 1, 2, 3, 4]
    assert "ground_truth: label ['melanoma'] is not" in errors[0] and "nested too deeply" in errors[1]
    assert "ground_truth: k must be an int >= 1, got True" in errors[4]
    assert max(len(error) for error in errors) < 500


# ---- the TRL export to disk (issue 12) ----


def test_save_trl_dataset_writes_a_loadable_directory(tmp_path, records):
    out = save_trl_dataset(records, tmp_path / "trl", "diagnosis", k=3, progress=False)
    assert out == tmp_path / "trl"
    loaded = datasets.load_from_disk(str(out))
    assert loaded.column_names == list(TRL_COLUMNS) and validate_trl_dataset(loaded) == 3
    assert json.loads(loaded[0]["ground_truth"])["k"] == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask
    (tmp_path / "empty").mkdir()
    assert (
        validate_trl_dataset(
            datasets.load_from_disk(str(save_trl_dataset(records, tmp_path / "empty", "caption", progress=False)))
        )
        == 3
    )


def test_save_trl_dataset_refuses_before_writing(tmp_path, records):
    out = tmp_path / "trl"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"directory: '{out}' is not empty \\(pass overwrite=True"):
        save_trl_dataset(records, out, "diagnosis", progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    with pytest.raises(FileNotFoundError, match="directory: cannot write '.*missing/trl': parent directory '.*missing' does not exist"):
        save_trl_dataset(records, tmp_path / "missing" / "trl", "diagnosis", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a directory"):
        save_trl_dataset(records, tmp_path / "file", "diagnosis", progress=False)
    for bad_k in (0, -1, True, 1.5, "3", None):
        with pytest.raises(ValueError, match="^k must be an int >= 1"):
            save_trl_dataset(records, tmp_path / "new", "diagnosis", k=bad_k, progress=False)
    with pytest.raises(ValueError, match="overwrite must be a bool"):
        save_trl_dataset(records, tmp_path / "new", "diagnosis", overwrite="yes", progress=False)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "photo.jpg", "trl"]
    save_trl_dataset(records, out, "diagnosis", overwrite=True, progress=False)
    assert "notes.txt" not in os.listdir(out) and validate_trl_dataset(datasets.load_from_disk(str(out))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "photo.jpg", "trl"]


def test_k_is_checked_before_anything_is_written(tmp_path, records):
    target = tmp_path / "out.parquet"
    for bad_k in (0, True, 2.0, np.float64(3)):
        with pytest.raises(ValueError, match="^k must be an int >= 1"):
            to_verl_parquet(records, target, "diagnosis", k=bad_k, progress=False)
        with pytest.raises(ValueError, match="^k must be an int >= 1"):
            to_trl_dataset(records, "diagnosis", k=bad_k, progress=False)
    assert not target.exists()
    to_verl_parquet(records, target, "diagnosis", k=np.int64(4), progress=False)  # numpy ints are ints
    assert json.loads(pq.read_table(target).to_pylist()[0]["reward_model"]["ground_truth"])["k"] == 4
    with pytest.raises(FileNotFoundError, match="path: cannot write '.*missing/out.parquet': directory '.*missing' does not exist"):
        to_verl_parquet(records, tmp_path / "missing" / "out.parquet", "diagnosis", progress=False)


def test_verl_parquet_refuses_a_directory_path(tmp_path, records):
    with pytest.raises(IsADirectoryError, match="path: .* is a directory"):
        to_verl_parquet(records, tmp_path, "diagnosis", progress=False)
