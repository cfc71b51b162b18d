"""The ``skinflow train`` command under ``accelerate launch`` with 2 CPU processes (gloo, data parallel): the same
command and code path as one process; rank 0 alone writes run.json, metrics.jsonl, the reference, the curves and
the final model; save_total_limit keeps the newest complete checkpoint; a SIGINT that reaches one process stops
every process at the same step with a complete checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from skinflow.train.runner import COMPLETE_FILE, METRICS_FILE, REFERENCE_DIR, checkpoint_problem

TIMEOUT = 300  # seconds; a rank stuck in a collective fails the test instead of hanging it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(tmp_path, stage: str, out, data_file, recipe: dict, max_steps: int) -> subprocess.Popen:
    config = tmp_path / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump(recipe))
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1",
                        "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()),
               "-m", "skinflow.cli", "train", stage, "--data", str(data_file), "--out", str(out),
               "--config", str(config), "--max-steps", str(max_steps)]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"accelerate launch did not finish in {TIMEOUT} s:\n{stdout}\n{stderr[-4000:]}")
    return process.returncode, stdout, stderr


def check_run(out, stdout: str, stage: str, steps: int, interrupted: bool = False) -> None:
    """One final model, one checkpoint (of both processes), metrics and the result line once, world size 2."""
    verb = "interrupted" if interrupted else "trained"
    assert stdout.count(f"{stage}: {verb} to step {steps}; model in") == 1, stdout
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not [path.name for path in out.iterdir() if path.name.startswith(".")]  # no staging left
    assert sorted(path.name for path in out.glob("checkpoint-*")) == [f"checkpoint-{steps}"]
    checkpoint = out / f"checkpoint-{steps}"
    assert checkpoint_problem(checkpoint) is None
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert json.loads((checkpoint / COMPLETE_FILE).read_text())["world_size"] == 2
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == steps
    entries = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    logged = [entry["step"] for entry in entries if "loss" in entry]
    assert logged == list(range(1, steps + 1))  # once per step: rank 0 only
    record = json.loads((out / "run.json").read_text())
    assert [entry["world_size"] for entry in record["history"]] == [2]
    assert (out / "reward_curves.png").is_file() and list((out / "tensorboard").iterdir())


def test_sft_and_grpo_under_accelerate_launch_with_two_processes(data_file, tmp_path):
    sft = tmp_path / "sft"
    recipe = {"split": None, "batch_size": 2, "learning_rate": 1e-2, "save_steps": 1, "save_total_limit": 1}
    process = launch(tmp_path, "sft", sft, data_file, recipe, max_steps=2)  # checkpoint-1 goes once 2 is complete
    code, stdout, stderr = finish(process)
    assert code == 0, stderr[-4000:]
    check_run(sft, stdout, "sft", 2)

    # GRPO from the tiny default: both processes need DIR/reference, which rank 0 writes while rank 1 waits. A
    # SIGINT sent to rank 1 alone (after step 1) stops both processes at the same step, with a checkpoint.
    grpo = tmp_path / "grpo"
    recipe = {"stage": "caption", "split": None, "batch_size": 4, "num_generations": 4, "max_new_tokens": 6,
              "learning_rate": 1e-3, "save_steps": 1000, "beta": 0.04}
    process = launch(tmp_path, "caption", grpo, data_file, recipe, max_steps=200)
    deadline = time.monotonic() + TIMEOUT
    while not ((grpo / METRICS_FILE).is_file() and (grpo / METRICS_FILE).read_text().strip()):
        assert process.poll() is None, process.communicate()[1][-4000:]
        assert time.monotonic() < deadline, "no step logged"
        time.sleep(0.1)
    ranks = {child.environ().get("RANK"): child for child in psutil.Process(process.pid).children(recursive=True)
             if "skinflow.cli" in child.cmdline()}
    assert set(ranks) == {"0", "1"}
    os.kill(ranks["1"].pid, signal.SIGINT)
    code, stdout, stderr = finish(process)
    assert code != 0  # the workers exit with 130, which the launcher reports as a failure
    assert "caption: interrupted to step " in stdout, stderr[-4000:]
    steps = int(stdout.split("caption: interrupted to step ")[1].split(";")[0])
    assert 1 <= steps < 200
    check_run(grpo, stdout, "caption", steps, interrupted=True)
    assert (grpo / REFERENCE_DIR / "config.json").is_file()
    assert not (grpo / f".{REFERENCE_DIR}.tmp").exists()
    assert stderr.count("note: no model given; using the embedded tiny default") == 1  # notes from rank 0 only
