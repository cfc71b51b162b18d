"""The record contract and the JSONL format: round trip, relative paths, atomic writes, one error per bad row."""

import json
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from skinflow.data.records import (
    RecordError,
    atomic_write,
    empty_caption,
    load_jsonl,
    record_problems,
    save_jsonl,
    validate_records,
)
from skinflow.formats import CAPTION_FIELDS


def _caption(**values):
    return empty_caption() | values


def _memory_record(index, **changes):
    image = Image.new("RGB", (8, 8), (10 * index, 200, 30))
    record = {
        "id": f"syn-{index}",
        "image": image,
        "caption": _caption(color="red", lesion_type="plaque"),
        "label": "psoriasis",
        "skin_type": 2,
        "split": "train",
        "source": "synthetic",
        "attributes": {"scale": True},
    }
    return record | changes


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photos" / "lesion.jpg"
    path.parent.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    return path


def _path_record(path, **changes):
    record = {
        "id": "f17k-1",
        "image_path": str(path),
        "caption": empty_caption(),
        "label": "melanoma",
        "skin_type": None,
        "split": "test",
        "source": "fitzpatrick17k",
        "has_caption": False,
    }
    return record | changes


def test_round_trip(tmp_path, photo):
    records = [_memory_record(0), _memory_record(1, split="val"), _path_record(photo)]
    out = save_jsonl(records, tmp_path / "data.jsonl", image_dir=tmp_path / "images", progress=False)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["image_path"] for line in lines] == ["images/syn-0.png", "images/syn-1.png", "photos/lesion.jpg"]
    assert list(lines[0])[:7] == ["id", "image_path", "label", "split", "skin_type", "source", "caption"]
    loaded = load_jsonl(out)
    for original, back in zip(records, loaded):
        assert Path(back["image_path"]).is_absolute() and Path(back["image_path"]).is_file()
        assert "image" not in back
        for key in ("id", "caption", "label", "skin_type", "split", "source"):
            assert back[key] == original[key]
    assert loaded[0]["attributes"] == {"scale": True}
    assert loaded[2]["has_caption"] is False
    with Image.open(loaded[1]["image_path"]) as image:
        assert image.format == "PNG" and image.tobytes() == records[1]["image"].tobytes()
    validate_records(loaded)
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "images").glob(".*.tmp"))


def test_atomic_write_keeps_the_old_file_on_failure_and_uses_normal_permissions(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")

    def fail(file):
        file.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.txt"]
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write(target, lambda file: file.write("new\n"))
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    atomic_write(target, lambda file: file.write(b"\x00\x01"), binary=True)
    assert target.read_bytes() == b"\x00\x01"


def test_images_outside_the_jsonl_directory_are_stored_absolute(tmp_path, photo):
    (tmp_path / "out").mkdir()
    save_jsonl([_path_record(photo)], tmp_path / "out" / "data.jsonl", progress=False)
    line = json.loads((tmp_path / "out" / "data.jsonl").read_text())
    assert line["image_path"] == str(photo.resolve())
    assert load_jsonl(tmp_path / "out" / "data.jsonl")[0]["image_path"] == str(photo.resolve())


def test_save_needs_image_dir_and_writes_nothing_on_bad_records(tmp_path, photo):
    target = tmp_path / "data.jsonl"
    target.write_text("old content\n")
    with pytest.raises(ValueError, match="image_dir is required: 1 records"):
        save_jsonl([_memory_record(0)], target, progress=False)
    with pytest.raises(RecordError, match="record 1 \\(id 'f17k-1'\\): field 'split'"):
        save_jsonl([_memory_record(0), _path_record(photo, split="dev")], target, image_dir=tmp_path, progress=False)
    with pytest.raises(RecordError, match="extra field 'when' is not JSON-serializable"):
        save_jsonl([_path_record(photo, when=object())], target, progress=False)
    with pytest.raises(ValueError, match="same image file 'a_b.png'"):
        save_jsonl(
            [_memory_record(0, id="a/b"), _memory_record(1, id="a:b")], target, image_dir=tmp_path, progress=False
        )
    with pytest.raises(FileNotFoundError, match="path"):
        save_jsonl([_path_record(photo)], tmp_path / "missing" / "data.jsonl", progress=False)
    assert target.read_text() == "old content\n"
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": ""}, "field 'id' must be a non-empty string"),
        ({"label": "melanomas"}, "'melanomas' is not one of the 114 Fitzpatrick17k labels (did you mean 'melanoma'?)"),
        ({"label": 3}, "field 'label' must be a string"),
        ({"skin_type": 7}, "field 'skin_type' must be an int 1-6 or null"),
        ({"skin_type": True}, "field 'skin_type' must be an int 1-6 or null"),
        ({"split": "dev"}, "field 'split' must be one of ['train', 'val', 'test']"),
        ({"source": ""}, "field 'source' must be a non-empty string"),
        ({"caption": _caption(colour="red")}, "field 'caption' has unknown field 'colour'"),
        ({"caption": {"color": "red"}}, "field 'caption' lacks fields"),
        ({"caption": _caption(color=["red"])}, "field 'caption.color' must be a string"),
        ({"caption": "red"}, "field 'caption' must be an object"),
        ({"image": "not a PIL image"}, "field 'image' must be a PIL.Image.Image"),
        ({"image": None}, "needs an 'image' (PIL image) or an 'image_path'"),
        ({"image_path": "elsewhere.jpg"}, "has both 'image' and 'image_path'"),
    ],
)
def test_record_problems_name_the_field(changes, message):
    problems = record_problems(_memory_record(0, **changes))
    assert len(problems) == 1 and message in problems[0]


def test_record_problems_missing_fields_and_files(tmp_path):
    record = _path_record(tmp_path / "absent.jpg")
    del record["label"]
    problems = record_problems(record)
    assert "missing field 'label'" in problems
    assert any("image file not found" in problem for problem in problems)
    assert record_problems("not a dict") == ["must be a dict, got str"]
    assert record_problems(_memory_record(0)) == []


def test_validate_records_lists_one_line_per_bad_record():
    records = [_memory_record(0), _memory_record(1, split="dev", skin_type=0), _memory_record(2, id="syn-0")]
    with pytest.raises(RecordError) as caught:
        validate_records(records)
    assert len(caught.value.errors) == 2
    assert caught.value.errors[0].startswith("record 1 (id 'syn-1'): field 'split'")
    assert "field 'skin_type'" in caught.value.errors[0]
    assert caught.value.errors[1] == "record 2 (id 'syn-0'): duplicate id 'syn-0' (first used by record 0)"
    assert str(caught.value).count("\n") == 2
    with pytest.raises(TypeError, match="records must be a sequence"):
        validate_records({"id": "x"})


def _write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_load_jsonl_reports_every_bad_line_with_file_line_and_field(tmp_path, photo):
    good = {"id": "a", "image_path": "photos/lesion.jpg", "label": "melanoma", "split": "train"}
    lines = [
        good,  # 1
        "{not json",  # 2
        "[1, 2]",  # 3
        {k: v for k, v in good.items() if k != "label"} | {"id": "b"},  # 4
        good | {"id": "c", "label": "melanomas"},  # 5
        good | {"id": "d", "skin_type": 7},  # 6
        good | {"id": "e", "split": "dev"},  # 7
        good | {"id": "f", "caption": {"colour": "red"}},  # 8
        good | {"id": "g", "image_path": "photos/absent.jpg"},  # 9
        good | {"id": "h", "image": "x.png"},  # 10
        good,  # 11: duplicate id "a"
        "",  # 12: blank lines are skipped
        good | {"id": 5},  # 13
        good | {"id": "i", "caption": {"color": 3}},  # 14
    ]
    path = _write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(RecordError) as caught:
        load_jsonl(path)
    errors = caught.value.errors
    expected = {
        2: "not valid JSON",
        3: "must be a JSON object, got list",
        4: "missing field 'label'",
        5: "field 'label': 'melanomas' is not one of",
        6: "field 'skin_type' must be an int 1-6 or null",
        7: "field 'split' must be one of",
        8: "field 'caption' has unknown field 'colour'",
        9: "field 'image_path': image file not found",
        10: "field 'image' is not allowed in JSONL",
        11: "field 'id': duplicate id 'a' (first on line 1)",
        13: "field 'id' must be a non-empty string",
        14: "field 'caption.color' must be a string or a list of strings",
    }
    assert len(errors) == len(expected)
    for error, (line, message) in zip(errors, expected.items()):
        assert error.startswith(f"{path}:{line}: "), error
        assert message in error
    assert str(caught.value).startswith(f"{len(expected)} bad lines in {path}:\n")


def test_load_jsonl_defaults_and_lenient_captions(tmp_path, photo):
    line = {
        "id": "a",
        "image_path": str(photo),
        "label": "melanoma",
        "split": "val",
        "caption": {"color": ["red", "brown"], "surface": "scaly"},
        "note": "kept",
    }
    [record] = load_jsonl(_write_lines(tmp_path / "ok.jsonl", [line]))
    assert record["caption"] == _caption(color="red, brown", surface="scaly")
    assert tuple(record["caption"]) == CAPTION_FIELDS
    assert record["skin_type"] is None and record["source"] == "local" and record["note"] == "kept"


def test_load_jsonl_file_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        load_jsonl(tmp_path / "absent.jsonl")
    line = {"id": "a", "image_path": "nowhere.jpg", "label": "melanoma", "split": "val"}
    path = _write_lines(tmp_path / "lazy.jsonl", [line])
    assert load_jsonl(path, check_files=False)[0]["image_path"] == str(tmp_path / "nowhere.jpg")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"id": "\xe9"}\n')
    with pytest.raises(ValueError, match="not UTF-8"):
        load_jsonl(tmp_path / "latin1.jsonl")


def test_error_message_is_capped_but_errors_are_complete(tmp_path):
    path = _write_lines(tmp_path / "many.jsonl", ["{"] * 60)
    with pytest.raises(RecordError) as caught:
        load_jsonl(path)
    assert len(caught.value.errors) == 60
    assert "... and 10 more" in str(caught.value)
    assert str(caught.value).count("\n") == 51
