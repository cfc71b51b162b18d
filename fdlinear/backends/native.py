"""Native backend: the C++ CPU and CUDA kernels of csrc/, compiled into ``fdlinear._native`` by setup.py.

Loading the extension registers the ops ``torch.ops.fdlinear_native.forward`` / ``.backward``;
:func:`register` wraps them into the differentiable ``fdlinear::native_forward`` custom op. The CPU kernels
choose between the "mix" form (a per-sample weight tile mixed in a thread-local buffer, then one GEMM) and
the "expand" form (K GEMMs over the rows, for short samples) by cost; ``form`` overrides the choice.
"""

from __future__ import annotations

import importlib
import warnings

import torch
from torch import Tensor

from fdlinear.backends.registry import register_backend

EXTENSION = "fdlinear._native"


def load_extension() -> None:
    """Import the compiled extension (which registers ``torch.ops.fdlinear_native``).

    Raises:
        ImportError: the extension is not built or cannot be loaded, after one warning naming the fallback.
    """
    try:
        importlib.import_module(EXTENSION)
    except ImportError as error:
        warnings.warn(
            f"fdlinear: the native extension {EXTENSION} is unavailable ({error}); CPU tensors use the "
            "'reference' backend instead. Build it with `pip install --no-build-isolation -e .` "
            "(needs a C++ compiler and ninja).",
            RuntimeWarning,
            stacklevel=2,
        )
        raise


def forward(
    x: Tensor,
    bases: Tensor,
    a_in: Tensor,
    a_out: Tensor,
    beta: Tensor,
    bias: Tensor | None,
    cu_seqlens: Tensor,
    form: str = "auto",
) -> Tensor:
    """y (T, d_out) in x's dtype for packed x (T, d_in), bases (K, d_out, d_in), a_in (S, d_in),
    a_out (S, d_out), beta (S, K), bias (d_out,) or None, cu_seqlens (S+1,)."""
    return torch.ops.fdlinear_native.forward(x, bases, a_in, a_out, beta, bias, cu_seqlens, form)


def backward(
    grad_y: Tensor,
    x: Tensor,
    bases: Tensor,
    a_in: Tensor,
    a_out: Tensor,
    beta: Tensor,
    cu_seqlens: Tensor,
    needs_grad: tuple[bool, bool, bool, bool, bool, bool] = (True,) * 6,
    form: str = "auto",
) -> tuple[Tensor | None, ...]:
    """Gradients (dx, dbases, da_in, da_out, dbeta, dbias) of :func:`forward` for grad_y (T, d_out), each in its
    input's dtype (dbias in x's); None where ``needs_grad`` is False."""
    grads = torch.ops.fdlinear_native.backward(
        grad_y, x, bases, a_in, a_out, beta, cu_seqlens, [bool(n) for n in needs_grad], form
    )
    return tuple(grad if need else None for grad, need in zip(grads, needs_grad))


def register() -> None:
    """Load the extension and register the ``native`` backend (ImportError when it is not built)."""
    load_extension()
    register_backend("native", forward, backward)
