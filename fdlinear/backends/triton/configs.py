"""Block-size configurations of the Triton kernels: one small fixed set under ``TRITON_INTERPRET=1``
(the interpreter runs every program sequentially in numpy, so tiny tests need few, small tiles),
autotuning candidates on a GPU, pruned by shared-memory and register estimates (docs/triton.md,
"GPU tuning plan").

``FDLINEAR_TRITON_AUTOTUNE=0`` turns the tuning off: each kernel then runs the first candidate that its
pruning keeps (one compilation per kernel variant, not one per candidate; Triton 3.9 also skips timing a lone
survivor, 3.6 still times it once per shape). The GPU test run uses it: many shapes, few compilations. It is read at
each new shape, so it can be changed at run time.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import triton

AUTOTUNE_ENV = "FDLINEAR_TRITON_AUTOTUNE"

# Under the interpreter every block is the smallest tl.dot accepts, so that the odd test sizes
# (13, 19, 37, ...) span several tiles and every masking path runs.
INTERPRETER_BLOCK = 16
# Shared memory one program may use on an H100 (227 KiB), and the part of it the pruning gives a config (the
# estimates below come from another Triton release than the one that may compile them).
MAX_SHARED_BYTES = 227 * 1024
SHARED_BUDGET = MAX_SHARED_BYTES * 95 // 100
# fp32 registers per thread the weight-gradient kernel may give its (K, BLOCK_O, BLOCK_I) dB accumulator.
MAX_ACCUMULATOR_REGISTERS = 64


def autotuning() -> bool:
    """Whether the kernels benchmark their candidates (``$FDLINEAR_TRITON_AUTOTUNE`` is not ``0``)."""
    return os.environ.get(AUTOTUNE_ENV, "1") != "0"


def _kept(configs: list[triton.Config]) -> list[triton.Config]:
    """All of ``configs`` when autotuning, else the first."""
    return configs if autotuning() else configs[:1]


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
    """Candidates for the row-tile kernels (BLOCK_M is chosen by the caller). The last one is small enough for
    fp64 with K up to 16 (the others are pruned there by shared memory)."""
    if interpreted:
        return [triton.Config({"BLOCK_N": INTERPRETER_BLOCK, "BLOCK_R": INTERPRETER_BLOCK, "GROUP_M": 2})]
    shapes = [(128, 64, 8, 3), (128, 64, 8, 2), (128, 32, 8, 3), (128, 32, 8, 4), (256, 32, 8, 3), (64, 64, 4, 3),
              (64, 32, 4, 4), (32, 32, 4, 2)]
    return [
        triton.Config({"BLOCK_N": n, "BLOCK_R": r, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for n, r, w, s in shapes
    ]


def basis_grad_configs(interpreted: bool) -> list[triton.Config]:
    """Candidates for the weight-gradient kernels: (BLOCK_O, BLOCK_I) output tile, BLOCK_T rows per step. The last
    one fits any dtype."""
    if interpreted:
        block = INTERPRETER_BLOCK
        return [triton.Config({"BLOCK_O": block, "BLOCK_I": block, "BLOCK_T": block})]
    shapes = [(128, 128, 64, 8, 3), (64, 128, 64, 8, 3), (128, 64, 64, 8, 3), (64, 64, 64, 8, 3), (64, 64, 32, 4, 4),
              (32, 64, 64, 8, 3), (32, 64, 64, 4, 3), (32, 32, 32, 4, 2)]
    return [
        triton.Config({"BLOCK_O": o, "BLOCK_I": i, "BLOCK_T": t}, num_warps=w, num_stages=s)
        for o, i, t, w, s in shapes
    ]


# Shared memory of one program, in bytes: upper bounds fitted to sm_90 compilations of every candidate (Triton 3.9,
# checked under 3.6 too; bf16, fp32 and fp64 inputs with fp32/fp64 modulations; K = 4 and 8; BLOCK_M = 16 and 128;
# 16-byte-aligned sizes, which pipeline the most); each compiled size is 0.4 to 1.0 of its estimate. A pipelined
# loop keeps num_stages - 1 copies of its loaded tiles plus the operands of the dot; the epilogue reuses the space
# for a (rows, cols) layout conversion of the accumulator. `element`, `accumulator`: bytes of one value of each.
_SHARED_SLACK = 2048


def _sizes(named_args: dict) -> tuple[int, int]:
    """(bytes of an input element, bytes of an accumulator element) from the kernel's ``x_ptr`` argument."""
    element = named_args["x_ptr"].element_size()
    return element, 8 if element == 8 else 4


def mixed_matmul_shared_bytes(config: triton.Config, element: int, accumulator: int, num_bases: int,
                              block_m: int) -> int:
    """mixed_matmul_kernel: an x tile and K basis tiles per stage, the mixed (BLOCK_R, BLOCK_N) operand."""
    n, r, stages = config.kwargs["BLOCK_N"], config.kwargs["BLOCK_R"], config.num_stages
    wide_tile = element * block_m * n if element == 2 and block_m >= 64 else 0  # bf16/fp16 tensor-core staging
    loop = (stages - 1) * element * (block_m * r + num_bases * r * n) + element * r * n + wide_tile
    return max(loop, accumulator * block_m * n) + _SHARED_SLACK


def expanded_matmul_shared_bytes(config: triton.Config, element: int, accumulator: int, block_m: int) -> int:
    """expanded_matmul_kernel: x tile, per-row in_scale gather and one basis tile per stage; the scaled operand."""
    n, r, stages = config.kwargs["BLOCK_N"], config.kwargs["BLOCK_R"], config.num_stages
    loop = (stages - 1) * (element * block_m * r + accumulator * block_m * r + element * r * n)
    loop += element * (block_m * r + r * n)
    return max(loop, accumulator * block_m * n) + _SHARED_SLACK


def weight_grad_shared_bytes(config: triton.Config, element: int, accumulator: int, gathers: bool) -> int:
    """The weight-gradient kernels: a (BLOCK_O, BLOCK_T) gradient and a (BLOCK_T, BLOCK_I) x tile per stage (with
    per-row modulation gathers in the expand form, ``gathers``)."""
    o, i, t, stages = config.kwargs["BLOCK_O"], config.kwargs["BLOCK_I"], config.kwargs["BLOCK_T"], config.num_stages
    if gathers:
        loop = stages * element * (o * t + t * i) + accumulator * (o * t + t * i)
    else:
        loop = stages * element * (o * t + t * i)
    return max(loop, accumulator * o * i) + _SHARED_SLACK


def _fitting(configs: list[triton.Config], shared_bytes: Callable[[triton.Config], int]) -> list[triton.Config]:
    """The configs within the shared-memory budget (tuning) or the first of them (no tuning); the smallest when none
    fits."""
    fitting = [config for config in configs if shared_bytes(config) <= SHARED_BUDGET]
    return _kept(fitting) or [min(configs, key=shared_bytes)]


def prune_by_shared_memory(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """mixed_matmul_kernel: the configs that fit in shared memory (see mixed_matmul_shared_bytes)."""
    element, accumulator = _sizes(named_args)
    return _fitting(configs, lambda config: mixed_matmul_shared_bytes(
        config, element, accumulator, kwargs["NUM_BASES"], kwargs["BLOCK_M"]))


def prune_expanded(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """expanded_matmul_kernel: the configs that fit in shared memory."""
    element, accumulator = _sizes(named_args)
    return _fitting(configs, lambda config: expanded_matmul_shared_bytes(
        config, element, accumulator, kwargs["BLOCK_M"]))


def prune_expanded_basis_grad(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """expanded_basis_grad_kernel: the configs that fit in shared memory."""
    element, accumulator = _sizes(named_args)
    return _fitting(configs, lambda config: weight_grad_shared_bytes(config, element, accumulator, gathers=True))


def prune_by_registers(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Mix-form weight gradient: keep configs whose dB accumulator (NUM_BASES_POW2·BLOCK_O·BLOCK_I values, of the
    accumulator's size, spread over 32·num_warps threads) stays within the register budget and whose tiles fit in
    shared memory; the smallest accumulator otherwise."""
    num_bases = kwargs["NUM_BASES_POW2"]
    element, accumulator = _sizes(named_args)

    def registers(config: triton.Config) -> float:
        words = accumulator // 4
        return words * num_bases * config.kwargs["BLOCK_O"] * config.kwargs["BLOCK_I"] / (32 * config.num_warps)

    fitting = [config for config in configs if registers(config) <= MAX_ACCUMULATOR_REGISTERS
               and weight_grad_shared_bytes(config, element, accumulator, gathers=False) <= SHARED_BUDGET]
    return _kept(fitting) or [min(configs, key=registers)]
