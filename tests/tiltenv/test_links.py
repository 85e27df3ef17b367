"""Links: normalization under N(0, 1), Hermite exponents, the hump's shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiltenv.rewards.links import HUMP_PEAK, LINKS, get_link


@pytest.mark.parametrize("name", sorted(LINKS))
def test_normalized_by_monte_carlo(name):
    # Independent check of the quadrature: 4e6 Gaussian draws, tolerance 5 standard errors.
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4_000_000, generator=g, dtype=torch.float64)
    y = LINKS[name](z)
    se_mean = float(y.std()) / math.sqrt(z.numel())
    assert abs(float(y.mean())) < 5 * se_mean
    se_var = float(((y - y.mean()) ** 2).std()) / math.sqrt(z.numel())
    assert abs(float(y.var()) - 1.0) < 5 * se_var


@pytest.mark.parametrize("name", sorted(LINKS))
def test_information_exponent_matches_hermite_coefficients(name):
    link = LINKS[name]
    c = link.hermite(6)
    k = link.info_exponent
    assert np.all(np.abs(c[:k]) < 1e-9), c  # all coefficients below k* vanish (c_0 = mean = 0)
    assert abs(c[k]) > 0.05, c
    # Parseval: the squared coefficients of a unit-variance link sum to at most 1.
    assert float(np.sum(c[1:] ** 2)) <= 1 + 1e-9


def test_hump_peaks_then_falls_and_he3_is_bounded():
    z = torch.linspace(-6, 6, 12001, dtype=torch.float64)
    h = LINKS["hump"](z)
    assert abs(float(z[h.argmax()]) - HUMP_PEAK) < 1e-3
    assert float(h[z > 4].max()) < float(h.max()) / 2  # "too much of a good thing"
    he3 = LINKS["he3"](torch.linspace(-50, 50, 10001, dtype=torch.float64))
    assert float(he3.abs().max()) < 10  # bounded, so E exp(r/β) is finite
    assert not LINKS["hump"].monotone and LINKS["linear"].monotone


def test_unknown_link_suggests_close_name():
    with pytest.raises(ValueError, match=r"link must be one of .*Did you mean 'relu'"):
        get_link("rellu")


def test_quadrature_matches_closed_form_normalizations():
    tau = 2 * math.pi
    assert LINKS["relu"].mean == pytest.approx(1 / math.sqrt(tau), abs=1e-13)
    assert LINKS["relu"].std == pytest.approx(math.sqrt(0.5 - 1 / tau), abs=1e-13)
    assert LINKS["abs"].mean == pytest.approx(math.sqrt(4 / tau), abs=1e-13)
    assert LINKS["abs"].std == pytest.approx(math.sqrt(1 - 4 / tau), abs=1e-13)
    assert LINKS["step"].mean == pytest.approx(0.5, abs=1e-13) and LINKS["step"].std == pytest.approx(0.5, abs=1e-13)
    assert LINKS["he2"].std == pytest.approx(math.sqrt(2), abs=1e-13)


def test_hermite_coefficients_match_closed_forms():
    # c_n = E[σ(z) He_n(z)] / √(n!): orthonormal coefficients, so a polynomial link's squares sum to exactly 1.
    tau = 2 * math.pi
    assert np.allclose(LINKS["linear"].hermite(4), [0, 1, 0, 0, 0], atol=1e-12)
    assert np.allclose(LINKS["he2"].hermite(4), [0, 0, 1, 0, 0], atol=1e-12)  # (z² − 1)/√2 = He_2/√2
    relu_std = math.sqrt(0.5 - 1 / tau)
    c = LINKS["relu"].hermite(2)  # E[relu(z) z] = 1/2, E[relu(z) (z² − 1)] = 1/√(2π)
    assert c[1] == pytest.approx(0.5 / relu_std, abs=1e-12)
    assert c[2] == pytest.approx(1 / math.sqrt(tau) / (relu_std * math.sqrt(2)), abs=1e-12)
    c = LINKS["abs"].hermite(2)  # E[|z| (z² − 1)] = 2√(2/π) − √(2/π)
    assert c[2] == pytest.approx(math.sqrt(4 / tau) / (math.sqrt(1 - 4 / tau) * math.sqrt(2)), abs=1e-12)
    assert LINKS["step"].hermite(1)[1] == pytest.approx(math.sqrt(4 / tau), abs=1e-12)  # E[z; z > 0] / (1/2)
