"""The functional FDLinear op: input validation, the four input forms and backend dispatch (docs/design.md §1–2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fdlinear.backends import get_op, resolve_backend
from fdlinear.backends.registry import UNIFORM
from fdlinear.segments import checked_boundaries, segment_mean


@dataclass(frozen=True)
class PackedInput:
    """An input brought to the packed form the op works on.

    Attributes:
        rows: (T, d_in) packed rows.
        cu_seqlens: (S+1,) sample boundaries on ``rows.device``.
        leading_shape: ``x.shape[:-1]``: the result has shape ``(*leading_shape, d_out)``.
        tokens_per_sample: N when every sample has N rows (batched or per-row input), else None.
    """

    rows: Tensor
    cu_seqlens: Tensor
    leading_shape: tuple[int, ...]
    tokens_per_sample: int | None

    def sample_means(self, dtype: torch.dtype) -> Tensor:
        """(S, d_in) mean of each sample's rows in ``dtype`` (zeros for an empty sample)."""
        rows = self.rows.to(dtype)
        if self.tokens_per_sample == 1:
            return rows
        if self.tokens_per_sample is not None and self.tokens_per_sample > 0:
            return rows.unflatten(0, (-1, self.tokens_per_sample)).mean(1)
        return segment_mean(rows, self.cu_seqlens)


def _checked_cu_seqlens(cu_seqlens: Tensor, x: Tensor) -> Tensor:
    if x.dim() != 2:
        raise ValueError(f"with cu_seqlens, x must be packed (T, d_in), got shape {tuple(x.shape)}")
    return checked_boundaries(cu_seqlens, x.shape[0], x.device)


def check_input(x: Tensor, in_features: int | None = None) -> None:
    """Raise a TypeError/ValueError naming ``x`` when it is not a floating tensor with last dim ``in_features``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (the features)")
    if in_features is not None and x.shape[-1] != in_features:
        raise ValueError(f"x has last dimension {x.shape[-1]} but in_features is {in_features}")


def pack(x: Tensor, cu_seqlens: Tensor | None = None) -> PackedInput:
    """Bring x to packed rows and sample boundaries, following the four input forms of docs/design.md §1.

    * ``cu_seqlens`` given: x is (T, d_in) and sample s is rows ``cu_seqlens[s]:cu_seqlens[s+1]``.
    * x with >= 3 dims (..., N, d_in): each index of the leading dims is a sample of N rows.
    * x of 2 dims: each row is its own sample.  * x of 1 dim: one row, one sample.
    """
    check_input(x)
    d_in = x.shape[-1]
    if cu_seqlens is not None:
        return PackedInput(x, _checked_cu_seqlens(cu_seqlens, x), tuple(x.shape[:-1]), None)
    if x.dim() == 1:
        rows, per_sample = x.unsqueeze(0), 1
    elif x.dim() == 2:
        rows, per_sample = x, 1
    else:
        rows, per_sample = x.reshape(-1, d_in), x.shape[-2]
    num_samples = rows.shape[0] // per_sample if per_sample else x.shape[:-2].numel()
    cu = torch.arange(num_samples + 1, device=x.device, dtype=torch.int64) * per_sample
    return PackedInput(rows, cu, tuple(x.shape[:-1]), per_sample)


def _check_op_args(x: Tensor, bases: Tensor, a_in: Tensor, a_out: Tensor, beta: Tensor, bias: Tensor | None, num_samples: int) -> None:
    if not isinstance(bases, Tensor) or bases.dim() != 3 or bases.shape[2] != x.shape[1]:
        shape = tuple(bases.shape) if isinstance(bases, Tensor) else type(bases).__name__
        raise ValueError(f"bases must have shape (K, d_out, d_in={x.shape[1]}), got {shape}")
    num_bases, d_out, d_in = bases.shape
    if num_bases < 1:
        raise ValueError(f"bases must hold K >= 1 bases, got shape {tuple(bases.shape)}")
    expected = {
        "a_in": (a_in, (num_samples, d_in)),
        "a_out": (a_out, (num_samples, d_out)),
        "beta": (beta, (num_samples, num_bases)),
    }
    if bias is not None:
        expected["bias"] = (bias, (d_out,))
    for name, (tensor, shape) in {"bases": (bases, bases.shape), **expected}.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(tensor).__name__}")
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be floating-point, got {tensor.dtype}")
        if tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device} but x is on {x.device}")


def fdlinear(
    x: Tensor,
    bases: Tensor,
    a_in: Tensor,
    a_out: Tensor,
    beta: Tensor,
    bias: Tensor | None = None,
    cu_seqlens: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """Per-sample dynamic linear map ``y_t = diag(a_out_s) (Σ_k β_sk B_k) diag(a_in_s) x_t + bias``.

    Args:
        x: (T, d_in) packed rows with ``cu_seqlens``; without it (..., N, d_in) batched samples,
            (T, d_in) one sample per row, or (d_in,) one row.
        bases: (K, d_out, d_in) spectral bases.
        a_in: (S, d_in), a_out: (S, d_out), beta: (S, K) per-sample modulations.
        bias: (d_out,) or None.
        cu_seqlens: (S+1,) int32/int64 boundaries (start 0, non-decreasing, end T); empty samples allowed.
        backend: ``"reference" | "triton" | "native"``; default ``$FDLINEAR_BACKEND`` or by device.

    Returns:
        y with the shape of x but last dim d_out, dtype of x. Differentiable in every tensor argument.
    """
    return fdlinear_packed(pack(x, cu_seqlens), bases, a_in, a_out, beta, bias, backend)


def fdlinear_packed(
    packed: PackedInput,
    bases: Tensor,
    a_in: Tensor,
    a_out: Tensor,
    beta: Tensor,
    bias: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """:func:`fdlinear` for an input already brought to packed form by :func:`pack` (which validated it), so
    that a caller needing the packed rows first (the module computes sample means from them) checks and
    synchronises once. Arguments and result as in :func:`fdlinear`; the other arguments are checked here."""
    rows = packed.rows
    _check_op_args(rows, bases, a_in, a_out, beta, bias, packed.cu_seqlens.shape[0] - 1)
    op = get_op(resolve_backend(backend, rows.device))
    form = "auto" if packed.tokens_per_sample is None else "auto" + UNIFORM  # uniform: no boundaries to check
    y = op(rows, bases, a_in, a_out, beta, bias, packed.cu_seqlens, form)
    return y.reshape(*packed.leading_shape, bases.shape[1])
