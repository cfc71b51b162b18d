"""benchmarks/summarize.py: pytest-benchmark JSON → the markdown results file of benchmarks/results/."""

import json
import sys
from pathlib import Path

import pytest

from tests import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import summarize  # noqa: E402


def bench(group: str, impl: str, median_s: float, **extra) -> dict:
    return {"group": group, "name": f"test[{impl}]", "stats": {"median": median_s}, "extra_info": {"impl": impl, **extra}}


def write_run(path: Path, benchmarks: list[dict]) -> Path:
    run = {"machine_info": {"python_version": "3.12.3", "cpu": {"brand_raw": "Some CPU"}},
           "datetime": "2026-12-01T10:00:00", "benchmarks": benchmarks}
    path.write_text(json.dumps(run))
    return path


def test_ratios_are_to_the_groups_nn_linear_and_prefer_cuda_events(tmp_path):
    gpu = dict(device="NVIDIA H200", torch="2.11.0", triton="3.6.0")
    path = write_run(tmp_path / "gpu.json", [
        bench("forward qkv", "triton", 0.5, cuda_event_ms=0.150, peak_mb=12.4, **gpu),
        bench("forward qkv", "nn.Linear", 0.4, cuda_event_ms=0.100, peak_mb=10.0, **gpu),
        bench("forward down", "nn.Linear", 0.002),  # no CUDA-event time: the wall-clock median
        bench("forward down", "reference", 0.005),
    ])
    out = tmp_path / "results" / "h200.md"
    assert summarize.main([str(path), "--command", "bash benchmarks/gpu_check.sh", "--output", str(out)]) == 0
    text = out.read_text()
    assert "Command: `bash benchmarks/gpu_check.sh`" in text
    assert "- device: NVIDIA H200" in text and "- torch: 2.11.0" in text and "- triton: 3.6.0" in text
    assert "| triton | 0.150 | 1.50 | 12 | CUDA events |" in text
    assert "| nn.Linear | 0.100 | 1.00 | 10 | CUDA events |" in text
    assert "| reference | 5.000 | 2.50 |  | wall clock |" in text
    assert text.index("### forward down") < text.index("### forward qkv")
    qkv = text[text.index("### forward qkv"):]
    assert qkv.index("| nn.Linear") < qkv.index("| triton")  # rows sorted by time


def test_a_group_without_nn_linear_has_no_ratio(tmp_path):
    path = write_run(tmp_path / "cpu.json", [bench("crossover", "native mix", 0.01)])
    text = summarize.summarize(summarize.load_runs([path]), "pytest benchmarks")
    assert "| native mix | 10.000 | – |  | wall clock |" in text
    assert "- device: Some CPU" in text


def test_a_file_that_is_not_benchmark_json_is_named(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(SystemExit, match="notes.json: not pytest-benchmark JSON"):
        summarize.load_runs([bad])
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SystemExit, match="broken.json"):
        summarize.load_runs([broken])
