"""Registration of FDLinear backends as ``torch.library`` custom ops with fake kernels and autograd.

Every backend supplies a plain ``forward`` and ``backward`` with the signatures of
:mod:`fdlinear.backends.reference`; :func:`register_backend` wraps them into the ops
``fdlinear::<name>_forward`` / ``fdlinear::<name>_backward`` so that they run under
``torch.compile`` without graph breaks and pass ``torch.library.opcheck``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

_OPS: dict[str, Callable[..., Tensor]] = {}
_GRAD_INPUTS = 6  # x, bases, a_in, a_out, beta, bias


def _empty_grads(like: tuple[Tensor | None, ...], grads: tuple[Tensor | None, ...]) -> tuple[Tensor, ...]:
    """Custom ops cannot return None: unneeded gradients travel as empty tensors."""
    out = []
    for reference, grad in zip(like, grads):
        if grad is None:
            out.append(torch.empty(0, device=like[0].device, dtype=like[0].dtype))
        else:
            out.append(grad.to(reference.dtype).contiguous())
    return tuple(out)


def register_backend(
    name: str,
    forward: Callable[..., Tensor],
    backward: Callable[..., tuple[Tensor | None, ...]],
    device_types: str | tuple[str, ...] | None = None,
) -> Callable[..., Tensor]:
    """Wrap a backend's forward/backward into differentiable custom ops and return the forward op.

    The op's signature is ``(x, bases, a_in, a_out, beta, bias, cu_seqlens, form) -> y``.
    """

    @torch.library.custom_op(f"fdlinear::{name}_forward", mutates_args=(), device_types=device_types)
    def forward_op(
        x: Tensor,
        bases: Tensor,
        a_in: Tensor,
        a_out: Tensor,
        beta: Tensor,
        bias: Tensor | None,
        cu_seqlens: Tensor,
        form: str,
    ) -> Tensor:
        return forward(x, bases, a_in, a_out, beta, bias, cu_seqlens, form).contiguous()

    @forward_op.register_fake
    def _(x, bases, a_in, a_out, beta, bias, cu_seqlens, form):
        return x.new_empty(x.shape[0], bases.shape[1])

    @torch.library.custom_op(f"fdlinear::{name}_backward", mutates_args=(), device_types=device_types)
    def backward_op(
        grad_y: Tensor,
        x: Tensor,
        bases: Tensor,
        a_in: Tensor,
        a_out: Tensor,
        beta: Tensor,
        bias: Tensor | None,
        cu_seqlens: Tensor,
        needs_grad: list[bool],
        form: str,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        grads = backward(grad_y, x, bases, a_in, a_out, beta, cu_seqlens, tuple(needs_grad), form)
        return _empty_grads((x, bases, a_in, a_out, beta, bias), grads)

    @backward_op.register_fake
    def _(grad_y, x, bases, a_in, a_out, beta, bias, cu_seqlens, needs_grad, form):
        inputs = (x, bases, a_in, a_out, beta, bias)
        return tuple(
            t.new_empty(t.shape) if need else x.new_empty(0) for t, need in zip(inputs, needs_grad)
        )

    def setup_context(ctx, inputs, output):
        x, bases, a_in, a_out, beta, bias, cu_seqlens, form = inputs
        ctx.save_for_backward(x, bases, a_in, a_out, beta, bias, cu_seqlens)
        ctx.form = form

    def backward_rule(ctx, grad_y):
        x, bases, a_in, a_out, beta, bias, cu_seqlens = ctx.saved_tensors
        needs = [bool(n) for n in ctx.needs_input_grad[:_GRAD_INPUTS]]
        needs[5] = needs[5] and bias is not None
        if not any(needs):
            return (None,) * 8
        grads = backward_op(grad_y, x, bases, a_in, a_out, beta, bias, cu_seqlens, needs, ctx.form)
        return tuple(g if need else None for g, need in zip(grads, needs)) + (None, None)

    forward_op.register_autograd(backward_rule, setup_context=setup_context)
    _OPS[name] = forward_op
    return forward_op


def registered_backends() -> dict[str, Callable[..., Tensor]]:
    """Name → forward op of every backend registered so far."""
    return dict(_OPS)
