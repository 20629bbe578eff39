"""Frechet distance and the unbiased polynomial MMD against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.statistics import (frechet_distance, frechet_distance_from_stats, gaussian_stats, kernel_distance,
                                   mmd2_unbiased)


def test_frechet_closed_form_one_dimension():
    # N(1, 2^2) vs N(-2, 3^2): (1 - -2)^2 + (2 - 3)^2 = 10
    assert frechet_distance_from_stats([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(10.0, abs=1e-10)


def test_frechet_closed_form_commuting_covariances():
    # diagonal covariances: sum_i (mu1_i - mu2_i)^2 + (s1_i - s2_i)^2 with s the standard deviations
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    sd1, sd2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 1.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((sd1 - sd2) ** 2)  # 5 + 5 = 10
    assert frechet_distance_from_stats(mu1, np.diag(sd1**2), mu2, np.diag(sd2**2)) == pytest.approx(expected, abs=1e-9)


def test_frechet_non_commuting_covariances_matches_trace_of_sqrtm():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    s1, s2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.standard_normal(4), rng.standard_normal(4)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_frechet_from_samples_uses_unbiased_covariance_and_is_zero_for_equal_sets():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((50, 3)), rng.standard_normal((40, 3)) + 2.0
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance_from_stats(mu1, s1, mu2, s2), rel=1e-10)
    assert abs(frechet_distance(x, x)) < 1e-8
    mu, s = gaussian_stats(x)
    assert s.shape == (3, 3) and np.allclose(s, np.cov(x, rowvar=False))


def test_frechet_with_fewer_vectors_than_dimensions_equals_the_covariance_route():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((12, 40)), rng.standard_normal((9, 40)) * 0.7 + 0.2
    via_stats = frechet_distance_from_stats(*gaussian_stats(x), *gaussian_stats(y))
    # the D x D route takes square roots of rounding-level eigenvalues of the rank-deficient product (~1e-8)
    assert frechet_distance(x, y) == pytest.approx(via_stats, rel=1e-6)
    assert abs(frechet_distance(x, x)) < 1e-8


def _mmd_direct(x, y):
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kvd_matches_direct_quadratic_computation():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((9, 5)), rng.standard_normal((7, 5)) * 1.5 + 0.3
    assert mmd2_unbiased(x, y) == pytest.approx(_mmd_direct(x, y), rel=1e-10)
    assert kernel_distance(x, y) == pytest.approx(_mmd_direct(x, y), rel=1e-10)


def test_kvd_subsets_average_and_unbiasedness():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((400, 4)), rng.standard_normal((400, 4))
    same = kernel_distance(x, y)
    shifted = kernel_distance(x, y + 1.0)
    assert abs(same) < 0.05 < shifted  # unbiased: ~0 (can be negative) for one distribution
    sub = kernel_distance(x, y + 1.0, subsets=5, subset_size=100, seed=0)
    assert sub == pytest.approx(shifted, rel=0.5)


def test_too_few_vectors_is_an_error():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError):
        mmd2_unbiased(np.zeros((1, 3)), np.zeros((4, 3)))
