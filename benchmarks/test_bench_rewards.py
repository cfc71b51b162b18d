"""Throughput of the rewards on one core, uncached, on noisy answers that are all distinct.

Run (one core; ``-s`` prints the answers per second)::

    taskset -c 0 .venv/bin/python -m pytest benchmarks/test_bench_rewards.py -s -p no:cacheprovider

Targets (issue 13): >= 5 000 six-candidate diagnosis answers/s and >= 10 000 captions/s. Nothing is asserted here;
the figures are printed and stored in each benchmark's ``extra_info["answers_per_s"]``. Every answer of a round is
distinct (a unique case number, and noisy candidates: typos, case, plurals, hedges, hyphens, word order, aliases,
trailing scores), taxonomy's label cache is bypassed (``match_label`` then runs ``_match_text`` on every candidate),
and every round starts from fresh targets (no per-target term cache) and an empty ground-truth cache.

The objects that exist before the benchmarks start (torch, imported by benchmarks/conftest.py: ~170 000 objects) are
frozen with ``gc.freeze()``, as a trainer should do after loading its model: otherwise one full collection of that
heap (~100 ms here) lands in every other round and measures the host process, not the rewards. Set
``SKINFLOW_BENCH_GC=default`` to measure without the freeze.
"""

from __future__ import annotations

import gc
import json
import os
import random

import pytest

from skinflow import taxonomy
from skinflow.rewards import _truth, score_caption, score_diagnosis
from skinflow.rewards.noisy import noisy_caption, noisy_diagnosis_answer, random_caption
from skinflow.rewards.trl import caption_reward, diagnosis_reward
from skinflow.rewards.verl import compute_score
from skinflow.targets import CaptionTarget, DiagnosisTarget

N = 2000
ROUNDS = 5


@pytest.fixture(scope="module", autouse=True)
def _frozen_startup_heap():
    if os.environ.get("SKINFLOW_BENCH_GC") == "default":
        yield
        return
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _uncached(monkeypatch):
    """No label cache: every candidate is matched from scratch."""
    monkeypatch.setattr(taxonomy, "_match_cached", taxonomy._match_text)
    _truth._target_from_text.cache_clear()
    yield
    _truth._target_from_text.cache_clear()


@pytest.fixture(scope="module")
def diagnosis_cases():
    rng = random.Random(13)
    cases = []
    for case in range(N):
        label = rng.choice(taxonomy.LABELS)
        text, _ = noisy_diagnosis_answer(label, rng, case)
        cases.append((text, label))
    assert len({text for text, _ in cases}) == N
    return cases


@pytest.fixture(scope="module")
def caption_cases():
    rng = random.Random(13)
    cases = []
    for case in range(N):
        caption = random_caption(rng)
        if not any(caption.values()):
            caption["color"] = "red"
        cases.append((noisy_caption(caption, rng, case), caption))
    assert len({text for text, _ in cases}) == N
    return cases


def _report(benchmark, what: str) -> None:
    rate = N / benchmark.stats.stats.median
    benchmark.extra_info["answers_per_s"] = round(rate)
    print(f"\n{what}: {rate:,.0f} answers/s (median of {ROUNDS} rounds of {N} distinct answers)")


def test_bench_diagnosis_core(benchmark, diagnosis_cases):
    benchmark.group = "rewards"

    def setup():
        return ([(text, DiagnosisTarget(label)) for text, label in diagnosis_cases],), {}

    def run(cases):
        for text, target in cases:
            score_diagnosis(text, target)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    _report(benchmark, "diagnosis (score_diagnosis, 6 candidates)")


def test_bench_caption_core(benchmark, caption_cases):
    benchmark.group = "rewards"

    def setup():
        return ([(text, CaptionTarget(caption)) for text, caption in caption_cases],), {}

    def run(cases):
        for text, target in cases:
            score_caption(text, target)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    _report(benchmark, "caption (score_caption, 12 known fields)")


def test_bench_verl_compute_score(benchmark, diagnosis_cases, caption_cases):
    """verl's entry end to end: JSON ground truths parsed for every answer (their cache emptied each round)."""
    benchmark.group = "rewards"
    rows = [(text, json.dumps(DiagnosisTarget(label).to_json())) for text, label in diagnosis_cases]
    rows += [(text, json.dumps(CaptionTarget(caption).to_json())) for text, caption in caption_cases]

    def setup():
        _truth._target_from_text.cache_clear()
        return (rows,), {}

    def run(rows):
        for text, truth in rows:
            compute_score("skinflow", text, truth)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    rate = len(rows) / benchmark.stats.stats.median
    benchmark.extra_info["answers_per_s"] = round(rate)
    print(f"\nverl compute_score (half diagnosis, half caption, JSON ground truths): {rate:,.0f} answers/s")


def test_bench_trl_batches(benchmark, diagnosis_cases, caption_cases):
    """TRL's reward functions on conversational batches of 2000 (what GRPOTrainer hands them)."""
    benchmark.group = "rewards"
    dx = ([[{"role": "assistant", "content": text}] for text, _ in diagnosis_cases],
          [json.dumps(DiagnosisTarget(label).to_json()) for _, label in diagnosis_cases])
    cap = ([[{"role": "assistant", "content": text}] for text, _ in caption_cases],
           [json.dumps(CaptionTarget(caption).to_json()) for _, caption in caption_cases])
    metrics: dict[str, float] = {}

    def setup():
        _truth._target_from_text.cache_clear()
        return (), {}

    def run():
        diagnosis_reward(completions=dx[0], ground_truth=dx[1], log_metric=metrics.__setitem__)
        caption_reward(completions=cap[0], ground_truth=cap[1], log_metric=metrics.__setitem__)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    rate = 2 * N / benchmark.stats.stats.median
    benchmark.extra_info["answers_per_s"] = round(rate)
    print(f"\nTRL caption_reward + diagnosis_reward (conversational, logging parts): {rate:,.0f} answers/s")
    assert metrics  # the parts were logged
