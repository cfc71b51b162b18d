"""The reference backend against an independent per-sample oracle, float64 gradcheck, forms and memory."""

import functools

import pytest
import torch

from fdlinear.backends import reference
from fdlinear.segments import Segments
from tests.fdlinear.op_cases import (
    assert_matches_oracle,
    assert_matches_reference,
    make_case,
    reference_op,
)

LAYOUTS = {
    "ragged": [5, 0, 1, 9, 3],
    "one_sample": [6],
    "per_row": [1] * 7,
    "all_empty": [0, 0],
    "no_samples": [],
}


@pytest.mark.parametrize("form", ["mix", "expand", "auto"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_naive_oracle_in_float64(form, layout, bias):
    case = make_case(LAYOUTS[layout], 13, 7, 3, bias=bias, seed=1)
    assert_matches_oracle(functools.partial(reference_op, form=form), case)


@pytest.mark.parametrize("form", ["mix", "expand"])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_float64(form, bias):
    case = make_case([3, 0, 1, 4], 5, 4, 2, bias=bias, seed=2)
    inputs = [t for t in case.tensors(torch.float64) if t is not None]

    def fn(*tensors):
        x, bases, a_in, a_out, beta, *rest = tensors
        return reference_op(x, bases, a_in, a_out, beta, rest[0] if rest else None, case.cu_seqlens, form)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("form", ["mix", "expand"])
def test_low_precision_forms_follow_the_tolerance_rule(dtype, form):
    case = make_case([6, 1, 0, 11], 24, 10, 4, seed=3)
    assert_matches_reference(functools.partial(reference_op, form=form), case, dtype)


def test_tolerance_rule_catches_a_wrong_backend():
    case = make_case([6, 1, 0, 11], 24, 10, 4, seed=3)

    def off_by_a_little(x, bases, a_in, a_out, beta, bias, cu):
        return reference_op(x, bases * 1.001, a_in, a_out, beta, bias, cu)

    with pytest.raises(AssertionError, match="error"):
        assert_matches_reference(off_by_a_little, case, torch.float32)


def test_form_choice_follows_cost():
    per_row = Segments.from_cu_seqlens(torch.arange(101), 100)
    long = Segments.from_cu_seqlens(torch.tensor([0, 500, 1000]), 1000)
    assert reference.choose_form(per_row, 4) == "expand"
    assert reference.choose_form(long, 4) == "mix"
    with pytest.raises(ValueError, match="form"):
        reference.forward(torch.zeros(1, 2), torch.zeros(1, 2, 2), torch.ones(1, 2), torch.ones(1, 2),
                          torch.ones(1, 1), None, torch.tensor([0, 1]), form="dense")


def test_per_row_case_saves_no_per_sample_weights():
    """20,000 rows of 256->256, each its own sample: forward+backward keeps only the inputs for backward
    (S per-sample weights would be 20,000 x 256 x 256 floats = 5.2 GB)."""
    rows, features, num_bases = 20_000, 256, 4
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, features, generator=gen, requires_grad=True)
    bases = (torch.randn(num_bases, features, features, generator=gen) / 16).requires_grad_()
    a_in, a_out = (torch.rand(rows, features, generator=gen).requires_grad_() for _ in range(2))
    beta = torch.rand(rows, num_bases, generator=gen, requires_grad=True)
    cu = torch.arange(rows + 1)
    saved: list[int] = []

    def pack_hook(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        y = reference_op(x, bases, a_in, a_out, beta, None, cu)
    y.square().mean().backward()
    inputs_numel = sum(t.numel() for t in (x, bases, a_in, a_out, beta, cu))
    assert sum(saved) <= inputs_numel + y.numel()
    assert max(saved) <= rows * features  # the largest is x itself; per-sample weights would be 256x that
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (x, bases, a_in, a_out, beta))
