"""Checkpoints and resume: N steps straight equal N/2 + resume + N/2 (to tolerance), a finished run continues with
a larger max_steps, SIGINT ends with a resumable checkpoint, and the output directory guards its runs."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from skinflow.train import TrainConfig, run
from skinflow.train.runner import last_checkpoint, prepare, train
from tests.skinflow.train.conftest import FAST


def assert_same_weights(left, right, tolerance=1e-5):
    a, b = load_file(left / "model.safetensors"), load_file(right / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=tolerance, rtol=tolerance, msg=key)


def sft(data_file, out, steps, **changes):
    settings = FAST | {"batch_size": 2} | changes  # 4 steps per epoch: a resume lands inside an epoch
    return TrainConfig(stage="sft", data=str(data_file), out=str(out), max_steps=steps, learning_rate=1e-2,
                       **settings)


def test_sft_resume_is_exact(data_file, tmp_path):
    straight = run(sft(data_file, tmp_path / "straight", 4), progress=False, quiet=True)
    half = run(sft(data_file, tmp_path / "halves", 2), progress=False, quiet=True)
    assert half.checkpoint.name == "checkpoint-2"
    resumed = run(sft(data_file, tmp_path / "halves", 4), resume=True, progress=False, quiet=True)
    assert resumed.global_step == straight.global_step == 4
    assert last_checkpoint(tmp_path / "halves").name == "checkpoint-4"
    state = json.loads((tmp_path / "halves" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert_same_weights(straight.out, resumed.out)
    history = json.loads((tmp_path / "halves" / "run.json").read_text())["history"]
    assert [entry["resumed_from"] for entry in history] == [None, "checkpoint-2"]


def test_grpo_resume_is_exact(warm_diagnosis, data_file, tmp_path):
    def config(out, steps):
        return TrainConfig(stage="diagnosis", model=str(warm_diagnosis[1].out), data=str(data_file), out=str(out),
                           max_steps=steps, learning_rate=1e-3, num_generations=4, max_new_tokens=8,
                           reward={"group9_credit": 0.5, "group3_credit": 0.25}, **(FAST | {"batch_size": 4}))

    straight = run(config(tmp_path / "straight", 2), progress=False, quiet=True)
    run(config(tmp_path / "halves", 1), progress=False, quiet=True)
    resumed = run(config(tmp_path / "halves", 2), resume=True, progress=False, quiet=True)
    assert resumed.global_step == 2
    assert_same_weights(straight.out, resumed.out)


def test_sigint_ends_with_a_resumable_checkpoint(data_file, tmp_path):
    class InterruptAtFirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when started in the background
    prepared = prepare(sft(data_file, tmp_path / "run", 3), progress=False, quiet=True)
    prepared.trainer.add_callback(InterruptAtFirstStep())
    result = train(prepared)
    assert result.interrupted and result.global_step == 1 and result.checkpoint.name == "checkpoint-1"
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored
    finished = run(sft(data_file, tmp_path / "run", 3), resume=True, progress=False, quiet=True)
    assert finished.global_step == 3 and not finished.interrupted


def test_output_directory_guards(data_file, tmp_path):
    with pytest.raises(ValueError, match="holds no checkpoint"):
        prepare(sft(data_file, tmp_path / "new", 1), resume=True, quiet=True)
    run(sft(data_file, tmp_path / "done", 1), progress=False, quiet=True)
    with pytest.raises(ValueError, match="already holds checkpoint-1; pass --resume"):
        prepare(sft(data_file, tmp_path / "done", 2), quiet=True)
    with pytest.raises(ValueError, match="holds a 'sft' run"):
        prepare(TrainConfig(stage="caption", data=str(data_file), out=str(tmp_path / "done")), resume=True,
                quiet=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        prepare(sft(data_file, tmp_path / "file", 1), quiet=True)
    with pytest.raises(FileNotFoundError, match="parent directory"):
        prepare(sft(data_file, tmp_path / "a" / "b", 1), quiet=True)
