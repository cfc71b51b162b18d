"""BackendOp: eager calls run the backend as an autograd.Function, traced calls as the registered custom op;
both compute exactly the same thing."""

import pytest
import torch

from fdlinear import FDLinear
from fdlinear.backends import available_backends, get_op
from fdlinear.backends.registry import BackendOp
from fdlinear.functional import fdlinear
from tests.fdlinear.op_cases import DispatchRecorder, make_case, run_op

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


def _float64_case():
    case = make_case([3, 0, 1, 4], 5, 4, 2)
    return case, case.tensors(torch.float64, requires_grad=False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_first_order_functorch_transforms_match_autograd(backend):
    """torch.func.grad, vjp and jacrev run the op (a custom op's registered autograd does not support them)."""
    case, tensors = _float64_case()
    op = get_op(backend)

    def loss(x, bases, a_in, a_out, beta, bias):
        return op(x, bases, a_in, a_out, beta, bias, case.cu_seqlens, "auto").square().sum()

    grads = torch.func.grad(loss, argnums=tuple(range(6)))(*tensors)
    leaves = [t.clone().requires_grad_() for t in tensors]
    expected = torch.autograd.grad(loss(*leaves), leaves)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    jacobian = torch.func.jacrev(lambda x: op(x, *tensors[1:], case.cu_seqlens, "auto"))(tensors[0])
    reference = torch.autograd.functional.jacobian(lambda x: op(x, *tensors[1:], case.cu_seqlens, "auto"), tensors[0])
    torch.testing.assert_close(jacobian, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_forward_mode_matches_finite_differences(backend):
    """torch.func.jvp and torch.autograd.forward_ad give the op's true tangent (the custom op's was silently
    wrong: it had no forward-mode rule), checked by gradcheck's forward-AD check in float64."""
    case, tensors = _float64_case()
    op = get_op(backend)
    leaves = tuple(t.clone().requires_grad_() for t in tensors)
    assert torch.autograd.gradcheck(lambda *a: op(*a, case.cu_seqlens, "auto"), leaves, check_forward_ad=True,
                                    check_backward_ad=False, check_undefined_grad=False, check_batched_grad=False)
    tangents = tuple(torch.randn_like(t) for t in tensors)
    _, tangent = torch.func.jvp(lambda *a: op(*a, case.cu_seqlens, "auto"), tuple(tensors), tangents)
    eps = 1e-6
    plus = op(*(t + eps * d for t, d in zip(tensors, tangents)), case.cu_seqlens, "auto")
    minus = op(*(t - eps * d for t, d in zip(tensors, tangents)), case.cu_seqlens, "auto")
    torch.testing.assert_close(tangent, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_module_under_functorch_grad_and_jvp(backend):
    torch.manual_seed(0)
    layer = FDLinear(6, 5, num_bases=2, backend=backend).double()
    with torch.no_grad():
        for head in layer.KSM_Global.heads():
            head.weight.normal_()
    x, cu = torch.randn(7, 6, dtype=torch.float64), torch.tensor([0, 3, 7])
    params = {name: p.detach() for name, p in layer.named_parameters()}
    grads = torch.func.grad(lambda p: torch.func.functional_call(layer, p, (x, cu)).square().sum())(params)
    layer(x, cu).square().sum().backward()
    for name, p in layer.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-10, atol=1e-12)
    direction = torch.randn_like(x)
    _, tangent = torch.func.jvp(lambda x: layer(x, cu), (x,), (direction,))
    jacobian = torch.autograd.functional.jacobian(lambda x: layer(x, cu), x)
    torch.testing.assert_close(tangent, torch.einsum("toij,ij->to", jacobian, direction), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_second_order_transforms_are_refused(backend):
    case, tensors = _float64_case()
    op = get_op(backend)
    with pytest.raises(RuntimeError, match="vmap"):
        torch.func.hessian(lambda x: op(x, *tensors[1:], case.cu_seqlens, "auto").square().sum())(tensors[0])
