"""The spirals experiment runs from its command line and writes valid, complete files."""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from fdlinear.experiments import spirals
from tests import REPO


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


def test_default_output_is_an_untracked_folder_with_normal_file_modes(tmp_path, monkeypatch):
    """`make demo` must not rewrite the tracked docs/figures/ files, and must not leave 0600 files behind."""
    assert spirals.DEFAULT_OUT == Path("runs/spirals")
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/spirals/results.json"], cwd=REPO)
    assert ignored.returncode == 0, "runs/spirals/ must be ignored by git"
    monkeypatch.chdir(tmp_path)
    umask = os.umask(0o022)
    try:
        spirals.main(["--steps", "2", "--seeds", "1", "--width", "4"])
    finally:
        os.umask(umask)
    written = sorted(p.name for p in (tmp_path / "runs" / "spirals").iterdir())
    assert written == ["decision_boundaries.png", "results.json", "results.md"]
    for name in written:
        assert stat.S_IMODE((tmp_path / "runs" / "spirals" / name).stat().st_mode) == 0o644, name
    assert not (tmp_path / "docs").exists()


def test_out_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        spirals.main(["--out", str(tmp_path / "file"), "--steps", "1"])
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err
