"""The spirals experiment runs from its command line and writes valid, complete files."""

import json

import pytest
import torch

from fdlinear.experiments import spirals


def test_spirals_command_writes_all_figures(tmp_path):
    results = spirals.main(["--out", str(tmp_path), "--steps", "3", "--seeds", "1", "--width", "4"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert set(saved["runs"]) == {f"{d}/{m}" for d in spirals.DATASETS for m in spirals.MODELS}
    for run in saved["runs"].values():
        assert 0.0 <= run["mean"] <= 1.0 and len(run["test_accuracy"]) == 1
    assert (tmp_path / "decision_boundaries.png").read_bytes()[:4] == b"\x89PNG"
    assert "fdlinear" in (tmp_path / "results.md").read_text()


def test_param_matched_network_is_matched():
    fd = spirals.parameter_count(spirals.build_model("fdlinear", 6))
    wide = spirals.parameter_count(spirals.build_model("linear_param_matched", 6))
    one_wider = spirals.parameter_count(spirals._mlp(torch.nn.Linear, spirals.build_model("linear_param_matched", 6)[0].out_features + 1))
    assert wide <= fd < one_wider


def test_bad_arguments():
    with pytest.raises(SystemExit):
        spirals.main(["--steps", "0"])
    with pytest.raises(ValueError, match="name must be one of"):
        spirals.make_dataset("moons", 10, 0.0, 0)
