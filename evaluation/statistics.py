"""Distribution distances between two sets of feature vectors: the numbers behind FVD, FID, FAD and KVD.

- Frechet distance of the Gaussians fitted to each set (Heusel et al. 2017, the form every public FID /
  FVD / FAD code computes): ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), covariances unbiased
  (ddof=1, as `numpy.cov`), computed in float64. The matrix square root goes through the symmetric
  form (S1^(1/2) S2 S1^(1/2))^(1/2), whose trace equals Tr((S1 S2)^(1/2)) and which stays real.
- Kernel distance (KVD, Unterthiner et al. 2018; KID's estimator, Binkowski et al. 2018): the unbiased
  estimate of the squared MMD with the polynomial kernel k(x, y) = (x.y / d + 1)^3, over the whole sets
  or averaged over random subsets (`subsets`, `subset_size`) as KID code does for large sets.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], unbiased covariance [D, D]) of features x [N, D], float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors [N, D], got shape {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues from rounding -> 0)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"feature sizes differ: {mu1.shape} vs {mu2.shape}")
    r1 = _sqrtm_psd(s1)
    tr_covmean = float(np.trace(_sqrtm_psd(r1 @ s2 @ r1)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to feature sets x [N, D] and y [M, D].

    With fewer vectors than dimensions (e.g. 2048-d Inception features of a few hundred frames) the same number
    comes exactly from the centred data: with S1 = X^T X / (N-1) and S2 = Y^T Y / (M-1), the non-zero
    eigenvalues of S1 S2 are those of (X Y^T)(X Y^T)^T / ((N-1)(M-1)), so Tr((S1 S2)^(1/2)) is the sum of the
    singular values of X Y^T / sqrt((N-1)(M-1)): an N x M SVD instead of two D x D eigendecompositions."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if min(len(x), len(y)) >= x.shape[-1] or x.ndim != 2 or y.ndim != 2 or len(x) < 2 or len(y) < 2:
        return frechet_distance_from_stats(*gaussian_stats(x), *gaussian_stats(y))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    xc, yc = x - x.mean(0), y - y.mean(0)
    c1, c2 = len(x) - 1, len(y) - 1
    tr_covmean = float(np.linalg.svd(xc @ yc.T, compute_uv=False).sum()) / np.sqrt(c1 * c2)
    diff = x.mean(0) - y.mean(0)
    return float(diff @ diff + (xc * xc).sum() / c1 + (yc * yc).sum() / c2 - 2.0 * tr_covmean)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> np.ndarray:
    """(gamma x.y + coef0)^degree with gamma = 1 / D by default (KID / KVD)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> float:
    """Unbiased squared MMD: mean of k(x, x') over x != x' + the same for y - 2 mean k(x, y)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 feature vectors per set, got {m} and {n}")
    kxx = polynomial_kernel(x, x, degree, gamma, coef0)
    kyy = polynomial_kernel(y, y, degree, gamma, coef0)
    kxy = polynomial_kernel(x, y, degree, gamma, coef0)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2.0 * kxy.mean())


def kernel_distance(x: np.ndarray, y: np.ndarray, subsets: int = 0, subset_size: int = 1000, seed: int = 0) -> float:
    """KVD / KID: `mmd2_unbiased` over the whole sets (subsets=0) or the mean over `subsets` random subsets of
    min(subset_size, N, M) vectors drawn without replacement from each set."""
    if subsets <= 0:
        return mmd2_unbiased(x, y)
    rng = np.random.default_rng(seed)
    k = min(subset_size, len(x), len(y))
    vals = [mmd2_unbiased(x[rng.choice(len(x), k, replace=False)], y[rng.choice(len(y), k, replace=False)]) for _ in range(subsets)]
    return float(np.mean(vals))


__all__ = ["gaussian_stats", "frechet_distance", "frechet_distance_from_stats", "polynomial_kernel", "mmd2_unbiased",
           "kernel_distance"]
