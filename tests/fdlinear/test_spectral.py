"""Frequency partition, weight <-> spectrum, bases and their cache."""

import pytest
import torch

from fdlinear import FDLinear
from fdlinear.spectral import (
    frequency_groups,
    spectral_bases,
    spectrum_scale,
    spectrum_to_weight,
    weight_to_spectrum,
)


@pytest.mark.parametrize("d_out,d_in,k", [(7, 13, 3), (16, 16, 4), (5, 4, 1), (1, 1, 1), (2, 3, 4), (33, 20, 8)])
def test_default_partition_is_complete_ordered_and_deterministic(d_out, d_in, k):
    groups = frequency_groups(d_out, d_in, k)
    assert groups.shape == (d_out, d_in // 2 + 1)
    assert torch.equal(groups, frequency_groups(d_out, d_in, k))
    assert groups.min() >= 0 and groups.max() <= k - 1
    count = groups.numel()
    sizes = torch.bincount(groups.flatten(), minlength=k)
    # equal chunks, the last takes the remainder: every group is non-empty
    assert (sizes[:-1] == count // k).all() and sizes[-1] == count - (k - 1) * (count // k)
    rows = torch.fft.fftfreq(d_out, dtype=torch.float64)
    cols = torch.fft.rfftfreq(d_in, dtype=torch.float64)
    radius = (rows[:, None] ** 2 + cols[None, :] ** 2).sqrt()
    for lo in range(k - 1):  # group k holds no frequency above any frequency of group k+1
        if sizes[lo] and sizes[lo + 1]:
            assert radius[groups == lo].max() <= radius[groups == lo + 1].min() + 1e-12
    assert groups.flatten()[0] == 0  # the DC coefficient is in the lowest group


@pytest.mark.parametrize("partition", ["default", "fdconv"])
def test_more_bases_than_coefficients_are_refused(partition):
    """1x1 has one coefficient: K = 4 used to leave three bases empty, silently a one-basis layer."""
    with pytest.raises(ValueError, match="between 1 and the 1x1 = 1 spectral coefficients"):
        frequency_groups(1, 1, 4, partition)


def test_fdconv_partition_requires_divisible_count():
    with pytest.raises(ValueError, match="num_bases"):
        frequency_groups(7, 13, 3, "fdconv")  # 7 * 7 = 49 coefficients
    with pytest.raises(ValueError, match="partition"):
        frequency_groups(8, 8, 2, "fancy")
    with pytest.raises(ValueError, match="num_bases"):
        frequency_groups(8, 8, 0)


@pytest.mark.parametrize("d_out,d_in", [(7, 13), (12, 8), (1, 5), (6, 1)])
def test_bases_sum_to_weight(d_out, d_in):
    weight = torch.randn(d_out, d_in, dtype=torch.float64)
    spectrum = weight_to_spectrum(weight)
    assert spectrum.shape == (1, d_out, d_in // 2 + 1, 2)
    groups = frequency_groups(d_out, d_in, 3)
    bases = spectral_bases(spectrum, groups, 3, d_in)
    assert bases.shape == (3, d_out, d_in)
    torch.testing.assert_close(bases.sum(0), weight, rtol=0, atol=1e-12)
    torch.testing.assert_close(spectrum_to_weight(spectrum, d_in), weight, rtol=0, atol=1e-12)
    assert spectrum_scale(d_in, d_out) == max(min(d_in, d_out) // 2, 1)


def test_bases_are_frequency_disjoint():
    """Each basis lives on its own group's coefficients. The first and (for even d_in) last rfft columns are
    excluded: irfft2 makes them Hermitian, which mixes the tied pair (r, c) / (d_out - r, c) of equal radius."""
    weight = torch.randn(10, 12, dtype=torch.float64)
    groups = frequency_groups(10, 12, 4)
    bases = spectral_bases(weight_to_spectrum(weight), groups, 4, 12)
    interior = groups[:, 1:-1]
    for k in range(4):
        spectrum = torch.fft.rfft2(bases[k])[:, 1:-1]
        assert spectrum[interior != k].abs().max() < 1e-10
        assert spectrum[interior == k].abs().min() > 0


def test_basis_cache_recomputes_only_after_a_change():
    layer = FDLinear(12, 10, num_bases=3)
    with torch.no_grad():
        first = layer.bases(torch.float32)
        assert layer.bases(torch.float32) is first  # nothing changed: same cached tensor
    with torch.no_grad():
        layer.dft_weight.mul_(1.0)
        assert layer.bases(torch.float32) is not first  # an in-place edit bumps the version
        first = layer.bases(torch.float32)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(4, 5, 12)
    layer(x).square().sum().backward()
    assert layer.dft_weight.grad is not None and layer.dft_weight.grad.abs().sum() > 0
    optimizer.step()
    with torch.no_grad():
        after = layer.bases(torch.float32)
    assert after is not first
    expected = spectral_bases(layer.dft_weight, layer.frequency_groups, 3, 12)
    torch.testing.assert_close(after, expected)
    assert layer.bases(torch.float64).dtype == torch.float64


def _bases_through_autograd(dft_weight, groups, num_bases, in_features):
    """The rebuild as plain autograd sees it: scatter into K masked spectra, one batched irfft2."""
    out_features = dft_weight.shape[1]
    spectrum = torch.view_as_complex(dft_weight[0].contiguous()) * spectrum_scale(in_features, out_features)
    masked = spectrum.new_zeros((num_bases, *spectrum.shape)).scatter(0, groups.unsqueeze(0), spectrum.unsqueeze(0))
    return torch.fft.irfft2(masked, s=(out_features, in_features))


@pytest.mark.parametrize("d_out,d_in,k", [(7, 13, 3), (8, 6, 4), (5, 4, 1), (1, 1, 1), (2, 3, 4), (33, 20, 8),
                                          (6, 1, 2), (1, 9, 2)])
def test_rebuild_equals_autograd_of_irfft2(d_out, d_in, k):
    """The one-step rebuild and its adjoint backward against autograd through scatter + irfft2 (odd and even
    d_in: the Nyquist column counts once), and gradcheck in float64."""
    groups = frequency_groups(d_out, d_in, k)
    dft_weight = torch.randn(1, d_out, d_in // 2 + 1, 2, dtype=torch.float64, requires_grad=True)
    bases = spectral_bases(dft_weight, groups, k, d_in)
    expected = _bases_through_autograd(dft_weight, groups, k, d_in)
    torch.testing.assert_close(bases, expected, rtol=0, atol=1e-14)
    grad = torch.randn_like(bases)
    (got,) = torch.autograd.grad(bases, dft_weight, grad)
    (want,) = torch.autograd.grad(expected, dft_weight, grad)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    assert torch.autograd.gradcheck(lambda w: spectral_bases(w, groups, k, d_in), (dft_weight,))


def test_rebuild_in_float32_matches_float64():
    groups = frequency_groups(64, 96, 4)
    dft_weight = torch.randn(1, 64, 49, 2, dtype=torch.float64, requires_grad=True)
    low = dft_weight.detach().float().requires_grad_()
    torch.testing.assert_close(spectral_bases(low, groups, 4, 96).double(), spectral_bases(dft_weight, groups, 4, 96),
                               rtol=1e-5, atol=1e-5)
    grad = torch.randn(4, 64, 96, dtype=torch.float64)
    (want,) = torch.autograd.grad(spectral_bases(dft_weight, groups, 4, 96), dft_weight, grad)
    (got,) = torch.autograd.grad(spectral_bases(low, groups, 4, 96), low, grad.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
