"""Each stage runs on the tiny default (CPU, a few steps): finite loss, the DVE and the other parameters change,
rewards are logged, the output directory reloads with load_pretrained, run.json and metrics.jsonl are written."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from skinflow.model.dve import load_pretrained
from skinflow.model.processor import load_processor
from skinflow.train import TrainConfig, run
from skinflow.train.runner import REFERENCE_DIR, checkpoint_problem
from tests.skinflow.train.conftest import FAST


def changed(before: dict, after: dict, part: str) -> bool:
    keys = [key for key in before if part in key]
    assert keys, part
    return any(not torch.equal(before[key], after[key]) for key in keys)


def check_output(result, stage: str):
    out = result.out
    model = load_pretrained(out)
    assert model.config.vision_config.dve["num_bases"] == 4
    load_processor(out, config=model.config)
    assert result.checkpoint == out / f"checkpoint-{result.global_step}"  # every run ends resumable
    assert checkpoint_problem(result.checkpoint) is None
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["stage"] == stage and record["dve"] == model.config.vision_config.dve
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in metrics if "loss" in entry]
    assert losses and all(math.isfinite(loss) for loss in losses)
    return record, metrics


def test_sft_warm_start(warm_caption):
    config, result = warm_caption
    assert result.global_step == 6 and not result.interrupted
    record, metrics = check_output(result, "sft")
    losses = [entry["loss"] for entry in metrics if "loss" in entry]
    assert losses[-1] < losses[0]  # it learns the caption layout
    assert record["reward"] is None


def tensorboard_scalars(folder) -> dict[str, list[int]]:
    """Tag -> steps of the scalars in the TensorBoard event files of ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [event.step for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("stage", ["caption", "diagnosis"])
def test_grpo_stage(stage, warm_caption, warm_diagnosis, data_file, tmp_path, capsys):
    start = (warm_caption if stage == "caption" else warm_diagnosis)[1].out
    config = TrainConfig(stage=stage, model=str(start), data=str(data_file), out=str(tmp_path / stage),
                         max_steps=2, learning_rate=1e-3, num_generations=4, max_new_tokens=12, beta=0.04,
                         reward={"group9_credit": 0.5, "group3_credit": 0.25} if stage == "diagnosis" else {},
                         **FAST)  # the group credits give the barely warm diagnosis model reward differences
    result = run(config, progress=stage == "caption", quiet=True)
    record, metrics = check_output(result, stage)
    name = f"{stage}_reward"
    assert record["reward"]["name"] == name
    assert ("format_weight" if stage == "caption" else "rank_weights") in record["reward"]["config"]
    assert all(f"rewards/{name}/mean" in entry and "kl" in entry for entry in metrics if "loss" in entry)
    # what a user watches: the bar's postfix (caption: progress on), TensorBoard, the curves
    bar = capsys.readouterr().err
    if stage == "caption":
        assert "2/2" in bar and all(f"{key}=" in bar for key in ("reward", "loss", "kl"))
    else:
        assert "2/2" not in bar and "reward=" not in bar
    scalars = tensorboard_scalars(result.out / "tensorboard")
    for tag in ("train/reward", "train/loss", "train/kl", f"train/rewards/{name}/mean"):
        assert scalars[tag] == [1, 2], tag
    assert result.curves == result.out / "reward_curves.png"
    with Image.open(result.curves) as image:
        assert image.format == "PNG" and image.height > 3 * 200  # reward (+ caption fields), loss, KL panels
    before, after = load_file(start / "model.safetensors"), load_file(result.out / "model.safetensors")
    assert changed(before, after, "dft_weight") or changed(before, after, "KSM_Global")  # the DVE layers learn
    assert changed(before, after, "model.layers.") and changed(before, after, "visual.blocks.0.")
    assert not (result.out / REFERENCE_DIR).exists()  # the start directory is the reference


def test_dve_is_applied_to_a_checkpoint_without_it(data_file, tmp_path, capsys):
    from skinflow.model import tiny

    model, processor = tiny.build(dve=False)
    model.save_pretrained(tmp_path / "plain")
    processor.save_pretrained(tmp_path / "plain")
    config = TrainConfig(stage="sft", model=str(tmp_path / "plain"), data=str(data_file), out=str(tmp_path / "o"),
                         max_steps=1, learning_rate=1e-3, dve_blocks=[3], dve_projections=["qkv"], **FAST)
    result = run(config, progress=False)
    said = [line for line in capsys.readouterr().err.splitlines() if "has no DVE; applied it" in line]
    assert len(said) == 1 and said[0].startswith("note: model ")
    assert any("has no DVE; applied it" in note for note in json.loads((result.out / "run.json").read_text())["notes"])
    assert load_pretrained(result.out).config.vision_config.dve == {"blocks": [3], "projections": ["qkv"],
                                                                     "num_bases": 4}


def test_the_dve_applied_to_a_checkpoint_depends_on_the_seed_only(tmp_path):
    import torch

    from skinflow.model import tiny
    from skinflow.train.runner import _load_model

    model, processor = tiny.build(dve=False)
    model.save_pretrained(tmp_path / "plain")
    processor.save_pretrained(tmp_path / "plain")
    config = TrainConfig(stage="sft", model=str(tmp_path / "plain"), data="unused.jsonl", out=str(tmp_path / "o"))

    def dve_weights(global_seed: int, run_seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(global_seed)  # whatever ran before in the process
        loaded, _ = _load_model(config.replace(seed=run_seed), [], quiet=True)
        return {name: p.detach().clone() for name, p in loaded.named_parameters() if "KSM_Global" in name}

    first, second, other = dve_weights(1, 0), dve_weights(2, 0), dve_weights(1, 5)
    assert first and all(torch.equal(first[name], second[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)


def test_bad_rows_fail_before_training(data_file, tmp_path):
    lines = data_file.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], lines[1].replace('"label": "', '"label": "banana ')] + lines[2:]) + "\n")
    for name in ("images",):
        (tmp_path / name).symlink_to(data_file.parent / name)
    config = TrainConfig(stage="sft", data=str(bad), out=str(tmp_path / "o"), max_steps=1, **FAST)
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*label"):
        run(config, progress=False, quiet=True)
    assert not (tmp_path / "o").exists()
    empty = tmp_path / "empty.jsonl"  # a caption-stage record without a caption target
    first = json.loads(lines[0])
    empty.write_text(json.dumps({**first, "caption": {}}) + "\n")
    config = TrainConfig(stage="caption", data=str(empty), out=str(tmp_path / "o"), max_steps=1, **FAST)
    with pytest.raises(ValueError, match=r"record 0 \(id .*caption is empty"):
        run(config, progress=False, quiet=True)
    assert not (tmp_path / "o").exists()
    broken = tmp_path / "broken"  # an image that does not decode: the line and the file are named
    shutil.copytree(data_file.parent / "images", broken / "images")
    image = json.loads(lines[1])["image_path"]
    (broken / image).write_text("not an image")
    (broken / "data.jsonl").write_text(data_file.read_text())
    config = TrainConfig(stage="sft", data=str(broken / "data.jsonl"), out=str(tmp_path / "o"), max_steps=1, **FAST)
    with pytest.raises(ValueError, match=rf"data.jsonl:2: .*{Path(image).name}.* is not an image"):
        run(config, progress=False, quiet=True)
    assert not (tmp_path / "o").exists()
    llama = tmp_path / "llama"  # a model directory that is not a Qwen2.5-VL
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    config = TrainConfig(stage="sft", model=str(llama), data=str(data_file), out=str(tmp_path / "o"), max_steps=1,
                         **FAST)
    with pytest.raises(ValueError, match=r"model .*llama.*: config.json has model_type 'llama'; .*Qwen2.5-VL"):
        run(config, progress=False, quiet=True)
    assert not (tmp_path / "o").exists()
