"""Metrics against closed forms and known answers: FID, KID, IS, precision/recall, accuracy."""
import numpy as np
import pytest
import scipy.linalg
import torch

from workbench import metrics
from workbench.metrics import (conditional_accuracy, frechet_distance, frechet_distance_from_features,
                               gaussian_statistics, inception_score, kernel_distance, precision_recall,
                               trace_sqrt_product)



def random_rotation(d, rng):
    return np.linalg.qr(rng.standard_normal((d, d)))[0]


# -- FID ----------------------------------------------------------------------------------
def test_fid_of_diagonal_gaussians_is_its_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 32), rng.uniform(0.1, 3, 32)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_fid_of_non_commuting_gaussians_with_known_trace_term():
    # S2 = S1^-1/2 U diag(b) U^T S1^-1/2, so (S1 S2)^1/2 has trace sum(sqrt(b)) exactly.
    rng = np.random.default_rng(1)
    d = 64
    q, u = random_rotation(d, rng), random_rotation(d, rng)
    a, b = 10 ** rng.uniform(-3, 0, d), 10 ** rng.uniform(-3, 0, d)
    s1 = (q * a) @ q.T
    inv_sqrt = (q / np.sqrt(a)) @ q.T
    s2 = inv_sqrt @ (u * b) @ u.T @ inv_sqrt
    s2 = (s2 + s2.T) / 2
    exact_trace = np.sqrt(b).sum()
    assert abs(trace_sqrt_product(s1, s2) - exact_trace) / exact_trace < 1e-10
    mu = np.zeros(d)
    exact = np.trace(s1) + np.trace(s2) - 2 * exact_trace
    assert abs(frechet_distance(mu, s1, mu, s2) - exact) / exact < 1e-10


def test_fid_matches_the_sqrtm_route_on_random_covariances():
    rng = np.random.default_rng(2)
    f1, f2 = rng.standard_normal((500, 20)), rng.standard_normal((400, 20)) @ rng.standard_normal((20, 20))
    m1, s1 = gaussian_statistics(f1)
    m2, s2 = gaussian_statistics(f2)
    reference = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(reference, rel=1e-9)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(frechet_distance(m2, s2, m1, s1), rel=1e-12)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(3)
    mu, sigma = gaussian_statistics(rng.standard_normal((300, 64)) * 5)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    mu, sigma = gaussian_statistics(rng.standard_normal((30, 64)) * 5)  # singular
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


@pytest.mark.parametrize("n1,n2", [(20, 30), (40, 300), (64, 64)])
def test_rank_deficient_case_is_finite_and_matches_the_feature_path(n1, n2):
    rng = np.random.default_rng(n1 + n2)
    d = 128
    f1 = rng.standard_normal((n1, d))
    f2 = rng.standard_normal((n2, d)) * 1.5 + 0.2
    exact = frechet_distance_from_features(f1, f2)
    from_stats = frechet_distance(*gaussian_statistics(f1), *gaussian_statistics(f2))
    assert isinstance(from_stats, float) and np.isfinite(from_stats) and from_stats > 0
    assert from_stats == pytest.approx(exact, rel=1e-10)
    # Both sides are exact: the feature path equals the definition computed with
    # an eigendecomposition square root, here at a size where that is well resolved.
    m1, s1 = gaussian_statistics(f1)
    m2, s2 = gaussian_statistics(f2)
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum()
    definition = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert exact == pytest.approx(definition, rel=1e-6)


def test_feature_path_with_many_samples_agrees_with_statistics():
    rng = np.random.default_rng(4)
    f1, f2 = rng.standard_normal((200, 16)), rng.standard_normal((150, 16)) + 1
    assert frechet_distance_from_features(f1, f2) == pytest.approx(
        frechet_distance(*gaussian_statistics(f1), *gaussian_statistics(f2)), rel=1e-12)


def test_fid_is_never_negative_nan_or_complex_for_degenerate_input():
    d = 16
    zero = np.zeros((d, d))
    rank_one = np.outer(np.arange(d), np.arange(d)) / d
    # Exact values, not ">= 0" (which the clamp makes true whatever the rest computes). Mutants:
    # a dropped factor 2, sqrt of the sum instead of the product, a wrong branch for singular S.
    # rank_one = lam * u u^T with |u| = 1: sqrt(rank_one) = sqrt(lam) u u^T, so
    # FID(rank_one, I) = lam + d - 2 sqrt(lam).
    lam = float(np.sum(np.arange(d) ** 2)) / d
    for s1, s2, expected in [(zero, zero, 0.0), (zero, np.eye(d), d), (rank_one, rank_one, 0.0),
                             (rank_one, np.eye(d), lam + d - 2 * np.sqrt(lam))]:
        value = frechet_distance(np.zeros(d), s1, np.zeros(d), s2)
        assert isinstance(value, float) and value == pytest.approx(expected, abs=1e-6)
    assert frechet_distance(np.zeros(d), zero, np.zeros(d), np.eye(d)) == pytest.approx(d)
    # rank-one S and S: distance zero
    assert frechet_distance(np.zeros(d), rank_one, np.zeros(d), rank_one) < 1e-8


def test_fid_accepts_float32_tensors_and_rejects_bad_shapes():
    rng = np.random.default_rng(5)
    f = torch.from_numpy(rng.standard_normal((100, 8))).float()
    mu, sigma = gaussian_statistics(f)
    assert mu.dtype == np.float64
    assert frechet_distance(torch.from_numpy(mu), torch.from_numpy(sigma), mu, sigma) < 1e-8
    with pytest.raises(ValueError):
        frechet_distance(mu, sigma, mu[:4], sigma[:4, :4])
    with pytest.raises(ValueError):
        frechet_distance(mu, sigma * np.nan, mu, sigma)


# -- IS -----------------------------------------------------------------------------------
def test_inception_score_is_the_number_of_classes_for_confident_even_predictions():
    k = 10
    probs = np.eye(k)[np.arange(1000) % k]
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(k, rel=1e-12) and std < 1e-12


def test_inception_score_is_one_for_identical_predictions():
    probs = np.tile(np.random.default_rng(0).dirichlet(np.ones(7)), (500, 1))
    mean, std = inception_score(probs, splits=5)
    assert mean == pytest.approx(1.0, abs=1e-12) and std < 1e-12


def test_inception_score_is_exp_of_the_mean_kl_by_hand():
    """p(y|x) = (1, 0, 0) and (1/3, 1/3, 1/3): p(y) = (2/3, 1/6, 1/6), KL = log 3/2 and (log 2)/3.
    IS = exp(E[KL]) = sqrt(3/2 * 2^(1/3)) = 1.37473...; E[exp(KL)] = (3/2 + 2^(1/3))/2 = 1.37996...
    would be the wrong order of exp and mean."""
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    mean, _ = inception_score(probs, splits=1)
    right = np.sqrt(1.5 * 2 ** (1 / 3))
    wrong = (1.5 + 2 ** (1 / 3)) / 2
    assert mean == pytest.approx(right, rel=1e-9)
    assert abs(mean - wrong) > 5e-3


def test_inception_score_lies_between_one_and_k_and_validates_input():
    probs = torch.softmax(torch.randn(400, 10, generator=torch.Generator().manual_seed(0)) * 2, 1)
    mean, _ = inception_score(probs, splits=4)
    assert 1 < mean < 10
    with pytest.raises(ValueError):
        inception_score(np.full((10, 3), 0.5))  # rows do not sum to one
    with pytest.raises(ValueError):
        inception_score(np.eye(3), splits=10)  # more splits than samples


# -- KID ----------------------------------------------------------------------------------
def test_kid_is_near_zero_for_one_distribution_and_positive_for_different_ones():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1000, 16)), rng.standard_normal((1000, 16))
    same_mean, same_std = kernel_distance(a, b, subsets=20, subset_size=500)
    shifted_mean, shifted_std = kernel_distance(a, b * 1.3 + 0.3, subsets=20, subset_size=500)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shifted_mean > 10 * max(shifted_std, abs(same_mean))


def test_kid_with_whole_sets_is_the_unbiased_mmd():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((40, 5)) + 0.5
    k = lambda a, b: (a @ b.T / 5 + 1) ** 3  # noqa: E731
    m = 30  # subsets draw min(subset_size, 30, 40) vectors: all of x
    mean, std = kernel_distance(x, y[:30], subsets=3, subset_size=100)
    kxx, kyy, kxy = k(x, x), k(y[:30], y[:30]), k(x, y[:30])
    expected = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * kxy.mean())
    assert mean == pytest.approx(expected, rel=1e-10) and std < 1e-10


# -- precision / recall -------------------------------------------------------------------
def test_precision_recall_on_separated_clusters():
    rng = np.random.default_rng(0)
    cluster_a = rng.uniform(0, 1, (30, 2))
    cluster_b = rng.uniform(0, 1, (70, 2)) + 1000
    cluster_c = rng.uniform(0, 1, (10, 2)) - 1000
    real = np.concatenate([cluster_a, cluster_b])
    fake = np.concatenate([cluster_a, cluster_c])  # copies of A, plus a cluster no real point is near
    precision, recall = precision_recall(real, fake, k=3)
    assert precision == pytest.approx(30 / 40) and recall == pytest.approx(30 / 100)
    assert precision_recall(real, real, k=3) == (1.0, 1.0)


def test_precision_recall_uses_the_kth_neighbour_excluding_the_point_itself():
    real = np.array([[0.0], [1.0], [3.0], [7.0]])  # radii k=1: 1, 1, 2, 4; k=2: 3, 2, 3, 6
    fake = np.array([[2.5], [2.9], [11.5], [13.5]])  # radii k=1: .4, .4, 2, 2; k=2: 9, 8.6, 8.6, 10.6
    # k=1: 2.5 and 2.9 lie in ball(3, 2), 11.5 is 4.5 from 7; only the real 3 is within 0.4 of a fake
    assert precision_recall(real, fake, k=1, chunk=3) == (0.5, 0.25)
    # k=2: 11.5 now lies in ball(7, 6) but 13.5 does not; ball(2.5, 9) covers every real point
    assert precision_recall(real, fake, k=2, chunk=3) == (0.75, 1.0)


# -- conditional accuracy -----------------------------------------------------------------
def test_conditional_accuracy_counts_argmax_matches():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert conditional_accuracy(probs, torch.tensor([0, 1, 1, 1])) == 0.75
    with pytest.raises(ValueError):
        conditional_accuracy(probs, [0, 1])


# -- found by mutation testing (mutmut run "workbench.metrics*") ---------------------------
@pytest.mark.parametrize("d,n,seed", [(8, 7, 2), (16, 15, 6), (32, 31, 0)])
def test_a_singular_covariance_that_passes_cholesky_is_still_exact(d, n, seed):
    """n < d features give a singular covariance that Cholesky may still factor thanks to rounding
    (pivots ~1e-8 of the largest in these cases on this machine's LAPACK); taking that factor
    gives square roots of rounding noise, ~1e-9 relative off. Kills the mutants of the pivot
    guard (`min ** 2` -> `min * 2`, `tol * max ** 2` -> `tol / max ** 2`, ...) and of the rank
    tolerance: the statistics route must equal the exact feature route to 1e-12."""
    rng = np.random.default_rng(seed)
    f1 = rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d)
    f2 = rng.standard_normal((3 * d, d))
    exact = frechet_distance_from_features(f1, f2)
    assert frechet_distance(*gaussian_statistics(f1), *gaussian_statistics(f2)) == pytest.approx(exact, rel=1e-12)


def test_trace_term_with_one_zero_covariance_is_zero_on_either_side():
    """A point mass against a Gaussian: tr((0 S)^(1/2)) = 0 whichever side is zero, and a singular
    side keeps only its range. Catches a factor of a zero matrix that is not empty. (`or` -> `and`
    in the empty-factor test survives, an equivalent mutant: the SVD of a 0 x r matrix sums to 0.)"""
    s = np.diag([1.0, 4.0, 9.0])
    assert trace_sqrt_product(np.zeros((3, 3)), s) == 0.0
    assert trace_sqrt_product(s, np.zeros((3, 3))) == 0.0
    assert trace_sqrt_product(np.diag([0.0, 4.0, 0.0]), s) == pytest.approx(4.0, rel=1e-12)


def test_feature_route_is_zero_for_one_set_and_needs_two_vectors_a_side():
    """Kills `max(value, 0.0)` -> `max(value, 1.0)` on the feature route (FID of a set with itself is
    0, not 1) and the off-by-one mutants of the size check (2 vectors are enough, 1 is not)."""
    f = np.random.default_rng(0).standard_normal((5, 20))
    assert frechet_distance_from_features(f, f) < 1e-9
    assert frechet_distance_from_features(f[:2], f[2:4]) > 0
    with pytest.raises(ValueError):
        frechet_distance_from_features(f[:1], f)
    with pytest.raises(ValueError):
        frechet_distance_from_features(f, f[:1])


def test_inception_score_renormalises_rows_and_validates_them():
    """Rows that sum to 1 within 1e-4 (float32 softmax) are accepted and renormalised: the score
    equals that of the exact rows. Kills `p / p.sum` -> `p * p.sum`, a dropped tolerance, and a
    dropped check of negative entries; `splits` = n (one sample a chunk) scores exactly 1."""
    rng = np.random.default_rng(0)
    exact = rng.dirichlet(np.ones(5), 40)
    off = exact * (1 + 5e-5)
    assert inception_score(off, splits=4)[0] == pytest.approx(inception_score(exact, splits=4)[0], rel=1e-12)
    with pytest.raises(ValueError):
        inception_score(np.array([[1.2, -0.2], [0.5, 0.5]]), splits=1)
    assert inception_score(exact, splits=40) == (pytest.approx(1.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))


def test_inception_score_defaults_to_ten_splits():
    """The published recipe scores 10 chunks (mean and std over them). Twenty rows, the first ten
    confident on two classes, the last ten identical: with 10 splits each chunk of 2 holds either
    two confident rows or two equal ones; 11 splits (a mutant) give other chunks."""
    probs = np.concatenate([np.eye(2)[np.arange(10) % 2], np.full((10, 2), 0.5)])
    assert inception_score(probs) == inception_score(probs, splits=10)
    assert inception_score(probs)[0] == pytest.approx(1.5, rel=1e-12)  # five chunks score 2, five score 1


def test_precision_recall_counts_a_point_on_a_ball_boundary_and_ignores_scale():
    """Kynkaanniemi et al. count a sample inside when its distance is <= the k-NN radius. Real
    points 0, 1, 2, 3 have k=1 radii of 1, so a fake point at 4 lies on the boundary of ball(3, 1):
    precision 1 (kills `<=` -> `<`). Scaled by 1e-3 nothing changes (kills a clamp at 1 instead of
    0 in the distances). The default k is the paper's 3."""
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[4.0], [1.5], [10.0]])  # 10 is 7 from the nearest real point: outside
    assert precision_recall(real, fake, k=1) == (pytest.approx(2 / 3), 1.0)
    assert precision_recall(real * 1e-3, fake * 1e-3, k=1) == (pytest.approx(2 / 3), 1.0)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((60, 3)), rng.standard_normal((60, 3)) * 1.3
    assert precision_recall(a, b) == precision_recall(a, b, k=3) != precision_recall(a, b, k=4)
    with pytest.raises(ValueError):
        precision_recall(real, fake, k=3)  # k must stay below the smaller set's size


def test_conditional_accuracy_takes_labels_of_any_shape():
    """Labels as a column tensor or a nested list are flattened, not broadcast against the
    predictions (kills `reshape(-1)` mutants)."""
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert conditional_accuracy(probs, torch.tensor([[0], [1], [1]])) == pytest.approx(2 / 3)
    assert conditional_accuracy(probs, [[0], [0], [0]]) == pytest.approx(2 / 3)


_I2, _Z2, _NAN2 = np.eye(2), np.zeros(2), np.array([[1.0, np.nan], [0.0, 1.0]])
_F = np.random.default_rng(0).standard_normal((6, 2))
_P = np.full((6, 3), 1 / 3)


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.gaussian_statistics(np.zeros(3)), r"^features must have 2 dimension\(s\), got shape \(3,\)$"),
    (lambda: metrics.gaussian_statistics(_NAN2), r"^features contains NaN or infinite values$"),
    (lambda: metrics.gaussian_statistics(np.zeros((1, 3))), r"^need at least 2 feature vectors for a covariance, got 1$"),
    (lambda: metrics.trace_sqrt_product(_Z2, _I2), r"^sigma1 must have 2 dimension\(s\), got shape \(2,\)$"),
    (lambda: metrics.trace_sqrt_product(_I2, _NAN2), r"^sigma2 contains NaN or infinite values$"),
    (lambda: metrics.trace_sqrt_product(_I2, np.eye(3)), r"^covariances must be square and of one shape, got \(2, 2\) and \(3, 3\)$"),
    (lambda: metrics.trace_sqrt_product(np.zeros((2, 3)), np.zeros((2, 3))), r"^covariances must be square and of one shape, got \(2, 3\) and \(2, 3\)$"),
    (lambda: metrics.frechet_distance(_I2, _I2, _Z2, _I2), r"^mu1 must have 1 dimension\(s\), got shape \(2, 2\)$"),
    (lambda: metrics.frechet_distance(_Z2, _I2, [np.inf, 0.0], _I2), r"^mu2 contains NaN or infinite values$"),
    (lambda: metrics.frechet_distance(_Z2, _I2, np.zeros(3), _I2), r"^means differ in shape: \(2,\) and \(3,\)$"),
    (lambda: metrics.frechet_distance(_Z2, _NAN2, _Z2, _I2), r"^sigma1 contains NaN or infinite values$"),
    (lambda: metrics.frechet_distance(_Z2, _I2, _Z2, _Z2), r"^sigma2 must have 2 dimension\(s\), got shape \(2,\)$"),
    (lambda: metrics.frechet_distance(_Z2, np.eye(3), _Z2, _I2), r"^sigma1 has shape \(3, 3\), expected \(2, 2\)$"),
    (lambda: metrics.frechet_distance_from_features(_Z2, _F), r"^features1 must have 2 dimension\(s\), got shape \(2,\)$"),
    (lambda: metrics.frechet_distance_from_features(_F, _NAN2), r"^features2 contains NaN or infinite values$"),
    (lambda: metrics.frechet_distance_from_features(_F, np.zeros((6, 3))), r"^feature dimensions differ: 2 and 3$"),
    (lambda: metrics.frechet_distance_from_features(_F, _F[:1]), r"^need at least 2 feature vectors on each side$"),
    (lambda: metrics.frechet_distance_from_features(_F[:1], _F), r"^need at least 2 feature vectors on each side$"),
    (lambda: metrics.kernel_distance(_NAN2, _F), r"^features1 contains NaN or infinite values$"),
    (lambda: metrics.kernel_distance(_F, _Z2), r"^features2 must have 2 dimension\(s\), got shape \(2,\)$"),
    (lambda: metrics.kernel_distance(_F, np.zeros((6, 3))), r"^feature dimensions differ: 2 and 3$"),
    (lambda: metrics.kernel_distance(_F[:1], _F), r"^KID needs at least 2 feature vectors on each side$"),
    (lambda: metrics.inception_score(np.full(3, 1 / 3)), r"^probs must have 2 dimension\(s\), got shape \(3,\)$"),
    (lambda: metrics.inception_score(_P * 2), r"^probs must be rows of class probabilities \(non-negative, summing to 1\)$"),
    (lambda: metrics.inception_score(_P, splits=7), r"^splits must be between 1 and the number of samples \(6\), got 7$"),
    (lambda: metrics.precision_recall(_Z2, _F), r"^real must have 2 dimension\(s\), got shape \(2,\)$"),
    (lambda: metrics.precision_recall(_F, _NAN2), r"^fake contains NaN or infinite values$"),
    (lambda: metrics.precision_recall(_F, np.zeros((6, 3))), r"^feature dimensions differ: 2 and 3$"),
    (lambda: metrics.precision_recall(_F, _F, k=6), r"^k must be at least 1 and below the number of vectors on each side, got 6$"),
    (lambda: metrics.conditional_accuracy(_Z2, [0, 1]), r"^probs must have 2 dimension\(s\), got shape \(2,\)$"),
    (lambda: metrics.conditional_accuracy(_P, [0, 1]), r"^6 predictions but 2 labels$"),
])
def test_each_bad_input_is_named_with_what_is_wrong(call, message):
    """Every check of the metrics names the argument and the value at fault. Kills each message
    replaced or emptied, and an argument named for another (``sigma1`` for ``sigma2``)."""
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("scale", [1e-9, 1e9])
def test_the_trace_term_holds_at_any_scale_of_a_singular_covariance(scale):
    """tr((S S)^(1/2)) = tr(S) for a rank-deficient S (5 samples in 6 dimensions) far from unit
    scale, and FID scales with the square of the features. Kills the eigenvalue cut-off made
    absolute below unit scale (``max(w.max(), 1.0)``: every eigenvalue of a 1e-18 covariance
    dropped, the trace term 0)."""
    rng = np.random.default_rng(3)
    f, g = rng.standard_normal((5, 6)), rng.standard_normal((5, 6)) + 0.5
    _, s = metrics.gaussian_statistics(f * scale)
    assert metrics.trace_sqrt_product(s, s) == pytest.approx(np.trace(s), rel=1e-9, abs=0)
    base = metrics.frechet_distance(*metrics.gaussian_statistics(f), *metrics.gaussian_statistics(g))
    scaled = metrics.frechet_distance(*metrics.gaussian_statistics(f * scale), *metrics.gaussian_statistics(g * scale))
    assert scaled == pytest.approx(base * scale ** 2, rel=1e-9, abs=0)


def test_kid_subsets_are_as_large_as_the_smaller_side_and_two_vectors_suffice():
    """KID's subsets hold min(subset_size, n1, n2) vectors: asking for more than the smaller side
    has equals asking for exactly that many (the same draws), whichever side is smaller; two
    vectors a side is the smallest valid KID. Kills the subset size capped by one side only and
    the minimum raised to 3."""
    rng = np.random.default_rng(4)
    big, small = rng.standard_normal((50, 3)), rng.standard_normal((20, 3)) + 0.2
    assert metrics.kernel_distance(big, small, subsets=3, subset_size=1000, seed=1) == \
        metrics.kernel_distance(big, small, subsets=3, subset_size=20, seed=1)
    assert metrics.kernel_distance(small, big, subsets=3, subset_size=1000, seed=1) == \
        metrics.kernel_distance(small, big, subsets=3, subset_size=20, seed=1)
    assert np.isfinite(metrics.kernel_distance(big[:2], small[:2], subsets=2)).all()


def test_two_vectors_have_a_mean_and_an_unbiased_covariance():
    """The smallest valid input: two feature vectors, whose unbiased covariance divides by 1.
    Kills the minimum raised to 3 (``<= 2``, ``< 3``)."""
    mu, sigma = metrics.gaussian_statistics([[0.0, 0.0], [2.0, 4.0]])
    assert np.array_equal(mu, [1.0, 2.0]) and np.array_equal(sigma, [[2.0, 4.0], [4.0, 8.0]])
