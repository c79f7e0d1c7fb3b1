"""genwb eval end to end on a tiny trained run: metrics written to eval.json and named by their
extractor, the real side cached and processed like the training data, reference figures."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rich.console import Console

from workbench import evaluate, features, metrics
from workbench.config import load_config
from workbench.data import load_split, to_model_domain
from workbench.errors import UserError
from workbench.evaluate import evaluate_run, real_statistics, reference_figures, results_table
from workbench.features import ClassifierBudget, FeatureExtractor
from workbench.runs import Run
from workbench.train import Trainer

TINY = ClassifierBudget(epochs=3, batch_size=24, lr=1e-2, width=4)
ARGS = dict(n=40, batch_size=20, device="cpu", progress=False, budget=TINY)



def train_tiny_run(preset, out, overrides=()):
    config = load_config(preset, list(overrides))
    run = Run.create(config, out)
    Trainer(config, run, device="cpu").fit()
    return run


@pytest.fixture
def tiny_run(tiny_preset, isolated):
    return train_tiny_run(tiny_preset, isolated / "runs")


@pytest.fixture
def count_extracts(monkeypatch):
    seen = []
    original = FeatureExtractor.extract

    def counting(self, images, *args, **kwargs):
        seen.append(len(images))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(FeatureExtractor, "extract", counting)
    return seen


def test_evaluate_run_writes_named_metrics_and_keeps_the_test_nll(tiny_run, count_extracts, monkeypatch):
    before = tiny_run.read_eval()
    assert "test_nll" in before
    extracted = []
    counting = FeatureExtractor.extract
    monkeypatch.setattr(FeatureExtractor, "extract",
                        lambda self, *a, **k: extracted.append(counting(self, *a, **k)) or extracted[-1])
    result = evaluate_run(tiny_run.path, seed=1, **ARGS)

    assert result["extractor"] == "classifier" and result["labels"]["fid"] == "FID (classifier features)"
    assert "binary" in result["extractor_label"]  # the run is binarised: the binary-domain classifier
    # FID is the Frechet distance between the real test features and the samples' features
    real, fake = extracted
    fid = metrics.frechet_distance(*metrics.gaussian_statistics(real.features), *metrics.gaussian_statistics(fake.features))
    assert result["fid"] == pytest.approx(fid, rel=1e-6) and result["fid"] > 0
    # the IS of the samples' probabilities (a mutant taking the real ones fails; see test_eval_trust)
    assert result["is_mean"] == pytest.approx(metrics.inception_score(fake.probs, splits=10)[0], rel=1e-9)
    assert result["is_mean"] != pytest.approx(metrics.inception_score(real.probs, splits=10)[0], rel=1e-6)
    assert "conditional_accuracy" not in result  # unconditional model
    assert result["test_nll"] == before["test_nll"]
    assert count_extracts == [60, 40]  # the real test split, then the samples

    saved = json.loads((tiny_run.path / "eval.json").read_text())
    assert saved["test_nll"] == before["test_nll"] and saved["test_bpd"] == before["test_bpd"]
    record = saved["classifier"]
    assert record["extractor"] == "classifier" and record["n"] == 40 and record["seed"] == 1
    assert record["fid"] == result["fid"] and record["kid_mean"] == result["kid_mean"]
    assert record["binarize"] == "dynamic" and record["levels"] == 2

    console = Console(record=True, width=150)
    console.print(results_table(result))
    text = console.export_text()
    assert "FID (classifier features)" in text and "KID (classifier features)" in text and "bits/dim" in text
    assert "Inception" not in text


def test_second_evaluation_computes_only_the_generated_side(tiny_run, count_extracts):
    first = evaluate_run(tiny_run.path, **ARGS)
    count_extracts.clear()
    second = evaluate_run(tiny_run.path, **ARGS)
    assert count_extracts == [40]
    assert second["fid"] == pytest.approx(first["fid"], rel=1e-9)  # same seed, same samples
    assert len(list((features.cache_dir() / "stats").glob("fashion-mnist-test-classifier-*-dynamic-L2.npz"))) == 1


def test_test_nll_is_computed_when_the_trainer_did_not_write_it(tiny_run):
    trainer_nll = tiny_run.read_eval()["test_nll"]
    (tiny_run.path / "eval.json").unlink()
    fractions = []
    result = evaluate_run(tiny_run.path, on_progress=lambda phase, f: fractions.append((phase, f)), **ARGS)
    # MADE's likelihood is exact and the test split is binarised with the trainer's seed.
    assert result["test_nll"] == pytest.approx(trainer_nll, rel=1e-5)
    assert tiny_run.read_eval()["likelihood"] == "exact"
    # batches of 20: 40 samples drawn, their 40 features, then the 60 test images' likelihood
    training = [f for p, f in fractions if p == "training the classifier"]  # first in this cache
    assert training and training[-1] == 1.0 and fractions[:len(training)] == [("training the classifier", f) for f in training]
    fractions = fractions[len(training):]
    assert [f for _, f in fractions] == pytest.approx([k * 20 / 140 for k in range(1, 8)])
    assert [p for p, _ in fractions] == ["sampling"] * 2 + ["features of the samples"] * 2 + ["test likelihood"] * 3


@pytest.mark.slow
def test_the_classifiers_first_training_says_so_and_prints_progress_lines_to_a_file(tiny_run, isolated, capfd):
    """Mutants: a silent first training (the 41 silent minutes of issue 16), no progress lines
    when stdout is a file, the training phase missing from the queue's (phase, fraction)."""
    import subprocess
    import sys
    import textwrap

    # a child process whose stdout is a file, as in a batch script
    log = isolated / "eval.log"
    code = textwrap.dedent(f"""
        from workbench.evaluate import evaluate_run
        from workbench.features import ClassifierBudget
        seen = []
        evaluate_run({str(tiny_run.path)!r}, n=40, batch_size=20, device="cpu", progress=True,
                     budget=ClassifierBudget(epochs=3, batch_size=24, lr=1e-2, width=4, seed=7),
                     on_progress=lambda phase, f: seen.append((phase, f)))
        training = [f for phase, f in seen if phase == "training the classifier"]
        print("TRAINING", len(training), training[-1])
        """)
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, check=True, timeout=600)
    text = log.read_text()
    notice = [line for line in text.splitlines() if line.startswith("training the fashion-mnist classifier once")]
    assert len(notice) == 1 and "min on cpu; cached in" in notice[0], text
    steps = [line for line in text.splitlines() if line.startswith("classifier: step ")]
    assert len(steps) >= 5 and "(100%)" in steps[-1], text
    training = next(line for line in text.splitlines() if line.startswith("TRAINING")).split()
    assert int(training[1]) >= 10 and float(training[2]) == 1.0


@pytest.mark.slow
def test_conditional_run_gets_balanced_samples_and_conditional_accuracy(tiny_preset, isolated, monkeypatch):
    run = train_tiny_run(tiny_preset, isolated / "runs", ["model.conditional=true"])
    asked = []
    original = evaluate.metrics.conditional_accuracy
    asked_probs = []
    monkeypatch.setattr(evaluate.metrics, "conditional_accuracy",
                        lambda p, y: asked.append(y) or asked_probs.append(p) or original(p, y))
    result = evaluate_run(run.path, **ARGS)
    # what the judge's probabilities say of the labels asked for (the wrong-class mutant: test_eval_trust)
    judged = asked_probs[0]
    assert result["conditional_accuracy"] == float(np.mean(np.asarray(judged).argmax(1) == (np.arange(40) % 10)))
    assert torch.equal(asked[0], torch.arange(40) % 10)
    assert run.read_eval()["classifier"]["conditional_accuracy"] == result["conditional_accuracy"]
    console = Console(record=True, width=150)
    console.print(results_table(result))
    assert "conditional accuracy" in console.export_text()

    # With Inception features (a stand-in here), the condition is still judged by the dataset
    # classifier, and the two evaluations sit side by side in eval.json.
    stand_in = RecordingExtractor()
    stand_in.name = "inception"
    monkeypatch.setattr(evaluate, "get_extractor", lambda *args, **kwargs: stand_in)
    other = evaluate_run(run.path, extractor="inception", **ARGS)
    assert other["labels"]["fid"] == "FID (Inception v3)"
    assert other["conditional_accuracy"] == result["conditional_accuracy"]
    assert other["conditional_accuracy_by"].startswith("classifier (fashion-mnist, binary")
    saved = run.read_eval()
    assert saved["inception"]["extractor"] == "inception" and saved["classifier"]["fid"] == result["fid"]


class RecordingExtractor(FeatureExtractor):
    """Features = the first 8 pixels; remembers what it was shown."""

    name, label, version, feature_dim, num_classes = "recording", "recording", "v1", 8, 10

    def __init__(self):
        super().__init__(torch.nn.Identity())
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return x.flatten(1)[:, :8], torch.zeros(len(x), 10)


@pytest.mark.parametrize("binarize,levels", [("dynamic", 2), ("threshold", 2), ("none", 4)])
def test_real_side_is_processed_like_the_training_data(tiny_data, binarize, levels):
    ext = RecordingExtractor()
    stats = real_statistics(ext, "fashion-mnist", "test", binarize, levels, progress=False)
    images, labels = load_split("fashion-mnist", "test")
    expected = to_model_domain(images, binarize, levels, seed=evaluate.TEST_SPLIT_SEED)
    shown = torch.cat(ext.seen)
    assert torch.equal(shown, expected)
    on_grid = shown * (levels - 1)
    assert torch.allclose(on_grid, on_grid.round(), atol=1e-5)
    assert stats.features.shape == (60, 8) and (stats.labels == labels.numpy()).all()
    assert np.allclose(stats.mu, expected.flatten(1)[:, :8].double().mean(0).numpy())
    # cached per setting: a second call does not run the extractor, another setting does
    ext.seen.clear()
    real_statistics(ext, "fashion-mnist", "test", binarize, levels, progress=False)
    assert ext.seen == []
    real_statistics(ext, "fashion-mnist", "test", "none", 256, progress=False)
    assert len(ext.seen) > 0


def test_real_statistics_cache_is_read_back_exactly_and_recomputed_when_stale_or_unreadable(tiny_data):
    """The cache returns what was computed, field for field and in its dtypes, leaves no temporary
    file, and is computed again (and rewritten) when its fingerprint is of other data or the file
    is corrupt or lacks a field. Kills: the fingerprint comparison negated or dropped, the
    except clause narrowed, the fields read back in another order, the probabilities kept in
    float64, the temporary file left beside the cache."""
    ext = RecordingExtractor()
    first = real_statistics(ext, "fashion-mnist", "test", "dynamic", 2, progress=False)
    path = evaluate.stats_path("fashion-mnist", "test", ext, "dynamic", 2)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    fields = ("mu", "sigma", "features", "probs", "labels")
    dtypes = (np.float64, np.float64, np.float32, np.float32, np.int64)
    assert [getattr(first, f).dtype for f in fields] == list(dtypes)

    def same(stats):
        return all(np.array_equal(getattr(stats, f), getattr(first, f)) and getattr(stats, f).dtype == d
                   for f, d in zip(fields, dtypes))

    ext.seen.clear()
    assert same(real_statistics(ext, "fashion-mnist", "test", "dynamic", 2, progress=False)) and ext.seen == []
    with np.load(path) as saved:
        kept = dict(saved)
    for stale in ({**kept, "fingerprint": np.array("of other images")},  # the dataset changed under it
                  {k: v for k, v in kept.items() if k != "probs"}):      # a file from an older layout
        np.savez(path, **{k: (np.zeros_like(v) if k == "mu" else v) for k, v in stale.items()})
        ext.seen.clear()
        assert same(real_statistics(ext, "fashion-mnist", "test", "dynamic", 2, progress=False)) and ext.seen != []
    path.write_bytes(b"not an npz file")
    ext.seen.clear()
    assert same(real_statistics(ext, "fashion-mnist", "test", "dynamic", 2, progress=False)) and ext.seen != []
    ext.seen.clear()  # rewritten: read back again
    assert same(real_statistics(ext, "fashion-mnist", "test", "dynamic", 2, progress=False)) and ext.seen == []
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_reference_figures_separate_real_data_from_noise(tiny_data):
    ref = reference_figures("fashion-mnist", n=60, device="cpu", progress=False, budget=TINY)
    floor, ceiling = ref["floor"], ref["ceiling"]
    assert ref["extractor"] == "classifier" and ref["labels"]["fid"] == "FID (classifier features)"
    assert floor["fid"] < ceiling["fid"] and floor["kid_mean"] < ceiling["kid_mean"]
    assert floor["precision"] > ceiling["precision"]
    ext = features.load_classifier("fashion-mnist", None, TINY, "cpu", False, "grey")
    real = real_statistics(ext, "fashion-mnist", "test", "none", 256, progress=False)
    assert ref["real_is_mean"] == pytest.approx(metrics.inception_score(real.probs, splits=10)[0], rel=1e-9)


def test_too_few_samples_and_missing_runs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="at least"):
        evaluate_run(tmp_path, n=5)
    with pytest.raises(UserError, match="not a run folder"):
        evaluate_run(tmp_path, n=100)


@pytest.mark.parametrize("name, hparams, bound, density", [
    ("vqvae", {}, "point-mass ELBO, uniform code prior", False),
    ("vae", {"likelihood": "mse", "iw_samples": 4}, "IWAE, K=4", True),
    ("vae", {"likelihood": "mae", "iw_samples": 2}, "IWAE, K=2", True),
    ("vae", {}, "IWAE, K=16", False),
    ("made", {}, "exact", False),
])
def test_the_test_nll_says_which_bound_and_whether_a_density(name, hparams, bound, density):
    import models

    model = models.build(name, (1, 28, 28), 256 if density else 2, **hparams)
    notes = evaluate.likelihood_notes(model)
    assert notes["bound"] == bound and notes["density"] is density
    result = {"labels": {"fid": "FID", "kid": "KID", "is": "IS", "precision": "P", "recall": "R"}, "n": 10, "seed": 0,
              "extractor_label": "x", "real_images": 5, "fid": 1.0, "kid_mean": 0.1, "kid_std": 0.01, "is_mean": 2.0,
              "is_std": 0.1, "precision": 0.5, "recall": 0.5, "test_nll": 300.0, "test_bpd": 0.5, **notes}
    console = Console(record=True, width=200)
    console.print(results_table(result))
    text = console.export_text()
    if bound == "exact":
        assert "exact" in text and "upper bound" not in text
    else:
        assert f"upper bound ({bound})" in text and ("IWAE" in text) == bound.startswith("IWAE")
    assert ("density" in text) is density


def test_a_bound_of_a_model_outside_the_course_and_the_labels_of_each_extractor():
    """Mutants: the fallback bound's name (a lower bound of a model genwb does not know), and the
    Inception extractor's metrics not named after Inception v3 (their figures compare only with
    other Inception v3 figures)."""
    other = SimpleNamespace(exact_likelihood=False, registered_name="flow")
    assert evaluate.bound_name(other) == "lower bound"
    assert evaluate.metric_labels(SimpleNamespace(name="inception")) == {
        "fid": "FID (Inception v3)", "kid": "KID (Inception v3)", "is": "IS (inception)",
        "precision": "precision (Inception v3)", "recall": "recall (Inception v3)"}
    assert evaluate.metric_labels(SimpleNamespace(name="classifier"))["fid"] == "FID (classifier features)"


@pytest.mark.slow
def test_eval_json_keeps_each_extractor_and_n_with_its_checkpoint_step(tiny_run, tmp_path):
    """Mutants: ``-n 1000`` replacing the n=10000 figures (the old single record per extractor),
    a missing checkpoint step, no warning while the run trains. Old files (flat records only) are
    read by the panel's reader, runlog's and the detail table, before and after."""
    from workbench import runlog
    from workbench.runindex import eval_rows
    from workbench.tui.screens.detail import evaluation_table

    step = tiny_run.status()["step"]
    big = evaluate_run(tiny_run.path, **{**ARGS, "n": 40})
    small = evaluate_run(tiny_run.path, **{**ARGS, "n": 30})
    saved = tiny_run.read_eval()
    assert [(r["extractor"], r["n"]) for r in saved["evaluations"]] == [("classifier", 40), ("classifier", 30)]
    assert saved["classifier"]["n"] == 40 and saved["classifier"]["fid"] == big["fid"]  # not replaced by n=30
    assert saved["evaluations"][1]["fid"] == small["fid"]
    assert all(r["checkpoint_step"] is not None for r in saved["evaluations"])
    assert small["warning"] is None
    # readers of the new file: one row per extractor (the headline), the list ignored
    rows = [r for r in eval_rows(tiny_run.path.parent) if r.path == tiny_run.path]
    assert [r.extractor for r in rows] == ["classifier"] and rows[0].values["fid"] == big["fid"]
    assert set(runlog.evaluations(saved)) == {"classifier"}
    assert evaluation_table(saved) != ""

    # an old file: a flat record without the list; a new evaluation keeps it as an entry
    old = {k: v for k, v in saved.items() if k != "evaluations"}
    old["classifier"] = {k: v for k, v in old["classifier"].items() if k != "checkpoint_step"}
    (tiny_run.path / "eval.json").write_text(json.dumps(old))
    assert [r.values["fid"] for r in eval_rows(tiny_run.path.parent) if r.path == tiny_run.path] == [big["fid"]]
    assert set(runlog.evaluations(old)) == {"classifier"}
    evaluate_run(tiny_run.path, **{**ARGS, "n": 30})
    again = tiny_run.read_eval()
    assert [r["n"] for r in again["evaluations"]] == [40, 30] and again["classifier"]["n"] == 40

    # while the run trains: the warning names the checkpoint step
    tiny_run.write_status("running", step + 100)
    during = evaluate_run(tiny_run.path, **{**ARGS, "n": 30})
    assert during["checkpoint_step"] == saved["evaluations"][0]["checkpoint_step"]
    assert f"checkpoint step {during['checkpoint_step']}" in during["warning"] and "still training" in during["warning"]


def test_data_prepare_classifier_trains_each_domain_once_ahead(tiny_data):
    """Mutants: the command training nothing (the cache stays empty) or retraining a cached one."""
    from click.testing import CliRunner

    from workbench.cli import main
    from workbench.features import ClassifierBudget, classifier_path

    first = CliRunner().invoke(main, ["data", "prepare-classifier", "--device", "cpu"])
    assert first.exit_code == 0, first.output
    assert first.output.count("training the fashion-mnist classifier once") == 2
    for domain in ("grey", "binary"):
        assert classifier_path("fashion-mnist", domain, ClassifierBudget()).is_file()
        assert f"{domain} classifier of fashion-mnist: test accuracy" in first.output
    second = CliRunner().invoke(main, ["data", "prepare-classifier", "--domain", "grey", "--device", "cpu"])
    assert second.exit_code == 0 and "training" not in second.output
