"""The pipeline of `make demo` and the ablation runner, at the CI size of recipes/pipeline/demo_ci.yaml: every stage runs,
finished stages are reused, changed settings are refused by name, and the ablation table comes from the runs."""

import json

import pytest

from skinflow.cli import commands as cli
from skinflow.experiments.pipeline import (
    ARMS,
    PipelineConfig,
    load_pipeline_config,
    mean_ci,
    run_ablation,
    run_pipeline,
)
from tests import REPO

CI = REPO / "recipes" / "pipeline" / "demo_ci.yaml"


@pytest.fixture(scope="module")
def config():
    return load_pipeline_config(CI)


@pytest.fixture(scope="module")
def demo(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    return out, run_pipeline(config, out, quiet=True, show=False)


def test_demo_runs_every_stage_and_writes_the_report(demo):
    out, summary = demo
    seed = out / "seed-0"
    for stage in ("data", "seed-0/base", "seed-0/warm", "seed-0/stage1-dve", "seed-0/full/stage2",
                  "seed-0/full/eval", "baselines/constant", "seed-0/warm-eval"):
        assert (out / stage / "stage.json").is_file(), stage
    report = json.loads((seed / "full" / "eval" / "report" / "report.json").read_text())
    data = json.loads((out / "data" / "stage.json").read_text())["result"]
    assert report["n"] == data["splits"]["test"] > 0 and report["splits"] == {"test": data["splits"]["test"]}
    assert {"top1", "topk", "caption", "reward", "gap", "report"} <= set(summary["result"])
    assert (seed / "full" / "eval" / "attention" / "attention.json").is_file()
    assert json.loads((seed / "full" / "stage2" / "config.json").read_text())["vision_config"]["dve"]
    assert "dve" not in json.loads((seed / "warm" / "config.json").read_text())["vision_config"]
    # the baselines: chance from the number of diagnoses; the constant answer scored like any model
    assert summary["baselines"]["chance"] == {"top1": 1 / 12, "topk": 0.5}
    assert summary["baselines"]["constant"]["top1"]["value"] == pytest.approx(1 / 12, abs=0.1)
    assert (out / "summary.md").read_text().count("|") > 20
    assert json.loads((out / "summary.json").read_text())["arm"] == "full"


def test_out_is_created_with_its_parents_and_a_file_in_the_way_is_named(config, tmp_path):
    from skinflow.experiments.pipeline import _output

    assert _output(tmp_path / "runs" / "demo").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        _output(tmp_path / "file" / "demo")


def test_a_rerun_reuses_every_finished_stage(demo, config):
    out, summary = demo
    before = {path: path.stat().st_mtime_ns for path in out.rglob("stage.json")}
    again = run_pipeline(config, out, quiet=True, show=False)
    assert again["result"] == summary["result"]
    assert {path: path.stat().st_mtime_ns for path in out.rglob("stage.json")} == before
    log = (out / "pipeline.log").read_text()
    assert log.count("reused") >= 8


def test_changed_settings_of_a_finished_stage_are_refused_by_name(demo, config):
    out, _ = demo
    changed = config.replace(stage2={**config.stage2, "learning_rate": 1e-5})
    with pytest.raises(ValueError, match=r"seed-0/full/stage2: a finished .*Stage II made with other settings"):
        run_pipeline(changed, out, quiet=True, show=False)


def test_an_interrupted_training_stage_resumes_from_its_checkpoint(config, tmp_path):
    out = tmp_path / "run"
    run_pipeline(config, out, arm="stage2-only", quiet=True, show=False)
    stage2 = out / "seed-0" / "stage2-only" / "stage2"
    (stage2 / "stage.json").unlink()  # as if the run had died after the last checkpoint
    (out / "seed-0" / "stage2-only" / "eval" / "stage.json").unlink()
    run_pipeline(config, out, arm="stage2-only", quiet=True, show=False)
    history = json.loads((stage2 / "run.json").read_text())["history"]
    assert len(history) == 2 and history[1]["resumed_from"] is not None


def test_ablation_table_over_seeds(config, tmp_path):
    # two seeds at once, a process each; a rerun in one process reuses every stage and gives the same table
    ablation = run_ablation(config, tmp_path / "ablation", seeds=[0, 1], arms=["stage2-only", "full"], jobs=2,
                            quiet=True)
    again = run_ablation(config, tmp_path / "ablation", seeds=[0, 1], arms=["stage2-only", "full"], quiet=True)
    assert again["table"] == ablation["table"] and again["per_seed"] == ablation["per_seed"]
    log = (tmp_path / "ablation" / "pipeline.log").read_text()
    assert log.count("Stage II: running") == 4 and log.count("Stage II: reused") == 4
    assert set(ablation["table"]) == {"stage2-only", "full"}
    for arm, row in ablation["table"].items():
        values = [run["top1"]["value"] for run in ablation["per_seed"][arm]]
        assert row["top1"]["value"] == pytest.approx(sum(values) / 2) and row["top1"]["n"] == 2
    text = (tmp_path / "ablation" / "ablation.md").read_text()
    assert "29.19%" in text and "15.22%" in text
    assert (tmp_path / "ablation" / "attention.png").read_bytes()[:4] == b"\x89PNG"
    # one base and warm start per seed, shared by the arms
    assert sorted(p.name for p in (tmp_path / "ablation").iterdir() if p.name.startswith("seed-")) == ["seed-0", "seed-1"]


def test_mean_ci_by_hand():
    assert mean_ci([]) == {"value": None, "ci": None, "n": 0}
    assert mean_ci([0.5]) == {"value": 0.5, "ci": None, "n": 1}
    result = mean_ci([0.1, 0.2, 0.3])  # mean 0.2, s = 0.1, t(2) = 4.303: half-width 0.2484
    assert result["value"] == pytest.approx(0.2)
    assert result["ci"] == pytest.approx([0.2 - 0.24843, 0.2 + 0.24843], abs=1e-4)
    clipped = mean_ci([0.1, 0.2, 0.3], bounds=(0.0, 1.0))  # an accuracy's interval stays in [0, 1]
    assert clipped["value"] == pytest.approx(0.2) and clipped["ci"] == pytest.approx([0.0, 0.2 + 0.24843], abs=1e-4)


def test_paired_differences_to_the_warm_start_by_hand():
    from skinflow.experiments.pipeline import _paired

    def entry(top1, topk):
        return {"top1": {"value": top1}, "topk": {"value": topk}}

    arms = [entry(0.5, 0.9), entry(0.6, 0.8), entry(0.7, 0.9)]
    warm = [entry(0.4, 0.9), entry(0.6, 0.9), entry(0.6, 0.7)]
    paired = _paired(arms, warm)  # differences 0.1, 0.0, 0.1: mean 0.0667, s = 0.0577, t(2) = 4.303
    assert paired["top1_vs_warm"]["value"] == pytest.approx(0.2 / 3)
    assert paired["top1_vs_warm"]["ci"] == pytest.approx([0.2 / 3 - 0.14343, 0.2 / 3 + 0.14343], abs=1e-4)
    assert paired["topk_vs_warm"]["value"] == pytest.approx(0.1 / 3)


@pytest.mark.parametrize("settings, message", [
    ({"records": 5}, "records"),
    ({"image_size": 60}, "image_size"),
    ({"vision_lr": 0}, "vision_lr"),
    ({"warm": {"model": "x"}}, r"warm: \['model'\] are set by the pipeline"),
    ({"stage1": {"learning_rate": -1}}, "stage1"),
    ({"stage2": "fast"}, "stage2 must be a mapping"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(**settings)


def test_cli_errors_are_one_line(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("records: 120\nspeed: 11\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--config", str(recipe), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown settings ['speed']" in error
    with pytest.raises(SystemExit):
        cli.main(["ablate", "--config", str(CI), "--out", str(tmp_path / "out"), "--arms", "everything"])
    assert "arm must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ablate", "--config", str(CI), "--out", str(tmp_path / "out"), "--jobs", "0"])
    assert exit_info.value.code == 2 and "--jobs" in capsys.readouterr().err


def test_the_demo_recipe_loads():
    config = load_pipeline_config(REPO / "recipes" / "pipeline" / "demo.yaml")
    assert config.warm["sft_answers"] == "format" and config.warm["freeze_vision"] is True
    assert config.image_size == 64 and config.k == 6


def test_arms_are_the_papers():
    assert [(arm.dve, arm.stage1) for arm in ARMS] == [(False, False), (False, True), (True, True), (True, False)]
