"""``skinflow train``: a recipe plus flags, a resume with a larger --max-steps, and the --no-dve ablation."""

from __future__ import annotations

import json

from skinflow.cli import commands as cli
from skinflow.model.dve import load_pretrained
from tests import REPO


def test_train_with_a_recipe_then_resume(data_file, tmp_path, capsys):
    out = tmp_path / "run"
    recipe = str(REPO / "recipes" / "tiny_cpu_sft.yaml")
    argv = ["train", "sft", "--data", str(data_file), "--out", str(out), "--config", recipe, "--max-steps", "1"]
    assert cli.main(argv) == 0
    assert "sft: trained to step 1" in capsys.readouterr().out
    assert cli.main(argv[:-1] + ["2", "--resume"]) == 0
    assert "sft: trained to step 2" in capsys.readouterr().out
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["learning_rate"] == 1e-2 and record["config"]["max_steps"] == 2  # recipe + flag
    assert [entry["resumed_from"] for entry in record["history"]] == [None, "checkpoint-1"]
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()


def test_no_dve_trains_the_plain_tower(data_file, tmp_path, capsys):
    out = tmp_path / "plain"
    assert cli.main(["train", "sft", "--data", str(data_file), "--out", str(out), "--max-steps", "1", "--no-dve"]) == 0
    assert not getattr(load_pretrained(out).config.vision_config, "dve", None)
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["dve"] is False and record["dve"] is None
