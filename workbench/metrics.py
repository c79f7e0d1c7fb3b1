"""Sample-quality metrics on feature vectors and class probabilities, all computed in float64.

    frechet_distance(mu1, sigma1, mu2, sigma2)   FID from Gaussian statistics
    frechet_distance_from_features(f1, f2)       the same, exact from feature matrices (n < d)
    kernel_distance(f1, f2)                      KID: unbiased MMD^2, cubic polynomial kernel
    inception_score(probs)                       IS = exp(E_x KL(p(y|x) || p(y)))
    precision_recall(real, fake, k=3)            Kynkaanniemi et al. 2019, k-NN manifolds
    conditional_accuracy(probs, y)               share of samples classified as asked

The trace term tr((S1 S2)^(1/2)) of the Frechet distance never goes through a matrix square
root of the non-symmetric product S1 S2 (scipy.linalg.sqrtm: slow, and complex or NaN when
S1 S2 is nearly singular). For any factors F1 F1^T = S1 and F2 F2^T = S2, S1 S2 = F1 (F1^T S2)
has the non-zero eigenvalues of (F1^T S2) F1 (AB and BA share them), a symmetric positive
semi-definite matrix whose eigenvalues are the squared singular values of F1^T F2, so

    tr((S1 S2)^(1/2)) = sum(sqrt(eigvalsh(F1^T S2 F1))) = sum(svdvals(F1^T F2)).

From statistics we take Cholesky factors; from feature matrices F = centred features /
sqrt(n - 1), which makes the computation exact (no square roots of rounding noise) when
there are fewer samples than dimensions.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.special
import torch

__all__ = [
    "gaussian_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "trace_sqrt_product",
    "kernel_distance",
    "inception_score",
    "precision_recall",
    "conditional_accuracy",
]


def _as_float64(a, ndim: int, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of an (n, d) feature matrix, n >= 2."""
    f = _as_float64(features, 2, "features")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    mu = f.mean(0)
    centred = f - mu
    sigma = centred.T @ centred / (f.shape[0] - 1)
    return mu, sigma


# -- Frechet distance ---------------------------------------------------------------------
def _cholesky_factor(sigma: np.ndarray) -> np.ndarray | None:
    """The Cholesky factor L (L L^T = sigma) of a well-conditioned sigma, else None. A
    rank-deficient sigma may pass the factorisation with tiny pivots thanks to rounding;
    (max L_ii / min L_ii)^2 bounds its condition number from below and catches that."""
    try:
        factor = scipy.linalg.cholesky(sigma, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    pivots = np.abs(np.diag(factor))
    if pivots.min() ** 2 <= _rank_tolerance(sigma) * pivots.max() ** 2:
        return None
    return factor


def _rank_tolerance(sigma: np.ndarray) -> float:
    return sigma.shape[0] * np.finfo(np.float64).eps


def _eigh_factor(sigma: np.ndarray) -> np.ndarray:
    """F = V_r sqrt(w_r) over the eigenvalues w_r above rounding level: F F^T = sigma for a
    positive semi-definite, possibly singular sigma, with its null space dropped."""
    w, v = np.linalg.eigh(sigma)
    keep = w > _rank_tolerance(sigma) * max(w.max(), 0.0)
    return v[:, keep] * np.sqrt(w[keep])


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr((sigma1 sigma2)^(1/2)) for symmetric positive semi-definite matrices, without a
    matrix square root. Both positive definite: Cholesky factors L1, L2, the triangular product
    B = L1^T L2, and the eigenvalues of the symmetric B B^T (= L1^T sigma2 L1), clipped at zero,
    square-rooted and summed. Either one singular: factors F_i F_i^T = sigma_i of their own rank
    (an eigendecomposition for a singular matrix) and the sum of the singular values of
    F1^T F2, which resolves the small terms instead of taking square roots of rounding noise."""
    s1 = _as_float64(sigma1, 2, "sigma1")
    s2 = _as_float64(sigma2, 2, "sigma2")
    if s1.shape != s2.shape or s1.shape[0] != s1.shape[1]:
        raise ValueError(f"covariances must be square and of one shape, got {s1.shape} and {s2.shape}")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    l1, l2 = _cholesky_factor(s1), _cholesky_factor(s2)
    if l1 is not None and l2 is not None:
        # BLAS triangular multiply and rank-k update: half the work of two general products.
        b = scipy.linalg.blas.dtrmm(1.0, l1, l2, lower=1, trans_a=1)
        lower_of_bbt = scipy.linalg.blas.dsyrk(1.0, b, lower=1)
        eig = scipy.linalg.eigvalsh(lower_of_bbt, lower=True, check_finite=False)
        return float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    f1 = l1 if l1 is not None else _eigh_factor(s1)
    f2 = l2 if l2 is not None else _eigh_factor(s2)
    if f1.shape[1] == 0 or f2.shape[1] == 0:
        return 0.0
    return float(scipy.linalg.svdvals(f1.T @ f2, check_finite=False).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)): a finite, non-negative float."""
    m1 = _as_float64(mu1, 1, "mu1")
    m2 = _as_float64(mu2, 1, "mu2")
    if m1.shape != m2.shape:
        raise ValueError(f"means differ in shape: {m1.shape} and {m2.shape}")
    s1 = _as_float64(sigma1, 2, "sigma1")
    s2 = _as_float64(sigma2, 2, "sigma2")
    if s1.shape != (m1.shape[0], m1.shape[0]):
        raise ValueError(f"sigma1 has shape {s1.shape}, expected {(m1.shape[0],) * 2}")
    diff = m1 - m2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2)
    return max(float(value), 0.0)


def frechet_distance_from_features(features1, features2) -> float:
    """The Frechet distance between the Gaussians fitted to two (n, d) feature matrices,
    computed from the centred features A_i = (f_i - mu_i)^T / sqrt(n_i - 1): tr(S_i) is
    |A_i|_F^2 and tr((S1 S2)^(1/2)) the sum of the singular values of the n1 x n2 matrix
    A1^T A2. Exact when n < d, where the covariances are singular; when both sets have more
    samples than dimensions it goes through the covariances instead (cheaper)."""
    f1 = _as_float64(features1, 2, "features1")
    f2 = _as_float64(features2, 2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: {f1.shape[1]} and {f2.shape[1]}")
    if min(f1.shape[0], f2.shape[0]) < 2:
        raise ValueError("need at least 2 feature vectors on each side")
    d = f1.shape[1]
    if min(f1.shape[0], f2.shape[0]) > d:
        return frechet_distance(*gaussian_statistics(f1), *gaussian_statistics(f2))
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a1 = (f1 - mu1) / np.sqrt(f1.shape[0] - 1)
    a2 = (f2 - mu2) / np.sqrt(f2.shape[0] - 1)
    diff = mu1 - mu2
    trace_sqrt = scipy.linalg.svdvals(a1 @ a2.T, check_finite=False).sum()
    value = diff @ diff + np.sum(a1 * a1) + np.sum(a2 * a2) - 2.0 * trace_sqrt
    return max(float(value), 0.0)


# -- Kernel inception distance ------------------------------------------------------------
def kernel_distance(features1, features2, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): the unbiased estimate of MMD^2 with the polynomial kernel
    k(x, y) = (x.y / d + 1)^3, averaged over ``subsets`` random subsets of
    min(subset_size, n1, n2) vectors drawn without replacement from each side.
    Returns (mean, std) over the subsets; unbiased, so it can be slightly negative."""
    f1 = torch.from_numpy(_as_float64(features1, 2, "features1"))
    f2 = torch.from_numpy(_as_float64(features2, 2, "features2"))
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: {f1.shape[1]} and {f2.shape[1]}")
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 feature vectors on each side")
    d = f1.shape[1]
    gen = torch.Generator().manual_seed(seed)
    estimates = np.empty(subsets)
    off_diagonal = m * (m - 1)
    for s in range(subsets):
        x = f1[torch.randperm(f1.shape[0], generator=gen)[:m]]
        y = f2[torch.randperm(f2.shape[0], generator=gen)[:m]]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        estimates[s] = ((kxx.sum() - kxx.diagonal().sum()) / off_diagonal
                        + (kyy.sum() - kyy.diagonal().sum()) / off_diagonal
                        - 2 * kxy.mean()).item()
    return float(estimates.mean()), float(estimates.std())


# -- Inception score ----------------------------------------------------------------------
def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) on each of ``splits`` equal chunks of the (n, K) class
    probabilities, p(y) being the chunk's mean prediction. Returns (mean, std) over chunks:
    K for confident predictions spread evenly over K classes, 1 for identical predictions."""
    p = _as_float64(probs, 2, "probs")
    if np.any(p < 0) or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("probs must be rows of class probabilities (non-negative, summing to 1)")
    p = p / p.sum(1, keepdims=True)
    if not 1 <= splits <= p.shape[0]:
        raise ValueError(f"splits must be between 1 and the number of samples ({p.shape[0]}), got {splits}")
    scores = []
    for chunk in np.array_split(p, splits):
        marginal = chunk.mean(0, keepdims=True)
        # xlogy gives 0 log 0 = 0; the marginal is positive wherever a row is.
        kl = scipy.special.xlogy(chunk, chunk) - scipy.special.xlogy(chunk, marginal)
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


# -- Precision and recall -----------------------------------------------------------------
def _pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (float64), clamped at zero against rounding."""
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.T
    return sq.clamp_(min=0).sqrt_()


def _knn_radii(f: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each vector to its k-th nearest neighbour in the same set (itself excluded)."""
    return torch.cat([_pairwise_distances(f[i:i + chunk], f).kthvalue(k + 1, dim=1).values
                      for i in range(0, f.shape[0], chunk)])


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Share of ``points`` inside at least one ball (centre, radius)."""
    inside = [(_pairwise_distances(points[i:i + chunk], centres) <= radii).any(1)
              for i in range(0, points.shape[0], chunk)]
    return torch.cat(inside).double().mean().item()


def precision_recall(real, fake, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019). The real manifold is the
    union of balls around each real vector reaching its k-th nearest real neighbour, and
    likewise for the fake one; precision is the share of fake vectors inside the real
    manifold, recall the share of real vectors inside the fake manifold."""
    r = torch.from_numpy(_as_float64(real, 2, "real"))
    f = torch.from_numpy(_as_float64(fake, 2, "fake"))
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dimensions differ: {r.shape[1]} and {f.shape[1]}")
    if not 1 <= k < min(r.shape[0], f.shape[0]):
        raise ValueError(f"k must be at least 1 and below the number of vectors on each side, got {k}")
    real_radii, fake_radii = _knn_radii(r, k, chunk), _knn_radii(f, k, chunk)
    return _coverage(f, r, real_radii, chunk), _coverage(r, f, fake_radii, chunk)


# -- Conditional accuracy -----------------------------------------------------------------
def conditional_accuracy(probs, y) -> float:
    """Share of samples whose most probable class is the class they were generated for."""
    p = _as_float64(probs, 2, "probs")
    labels = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
    if labels.shape[0] != p.shape[0]:
        raise ValueError(f"{p.shape[0]} predictions but {labels.shape[0]} labels")
    return float(np.mean(p.argmax(1) == labels))
