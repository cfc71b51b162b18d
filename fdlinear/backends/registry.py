"""Registration of FDLinear backends as ``torch.library`` custom ops with fake kernels and autograd.

Every backend supplies a plain ``forward`` and ``backward`` with the signatures of
:mod:`fdlinear.backends.reference`; :func:`register_backend` wraps them into the ops
``fdlinear::<name>_forward`` / ``fdlinear::<name>_backward`` so that they run under
``torch.compile`` without graph breaks and pass ``torch.library.opcheck``, and into an
``autograd.Function`` doing the same computation for eager calls: a custom op with registered autograd
costs about 50 µs of Python per differentiable call (measured on a CPU), which a GPU kernel of ~100 µs
cannot hide. :class:`BackendOp` picks between the two per call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from fdlinear.segments import checked_boundaries, uniform_boundaries

_OPS: dict[str, BackendOp] = {}
_GRAD_INPUTS = 6  # x, bases, a_in, a_out, beta, bias
_PLAIN_TENSORS = (Tensor, nn.Parameter)
UNIFORM = ":uniform"  # form suffix: the samples are of equal length; the op rebuilds cu_seqlens from the sizes


def op_boundaries(x: Tensor, cu_seqlens: Tensor, form: str) -> tuple[Tensor, str]:
    """The boundaries the kernels read, and the form without its suffix.

    Every backend's forward and backward run behind this, eager or compiled (where the caller's checks saw no
    values): ``cu_seqlens`` is checked against x's rows and replaced by its private checked copy
    (:func:`~fdlinear.segments.checked_boundaries`, a read-back once per tensor and version); with the
    ``":uniform"`` suffix it is rebuilt from the sizes instead (no read-back, whatever its values).
    """
    if form.endswith(UNIFORM):
        return uniform_boundaries(cu_seqlens.shape[0] - 1, x.shape[0], x.device), form[: -len(UNIFORM)]
    return checked_boundaries(cu_seqlens, x.shape[0], x.device), form


def _empty_grads(like: tuple[Tensor | None, ...], grads: tuple[Tensor | None, ...]) -> tuple[Tensor, ...]:
    """Custom ops cannot return None: unneeded gradients travel as empty tensors."""
    out = []
    for reference, grad in zip(like, grads):
        if grad is None:
            out.append(torch.empty(0, device=like[0].device, dtype=like[0].dtype))
        else:
            out.append(grad.to(reference.dtype).contiguous())
    return tuple(out)


def _save_inputs(ctx, inputs: tuple, output: Tensor) -> None:
    x, bases, a_in, a_out, beta, bias, cu_seqlens, form = inputs
    ctx.save_for_backward(x, bases, a_in, a_out, beta, bias, cu_seqlens)
    ctx.form = form


def _needed_grads(ctx, bias: Tensor | None) -> list[bool]:
    needs = [bool(n) for n in ctx.needs_input_grad[:_GRAD_INPUTS]]
    needs[5] = needs[5] and bias is not None
    return needs


class BackendOp:
    """The differentiable op of one backend, ``(x, bases, a_in, a_out, beta, bias, cu_seqlens, form) -> y``.

    Eager calls on plain tensors run ``eager`` (an autograd.Function); everything that needs the op to be one
    opaque node runs ``custom_op``: ``torch.compile`` tracing, fake, meta or subclass tensors, an active
    dispatch mode, functorch transforms. Both run the backend's same forward and backward functions.
    """

    def __init__(self, custom_op: Callable[..., Tensor], eager: type[torch.autograd.Function]) -> None:
        self.custom_op = custom_op
        self.eager = eager

    def __call__(self, x: Tensor, bases: Tensor, a_in: Tensor, a_out: Tensor, beta: Tensor, bias: Tensor | None,
                 cu_seqlens: Tensor, form: str) -> Tensor:
        args = (x, bases, a_in, a_out, beta, bias, cu_seqlens, form)
        if self.runs_eagerly(*args[:7]):
            return self.eager.apply(*args)
        return self.custom_op(*args)

    @staticmethod
    def runs_eagerly(*tensors: Tensor | None) -> bool:
        """Whether a call on these tensors may bypass the custom op (also under ``torch.func.grad``, ``vjp``
        and ``jacrev``, which a custom op's registered autograd does not support; other functorch transforms
        get the custom op)."""
        if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
            return False
        if torch._C._are_functorch_transforms_active() and not _reverse_mode_transform_on_top():
            return False
        plain = all(t is None or type(t) in _PLAIN_TENSORS for t in tensors)
        return plain and tensors[0].device.type != "meta"


def _reverse_mode_transform_on_top() -> bool:
    interpreter = torch._C._functorch.peek_interpreter_stack()
    transform = torch._C._functorch.TransformType
    return interpreter is not None and interpreter.key() in (transform.Grad, transform.Jvp)


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
        cu_seqlens, form = op_boundaries(x, cu_seqlens, form)
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
        cu_seqlens, form = op_boundaries(x, cu_seqlens, form)
        grads = backward(grad_y, x, bases, a_in, a_out, beta, cu_seqlens, tuple(needs_grad), form)
        return _empty_grads((x, bases, a_in, a_out, beta, bias), grads)

    @backward_op.register_fake
    def _(grad_y, x, bases, a_in, a_out, beta, bias, cu_seqlens, needs_grad, form):
        inputs = (x, bases, a_in, a_out, beta, bias)
        return tuple(
            t.new_empty(t.shape) if need else x.new_empty(0) for t, need in zip(inputs, needs_grad)
        )

    def backward_rule(ctx, grad_y):
        x, bases, a_in, a_out, beta, bias, cu_seqlens = ctx.saved_tensors  # unpacked once (checkpointing)
        needs = _needed_grads(ctx, bias)
        if not any(needs):
            return (None,) * 8
        grads = backward_op(grad_y, x, bases, a_in, a_out, beta, bias, cu_seqlens, needs, ctx.form)
        return tuple(g if need else None for g, need in zip(grads, needs)) + (None, None)

    forward_op.register_autograd(backward_rule, setup_context=_save_inputs)

    class EagerOp(torch.autograd.Function):
        """The backend's forward and backward without the custom op's dispatch (see :class:`BackendOp`)."""

        @staticmethod
        def forward(x, bases, a_in, a_out, beta, bias, cu_seqlens, form):
            cu_seqlens, form = op_boundaries(x, cu_seqlens, form)
            return forward(x, bases, a_in, a_out, beta, bias, cu_seqlens, form).contiguous()

        @staticmethod
        def setup_context(ctx, inputs, output):
            _save_inputs(ctx, inputs, output)
            ctx.save_for_forward(*inputs[:7])  # the primals of jvp (forward-mode AD)

        @staticmethod
        def jvp(ctx, *tangents):
            """The op is linear in each of x, bases, a_in, a_out, β (and affine in bias): its tangent is the sum,
            over the inputs with a tangent, of the op with that input replaced by its tangent."""
            x, bases, a_in, a_out, beta, bias, cu_seqlens = ctx.saved_tensors
            cu_seqlens, form = op_boundaries(x, cu_seqlens, ctx.form)
            primals = [x, bases, a_in, a_out, beta]
            tangent = torch.zeros(x.shape[0], bases.shape[1], dtype=x.dtype, device=x.device)
            for index, direction in enumerate(tangents[:5]):
                if direction is not None:
                    args = [*primals[:index], direction.to(primals[index].dtype), *primals[index + 1:]]
                    tangent = tangent + forward(*args, None, cu_seqlens, form)
            if tangents[5] is not None:
                tangent = tangent + tangents[5].to(x.dtype)
            return tangent

        @staticmethod
        @once_differentiable  # the kernels are not differentiable: a double backward raises
        def backward(ctx, grad_y):
            x, bases, a_in, a_out, beta, bias, cu_seqlens = ctx.saved_tensors  # unpacked once (checkpointing)
            needs = _needed_grads(ctx, bias)
            if not any(needs):
                return (None,) * 8
            cu_seqlens, form = op_boundaries(x, cu_seqlens, ctx.form)
            grads = backward(grad_y.contiguous(), x, bases, a_in, a_out, beta, cu_seqlens, tuple(needs), form)
            inputs = (x, bases, a_in, a_out, beta, bias)
            return tuple(g.to(t.dtype) if need else None for g, t, need in zip(grads, inputs, needs)) + (None, None)

    named = type(f"FDLinear_{name}", (EagerOp,), {})  # autograd nodes and profiles say FDLinear_<name>Backward
    _OPS[name] = BackendOp(forward_op, named)
    return forward_op


def registered_backends() -> dict[str, BackendOp]:
    """Name → differentiable op of every backend registered so far."""
    return dict(_OPS)
