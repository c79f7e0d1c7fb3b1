"""Evaluation tests that fail for a wrong implementation: the random stream of an evaluation,
precision/recall on sets of known overlap, the Inception Score of a hand-made p(y|x) and of the
samples' side, and conditional accuracy against the classes asked for."""
import threading

import numpy as np
import pytest
import torch

from workbench import metrics
from workbench.evaluate import RealStatistics, draw_samples, sample_quality
from workbench.features import Extracted


class NoiseModel:
    """Samples are global-generator noise; the first pixel carries the class asked for (+ shift)."""

    device = torch.device("cpu")

    def __init__(self, num_classes=None, shift=0):
        self.num_classes, self.shift = num_classes, shift

    def sample(self, size, y=None):
        images = torch.rand(size, 1, 4, 4)
        if y is not None:
            images[:, 0, 0, 0] = ((y + self.shift) % self.num_classes).float()
        return images


def test_evaluation_in_a_thread_leaves_the_global_stream_and_depends_on_its_seed_only():
    """Mutant: draw_samples calling torch.manual_seed(seed) (the old global reseed), or drawing
    from the global stream unswapped: the other thread's draws would change, or the samples would
    depend on the global state."""
    torch.manual_seed(123)
    undisturbed = [torch.rand(3) for _ in range(4)]

    turn = threading.Semaphore(0)
    back = threading.Semaphore(0)

    def gate(count):  # the main thread draws between the evaluation's batches
        back.release()
        turn.acquire(timeout=30)

    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("a", draw_samples(NoiseModel(), 8, 2, seed=5,
                                                                              progress=False, on_advance=gate)))
    torch.manual_seed(123)
    worker.start()
    beside = []
    for _ in range(4):
        assert back.acquire(timeout=30), "the evaluation's batch never ended"
        beside.append(torch.rand(3))
        turn.release()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the evaluation thread did not finish"
    assert all(torch.equal(a, b) for a, b in zip(beside, undisturbed))

    torch.manual_seed(999)  # another global state: the same samples
    again, _ = draw_samples(NoiseModel(), 8, 2, seed=5, progress=False)
    assert torch.equal(out["a"][0], again)
    other, _ = draw_samples(NoiseModel(), 8, 2, seed=6, progress=False)
    assert not torch.equal(again, other)


def test_precision_and_recall_on_sets_of_known_overlap():
    """Mutant: precision and recall swapped. The fake set covers only half of the real one (one
    of two distant clusters): precision 1, recall 0.5."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(50, 2, generator=gen, dtype=torch.float64)
    b = torch.randn(50, 2, generator=gen, dtype=torch.float64) + 100.0
    real = torch.cat([a, b]).numpy()
    fake = a.numpy() + 1e-6  # the first cluster, the second missing
    precision, recall = metrics.precision_recall(real, fake, k=3)
    assert precision == 1.0
    assert recall == 0.5


def test_inception_score_of_a_hand_made_distribution():
    """Mutants: KL taken the other way round, the marginal of all rows instead of the chunk's, a
    missing exp. Half the rows (0.5, 0.5, 0, 0), half (0, 0, 0.5, 0.5): KL to the marginal
    (1/4 each) is log 2 per row, so IS = exp(log 2) = 2 exactly (the conventional value)."""
    rows = np.array([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]] * 10)
    mean, std = metrics.inception_score(rows, splits=2)
    assert mean == pytest.approx(2.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    skew = np.array([[0.9, 0.1], [0.1, 0.9]])
    kl = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    assert metrics.inception_score(skew, splits=1)[0] == pytest.approx(np.exp(kl), rel=1e-12)


def test_inception_score_is_of_the_samples_not_the_real_images():
    """Mutant: sample_quality taking the IS of real.probs. Real predictions are confident and
    spread over 4 classes (IS 4); the samples' are all uniform (IS 1)."""
    n = 40
    gen = torch.Generator().manual_seed(1)
    real_features = torch.randn(n, 3, generator=gen).numpy()
    mu, sigma = metrics.gaussian_statistics(real_features)
    real = RealStatistics(mu, sigma, real_features, np.eye(4)[np.arange(n) % 4], np.arange(n) % 4)
    fake = Extracted(torch.randn(n, 3, generator=gen).numpy(), np.full((n, 4), 0.25))
    quality = sample_quality(real, fake, kid_subsets=2, kid_subset_size=10)
    assert quality["is_mean"] == pytest.approx(1.0, abs=1e-9)


def _judge(images, num_classes):
    return np.eye(num_classes)[images[:, 0, 0, 0].long().numpy()]


@pytest.mark.parametrize("shift,expected", [(0, 1.0), (1, 0.0)])
def test_conditional_accuracy_follows_the_class_asked_for(shift, expected):
    """Mutant: samples drawn for (y + 1) mod K and judged against y (or the labels returned out of
    step with those drawn). A model that draws the asked class scores 1, one that draws the next
    class scores 0."""
    samples, labels = draw_samples(NoiseModel(num_classes=10, shift=shift), 30, 7, seed=0, progress=False)
    assert torch.equal(labels, torch.arange(30) % 10)
    assert metrics.conditional_accuracy(_judge(samples, 10), labels) == expected
