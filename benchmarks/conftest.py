"""Shared benchmark helpers and the comparison table printed after ``pytest benchmarks/``.

Every benchmark sets ``benchmark.group`` to one workload (shape, pass) and ``benchmark.extra_info["impl"]`` to
the implementation; the table gives each row's median time (robust to interference on a shared machine) and its ratio to the ``nn.Linear`` row of its group
(same tokens), measured side by side in the same run. Peak memory is shown where ``extra_info["peak_mb"]`` is set.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))

from fdlinear import FDLinear  # noqa: E402


def active_layer(d_in: int, d_out: int, num_bases: int, dtype=torch.float32, device="cpu", seed: int = 0) -> FDLinear:
    """An FDLinear with non-zero modulation heads (so the modulations are active, as after training)."""
    torch.manual_seed(seed)
    layer = FDLinear(d_in, d_out, num_bases=num_bases, device=device, dtype=dtype)
    with torch.no_grad():
        for head in layer.KSM_Global.heads():
            head.weight.normal_(0, 0.1)
            head.bias.normal_(0, 0.1)
    return layer


def packed_tokens(samples: int, tokens: int, d_in: int, dtype=torch.float32, device="cpu", seed: int = 0):
    """(x (samples*tokens, d_in), cu_seqlens (samples+1,)) with equal-length samples."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples * tokens, d_in, generator=gen).to(device=device, dtype=dtype)
    cu = torch.arange(samples + 1, device=device, dtype=torch.int64) * tokens
    return x, cu


def alternating_rounds(benchmark, runs: dict, rounds: int, warmup: int) -> dict[str, float]:
    """Time every callable of ``runs`` once per round, in an order reversed every other round (so that neither
    always runs first after the other), under ``benchmark.pedantic``; returns each one's median in ms over the
    rounds after ``warmup``. Ratios of these medians are free of the machine's drift between rounds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    first = next(iter(runs))

    def one_round() -> None:
        order = list(runs) if len(times[first]) % 2 == 0 else list(reversed(runs))
        for name in order:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)

    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=warmup)
    return {name: statistics.median(samples[warmup:]) * 1e3 for name, samples in times.items()}


def pytest_configure(config):
    if not torch.cuda.is_available():
        torch.set_num_threads(2)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, list] = {}
    for bench in session.benchmarks:
        own_table = {"paired_ratio", "paired_ms", "answers_per_s"} & set(bench.extra_info)  # tables below
        if not own_table:
            groups.setdefault(bench.group or "", []).append(bench)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    write = terminalreporter.write_line
    write("")
    write(f"FDLinear comparison (device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()})")
    write(f"{'group':<48} {'implementation':<22} {'median ms':>10} {'x nn.Linear':>12} {'peak MB':>9}")
    for group, benches in sorted(groups.items()):
        base = next((b for b in benches if b.extra_info.get("impl") == "nn.Linear"), None)
        for bench in sorted(benches, key=lambda b: b.stats.median):
            median = bench.stats.median
            ratio = f"{median / base.stats.median:.2f}" if base is not None else "-"
            peak = bench.extra_info.get("peak_mb")
            impl = bench.extra_info.get("impl", bench.name)
            write(f"{group:<48} {impl:<22} {median * 1e3:>10.3f} {ratio:>12} {'' if peak is None else f'{peak:.0f}':>9}")
    paired = [b for b in session.benchmarks if "paired_ratio" in b.extra_info]
    if paired:
        write("")
        write(f"{'paired group (alternating calls)':<48} {'op ms':>10} {'nn.Linear ms':>13} {'op / nn.Linear':>15}")
        for bench in sorted(paired, key=lambda b: b.group or ""):
            info = bench.extra_info
            write(f"{bench.group:<48} {info['op_ms']:>10.3f} {info['linear_ms']:>13.3f} {info['paired_ratio']:>15.2f}")
    breakdowns = [b for b in session.benchmarks if "paired_ms" in b.extra_info]
    if breakdowns:
        write("")
        write(f"{'breakdown group (every part in each round)':<56} {'part':<16} {'median ms':>10} {'x nn.Linear':>12}")
        for bench in sorted(breakdowns, key=lambda b: b.group or ""):
            parts = bench.extra_info["paired_ms"]
            for part, ms in parts.items():
                write(f"{bench.group:<56} {part:<16} {ms:>10.3f} {ms / parts['nn.Linear']:>12.2f}")
            if "per_sample_loop" in parts and "layer" in parts:
                loop = parts["per_sample_loop"] / parts["layer"]
                write(f"{bench.group:<56} {'loop / layer':<16} {'':>10} {loop:>12.2f}")
    rates = [b for b in session.benchmarks if "answers_per_s" in b.extra_info]
    if rates:
        write("")
        write(f"{'rewards (one core, uncached, distinct noisy answers)':<56} {'answers/s':>12}")
        for bench in rates:
            write(f"{bench.name:<56} {bench.extra_info['answers_per_s']:>12,}")
