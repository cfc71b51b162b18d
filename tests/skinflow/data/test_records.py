"""The record contract and the JSONL format: round trip, relative paths, atomic writes, one error per bad row,
images decoded before they are accepted, file names safe for any id, nothing half-written on failure."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinflow.data import records as records_module
from skinflow.data.records import (
    RecordError,
    empty_caption,
    image_file_name,
    image_problem,
    load_jsonl,
    record_problems,
    save_jsonl,
    validate_records,
)
from skinflow.formats import CAPTION_FIELDS
from skinflow.util import ArgumentTypeError


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
    with pytest.raises(RecordError, match="not UTF-8"):
        load_jsonl(tmp_path / "latin1.jsonl")


def test_error_message_is_capped_but_errors_are_complete(tmp_path):
    path = _write_lines(tmp_path / "many.jsonl", ["{"] * 60)
    with pytest.raises(RecordError) as caught:
        load_jsonl(path)
    assert len(caught.value.errors) == 60
    assert "... and 10 more" in str(caught.value)
    assert str(caught.value).count("\n") == 51


# ---- images are decoded before they are accepted (issue 12) ----


def _encoded(fmt, size=(64, 64)):
    """A noisy image of ``size`` encoded as ``fmt`` (noise: the entropy-coded data dwarfs the headers)."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def bad_images(tmp_path) -> dict[str, Path]:
    """Files that pass Image.verify() or an existence check but do not decode."""
    folder = tmp_path / "bad"
    folder.mkdir()
    jpeg, png = _encoded("JPEG"), _encoded("PNG")
    files = {
        "truncated.jpg": jpeg[: len(jpeg) * 3 // 4],
        "truncated.png": png[: len(png) * 3 // 4],
        "text.jpg": b"this is a text file named .jpg\n",
        "empty.png": b"",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def test_image_problem_decodes_completely(tmp_path, bad_images):
    assert image_problem(_encoded("JPEG")) is None and image_problem(_encoded("PNG")) is None
    assert "cannot be decoded" in image_problem(bad_images["truncated.jpg"])
    assert "cannot be decoded" in image_problem(bad_images["truncated.png"])
    assert "not an image file" in image_problem(bad_images["text.jpg"])
    assert image_problem(bad_images["empty.png"]) is not None
    assert image_problem(b"") == "is empty (0 bytes)"
    assert image_problem(tmp_path / "absent.png") == "does not exist"
    assert image_problem(tmp_path) == "is a directory, not an image file"
    assert "NUL" in image_problem("a\x00b.png")
    assert "not an image file path" in image_problem(42)
    lazy = Image.open(bad_images["truncated.png"])  # an in-memory record image that is still lazy
    assert "cannot be decoded" in image_problem(lazy)


def test_truncated_images_pass_verify_but_not_image_problem(bad_images):
    """The old check (Image.verify) accepts a truncated JPEG: the reason for decoding completely."""
    with Image.open(bad_images["truncated.jpg"]) as opened:
        opened.verify()
    assert image_problem(bad_images["truncated.jpg"]) is not None


def test_decompression_bomb_limit_is_a_problem_naming_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(_encoded("PNG", size=(64, 64)))  # 4,096 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # over the limit, under twice it: Pillow only warns
    with pytest.warns(Image.DecompressionBombWarning):
        assert "decompression-bomb limit" in image_problem(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over twice the limit: Pillow raises
    assert "decompression-bomb limit" in image_problem(path)
    line = {"id": "a", "image_path": "big.png", "label": "melanoma", "split": "val"}
    with pytest.raises(RecordError, match=r"big.jsonl:1: field 'image_path': image '.*big.png' is over Pillow's"):
        load_jsonl(_write_lines(tmp_path / "big.jsonl", [line]), progress=False)


def test_load_jsonl_refuses_images_that_do_not_decode(tmp_path, bad_images):
    good = tmp_path / "good.png"
    good.write_bytes(_encoded("PNG"))
    names = ["good.png", *(f"bad/{name}" for name in bad_images)]
    lines = [{"id": f"r{i}", "image_path": name, "label": "melanoma", "split": "train"} for i, name in enumerate(names)]
    path = _write_lines(tmp_path / "data.jsonl", lines)
    with pytest.raises(RecordError) as caught:
        load_jsonl(path, progress=False)
    assert [error.split(": ")[0] for error in caught.value.errors] == [f"{path}:{n}" for n in range(2, 6)]
    assert all("field 'image_path': image" in error for error in caught.value.errors)
    assert "text.jpg' is not an image file" in caught.value.errors[2]
    assert len(load_jsonl(path, check_files=False)) == 5


def test_validate_records_check_images(tmp_path, bad_images):
    bad = _path_record(bad_images["truncated.jpg"])
    assert record_problems(bad) == []  # the file exists: only check_images decodes it
    [problem] = record_problems(bad, check_images=True)
    assert problem.startswith("field 'image_path': image '") and "truncated.jpg' cannot be decoded" in problem
    lazy = _memory_record(1, image=Image.open(bad_images["truncated.png"]))
    records = [_memory_record(0), lazy, bad]
    validate_records(records)
    with pytest.raises(RecordError) as caught:
        validate_records(records, check_images=True)
    assert [error.split(":")[0] for error in caught.value.errors] == ["record 1 (id 'syn-1')", "record 2 (id 'f17k-1')"]
    assert "field 'image': the PIL image cannot be decoded" in caught.value.errors[0]


def test_save_jsonl_refuses_an_in_memory_image_that_does_not_decode(tmp_path, bad_images):
    records = [_memory_record(0), _memory_record(1, image=Image.open(bad_images["truncated.png"]))]
    with pytest.raises(RecordError, match="record 1 \\(id 'syn-1'\\): field 'image': the PIL image cannot be decoded"):
        save_jsonl(records, tmp_path / "data.jsonl", image_dir=tmp_path / "images", progress=False)
    assert not (tmp_path / "data.jsonl").exists() and not (tmp_path / "images").exists()


# ---- JSONL encodings and hostile lines ----


def test_load_jsonl_accepts_a_byte_order_mark(tmp_path, photo):
    line = {"id": "a", "image_path": "photos/lesion.jpg", "label": "melanoma", "split": "val"}
    path = tmp_path / "bom.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + (json.dumps(line) + "\n").encode() + b"\xef\xbb\xbf" + json.dumps(line | {"id": "b"}).encode()
    )
    assert [record["id"] for record in load_jsonl(path, progress=False)] == ["a", "b"]
    path.write_text(json.dumps(line), encoding="utf-8-sig")
    assert load_jsonl(path, progress=False)[0]["id"] == "a"


def test_load_jsonl_names_file_and_line_of_non_utf8_text(tmp_path, photo):
    good = json.dumps({"id": "a", "image_path": "photos/lesion.jpg", "label": "melanoma", "split": "val"})
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(good.encode() + b"\n" + '{"id": "caf\u00e9"}'.encode("latin-1") + b"\n\xff\xfe\n")
    with pytest.raises(RecordError) as caught:
        load_jsonl(path, progress=False)
    assert caught.value.errors == (
        f"{path}:2: not UTF-8 text (byte 0xe9 at byte 12 of the line)",
        f"{path}:3: not UTF-8 text (byte 0xff at byte 1 of the line)",
    )
    assert str(caught.value).startswith(f"2 bad lines in {path}:")


def test_load_jsonl_hostile_lines_are_line_errors(tmp_path):
    good = {"id": "a", "image_path": "x.png", "label": "melanoma", "split": "val"}
    lines = [
        "[" * 100_000 + "]" * 100_000,  # 1: deeper than the recursion limit
        "1" * 5000,  # 2: more digits than Python converts
        json.dumps(good | {"score": float("nan")}),  # 3: NaN is not JSON
        json.dumps(good | {"id": "b", "image_path": "a\x00b.png"}),  # 4: NUL in a path
        json.dumps(good | {"id": "c", "image_path": "x" * 5000 + ".png"}),  # 5: a name too long for the system
        json.dumps(good | {"id": "d", "image_path": "\ud800.png"}),  # 6: a lone surrogate
        json.dumps(good | {"id": "e", "label": "x" * 1_000_000}),  # 7: a 1 MB label
        json.dumps(good | {"id": "f", "caption": {"color": [[[["deep"]]]]}}),  # 8
    ]
    path = _write_lines(tmp_path / "hostile.jsonl", lines)
    with pytest.raises(RecordError) as caught:
        load_jsonl(path, progress=False)
    errors = caught.value.errors
    assert [error.split(": ")[0] for error in errors] == [f"{path}:{n}" for n in range(1, 9)]
    assert "nested too deeply" in errors[0] and "4300" in errors[1] and "NaN is not JSON" in errors[2]
    assert "NUL" in errors[3] and "cannot be used as a file name" in errors[4] and "cannot encode" in errors[5]
    assert max(len(error) for error in errors) < 1000, "messages quote values in bounded length"
    with pytest.raises(RecordError):
        load_jsonl(path, check_files=False, progress=False)


# ---- file names safe for any id; a failed save leaves nothing behind ----


def test_image_file_names_are_safe_for_any_id(tmp_path):
    assert image_file_name("syn-0") == "syn-0.png"
    long_id, odd = "x" * 300, "a/b"
    for record_id in (long_id, odd, "é" * 200, "../../etc/passwd", "\ud800"):
        name = image_file_name(record_id)
        assert len(name.encode()) <= 104 and "/" not in name and name.endswith(".png")
    assert image_file_name("a/b") != image_file_name("a:b")
    records = [_memory_record(0, id=long_id), _memory_record(1, id="a/b"), _memory_record(2, id="a:b")]
    out = save_jsonl(records, tmp_path / "data.jsonl", image_dir=tmp_path / "images", progress=False)
    loaded = load_jsonl(out, progress=False)
    assert [record["id"] for record in loaded] == [long_id, "a/b", "a:b"]
    assert len({record["image_path"] for record in loaded}) == 3
    assert sorted(os.listdir(tmp_path / "images")) == sorted(image_file_name(r["id"]) for r in records)


def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    kept = tmp_path / "images" / "kept.png"
    records = [_memory_record(index) for index in range(4)]
    original = Image.Image.save
    calls = {"n": 0}

    def failing_save(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return original(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    for existing in (False, True):
        if existing:
            kept.parent.mkdir()
            kept.write_bytes(b"old")
        calls["n"] = 0
        with pytest.raises(OSError, match="No space left"):
            save_jsonl(records, tmp_path / "data.jsonl", image_dir=tmp_path / "images" / "new", progress=False)
        assert not (tmp_path / "data.jsonl").exists()
        if existing:
            assert [path.name for path in kept.parent.iterdir()] == ["kept.png"] and kept.read_bytes() == b"old"
        else:
            assert not (tmp_path / "images").exists()
    monkeypatch.setattr(records_module, "atomic_write", lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    monkeypatch.setattr(Image.Image, "save", original)
    with pytest.raises(OSError, match="disk gone"):
        save_jsonl(records, tmp_path / "data.jsonl", image_dir=tmp_path / "images", progress=False)
    assert [path.name for path in kept.parent.iterdir()] == ["kept.png"]


# ---- argument helpers ----


def test_argument_type_errors_are_value_errors_too():
    with pytest.raises(ArgumentTypeError) as caught:
        validate_records({"id": "x"})
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)


def test_save_jsonl_refuses_directories_where_files_go(tmp_path, photo):
    with pytest.raises(IsADirectoryError, match="path: .* is a directory"):
        save_jsonl([_path_record(photo)], tmp_path, progress=False)
    (tmp_path / "images").write_text("a file")
    with pytest.raises(NotADirectoryError, match="image_dir: '.*images' exists and is not a directory"):
        save_jsonl([_memory_record(0)], tmp_path / "data.jsonl", image_dir=tmp_path / "images", progress=False)
    assert not (tmp_path / "data.jsonl").exists()
