"""Seconds per GRPO step of the tiny default (group size 8), split into generation, rewards and the update.

Run on a quiet machine (2 cores; ``-s`` prints the table)::

    .venv/bin/python -m pytest benchmarks/test_bench_train.py -s -p no:cacheprovider

One Stage I (caption) run of the embedded tiny default through :func:`skinflow.train.runner.prepare` /
:func:`~skinflow.train.runner.train`, as ``skinflow train caption`` runs it, with the settings of
``recipes/tiny_cpu_caption.yaml`` but ``num_generations: 8`` (one prompt and its 8 completions per step, batch 8)
and no checkpoint before the end: ``WARMUP`` steps, then ``SKINFLOW_BENCH_STEPS`` measured ones (default 10). Each
step is timed from the trainer's ``on_step_begin`` to its ``on_step_end`` and split by timing TRL's own calls in it:

- ``generation``: ``GRPOTrainer._generate`` (prompt templating and ``model.generate`` of the G completions);
- ``rewards``: ``GRPOTrainer._calculate_rewards`` (the caption reward of every completion, its metrics);
- ``update``: the rest of the step (old and reference log-probabilities, the loss, backward, the optimizer).

Nothing is asserted; the medians over the measured steps are printed and stored in ``extra_info`` (seconds). The
random tiny default writes no captions (every reward is 0, its completions run to ``max_new_tokens``); set
``SKINFLOW_BENCH_MODEL`` to a warm-started directory (``skinflow train sft --config recipes/tiny_cpu_sft.yaml``) to
measure completions that end early and score non-zero.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch
from transformers import TrainerCallback

from skinflow.data.records import save_jsonl
from skinflow.data.synthetic import generate
from skinflow.train import load_config
from skinflow.train.runner import prepare, train

WARMUP = 2
STEPS = int(os.environ.get("SKINFLOW_BENCH_STEPS", "10"))
RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "tiny_cpu_caption.yaml")
PARTS = ("generation", "rewards", "update")


class StepTimes(TrainerCallback):
    """Per optimizer step: the whole step and the time spent in the wrapped calls (``parts``)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.current: dict[str, float] = {}
        self.start = 0.0

    def timed(self, part: str, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.current[part] = self.current.get(part, 0.0) + time.perf_counter() - start

        return wrapper

    def on_step_begin(self, args, state, control, **kwargs):
        self.current = {"generation": 0.0, "rewards": 0.0}
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        step = time.perf_counter() - self.start
        self.steps.append({"step": step, **self.current,
                           "update": step - self.current["generation"] - self.current["rewards"]})


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-train")
    return save_jsonl(generate(16, progress=False), root / "data.jsonl", image_dir=root / "images", progress=False)


def test_grpo_step_of_the_tiny_default(benchmark, data_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config(RECIPE, data=str(data_file), out=str(tmp_path / "run"),
                         model=os.environ.get("SKINFLOW_BENCH_MODEL"))
    config = config.replace(num_generations=8, batch_size=8, max_steps=WARMUP + STEPS, save_steps=10_000,
                            split=None, tensorboard=False)
    prepared = prepare(config, progress=False, quiet=True)
    trainer = prepared.trainer
    times = StepTimes()
    trainer._generate = times.timed("generation", trainer._generate)
    trainer._calculate_rewards = times.timed("rewards", trainer._calculate_rewards)
    trainer.add_callback(times)
    benchmark.group = "grpo step (tiny default, G = 8)"
    result = benchmark.pedantic(lambda: train(prepared), rounds=1, iterations=1, warmup_rounds=0)
    assert result.global_step == WARMUP + STEPS and len(times.steps) == WARMUP + STEPS
    measured = times.steps[WARMUP:]
    medians = {part: statistics.median(step[part] for step in measured) for part in ("step", *PARTS)}
    lengths = [entry["completions/mean_length"] for entry in result.log_history if "completions/mean_length" in entry]
    benchmark.extra_info.update({f"{part}_s": round(value, 4) for part, value in medians.items()})
    benchmark.extra_info.update({"impl": "GRPOTrainer", "steps": STEPS, "warmup": WARMUP,
                                 "num_generations": config.num_generations, "max_new_tokens": config.max_new_tokens,
                                 "mean_completion_tokens": round(statistics.mean(lengths[WARMUP:]), 1),
                                 "threads": torch.get_num_threads(), "model": config.model or "tiny-default"})
    print(f"\nGRPO step of {config.model or 'the tiny default'}: G = {config.num_generations}, batch "
          f"{config.batch_size}, max_new_tokens {config.max_new_tokens}, {torch.get_num_threads()} threads, "
          f"median of {STEPS} steps after {WARMUP}")
    for part, value in medians.items():
        print(f"  {part:<11} {value:8.3f} s  {100 * value / medians['step']:5.1f} %")
