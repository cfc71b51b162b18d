"""Turn pytest-benchmark JSON files into the markdown results file kept in ``benchmarks/results/``.

    python benchmarks/summarize.py triton.json native.json --command "bash benchmarks/gpu_check.sh" \\
        --output benchmarks/results/h200.md

One table per benchmark group (a workload: shape, layout, pass), its rows sorted by time, each with its ratio to the
group's ``nn.Linear`` row measured in the same run. The time is the CUDA-event median (``extra_info["cuda_event_ms"]``)
where the benchmark recorded one, else pytest-benchmark's wall-clock median. The header names the device, the
library versions, the date of the run and the command that produced it (docs/design.md §4).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

BASELINE = "nn.Linear"


def load_runs(paths: Sequence[Path]) -> list[dict]:
    """The parsed JSON of each file; a file that is not pytest-benchmark output is an error naming it."""
    runs = []
    for path in paths:
        try:
            run = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SystemExit(f"results file {path}: {error}") from None
        if not isinstance(run, dict) or not isinstance(run.get("benchmarks"), list):
            raise SystemExit(f"results file {path}: not pytest-benchmark JSON (no 'benchmarks' list)")
        runs.append(run)
    return runs


def row_time_ms(bench: dict) -> tuple[float, str]:
    """(milliseconds, how they were measured) of one benchmark."""
    event_ms = bench.get("extra_info", {}).get("cuda_event_ms")
    if event_ms is not None:
        return float(event_ms), "CUDA events"
    return float(bench["stats"]["median"]) * 1e3, "wall clock"


def environment_lines(run: dict) -> list[str]:
    """Device and versions of one run, from the benchmarks' extra_info (GPU runs) or pytest-benchmark's machine_info."""
    extra = next((b.get("extra_info", {}) for b in run["benchmarks"] if "device" in b.get("extra_info", {})), {})
    machine = run.get("machine_info", {})
    device = extra.get("device") or machine.get("cpu", {}).get("brand_raw") or machine.get("machine", "unknown")
    lines = [f"- device: {device}"]
    for name in ("torch", "triton"):
        if name in extra:
            lines.append(f"- {name}: {extra[name]}")
    if "python_version" in machine:
        lines.append(f"- python: {machine['python_version']}")
    if "datetime" in run:
        lines.append(f"- run: {run['datetime']}")
    return lines


def group_table(benches: list[dict]) -> list[str]:
    """Markdown rows for one group: implementation, time, ratio to nn.Linear, peak memory, method."""
    timed = sorted(((row_time_ms(b), b) for b in benches), key=lambda item: item[0][0])
    base = next((ms for (ms, _), b in timed if b.get("extra_info", {}).get("impl") == BASELINE), None)
    lines = ["| implementation | median ms | × nn.Linear | peak MiB | timed by |", "|---|---:|---:|---:|---|"]
    for (ms, method), bench in timed:
        extra = bench.get("extra_info", {})
        ratio = f"{ms / base:.2f}" if base else "–"
        peak = extra.get("peak_mb")
        peak_text = "" if peak is None else f"{peak:.0f}"
        lines.append(f"| {extra.get('impl', bench['name'])} | {ms:.3f} | {ratio} | {peak_text} | {method} |")
    return lines


def summarize(runs: Sequence[dict], command: str) -> str:
    """The markdown document for ``runs`` produced by ``command``."""
    parts = ["# Benchmark results", "", f"Command: `{command}`", ""]
    for index, run in enumerate(runs, 1):
        parts += [f"## Run {index}", "", *environment_lines(run), ""]
        groups: dict[str, list[dict]] = {}
        for bench in run["benchmarks"]:
            groups.setdefault(bench.get("group") or bench["name"], []).append(bench)
        for group in sorted(groups):
            parts += [f"### {group}", "", *group_table(groups[group]), ""]
    return "\n".join(parts)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="pytest-benchmark JSON files (--benchmark-json)")
    parser.add_argument("--command", required=True, help="the command that produced the results")
    parser.add_argument("--output", type=Path, help="markdown file to write (default: standard output)")
    args = parser.parse_args(argv)
    text = summarize(load_runs(args.results), args.command)
    if args.output is None:
        print(text)
    else:
        write_atomically(args.output, text + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
