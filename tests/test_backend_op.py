"""BackendOp: eager calls run the backend as an autograd.Function, traced calls as the registered custom op;
both compute exactly the same thing."""

import pytest
import torch
from op_cases import DispatchRecorder, make_case, run_op

from fdlinear.backends import available_backends, get_op
from fdlinear.backends.registry import BackendOp
from fdlinear.functional import fdlinear

CPU_BACKENDS = [name for name in available_backends() if name != "triton"]  # triton: tests/test_triton.py


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
def test_eager_path_equals_the_custom_op_bitwise(backend, bias):
    op = get_op(backend)
    case = make_case([5, 0, 1, 9], 11, 7, 3, bias=bias)
    eager_y, eager_grads = run_op(lambda *args: op.eager.apply(*args, "auto"), case, torch.float32)  # positional:
    custom_y, custom_grads = run_op(op.custom_op, case, torch.float32, form="auto")  # apply takes no keywords
    assert torch.equal(eager_y, custom_y)
    for eager, custom in zip(eager_grads, custom_grads):
        assert (eager is None and custom is None) or torch.equal(eager, custom)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_eager_gradients_come_in_each_inputs_dtype(backend):
    case = make_case([3, 4], 6, 5, 2)
    x, bases, a_in, a_out, beta, bias = case.tensors(torch.bfloat16)
    y = get_op(backend)(x, bases, a_in, a_out, beta, bias, case.cu_seqlens, "auto")
    y.float().sum().backward()
    for tensor in (x, bases, a_in, a_out, beta, bias):
        assert tensor.grad.dtype == tensor.dtype and tensor.grad.shape == tensor.shape


def test_only_plain_eager_calls_bypass_the_custom_op():
    case = make_case([2, 3], 4, 3, 2)
    tensors = case.tensors(torch.float32)
    assert BackendOp.runs_eagerly(*tensors, case.cu_seqlens)
    assert not BackendOp.runs_eagerly(*(t.to("meta") for t in tensors[:5]), None, case.cu_seqlens.to("meta"))
    with DispatchRecorder():
        assert not BackendOp.runs_eagerly(*tensors, case.cu_seqlens)
    # under a dispatch mode the op is one node: the mode sees the custom op, not its insides
    with DispatchRecorder() as recorder:
        fdlinear(*tensors, case.cu_seqlens, backend="reference")
    assert torch.ops.fdlinear.reference_forward.default in recorder.ops
    # meta tensors take the custom op's fake implementation
    y = fdlinear(*(t.to("meta") for t in tensors[:5]), None, case.cu_seqlens.to("meta"), backend="reference")
    assert y.device.type == "meta" and y.shape == (5, 3)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_double_backward_is_refused(backend):
    case = make_case([3, 2], 5, 4, 2)
    x, bases, a_in, a_out, beta, bias = case.tensors(torch.float64)
    y = fdlinear(x, bases, a_in, a_out, beta, bias, case.cu_seqlens, backend=backend)
    (grad_x,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad|not differentiable"):
        grad_x.sum().backward()
