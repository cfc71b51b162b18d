"""skinflow.eval.report: the report.json schema (docs/design.md §3b), report.md, plots, atomic writes."""

from __future__ import annotations

import json
import os

import pytest

from skinflow.eval import report as report_module
from skinflow.eval.metrics import SKIN_GROUPS, EvalSettings, PredictionError
from skinflow.eval.report import PLOTS, evaluate_predictions, output_directory
from skinflow.formats import CAPTION_FIELDS


def rows() -> list[dict]:
    answers = ["1. psoriasis\n2. eczema", "1. eczema\n2. psoriasis", "", "1. melanoma", "1. nevocytic nevus"]
    labels = ["psoriasis", "psoriasis", "acne", "psoriasis", "melanoma"]
    target = dict.fromkeys(CAPTION_FIELDS, "") | {"color": "red"}
    return [{"id": f"r{i}", "label": label, "skin_type": [1, 2, 5, 6, None][i], "split": "test",
             "diagnosis_text": answer, "caption_text": "color: red", "caption_target": target, "k": 6,
             "model": "m"} for i, (label, answer) in enumerate(zip(labels, answers))]


@pytest.fixture
def predictions(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows()), encoding="utf-8")
    return path


def assert_estimate(entry, nullable=True):
    assert set(entry) >= {"value", "ci"}
    if entry["value"] is None:
        assert nullable and entry["ci"] is None
    else:
        assert isinstance(entry["value"], float) and 0.0 <= entry["value"] <= 1.0
        assert entry["ci"] is None or (len(entry["ci"]) == 2 and entry["ci"][0] <= entry["ci"][1])


def test_report_json_has_the_contract_keys_and_types(predictions, tmp_path):
    out = tmp_path / "report"
    evaluate_predictions(predictions, out, EvalSettings(bootstrap=100, seed=0))
    report = json.loads((out / "report.json").read_text())
    assert {"n", "k", "topk", "safety", "by_skin_type", "settings"} <= set(report)
    assert type(report["n"]) is int and report["n"] == 5 and type(report["k"]) is int and report["k"] == 6
    assert set(report["topk"]) == {"exact", "synonym", "group9", "group3"}
    for values in report["topk"].values():
        assert len(values) == report["k"] and all(isinstance(v, float) and 0 <= v <= 1 for v in values)
        assert values == sorted(values)
    for name in ("missed_malignancy", "overcall"):
        entry = report["safety"][name]
        assert isinstance(entry["rate"], float) and type(entry["count"]) is int and type(entry["n"]) is int
    assert list(report["by_skin_type"]) == ["1", "2", "3", "4", "5", "6", "unknown", "I-II", "III-IV", "V-VI"]
    assert list(SKIN_GROUPS) == list(report["by_skin_type"])
    for entry in report["by_skin_type"].values():
        assert type(entry["n"]) is int
        assert_estimate(entry["top1"])
        assert_estimate(entry["topk"])
    assert report["by_skin_type"]["3"]["top1"] == {"value": None, "ci": None}
    assert report["settings"]["bootstrap"] == 100 and report["settings"]["seed"] == 0
    assert report["model"] == "m"
    assert report["data"]["predictions"] == str(predictions) and len(report["data"]["predictions_sha256"]) == 64
    assert sorted(report["plots"]) == sorted(PLOTS)
    markdown = (out / "report.md").read_text()
    assert "| synonym |" in markdown and "| V-VI |" in markdown and "missed malignancy" in markdown
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_same_seed_same_report_numbers(predictions, tmp_path):
    one = evaluate_predictions(predictions, tmp_path / "a", EvalSettings(bootstrap=200, seed=3), plots=False)
    two = evaluate_predictions(predictions, tmp_path / "b", EvalSettings(bootstrap=200, seed=3), plots=False)
    for key in ("topk", "safety", "by_skin_type", "skin_type_gap", "caption", "confusion"):
        assert one[key] == two[key]
    assert not (tmp_path / "a" / PLOTS[0]).exists()


def test_split_selects_rows(predictions, tmp_path):
    report = evaluate_predictions(predictions, tmp_path / "r", EvalSettings(bootstrap=0), plots=False, split="test")
    assert report["n"] == 5 and report["data"]["split"] == "test"
    with pytest.raises(ValueError, match="no rows in split 'val'"):
        evaluate_predictions(predictions, tmp_path / "v", split="val")
    assert not (tmp_path / "v").exists()


def test_output_directory_rules(tmp_path):
    assert output_directory(tmp_path / "new").is_dir()
    with pytest.raises(ValueError, match="does not exist"):
        output_directory(tmp_path / "no" / "new")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        output_directory(tmp_path / "file")


def test_bad_predictions_create_nothing(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({**rows()[0], "label": "banana"}) + "\n")
    with pytest.raises(PredictionError, match="bad.jsonl:1"):
        evaluate_predictions(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_write_keeps_the_old_report(predictions, tmp_path, monkeypatch):
    out = tmp_path / "report"
    evaluate_predictions(predictions, out, EvalSettings(bootstrap=10), plots=False)
    before = (out / "report.json").read_bytes()

    def broken(report):
        raise RuntimeError("disk full while rendering")

    monkeypatch.setattr(report_module, "render_markdown", broken)
    with pytest.raises(RuntimeError):
        evaluate_predictions(predictions, out, EvalSettings(bootstrap=10, seed=5), plots=False)
    # report.json was replaced whole (new file), report.md kept whole (old file), no temporary files
    assert json.loads((out / "report.json").read_text())["settings"]["seed"] == 5
    assert (out / "report.md").read_text().startswith("# SkinFlow evaluation")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert before != (out / "report.json").read_bytes()


def test_a_failed_plot_leaves_no_partial_png(predictions, tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / PLOTS[0]).write_bytes(b"old")
    import matplotlib.figure

    def broken(self, *args, **kwargs):
        with open(args[0], "wb") as file:
            file.write(b"half a png")
        raise OSError("no space left")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError):
        evaluate_predictions(predictions, out, EvalSettings(bootstrap=10))
    assert (out / PLOTS[0]).read_bytes() == b"old"
    assert sorted(os.listdir(out)) == [PLOTS[0]]


def test_evaluate_without_plots_loads_nothing_heavy(predictions, tmp_path):
    import subprocess
    import sys

    from tests import REPO

    code = ("import sys; from skinflow.cli import commands; "
            f"commands.main(['evaluate', {str(predictions)!r}, '--out', {str(tmp_path / 'r')!r}, '--no-plots', "
            "'--bootstrap', '20']); "
            "print(sorted(m for m in ('torch', 'transformers', 'PIL', 'numpy', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "r" / "report.json").is_file()
