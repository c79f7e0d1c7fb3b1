"""Evaluation tests that fail for a wrong implementation: the random stream of an evaluation,
precision/recall on sets of known overlap, the Inception Score of a hand-made p(y|x) and of the
samples' side, and conditional accuracy against the classes asked for."""
import datetime as dt
import threading
from types import SimpleNamespace

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


def test_precision_and_recall_reach_the_results_in_order():
    """Mutant: sample_quality swapping precision and recall (or the real and fake sides). The fake
    set covers one of the real set's two distant clusters: every sample lies on the data manifold
    (precision near 1), about half the real subset is covered (recall near 0.5). The samples' predictions
    are confident and balanced in every tenth (IS 4 with 10 splits; another split count differs)."""
    n = 40
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    real_features = torch.cat([a, torch.randn(n, 2, generator=gen, dtype=torch.float64) + 100.0]).numpy()
    mu, sigma = metrics.gaussian_statistics(real_features)
    real = RealStatistics(mu, sigma, real_features, np.eye(4)[np.arange(2 * n) % 4], np.arange(2 * n) % 4)
    fake = Extracted(a.numpy() + 1e-6, np.eye(4)[np.arange(n) % 4])
    quality = sample_quality(real, fake, kid_subsets=2, kid_subset_size=10)
    assert quality["precision"] >= 0.85 and 0.25 < quality["recall"] < 0.75
    assert quality["is_mean"] == pytest.approx(4.0, rel=1e-9) and quality["is_std"] == pytest.approx(0.0, abs=1e-9)


def test_precision_and_recall_take_three_neighbours_against_a_seeded_subset_of_the_real_side():
    """Precision and recall as Kynkaanniemi et al. define them, k = 3, against a random subset of
    the real features as large as the fake set, drawn from the seed: the same seed gives the same
    figures, another seed another subset. Mutants: another k, the subset drawn from an unseeded
    generator, all the real features taken."""
    gen = torch.Generator().manual_seed(6)
    real_features = torch.randn(80, 2, generator=gen, dtype=torch.float64).numpy()
    real = RealStatistics(*metrics.gaussian_statistics(real_features), real_features, np.full((80, 4), 0.25),
                          np.arange(80) % 4)
    fake = Extracted(torch.randn(30, 2, generator=gen, dtype=torch.float64).numpy() * 1.5, np.full((30, 4), 0.25))
    figures = {}
    for seed in (5, 6):
        subset = real_features[np.random.default_rng(seed).permutation(80)[:30]]
        figures[seed] = metrics.precision_recall(subset, fake.features, k=3)
        quality = sample_quality(real, fake, seed=seed, kid_subsets=2, kid_subset_size=10)
        assert (quality["precision"], quality["recall"]) == figures[seed]
    assert figures[5] != figures[6]
    subset = real_features[np.random.default_rng(5).permutation(80)[:30]]
    assert figures[5] not in [metrics.precision_recall(subset, fake.features, k=k) for k in (2, 4)]
    assert metrics.precision_recall(real_features, fake.features, k=3) != figures[5]


class FixedLikelihood:
    """log p(x | y) = -(sum of x) - y - 1, exact: the test NLL is known in closed form."""

    device = torch.device("cpu")
    num_classes, num_dims, exact_likelihood, registered_name = 3, 4, True, "fixed"

    def log_prob(self, x, y):
        return -(x.flatten(1).sum(1) + y + 1)


def test_test_likelihood_is_the_mean_nll_and_its_bits_per_dimension():
    """Mutants: the sum's sign, a mean over batches instead of images, labels out of step with
    their images, bits/dim not nats / (D ln 2): 7 images in batches of 3 against the closed form."""
    from workbench.evaluate import test_likelihood

    x = torch.rand(7, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.arange(7) % 3
    seen = []
    result = test_likelihood(FixedLikelihood(), x, y, batch_size=3, seed=0, progress=False, on_advance=seen.append)
    nll = float((x.flatten(1).sum(1) + y + 1).double().mean())
    assert result["test_nll"] == pytest.approx(nll, rel=1e-12)
    assert result["test_bpd"] == pytest.approx(nll / (4 * np.log(2)), rel=1e-12)
    assert result["test_images"] == 7 and result["likelihood"] == "exact" and seen == [3, 3, 1]
    assert result["checkpoint"] == "best"


def test_evaluation_arguments_and_cache_keys():
    """Mutants: off-by-one limits (10 samples and batches of 1 are allowed, 9 and 0 are not), and a
    cache key that forgets one of dataset, split, extractor, its version, binarisation or levels
    (stale real statistics served after any of them changes), a message that does not name the
    argument and its value."""
    from workbench.errors import UserError
    from workbench.evaluate import MAX_SAMPLES, MIN_SAMPLES, check_arguments, stats_path

    check_arguments(MIN_SAMPLES, 1)
    check_arguments(MAX_SAMPLES, 500)
    for n, batch, named in ((MIN_SAMPLES - 1, 500, "-n 9 is too few"), (MAX_SAMPLES + 1, 500, "-n 1000001 is more"),
                            (MIN_SAMPLES, 0, "--batch-size 0 must be at least 1")):
        with pytest.raises(UserError, match=named):
            check_arguments(n, batch)
    base = ("fashion-mnist", "test", ("classifier", "v1"), "dynamic", 2)
    changed = [("mnist",), (None, "train"), (None, None, ("inception", "v1")), (None, None, ("classifier", "v2")),
               (None, None, None, "none"), (None, None, None, None, 4)]
    keys = set()
    for change in [()] + changed:
        args = [c if c is not None else b for c, b in zip(change + (None,) * 5, base)]
        ext = SimpleNamespace(name=args[2][0], version=args[2][1])
        keys.add(stats_path(args[0], args[1], ext, args[3], args[4]))
    assert len(keys) == 1 + len(changed)


class ShownExtractor:
    """Features = the first 8 pixels; remembers each set of images by its description."""

    name, label, version = "recording", "recording", "v1"

    def __init__(self):
        self.shown, self.progress = {}, {}

    def extract(self, images, batch_size=500, progress=True, description="features", on_advance=None):
        self.shown[description] = images.clone()
        self.progress[description] = progress
        gen = torch.Generator().manual_seed(len(self.shown))
        features = images.flatten(1)[:, :8].double() + 0.01 * torch.randn(len(images), 8, generator=gen, dtype=torch.float64)
        return Extracted(features.numpy(), np.eye(10)[np.arange(len(images)) % 10])


@pytest.mark.parametrize("binarize, levels", [("none", 4), ("dynamic", 2), ("threshold", 256)])
def test_reference_ceiling_is_uniform_noise_on_the_models_level_grid(tiny_data, monkeypatch, binarize, levels):
    """Mutants: noise on a grid other than the model's (2 levels where there are 4, a scale of
    1/(L+1), so never reaching 1; the levels asked for, not 2, for binarised data, which the
    figures report as 2 levels), the count of images off by one: n noise images that take every
    level k/(L-1) and only those, beside n training images on the same grid; the data root not
    passed on (only the given root holds the data here); progress bars off by default or for one
    of the three sets; the settings missing from the result (bench_fid prints them)."""
    from workbench import evaluate

    ext, asked = ShownExtractor(), []
    monkeypatch.setattr(evaluate, "get_extractor", lambda *args, **kwargs: asked.append(args) or ext)
    monkeypatch.delenv("GENWB_DATA")
    ref = evaluate.reference_figures("fashion-mnist", n=30, binarize=binarize, levels=levels, root=str(tiny_data),
                                     device="cpu")
    assert asked[0][:3] == ("classifier", "fashion-mnist", str(tiny_data))
    assert set(ext.progress.values()) == {True} and len(ext.progress) == 3
    levels = 2 if binarize != "none" else levels
    assert (ref["dataset"], ref["binarize"], ref["levels"], ref["real_images"]) == ("fashion-mnist", binarize, levels, 60)
    noise, train = ext.shown["uniform noise"], ext.shown["real train images"]
    assert noise.shape == (30, 1, 28, 28) and train.shape == (30, 1, 28, 28) and ref["n"] == 30
    grid = torch.arange(levels) / (levels - 1)
    assert torch.equal(torch.unique(noise), grid)
    assert torch.isin(torch.unique(train), grid).all()  # the floor: training images in the model's domain


def test_results_table_shows_each_value_in_its_format():
    """Mutants: a value left out of the table (None in its cell, or the conditional accuracy's
    value dropped), and the switch to scientific notation below 1e-3 moved (``>=`` -> ``>``,
    ``value == 0`` -> ``!= 0``)."""
    from rich.console import Console

    from workbench.evaluate import _fmt, results_table

    assert (_fmt(12.3456), _fmt(0.001), _fmt(0.0005), _fmt(0.0), _fmt(-0.0002)) == \
        ("12.35", "0.001", "5.000e-04", "0", "-2.000e-04")
    result = {"labels": {"fid": "FID", "kid": "KID", "is": "IS", "precision": "P", "recall": "R"}, "n": 10, "seed": 0,
              "extractor_label": "x", "real_images": 5, "fid": 12.3456, "kid_mean": 0.000123, "kid_std": 4.56e-05,
              "is_mean": 3.14159, "is_std": 0.01, "precision": 0.123, "recall": 0.456, "conditional_accuracy": 0.875,
              "conditional_accuracy_by": "the judge", "test_nll": 87.654, "test_bpd": 0.16125, "likelihood": "exact",
              "bound": "exact", "density": False}
    console = Console(record=True, width=200)
    console.print(results_table(result))
    text = console.export_text()
    for shown in ("12.35", "1.230e-04 ± 4.560e-05", "3.142 ± 0.010", "0.123", "0.456", "conditional accuracy",
                  "0.875", "the judge", "test NLL (nats)", "87.654", "bits/dim", "0.1613"):
        assert shown in text, shown


def test_keep_evaluation_keeps_every_extractor_and_n():
    """Mutants: the previous list of evaluations ignored (only the headline survives, so a third
    n loses the second), and an old flat record joining the list without its extractor's name."""
    from workbench.evaluate import keep_evaluation

    def rec(extractor, n, fid):
        return {"extractor": extractor, "n": n, "fid": fid}

    previous = {"evaluations": [rec("classifier", 40, 1.0), rec("classifier", 30, 2.0)], "classifier": rec("classifier", 40, 1.0)}
    kept = keep_evaluation(previous, rec("classifier", 20, 3.0))
    assert [(r["n"], r["fid"]) for r in kept["evaluations"]] == [(40, 1.0), (30, 2.0), (20, 3.0)]
    assert kept["classifier"]["n"] == 40  # the headline stays the largest n
    old = {"classifier": {"n": 100, "fid": 5.0}, "test_nll": 80.0}  # before the list, without the field
    kept = keep_evaluation(old, rec("inception", 100, 6.0))
    assert [(r["extractor"], r["n"]) for r in kept["evaluations"]] == [("classifier", 100), ("inception", 100)]
    assert kept["inception"]["fid"] == 6.0 and "classifier" not in kept  # the caller keeps the rest of the file


class _StopAfterTheExtractor(Exception):
    pass


@pytest.mark.parametrize("binarize, levels, domain", [("none", 2, "binary"), ("none", 256, "grey"),
                                                      ("dynamic", 2, "binary")])
def test_evaluation_picks_the_classifier_of_the_runs_domain(monkeypatch, tmp_path, binarize, levels, domain):
    """Mutant: the classifier's domain chosen without the run's levels (2 levels without
    binarisation are binary images, judged by the binary classifier)."""
    from types import SimpleNamespace

    from workbench import evaluate, runs

    data = SimpleNamespace(dataset="fashion-mnist", root="", binarize=binarize, levels=levels)
    stand_in = SimpleNamespace(config=SimpleNamespace(data=data), load_model=lambda which, dev: NoiseModel())
    monkeypatch.setattr(runs, "open_run", lambda run_dir: stand_in)
    asked = []

    def get_extractor(*args, **kwargs):
        asked.append(args)
        raise _StopAfterTheExtractor

    monkeypatch.setattr(evaluate, "get_extractor", get_extractor)
    with pytest.raises(_StopAfterTheExtractor):
        evaluate.evaluate_run(tmp_path, n=10, device="cpu", progress=False)
    assert asked[0][7] == domain


class _Judge:
    """A stand-in extractor: random features, and (as a judge) the class a NoiseModel wrote."""

    version = "v0"

    def __init__(self, name):
        self.name = self.label = name

    def extract(self, images, batch_size=500, progress=True, description="", on_advance=None):
        features = np.random.default_rng(len(images)).standard_normal((len(images), 8))
        return Extracted(features, _judge(images, 10))


def _real_side() -> RealStatistics:
    """The statistics of 60 real test images with random features, 10 classes in turn."""
    features = np.random.default_rng(0).standard_normal((60, 8))
    return RealStatistics(*metrics.gaussian_statistics(features), features, np.full((60, 10), 0.1), np.arange(60) % 10)


class _StandInRun:
    """A run folder's interface over a conditional NoiseModel: its eval.json is ``saved``, and
    what the evaluation writes is kept in ``written``."""

    def __init__(self, path, saved, state="paused", num_classes=10):
        self.path, self.saved, self.state, self.num_classes = path, saved, state, num_classes
        self.config = SimpleNamespace(data=SimpleNamespace(dataset="fashion-mnist", root="/the/root", binarize="none",
                                                           levels=256), model=SimpleNamespace(name="noise"))

    def load_model(self, which, device):
        model = NoiseModel(num_classes=self.num_classes)
        model.exact_likelihood, model.registered_name, model.num_dims, model.checkpoint_step = True, "noise", 16, 9
        # the seed's stream counts, and so does the label of a conditional model
        model.log_prob = lambda x, y: -(x.flatten(1).sum(1) + (0 if y is None else y) + torch.rand(len(x)))
        return model

    def read_eval(self):
        return dict(self.saved)

    def update_eval(self, values):
        self.written = values

    def status(self):
        return {"state": self.state, "step": 7}


def test_evaluate_run_passes_the_runs_settings_on_and_reports_them(monkeypatch, tmp_path):
    """Mutants of evaluate_run's wiring, on a stand-in run (no training): the data root, the
    Inception weights, the progress flag or the budget not passed to the extractor, the data root not
    passed to the judging classifier, the test split loaded without its levels, no warning for
    a paused run, the likelihood fields (which the table reads) missing from the result, the
    trainer's test NLL fields (``test_bpd``, ``test_checkpoint_step``) not kept; the real side
    without its root, batch size or progress flag; the judging classifier without its device,
    progress flag or domain, or run at another batch size; a warning without the state and step,
    or none for a running run."""
    from workbench import evaluate, runs

    run, asked = _StandInRun(tmp_path, {"test_nll": 80.0, "test_bpd": 0.1, "likelihood": "exact",
                                        "test_checkpoint_step": 5, "other": 1}), {}
    real = _real_side()
    monkeypatch.setattr(runs, "open_run", lambda run_dir: run)
    monkeypatch.setattr(evaluate, "get_extractor", lambda *args, **kwargs: asked.setdefault("ext", args) and _Judge("inception"))
    monkeypatch.setattr(evaluate, "real_statistics", lambda *args: asked.setdefault("real", args) and real)
    judge = _PixelFeatures("classifier")
    monkeypatch.setattr(evaluate, "load_classifier", lambda *args, on_progress: asked.setdefault("judge", args) and judge)
    budget = object()
    result = evaluate.evaluate_run(tmp_path, n=20, batch_size=5, extractor="inception", device="cpu", progress=False,
                                   inception_weights="w.pth", budget=budget)
    assert asked["ext"] == ("inception", "fashion-mnist", "/the/root", "w.pth", torch.device("cpu"), False, budget, "grey")
    assert asked["real"][1:] == ("fashion-mnist", "test", "none", 256, "/the/root", 5, False)
    assert asked["judge"] == ("fashion-mnist", "/the/root", budget, torch.device("cpu"), False, "grey")
    assert judge.calls == [("classifying samples", 20, 5, False)]
    assert result["conditional_accuracy"] == 1.0 and result["conditional_accuracy_by"] == "classifier"
    assert result["warning"] == f"{tmp_path.name} is still training (status paused at step 7): these figures are of checkpoint step 9"
    assert result["run"] == str(tmp_path)
    run.state = "running"
    assert evaluate.evaluate_run(tmp_path, n=20, batch_size=5, extractor="inception", device="cpu",
                                 progress=False)["warning"].startswith(f"{tmp_path.name} is still training (status running")
    assert (result["test_nll"], result["likelihood"], result["bound"], result["density"]) == (80.0, "exact", "exact", False)
    assert run.written["inception"]["n"] == 20
    kept = {k: v for k, v in run.written.items() if k not in ("inception", "evaluations")}
    assert kept == {"test_nll": 80.0, "test_bpd": 0.1, "likelihood": "exact", "test_checkpoint_step": 5,
                    "bound": "exact", "density": False}  # the trainer's figures, with the fields it may lack

    run.saved = {}  # no test NLL yet: it is computed on the run's own test split

    def load_test_split(*args):
        asked["split"] = args
        raise _StopAfterTheExtractor

    monkeypatch.setattr(evaluate, "load_test_split", load_test_split)
    with pytest.raises(_StopAfterTheExtractor):
        evaluate.evaluate_run(tmp_path, n=20, batch_size=5, extractor="inception", device="cpu", progress=False)
    assert asked["split"] == ("fashion-mnist", "none", 256, "/the/root")


class _PixelFeatures(_Judge):
    """A stand-in extractor whose features are the images' pixels: the figures depend on the
    samples. ``calls`` records (description, images, batch size, progress) of each call."""

    def __init__(self, name):
        super().__init__(name)
        self.calls = []

    def extract(self, images, batch_size=500, progress=True, description="", on_advance=None):
        self.calls.append((description, len(images), batch_size, progress))
        if on_advance is not None:
            on_advance(len(images))
        return Extracted(images.flatten(1)[:, 1:9].double().numpy(), _judge(images, 10))


@pytest.mark.parametrize("num_classes, extractor, saved", [(None, "inception", {}), (10, "classifier", {}),
                                                           (10, "inception", {"test_nll": 1.0}), (None, "classifier", {})])
def test_progress_ends_at_exactly_one_whatever_the_evaluation_computes(monkeypatch, tmp_path, num_classes, extractor,
                                                                        saved):
    """The share of images through the phases ends at exactly 1 whether samples are judged apart
    (a conditional model under Inception) or not, and whether the test likelihood is computed.
    Mutants: ``judged_apart`` with ``or`` or with another name for the classifier, the test NLL's
    key misspelt in ``needs_likelihood`` (each leaves the bar short of 1); the dataset classifier
    loaded again when it is the extractor."""
    from workbench import evaluate, runs

    run, seen, loaded = _StandInRun(tmp_path, saved, "done", num_classes), [], []
    real = _real_side()
    monkeypatch.setattr(runs, "open_run", lambda run_dir: run)
    monkeypatch.setattr(evaluate, "get_extractor", lambda *args, on_progress: _PixelFeatures(extractor))
    monkeypatch.setattr(evaluate, "real_statistics", lambda *args: real)
    monkeypatch.setattr(evaluate, "load_classifier",
                        lambda *args, on_progress: loaded.append(args) or _PixelFeatures("classifier"))
    monkeypatch.setattr(evaluate, "load_test_split", lambda *args: (torch.rand(60, 1, 4, 4), torch.arange(60) % 10))
    evaluate.evaluate_run(tmp_path, n=20, batch_size=5, extractor=extractor, device="cpu", progress=False,
                          on_progress=lambda phase, fraction: seen.append(fraction))
    assert seen[-1] == 1.0 and seen == sorted(seen) and all(f < 1.0 for f in seen[:-1])
    assert len(loaded) == (num_classes is not None and extractor != "classifier")


def test_evaluate_run_records_every_figure_of_its_own_draw_and_reports_progress_to_one(monkeypatch, tmp_path):
    """Mutants of evaluate_run past the wiring: the seed not passed to the draw, the metrics or the
    test likelihood (each figure is recomputed here from the same seed); the progress total
    missing a phase or counting one twice (the phases' fractions in order, ending at exactly 1);
    the classifier's training not reported; a field of the record dropped, renamed or given
    another value; the test NLL not computed when eval.json has none, or its checkpoint step
    dropped; a warning for a finished run."""
    from workbench import evaluate, runs
    from workbench.evaluate import draw_samples, metric_labels, sample_quality, test_likelihood

    run, seen = _StandInRun(tmp_path, {}, state="done"), []
    real = _real_side()
    x, y = torch.rand(60, 1, 4, 4), torch.arange(60) % 10  # the real side's split

    def get_extractor(*args, on_progress=None):
        on_progress(1.0)
        return _PixelFeatures("inception")

    def load_classifier(*args, on_progress=None):
        on_progress(0.5)
        return _PixelFeatures("classifier")

    monkeypatch.setattr(runs, "open_run", lambda run_dir: run)
    monkeypatch.setattr(evaluate, "get_extractor", get_extractor)
    monkeypatch.setattr(evaluate, "real_statistics", lambda *args: real)
    monkeypatch.setattr(evaluate, "load_classifier", load_classifier)
    monkeypatch.setattr(evaluate, "load_test_split", lambda *args: (x, y))
    torch.manual_seed(0)  # the global stream must not matter
    result = evaluate.evaluate_run(tmp_path, n=20, batch_size=5, extractor="inception", device="cpu", seed=3,
                                   progress=False, on_progress=lambda phase, fraction: seen.append((phase, fraction)))

    total = 2 * 20 + 20 + 60  # samples, their features, their judging, the test split
    assert seen == [("training the classifier", 1.0), *[("sampling", k / total) for k in (5, 10, 15, 20)],
                    ("features of the samples", 40 / total), ("training the classifier", 0.5),
                    ("classifying the samples", 60 / total),
                    *[("test likelihood", k / total) for k in range(65, 121, 5)]]
    model = run.load_model("best", "cpu")
    samples, labels = draw_samples(model, 20, 5, 3, progress=False)
    quality = sample_quality(real, _PixelFeatures("inception").extract(samples), 3)
    likelihood = test_likelihood(model, x, y, 5, 3, progress=False)
    record = {"extractor": "inception", "extractor_label": "inception", "extractor_version": "v0",
              "labels": metric_labels(_PixelFeatures("inception")), **quality, "conditional_accuracy": 1.0,
              "conditional_accuracy_by": "classifier", "n": 20, "seed": 3, "real_split": "test", "real_images": 60,
              "binarize": "none", "levels": 256, "checkpoint_step": 9}
    evaluated = result.pop("evaluated")
    assert abs(dt.datetime.fromisoformat(evaluated) - dt.datetime.now()) < dt.timedelta(hours=1)
    assert result == {"run": str(tmp_path), "model": "noise", **record, "warning": None,
                      **{k: likelihood[k] for k in ("test_nll", "test_bpd", "likelihood", "bound", "density")}}
    record["evaluated"] = evaluated
    assert run.written == {**likelihood, "test_checkpoint_step": 9, "evaluations": [record], "inception": record}


def test_kid_uses_the_conventional_subsets_by_default(monkeypatch):
    """Mutant: a default KID subset size or count other than the convention of the KID paper
    and torch-fidelity (100 subsets of 1000), which changes the figure users compare."""
    asked = []
    monkeypatch.setattr(metrics, "kernel_distance", lambda *args, **kwargs: asked.append(kwargs) or (0.0, 0.0))
    features = np.random.default_rng(0).standard_normal((20, 3))
    real = RealStatistics(*metrics.gaussian_statistics(features), features, np.full((20, 4), 0.25), np.arange(20) % 4)
    sample_quality(real, Extracted(features[:12] + 0.1, np.full((12, 4), 0.25)), seed=3)
    assert asked == [{"subsets": 100, "subset_size": 1000, "seed": 3}]


def test_a_prior_over_a_density_vqvae_reports_a_density():
    """Mutant: is_density not looking through a prior at its VQ-VAE's likelihood (a prior over an
    MSE VQ-VAE has a log density, whose bits/dim may be negative and do not compare)."""
    import models
    from workbench.evaluate import is_density, likelihood_notes

    def vq(likelihood):
        return models.build("vqvae", (1, 4, 4), 256, num_codes=4, code_dim=2, channels=4, res_channels=2, res_blocks=0,
                            likelihood=likelihood)

    def prior(likelihood):
        return models.build("vqvae_prior", (1, 4, 4), 256, vqvae=vq(likelihood), hidden_channels=4, num_layers=1,
                            head_channels=4)

    assert is_density(vq("mse")) and is_density(prior("mse"))
    assert not is_density(prior("logistic"))  # a probability mass: not a density
    notes = likelihood_notes(prior("mse"))
    assert notes["density"] is True and notes["bound"] == "point-mass ELBO, PixelCNN code prior"


@pytest.mark.parametrize("binarize, levels, domain", [("none", 4, "grey"), ("none", 2, "binary"), ("dynamic", 2, "binary")])
def test_reference_figures_pass_every_setting_on_and_draw_from_their_seed(monkeypatch, binarize, levels, domain):
    """Mutants of reference_figures' wiring, on stand-ins for the data, the extractor and the
    metrics: the root, the Inception weights, the progress flag, the budget or the classifier's
    domain not passed on; the real side not processed like the model's data; the training images
    not picked by the seed's generator or not put in the model's domain with the seed; the
    noise drawn from the global stream; the metrics' seed dropped; result fields renamed."""
    from workbench import evaluate
    from workbench.data import to_model_domain

    ext, calls, seeds = ShownExtractor(), {}, []
    train = torch.randint(0, 256, (50, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    features = np.random.default_rng(0).standard_normal((40, 8))
    real = RealStatistics(*metrics.gaussian_statistics(features), features, np.full((40, 10), 0.1), np.arange(40) % 10)
    monkeypatch.setattr(evaluate, "get_extractor", lambda *args: calls.setdefault("extractor", args) and ext)
    monkeypatch.setattr(evaluate, "real_statistics", lambda *args: calls.setdefault("real", args) and real)
    monkeypatch.setattr(evaluate, "load_split", lambda *args: calls.setdefault("split", args) and (train, None))
    monkeypatch.setattr(evaluate, "sample_quality", lambda real_, fake, seed: seeds.append(seed) or {"fid": seed})
    budget = object()
    torch.manual_seed(123)  # the global stream must not matter
    ref = evaluate.reference_figures("mnist", n=20, binarize=binarize, levels=levels, root="/the/root",
                                     inception_weights="w.pth", batch_size=7, device="cpu", seed=3, budget=budget)
    assert calls["extractor"] == ("classifier", "mnist", "/the/root", "w.pth", torch.device("cpu"), True, budget, domain)
    assert calls["real"] == (ext, "mnist", "test", binarize, levels, "/the/root", 7, True)
    assert calls["split"] == ("mnist", "train", "/the/root")
    gen = torch.Generator().manual_seed(3)
    pick = torch.randperm(50, generator=gen)[:20]
    assert torch.equal(ext.shown["real train images"], to_model_domain(train[pick], binarize, levels, seed=3))
    grid = 2 if binarize != "none" else levels
    noise = torch.randint(0, grid, (20, 1, 28, 28), generator=gen).float() / (grid - 1)
    assert torch.equal(ext.shown["uniform noise"], noise)
    assert seeds == [3, 3] and ref["floor"] == ref["ceiling"] == {"fid": 3}
    is_mean, is_std = metrics.inception_score(real.probs.astype(np.float64), splits=10)
    assert (ref["extractor_label"], ref["real_is_mean"], ref["real_is_std"]) == ("recording", is_mean, is_std)
    assert (ref["n"], ref["real_images"], ref["labels"]) == (20, 40, evaluate.metric_labels(ext))


def test_keep_evaluation_merges_old_flat_records_and_replaces_its_own():
    """Mutants of keep_evaluation: an old flat record kept out of the list when the list holds one
    of its extractor or of its n (``and`` -> ``or``, ``==`` -> ``!=``), its extractor taken from
    anything but its own field or its key, an evaluation of the same extractor and n kept beside
    its replacement, the list not sorted by extractor, and the headline not replaced by a later
    evaluation of the same n (``<=`` -> ``<``) or kept with a non-integer n."""
    from workbench.evaluate import keep_evaluation

    def rec(extractor, n, fid):
        return {"extractor": extractor, "n": n, "fid": fid}

    previous = {"evaluations": [rec("inception", 100, 1.0), rec("classifier", 50, 2.0)],
                "classifier": {"n": 100, "fid": 3.0},  # flat, without its field: its key names it
                "inception": rec("inception", 100, 1.0), "mine": {"extractor": "classifier", "n": 70, "fid": 4.0}}
    kept = keep_evaluation(previous, rec("inception", 100, 9.0))
    assert [(r["extractor"], r["n"], r["fid"]) for r in kept["evaluations"]] == \
        [("classifier", 100, 3.0), ("classifier", 70, 4.0), ("classifier", 50, 2.0), ("inception", 100, 9.0)]
    assert kept["inception"]["fid"] == 9.0  # the same n again: the latest is the headline
    odd = keep_evaluation({"evaluations": [{"extractor": "classifier", "n": "many", "fid": 1.0}],
                           "classifier": {"extractor": "classifier", "n": "many", "fid": 1.0}}, rec("classifier", 10, 2.0))
    assert [r["n"] for r in odd["evaluations"]] == [10, "many"] and odd["classifier"]["n"] == 10


def test_progress_fractions_stop_at_one():
    """Mutants of _Progress: a fraction past 1 when the images outrun the total (``min(1.0, ...)``
    -> 2.0), and a total of 1 read as 2."""
    from workbench.evaluate import _Progress

    seen = []
    report = _Progress(lambda phase, fraction: seen.append((phase, fraction)))
    advance = report.phase("sampling")
    advance(1)
    report.total = 4
    advance(1)
    advance(5)
    assert seen == [("sampling", 1.0), ("sampling", 0.5), ("sampling", 1.0)]
    assert _Progress(None).phase("x") is None and _Progress(None).training() is None


def test_results_table_reads_exactly_as_users_see_it():
    """The table ``genwb eval`` prints, line by line: kills every change of its title, caption,
    column heads, alignment, labels, hints and value formats (display mutants a check of values
    alone lets through), and the title without a run or checkpoint step."""
    from rich.console import Console

    from workbench.evaluate import results_table

    result = {"run": "runs/made-1", "checkpoint_step": 400, "n": 10, "seed": 2, "extractor_label": "the x",
              "labels": {"fid": "FID (x)", "kid": "KID (x)", "is": "IS (x)", "precision": "precision (x)", "recall": "recall (x)"},
              "real_images": 5, "fid": 12.3456, "kid_mean": 0.000123, "kid_std": 4.56e-05, "is_mean": 3.14159, "is_std": 0.01,
              "precision": 0.123, "recall": 0.456, "conditional_accuracy": 0.875, "conditional_accuracy_by": "classifier",
              "test_nll": 87.654, "test_bpd": 0.16125, "likelihood": "exact", "bound": "exact", "density": False}

    def shown(result):
        console = Console(record=True, width=110, color_system=None)
        console.print(results_table(result))
        return [line.rstrip() for line in console.export_text().splitlines()]

    rule = ("━" * 22, "━" * 23, "━" * 48)
    assert shown(result) == [
        "                         made-1: 10 samples, seed 2, checkpoint step 400",
        "┏" + "┳".join(rule) + "┓",
        "┃ metric               ┃                 value ┃" + " " * 48 + "┃",
        "┡" + "╇".join(rule) + "┩",
        "│ FID (x)              │                 12.35 │ lower is better                                │",
        "│ KID (x)              │ 1.230e-04 ± 4.560e-05 │ lower is better                                │",
        "│ IS (x)               │         3.142 ± 0.010 │ higher is better                               │",
        "│ precision (x)        │                 0.123 │ share of samples on the data manifold          │",
        "│ recall (x)           │                 0.456 │ share of the data manifold covered             │",
        "│ conditional accuracy │                 0.875 │ samples classified as asked, by the classifier │",
        "│ test NLL (nats)      │                87.654 │ exact                                          │",
        "│ bits/dim             │                0.1613 │ exact                                          │",
        "└" + "┴".join(r.replace("━", "─") for r in rule) + "┘",
        "                           extractor: the x; real side: 5 test images",
    ]
    bare = {k: v for k, v in result.items() if k not in ("run", "checkpoint_step")}
    assert shown(bare)[0].strip() == "evaluation: 10 samples, seed 2"
    # the KID's spread in two significant digits above 1e-3 (a 3 or the default 4 show more)
    assert "│ 1.230e-04 ± 0.0046 │" in "\n".join(shown({**result, "kid_std": 0.0045678}))
