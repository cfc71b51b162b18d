"""Compile the triton kernels for sm_90 without a GPU and report their shared memory (run as a script by
tests/test_triton.py, outside the interpreter). Prints one JSON object per line:

* ``first``: for each kernel and case (dtype, K, BLOCK_M), the config its pruning keeps first (the one that runs
  with FDLINEAR_TRITON_AUTOTUNE=0, and the one autotuning can always fall back to), compiled;
* ``every``: every candidate of each kernel for the production case (bf16, K = 4, BLOCK_M = 128) with its estimate.

Each row also says whether the PTX uses the tensor cores (``mma``).

Signatures are the launchers' (inputs in x's dtype, modulations in the accumulator's, int32 indices) and integer
arguments are specialised as the JIT does on a 16-byte-aligned problem (1280 -> 3840), the case that pipelines the
most shared memory.
"""

from __future__ import annotations

import json

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fdlinear.backends.triton import configs, grad_kernels, matmul_kernels

TARGET = GPUTarget("cuda", 90, 32)
POINTER = {torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.float64: "*fp64"}
D_IN, D_OUT, ROWS, SAMPLES = 1280, 3840, 8192, 8


def compile_for_h100(kernel, config: triton.Config, constants: dict, pointers: dict, ints: dict) -> tuple[int, bool]:
    """Compile ``kernel`` with ``config`` → (shared memory in bytes, whether its PTX uses the tensor cores). Ints
    equal to 1 become constants, multiples of 16 get the divisibility hint (as the JIT specialises them)."""
    fn = kernel.fn
    constants = {**constants, **config.kwargs}
    signature, attrs = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = pointers[name]
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif ints[name] == 1:
            constants[name] = 1
            signature[name] = "constexpr"
        else:
            signature[name] = "i32"
            if ints[name] % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    compiled = triton.compile(ASTSource(fn, signature, constants, attrs), target=TARGET, options=options)
    return compiled.metadata.shared, "mma" in compiled.asm["ptx"]


def case_setup(kernel_name: str, dtype: torch.dtype, num_bases: int, block_m: int):
    """(kernel, candidates, prune, estimate(config), constants, pointers, ints) of one kernel and case."""
    x = POINTER[dtype]
    acc_ptr, acc = ("*fp64", tl.float64) if dtype == torch.float64 else ("*fp32", tl.float32)
    element = torch.empty(0, dtype=dtype).element_size()
    accumulator = 8 if dtype == torch.float64 else 4
    named = {"x_ptr": torch.empty(0, dtype=dtype)}
    common = {"ACC_DTYPE": acc, "INPUT_PRECISION": "ieee"}
    k = num_bases
    if kernel_name == "mixed_matmul_kernel":
        constants = dict(NUM_BASES=k, HAS_BIAS=True, BLOCK_M=block_m, **common)
        pointers = dict(x_ptr=x, bases_ptr=x, in_scale_ptr=acc_ptr, out_scale_ptr=acc_ptr, beta_ptr=acc_ptr,
                        bias_ptr=x, out_ptr=x, tile_sample_ptr="*i32", tile_start_ptr="*i32", cu_seqlens_ptr="*i32")
        ints = dict(num_tiles=72, n_size=D_OUT, r_size=D_IN, stride_x=D_IN, stride_bk=D_OUT * D_IN, stride_bn=D_IN,
                    stride_br=1, stride_in=D_IN, stride_out=D_OUT, stride_beta=k, stride_y=D_OUT)
        return (matmul_kernels.mixed_matmul_kernel, configs.matmul_configs(False),
                lambda cs: configs.prune_by_shared_memory(cs, named, NUM_BASES=k, BLOCK_M=block_m),
                lambda c: configs.mixed_matmul_shared_bytes(c, element, accumulator, k, block_m),
                constants, pointers, ints)
    if kernel_name == "expanded_matmul_kernel":
        block_m = configs.expand_block_m(False)
        constants = dict(NUM_BASES=k, HAS_BIAS=False, STORE_OUT=False, SCALE_GRAD=True, BETA_GRAD=True,
                         BLOCK_M=block_m, **common)
        pointers = dict(x_ptr=x, bases_ptr=x, in_scale_ptr=acc_ptr, out_scale_ptr=acc_ptr, beta_ptr=acc_ptr,
                        bias_ptr=x, out_ptr=x, partner_ptr=x, scale_grad_ptr=acc_ptr, beta_grad_ptr=acc_ptr,
                        sample_of_row_ptr="*i32")
        ints = dict(num_rows=ROWS, n_size=D_OUT, r_size=D_IN, stride_x=D_IN, stride_bk=D_OUT * D_IN, stride_bn=D_IN,
                    stride_br=1, stride_in=D_IN, stride_out=D_OUT, stride_beta=k, stride_y=D_OUT, stride_p=D_OUT,
                    stride_sg=D_OUT, stride_bg=k)
        return (matmul_kernels.expanded_matmul_kernel, configs.matmul_configs(False),
                lambda cs: configs.prune_expanded(cs, named, BLOCK_M=block_m),
                lambda c: configs.expanded_matmul_shared_bytes(c, element, accumulator, block_m),
                constants, pointers, ints)
    if kernel_name == "mixed_weight_grad_kernel":
        pow2 = triton.next_power_of_2(k)
        constants = dict(NUM_BASES=k, NUM_BASES_POW2=pow2, NEED_BASES=True, NEED_IN=True, NEED_OUT=True,
                         NEED_BETA=True, **common)
        pointers = dict(grad_ptr=x, x_ptr=x, bases_ptr=x, a_in_ptr=acc_ptr, a_out_ptr=acc_ptr, beta_ptr=acc_ptr,
                        cu_seqlens_ptr="*i32", bases_grad_ptr=x, a_in_grad_ptr=acc_ptr, a_out_grad_ptr=acc_ptr,
                        beta_grad_ptr=acc_ptr)
        ints = dict(num_samples=SAMPLES, d_out=D_OUT, d_in=D_IN, stride_g=D_OUT, stride_x=D_IN,
                    stride_bk=D_OUT * D_IN, stride_bo=D_IN, stride_bi=1, stride_in=D_IN, stride_out=D_OUT,
                    stride_beta=k, stride_in_grad=D_IN, stride_out_grad=D_OUT, stride_beta_grad=k)
        return (grad_kernels.mixed_weight_grad_kernel, configs.basis_grad_configs(False),
                lambda cs: configs.prune_by_registers(cs, named, NUM_BASES_POW2=pow2),
                lambda c: configs.weight_grad_shared_bytes(c, element, accumulator, gathers=False),
                constants, pointers, ints)
    pointers = dict(grad_ptr=x, x_ptr=x, a_in_ptr=acc_ptr, a_out_ptr=acc_ptr, beta_ptr=acc_ptr,
                    sample_of_row_ptr="*i32", bases_grad_ptr=x)
    ints = dict(num_rows=ROWS, d_out=D_OUT, d_in=D_IN, stride_g=D_OUT, stride_x=D_IN, stride_in=D_IN,
                stride_out=D_OUT, stride_beta=k)
    return (grad_kernels.expanded_basis_grad_kernel, configs.basis_grad_configs(False),
            lambda cs: configs.prune_expanded_basis_grad(cs, named),
            lambda c: configs.weight_grad_shared_bytes(c, element, accumulator, gathers=True),
            dict(common), pointers, ints)


KERNELS = ("mixed_matmul_kernel", "expanded_matmul_kernel", "mixed_weight_grad_kernel", "expanded_basis_grad_kernel")


def main() -> None:
    import os

    os.environ[configs.AUTOTUNE_ENV] = "0"  # each prune returns the config that runs first
    for name in KERNELS:
        block_ms = (16, 128) if name == "mixed_matmul_kernel" else (0,)
        for dtype in POINTER:
            for num_bases in (3, 8):
                for block_m in block_ms:
                    kernel, candidates, prune, estimate, constants, pointers, ints = case_setup(
                        name, dtype, num_bases, block_m)
                    config = prune(candidates)[0]
                    shared, tensor_cores = compile_for_h100(kernel, config, constants, pointers, ints)
                    print(json.dumps(dict(kind="first", kernel=name, dtype=str(dtype), k=num_bases, block_m=block_m,
                                          config=str(config), shared=shared, estimate=estimate(config),
                                          tensor_cores=tensor_cores)))
    for name in KERNELS:
        kernel, candidates, _, estimate, constants, pointers, ints = case_setup(name, torch.bfloat16, 4, 128)
        for config in candidates:
            shared, tensor_cores = compile_for_h100(kernel, config, constants, pointers, ints)
            print(json.dumps(dict(kind="every", kernel=name, config=str(config), shared=shared,
                                  estimate=estimate(config), tensor_cores=tensor_cores)))


if __name__ == "__main__":
    main()
