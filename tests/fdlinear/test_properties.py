"""Property tests over random shapes and sample layouts (hypothesis)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fdlinear import FDLinear
from tests.fdlinear.op_cases import assert_matches_oracle, make_case, reference_op

layouts = st.lists(st.integers(min_value=0, max_value=9), min_size=0, max_size=6)
dims = st.integers(min_value=1, max_value=12)


@settings(max_examples=40, deadline=None)
@given(seqlens=layouts, d_in=dims, d_out=dims, num_bases=st.integers(1, 5), bias=st.booleans(),
       form=st.sampled_from(["mix", "expand", "auto"]), seed=st.integers(0, 2**16))
def test_reference_op_equals_oracle(seqlens, d_in, d_out, num_bases, bias, form, seed):
    case = make_case(seqlens, d_in, d_out, num_bases, bias=bias, seed=seed)
    assert_matches_oracle(lambda *a: reference_op(*a, form=form), case, tolerance=1e-10)


@settings(max_examples=25, deadline=None)
@given(seqlens=layouts, d_in=dims, d_out=dims, num_bases=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_packed_equals_each_sample_alone(seqlens, d_in, d_out, num_bases, seed):
    num_bases = min(num_bases, d_out * (d_in // 2 + 1))  # at most one basis per spectral coefficient
    torch.manual_seed(seed)
    layer = FDLinear(d_in, d_out, num_bases=num_bases, dtype=torch.float64)
    with torch.no_grad():
        for head in layer.KSM_Global.heads():
            head.weight.normal_()
            head.bias.normal_()
    cu = torch.tensor([0, *torch.tensor(seqlens, dtype=torch.int64).cumsum(0).tolist()])
    x = torch.randn(int(cu[-1]), d_in, dtype=torch.float64)
    packed = layer(x, cu)
    assert packed.shape == (len(x), d_out)
    for s in range(len(seqlens)):
        rows = x[cu[s] : cu[s + 1]]
        if len(rows):
            torch.testing.assert_close(packed[cu[s] : cu[s + 1]], layer(rows[None])[0], rtol=1e-10, atol=1e-10)
