"""skinflow.eval.predict and the predict/evaluate commands end to end on the tiny default (small: < 30 s)."""

from __future__ import annotations

import json

import pytest

import skinflow.model.tiny
from skinflow.cli import commands as cli
from skinflow.data.records import load_jsonl, save_jsonl
from skinflow.data.synthetic import generate
from skinflow.eval import predict as predict_module
from skinflow.eval.metrics import REQUIRED_KEYS, load_predictions
from skinflow.eval.predict import partial_path, predict
from skinflow.model import inference
from skinflow.targets import caption_target_of


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_data")
    return save_jsonl(generate(5, seed=3, progress=False), root / "set.jsonl", image_dir=root / "images",
                      progress=False)


@pytest.fixture(scope="module")
def tiny():
    return skinflow.model.tiny.build(seed=0)


@pytest.fixture
def scripted(monkeypatch):
    """generate_answers replaced by answers that name the prompt and count the images answered."""
    calls = []

    def answer(model, processor, images, prompt, max_new_tokens, batch_size):
        calls.append(len(images))
        if prompt.startswith("Describe"):
            return ["color: red\nsurface: scaly"] * len(images)
        return ["1. psoriasis\n2. possible melanoma\n3. banana"] * len(images)

    monkeypatch.setattr(inference, "generate_answers", answer)
    return calls


def test_rows_follow_the_contract(dataset, tiny, scripted, tmp_path):
    records = load_jsonl(dataset, progress=False)
    out = predict(*tiny, records, tmp_path / "p.jsonl", k=3, batch_size=2, model_name="tiny")
    rows = load_predictions(out)
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    for row, record in zip(rows, records):
        assert set(REQUIRED_KEYS) <= set(row)
        assert row["label"] == record["label"] and row["skin_type"] == record["skin_type"]
        assert row["caption_target"] == caption_target_of(record).to_json()["caption"]
        assert row["diagnosis_text"].startswith("1. psoriasis") and row["k"] == 3 and row["model"] == "tiny"
        assert row["candidates"] == [{"rank": 1, "text": "psoriasis", "label": "psoriasis"},
                                     {"rank": 2, "text": "possible melanoma", "label": "melanoma"},
                                     {"rank": 3, "text": "banana", "label": None}]
    assert not partial_path(out).exists()
    assert scripted == [2, 2, 2, 2, 1, 1]  # caption + diagnosis per batch of 2


def test_a_stopped_run_resumes_without_redoing_finished_batches(dataset, tiny, scripted, tmp_path, monkeypatch):
    records = load_jsonl(dataset, progress=False)
    out = tmp_path / "p.jsonl"
    real_diagnose = predict_module.diagnose
    batches = []

    def stop_on_third(*args, **kwargs):
        batches.append(1)
        if len(batches) == 3:
            raise KeyboardInterrupt
        return real_diagnose(*args, **kwargs)

    monkeypatch.setattr(predict_module, "diagnose", stop_on_third)
    with pytest.raises(KeyboardInterrupt):
        predict(*tiny, records, out, k=3, batch_size=2, model_name="tiny")
    assert not out.exists()
    kept = [json.loads(line) for line in partial_path(out).read_text().splitlines()]
    assert [r["id"] for r in kept] == [r["id"] for r in records[:4]]
    # a crash in the middle of an append leaves a cut line: it is dropped and redone
    with partial_path(out).open("a") as file:
        file.write('{"id": "' + records[4]["id"] + '", "label": "ps')
    monkeypatch.setattr(predict_module, "diagnose", real_diagnose)
    scripted.clear()
    predict(*tiny, records, out, k=3, batch_size=2, model_name="tiny")
    assert scripted == [1, 1]  # only the last record was answered
    assert [r["id"] for r in load_predictions(out)] == [r["id"] for r in records]
    # a finished file is kept whole by a rerun; another model or k redoes the rows
    scripted.clear()
    predict(*tiny, records, out, k=3, batch_size=2, model_name="tiny")
    assert scripted == []
    predict(*tiny, records, out, k=2, batch_size=8, model_name="tiny")
    assert scripted == [5, 5] and {r["k"] for r in load_predictions(out)} == {2}


def test_predict_checks_its_arguments(tiny, tmp_path):
    for name, value in (("k", 0), ("batch_size", 0), ("max_new_tokens", True)):
        with pytest.raises(ValueError, match=name):
            predict(*tiny, [], tmp_path / "p.jsonl", **{name: value})


def test_the_tiny_model_end_to_end_through_the_cli(dataset, tmp_path, capsys):
    """predict, then evaluate the file; and evaluate --data doing both (real generation, tiny model)."""
    predictions = tmp_path / "predictions.jsonl"
    assert cli.main(["predict", "--data", str(dataset), "--out", str(predictions), "--k", "3",
                     "--batch-size", "5", "--max-new-tokens", "12"]) == 0
    rows = load_predictions(predictions)
    assert len(rows) == 5 and all(isinstance(r["diagnosis_text"], str) for r in rows)
    assert cli.main(["evaluate", str(predictions), "--out", str(tmp_path / "report"), "--bootstrap", "50"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["n"] == 5 and report["k"] == 3 and report["model"] == "tiny-default(seed=0)"
    assert "evaluated 5 predictions" in capsys.readouterr().out
    out = tmp_path / "both"
    assert cli.main(["evaluate", "--data", str(dataset), "--out", str(out), "--k", "2", "--bootstrap", "20",
                     "--max-new-tokens", "12", "--no-plots"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["k"] == 2 and report["data"]["dataset"] == str(dataset)
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "report.json", "report.md"]


def test_images_the_processor_refuses_are_found_before_any_run(dataset, tiny, tmp_path):
    from PIL import Image

    from skinflow.eval.predict import check_record_images
    from skinflow.model.inference import ImageReadError

    records = load_jsonl(dataset, progress=False)
    check_record_images(records, tiny[1].image_processor)
    wide = tmp_path / "wide.png"
    Image.new("RGB", (402, 2), "brown").save(wide)
    bad = [*records, {**records[0], "id": "wide-one", "image_path": str(wide)}]
    with pytest.raises(ImageReadError, match="record 'wide-one'.*the image processor refuses"):
        check_record_images(bad, tiny[1].image_processor)
    with pytest.raises(ImageReadError, match="record 'wide-one'"):
        predict(*tiny, bad[-1:], tmp_path / "p.jsonl", max_new_tokens=2)
    assert list(tmp_path.iterdir()) == [wide], "a run that finished nothing left files behind"
