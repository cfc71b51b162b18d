"""Block-size configurations of the Triton kernels: one small fixed set under ``TRITON_INTERPRET=1``
(the interpreter runs every program sequentially in numpy, so tiny tests need few, small tiles),
autotuning candidates on a GPU, pruned by shared-memory and register estimates (docs/triton.md,
"GPU tuning plan").

``FDLINEAR_TRITON_AUTOTUNE=0`` turns the tuning off: each kernel then runs the first candidate that its
pruning keeps, with no benchmarking (the GPU test run uses it: many shapes, few compilations). It is read at
each new shape, so it can be changed at run time.
"""

from __future__ import annotations

import os

import triton

AUTOTUNE_ENV = "FDLINEAR_TRITON_AUTOTUNE"

# Under the interpreter every block is the smallest tl.dot accepts, so that the odd test sizes
# (13, 19, 37, ...) span several tiles and every masking path runs.
INTERPRETER_BLOCK = 16
# Shared memory one program may use on an H100 (227 KiB).
MAX_SHARED_BYTES = 227 * 1024
# fp32 registers per thread the weight-gradient kernel may give its (K, BLOCK_O, BLOCK_I) dB accumulator.
MAX_ACCUMULATOR_REGISTERS = 64


def autotuning() -> bool:
    """Whether the kernels benchmark their candidates (``$FDLINEAR_TRITON_AUTOTUNE`` is not ``0``)."""
    return os.environ.get(AUTOTUNE_ENV, "1") != "0"


def _kept(configs: list[triton.Config]) -> list[triton.Config]:
    """All of ``configs`` when autotuning, else the first."""
    return configs if autotuning() else configs[:1]


def first_unless_autotuning(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Pruning of the kernels that need none: every candidate, or only the first when autotuning is off."""
    return _kept(configs)


def mix_block_m(num_rows: int, num_samples: int, interpreted: bool) -> int:
    """Rows per mix-form tile: as large as the mean sample allows, so that each mixed weight
    tile serves many rows (the mixing costs about K/BLOCK_M of the tile's matmul)."""
    if interpreted:
        return INTERPRETER_BLOCK
    mean_length = num_rows / max(num_samples, 1)
    return 128 if mean_length >= 96 else 64 if mean_length >= 48 else 32 if mean_length >= 24 else 16


def expand_block_m(interpreted: bool) -> int:
    """Rows per expand-form tile (rows of any samples; modulations are gathered per row)."""
    return INTERPRETER_BLOCK if interpreted else 128


def matmul_configs(interpreted: bool) -> list[triton.Config]:
    """Candidates for the row-tile kernels (BLOCK_M is chosen by the caller)."""
    if interpreted:
        return [triton.Config({"BLOCK_N": INTERPRETER_BLOCK, "BLOCK_R": INTERPRETER_BLOCK, "GROUP_M": 2})]
    shapes = [(128, 64, 8, 3), (128, 64, 8, 2), (128, 32, 8, 3), (128, 32, 8, 4), (256, 32, 8, 3), (64, 64, 4, 3),
              (64, 32, 4, 4)]
    return [
        triton.Config({"BLOCK_N": n, "BLOCK_R": r, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for n, r, w, s in shapes
    ]


def prune_by_shared_memory(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Mix-form kernel: keep configs whose pipelined K basis tiles and x tile fit in shared memory
    (estimate: stages·K·BLOCK_R·BLOCK_N + (stages-1)·BLOCK_M·BLOCK_R elements); the smallest otherwise."""
    num_bases = kwargs["NUM_BASES"]
    block_m = kwargs["BLOCK_M"]
    element = named_args["x_ptr"].element_size()

    def shared_bytes(config: triton.Config) -> int:
        block_n, block_r, stages = config.kwargs["BLOCK_N"], config.kwargs["BLOCK_R"], config.num_stages
        return element * (stages * num_bases * block_r * block_n + (stages - 1) * block_m * block_r)

    fitting = [config for config in configs if shared_bytes(config) <= MAX_SHARED_BYTES]
    return _kept(fitting) or [min(configs, key=shared_bytes)]


def basis_grad_configs(interpreted: bool) -> list[triton.Config]:
    """Candidates for the weight-gradient kernels: (BLOCK_O, BLOCK_I) output tile, BLOCK_T rows per step."""
    if interpreted:
        block = INTERPRETER_BLOCK
        return [triton.Config({"BLOCK_O": block, "BLOCK_I": block, "BLOCK_T": block})]
    shapes = [(128, 128, 64, 8, 3), (64, 128, 64, 8, 3), (128, 64, 64, 8, 3), (64, 64, 64, 8, 3), (64, 64, 32, 4, 4),
              (32, 64, 64, 8, 3), (32, 64, 64, 4, 3)]
    return [
        triton.Config({"BLOCK_O": o, "BLOCK_I": i, "BLOCK_T": t}, num_warps=w, num_stages=s)
        for o, i, t, w, s in shapes
    ]


def prune_by_registers(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Mix-form weight gradient: keep configs whose dB accumulator (NUM_BASES_POW2·BLOCK_O·BLOCK_I fp32,
    spread over 32·num_warps threads) stays within the register budget; the smallest otherwise."""
    num_bases = kwargs["NUM_BASES_POW2"]

    def registers(config: triton.Config) -> float:
        return num_bases * config.kwargs["BLOCK_O"] * config.kwargs["BLOCK_I"] / (32 * config.num_warps)

    fitting = [config for config in configs if registers(config) <= MAX_ACCUMULATOR_REGISTERS]
    return _kept(fitting) or [min(configs, key=registers)]
