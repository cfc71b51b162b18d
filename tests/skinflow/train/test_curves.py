"""reward_curves.png from metrics.jsonl: a step logged twice (a resume from an earlier checkpoint) keeps its last
entry, a line cut short is skipped, the summary entry is not a step, and a log without steps draws nothing."""

from __future__ import annotations

import json

from PIL import Image

from skinflow.train.curves import _panels, curves_from_metrics, plot_curves


def write_metrics(path, entries, tail=""):
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries) + tail)
    return path


def test_curves_keep_the_last_entry_of_a_step(tmp_path):
    entries = [
        {"step": 1, "time": 1.0, "loss": 0.5, "reward": 0.1, "kl": 0.0, "rewards/caption_reward/mean": 0.1,
         "rewards/caption_reward/std": 0.05, "rewards/caption_reward/format": 1.0,
         "rewards/caption_reward/field/color": 0.2},
        {"step": 2, "time": 2.0, "loss": 0.4, "reward": 0.2, "kl": 0.01},
        {"step": 2, "time": 3.0, "loss": 0.3, "reward": 0.3, "kl": 0.02},  # the resumed run's step 2
        {"step": 2, "time": 4.0, "train_runtime": 3.0, "train_loss": 0.35},
    ]
    metrics = write_metrics(tmp_path / "metrics.jsonl", entries, tail='{"step": 3, "loss": 0.')
    curves = curves_from_metrics(metrics)
    assert curves["loss"] == [(1, 0.5), (2, 0.3)] and curves["reward"] == [(1, 0.1), (2, 0.3)]
    assert "train_runtime" not in curves and "time" not in curves
    assert _panels(curves) == [
        ("reward and its parts", ["reward", "rewards/caption_reward/format"]),
        ("caption fields (reward parts)", ["rewards/caption_reward/field/color"]),
        ("loss", ["loss"]),
        ("KL to the reference", ["kl"]),
    ]
    png = plot_curves(metrics, tmp_path / "curves.png", title="caption")
    with Image.open(png) as image:
        assert image.format == "PNG"
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # written atomically


def test_sft_curves_and_an_empty_log(tmp_path):
    sft = write_metrics(tmp_path / "sft.jsonl", [{"step": 1, "loss": 2.0, "mean_token_accuracy": 0.1}])
    assert _panels(curves_from_metrics(sft)) == [("loss", ["loss"]), ("mean token accuracy", ["mean_token_accuracy"])]
    empty = write_metrics(tmp_path / "empty.jsonl", [{"step": 0, "train_runtime": 1.0}])
    assert plot_curves(empty, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
