"""Shared fixtures of the training tests: eight synthetic records on disk and SFT warm starts of the tiny default
(the random tiny default cannot follow the answer formats, so every GRPO reward would be 0 and no gradient would
flow; the paper's pipeline warm-starts the formats the same way)."""

from __future__ import annotations

import pytest

from skinflow.data.records import save_jsonl
from skinflow.data.synthetic import generate
from skinflow.train import TrainConfig, run

FAST = {"split": None, "batch_size": 8, "save_steps": 1000, "logging_steps": 1}


@pytest.fixture(scope="package")
def data_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    return save_jsonl(generate(8, progress=False), root / "data.jsonl", image_dir=root / "images", progress=False)


@pytest.fixture(scope="package", autouse=True)
def offline(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    yield
    patch.undo()


def warm_start(data_file, out, target: str):
    config = TrainConfig(stage="sft", sft_target=target, data=str(data_file), out=str(out), max_steps=6,
                         learning_rate=1e-2, **FAST)
    return config, run(config, progress=False, quiet=True)


@pytest.fixture(scope="package")
def warm_caption(data_file, tmp_path_factory):
    return warm_start(data_file, tmp_path_factory.mktemp("warm") / "caption", "caption")


@pytest.fixture(scope="package")
def warm_diagnosis(data_file, tmp_path_factory):
    return warm_start(data_file, tmp_path_factory.mktemp("warm") / "diagnosis", "diagnosis")
