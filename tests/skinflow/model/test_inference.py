"""skinflow.diagnose and the `skinflow diagnose` command on the tiny default."""

import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from skinflow.cli import commands as cli
from skinflow.formats import CAPTION_FIELDS, format_caption, format_diagnoses
from skinflow.model import inference, tiny
from skinflow.model.inference import Candidate, ImageReadError, diagnose


@pytest.fixture(scope="module")
def built():
    return tiny.build()


@pytest.fixture
def image_files(tmp_path):
    paths = []
    for index, (size, color) in enumerate([((112, 112), "brown"), ((90, 140), "pink")]):
        path = tmp_path / f"lesion{index}.png"
        Image.new("RGB", size, color).save(path)
        paths.append(str(path))
    return paths


def scripted_answers(caption: dict, diagnoses: list[str]):
    """A stand-in for generation that answers the caption and the diagnosis prompts with fixed texts."""

    def answer(model, processor, images, prompt, max_new_tokens, batch_size):
        text = format_caption(caption) if prompt.startswith("Describe") else format_diagnoses(diagnoses)
        return [text] * len(images)

    return answer


def test_diagnose_runs_the_model_on_each_image(built, image_files):
    results = diagnose(*built, [image_files[0], Image.open(image_files[1])], k=3, max_new_tokens=8)
    assert len(results) == 2
    for result in results:
        assert set(result.caption) == set(CAPTION_FIELDS)
        assert isinstance(result.caption_text, str) and isinstance(result.diagnosis_text, str)
        assert len(result.candidates) <= 3
    assert diagnose(*built, [], k=3) == []


def test_diagnose_parses_answers_into_captions_and_grouped_candidates(built, image_files, monkeypatch):
    caption = {"color": "red, brown", "lesion_type": "plaque", "surface": "scaly"}
    monkeypatch.setattr(inference, "generate_answers",
                        scripted_answers(caption, ["Psoriasis", "melanoma", "a rare thing", "eczema"]))
    (result,) = diagnose(*built, image_files[0], k=3)
    assert result.caption["color"] == "red, brown" and result.caption["surface"] == "scaly"
    assert result.caption["location"] == ""
    assert result.candidates == [
        Candidate(1, "psoriasis", "psoriasis", "inflammatory", "non-neoplastic"),
        Candidate(2, "melanoma", "melanoma", "malignant melanoma", "malignant"),
        Candidate(3, "a rare thing", None, None, None),
    ]
    assert json.loads(json.dumps(result.to_dict()))["candidates"][0]["label"] == "psoriasis"


def test_diagnose_rejects_bad_arguments(built, image_files, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match=r"images\[1\].*broken\.jpg"):
        diagnose(*built, [image_files[0], broken])
    with pytest.raises(ImageReadError, match="missing"):
        diagnose(*built, tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="PIL image or a file path"):
        diagnose(*built, [42])
    with pytest.raises(ValueError, match="k must"):
        diagnose(*built, image_files, k=0)


def test_cli_prints_a_report_per_image(image_files, capsys, monkeypatch):
    monkeypatch.setattr(inference, "generate_answers", scripted_answers({"color": "black"}, ["melanoma"]))
    assert cli.main(["diagnose", *image_files, "--k", "2"]) == 0
    out = capsys.readouterr()
    assert out.out.count("== ") == 2 and "1. melanoma  [malignant melanoma; malignant]" in out.out
    assert "tiny default" in out.err
    assert cli.main(["diagnose", image_files[0], "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == image_files[0] and record["caption"]["color"] == "black"


def test_cli_loads_a_saved_model(image_files, tmp_path, capsys):
    model, processor = tiny.build(seed=1)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    assert cli.main(["diagnose", image_files[0], "--model", str(tmp_path / "model"), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["caption"]) == set(CAPTION_FIELDS)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["diagnose", "{tmp}/nothing.png"], "nothing.png': No such file"),
        (["diagnose", "{tmp}/bad.png"], "bad.png': not an image file"),
        (["diagnose", "{image}", "--k", "0"], "argument --k: must be a positive integer"),
        (["diagnose", "{image}", "--model", "{tmp}"], "': no config.json"),
    ],
)
def test_cli_errors_are_clear(arguments, message, image_files, tmp_path, capsys):
    """A few; tests/test_cli_errors.py runs every command against a table of bad inputs."""
    (tmp_path / "bad.png").write_text("garbage")
    arguments = [a.format(tmp=tmp_path, image=image_files[0]) for a in arguments]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_read_image_refuses_every_unusable_file_naming_it(tmp_path, monkeypatch):
    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "pipe.png")  # opening it would block forever
    Image.new("RGB", (60, 50)).save(tmp_path / "big.png")
    (tmp_path / "empty.png").write_bytes(b"")
    full = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(full[: len(full) // 2])
    cases = {"folder.png": "is a directory", "pipe.png": "not a regular file", "empty.png": "not an image file",
             "cut.png": "cannot read image", "nothing.png": "No such file"}
    for name, message in cases.items():
        with pytest.raises(ImageReadError, match=rf"^IMAGE '.*{name}': .*{message}"):
            inference.read_image(str(tmp_path / name), "IMAGE")
    with monkeypatch.context() as patched:  # root reads any file: simulate an unreadable one
        patched.setattr(Image, "open", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
        with pytest.raises(ImageReadError, match=r"big\.png': cannot read image: Permission denied$"):
            inference.read_image(tmp_path / "big.png", "IMAGE")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 3000 pixels: PIL warns above 1000, raises above 2000
    with pytest.raises(ImageReadError, match=r"big\.png': image too large .*MAX_IMAGE_PIXELS"):
        inference.read_image(tmp_path / "big.png", "IMAGE")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # the warning range is refused too (no stderr noise)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageReadError, match="image too large"):
            inference.read_image(tmp_path / "big.png", "IMAGE")


def test_images_the_processor_refuses_fail_before_any_generation(built, image_files, tmp_path, monkeypatch):
    def no_generation(*args, **kwargs):
        raise AssertionError("generation ran")

    monkeypatch.setattr(inference, "generate_answers", no_generation)
    Image.new("RGB", (402, 2)).save(tmp_path / "strip.png")  # aspect ratio 201: smart_resize raises
    with pytest.raises(ImageReadError, match=r"images\[1\] '.*strip\.png': the image processor refuses a 402x2"):
        diagnose(*built, [image_files[0], tmp_path / "strip.png"])
    with pytest.raises(ImageReadError, match=r"images\[0\]: the image processor refuses"):
        diagnose(*built, [Image.new("RGB", (1, 300))])
    for bad in (dict(batch_size=True), dict(k=2.0), dict(max_new_tokens=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            diagnose(*built, image_files, **bad)
    with pytest.raises(TypeError, match="images must be"):
        diagnose(*built, 42)


def test_numpy_integers_are_accepted(built, image_files, monkeypatch):
    monkeypatch.setattr(inference, "generate_answers", scripted_answers({}, ["melanoma", "psoriasis"]))
    (result,) = diagnose(*built, image_files[0], k=np.int64(1), batch_size=np.int32(2))
    assert [c.label for c in result.candidates] == ["melanoma"]
