"""``genwb eval``: sample quality and test likelihood of a trained run, and reference figures.

    result = evaluate_run("runs/made-...", n=10000, extractor="classifier")
    Console().print(results_table(result))

A run is evaluated by drawing n samples from its best checkpoint (classes in turn for a
conditional model), extracting features and class probabilities with the chosen extractor
(``workbench.features``) and comparing them with the real test split, processed exactly as
the model's training data (binarised, quantised). The real side's statistics are cached per
(dataset, split, extractor and its version, binarize, levels) under ``cache_dir()/stats``, so
a second evaluation only computes the generated side.

Results go into the run's eval.json under the extractor's name ("classifier" or "inception"),
so evaluations with the two extractors sit side by side; the test NLL the trainer wrote is kept
(and computed here only when it is missing).
"""
from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.table import Table

from workbench import metrics
from workbench.data import TEST_SPLIT_SEED, dataset_info, load_split, load_test_split, to_model_domain
from workbench.devices import PrivateStream, resolve_device
from workbench.errors import UserError
from workbench.features import (Extracted, FeatureExtractor, classifier_domain, dataset_fingerprint, get_extractor,
                                load_classifier, progress_bar)
from workbench.paths import cache_dir

MIN_SAMPLES = 10
MAX_SAMPLES = 1_000_000


def check_arguments(n: int, batch_size: int) -> None:
    """``genwb eval``'s numbers, checked before any work."""
    if n < MIN_SAMPLES:
        raise UserError(f"-n {n} is too few samples for the metrics; use at least {MIN_SAMPLES} (10000 is usual)")
    if n > MAX_SAMPLES:
        raise UserError(f"-n {n} is more samples than the metrics need; use at most {MAX_SAMPLES:,} (10000 is usual)")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} must be at least 1 (500 is usual)")


@dataclass
class RealStatistics:
    mu: np.ndarray  # float64 (d,)
    sigma: np.ndarray  # float64 (d, d)
    features: np.ndarray  # float32 (n, d), for KID and precision/recall
    probs: np.ndarray  # (n, K)
    labels: np.ndarray  # int64 (n,)


def stats_path(dataset: str, split: str, extractor: FeatureExtractor, binarize: str, levels: int) -> Path:
    name = f"{dataset}-{split}-{extractor.name}-{extractor.version}-{binarize}-L{levels}.npz"
    return cache_dir() / "stats" / name


def real_statistics(extractor: FeatureExtractor, dataset: str, split: str = "test", binarize: str = "none",
                    levels: int = 256, root: str | None = None, batch_size: int = 500,
                    progress: bool = True) -> RealStatistics:
    """Features, probabilities and Gaussian statistics of a real split in the model's domain,
    from the cache when the same extractor has seen the same data before."""
    images, labels = load_split(dataset, split, root)
    fingerprint = dataset_fingerprint(images)
    path = stats_path(dataset, split, extractor, binarize, levels)
    if path.is_file():
        try:
            with np.load(path) as saved:
                if str(saved["fingerprint"]) == fingerprint:
                    return RealStatistics(saved["mu"], saved["sigma"], saved["features"], saved["probs"], saved["labels"])
        except (OSError, KeyError, ValueError):  # unreadable: compute it again
            pass
    seed = TEST_SPLIT_SEED if split == "test" else 0
    x = to_model_domain(images, binarize, levels, seed=seed)
    out = extractor.extract(x, batch_size, progress, description=f"real {split} images")
    mu, sigma = metrics.gaussian_statistics(out.features)
    stats = RealStatistics(mu, sigma, out.features, out.probs.astype(np.float32), labels.numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, mu=mu, sigma=sigma, features=stats.features, probs=stats.probs, labels=stats.labels,
             fingerprint=np.array(fingerprint))
    tmp.replace(path)
    return stats


def sample_quality(real: RealStatistics, fake: Extracted, seed: int = 0, kid_subsets: int = 100,
                   kid_subset_size: int = 1000, k: int = 3) -> dict[str, float]:
    """FID against the real statistics, KID, IS of the fake side (10 splits), and precision/recall
    with k neighbours against a random subset of the real features as large as the fake set
    (at least ``MIN_SAMPLES`` on each side)."""
    mu, sigma = metrics.gaussian_statistics(fake.features)
    fid = metrics.frechet_distance(real.mu, real.sigma, mu, sigma)
    kid_mean, kid_std = metrics.kernel_distance(real.features, fake.features, subsets=kid_subsets,
                                                subset_size=kid_subset_size, seed=seed)
    is_mean, is_std = metrics.inception_score(fake.probs, splits=10)
    rng = np.random.default_rng(seed)
    real_subset = real.features[rng.permutation(len(real.features))[:len(fake.features)]]
    precision, recall = metrics.precision_recall(real_subset, fake.features, k=k)
    return {"fid": fid, "kid_mean": kid_mean, "kid_std": kid_std, "is_mean": is_mean, "is_std": is_std,
            "precision": precision, "recall": recall}


def balanced_labels(n: int, num_classes: int | None) -> torch.Tensor | None:
    return None if num_classes is None else torch.arange(n) % num_classes


def draw_samples(model, n: int, batch_size: int, seed: int, progress: bool = True,
                 on_advance: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n samples (float32, CPU) and the labels they were drawn for (classes in turn), in batches;
    ``on_advance(count)`` after each batch."""
    labels = balanced_labels(n, model.num_classes)
    stream = PrivateStream(seed, model.device)  # batch by batch: see PrivateStream
    chunks = []
    with torch.inference_mode(), progress_bar(progress) as bar:
        task = bar.add_task("sampling", total=n, info="")
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            y = None if labels is None else labels[start:start + size].to(model.device)
            with stream.draws():
                images = model.sample(size, y=y)
            chunks.append(images.float().cpu())
            bar.advance(task, size)
            if on_advance is not None:
                on_advance(size)
    return torch.cat(chunks), labels


def bound_name(model) -> str:
    """What ``log_prob`` of ``model`` is: "exact", or which lower bound on log p(x)."""
    if model.exact_likelihood:
        return "exact"
    if model.registered_name == "vqvae":
        return "point-mass ELBO, uniform code prior"
    if model.registered_name == "vqvae_prior":
        return "point-mass ELBO, PixelCNN code prior"
    if hasattr(model, "iw_samples"):
        return f"IWAE, K={model.iw_samples}"
    return "lower bound"


def is_density(model) -> bool:
    """True when log p(x) is a log density (mse/mae observation models), not a log probability:
    its bits/dim can be negative and do not compare with those of the discrete models."""
    likelihood = getattr(model, "likelihood", None) or getattr(getattr(model, "vqvae", None), "likelihood", None)
    return getattr(likelihood, "kind", None) in ("mse", "mae")


def likelihood_notes(model) -> dict:
    """The eval.json fields that say what the test NLL is."""
    return {"likelihood": "exact" if model.exact_likelihood else "lower bound", "bound": bound_name(model),
            "density": is_density(model)}


def test_likelihood(model, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                    progress: bool = True, on_advance: Callable[[int], None] | None = None) -> dict[str, float]:
    """Mean negative log-likelihood of the test split in nats per image, and bits/dim."""
    stream = PrivateStream(seed, model.device)  # the IWAE bound draws
    total = 0.0
    with torch.inference_mode(), progress_bar(progress) as bar:
        task = bar.add_task("test likelihood", total=len(x), info="")
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(model.device)
            yb = None if model.num_classes is None else y[start:start + batch_size].to(model.device)
            with stream.draws():
                log_prob = model.log_prob(xb, yb)
            total -= log_prob.double().sum().item()
            bar.advance(task, len(xb))
            if on_advance is not None:
                on_advance(len(xb))
    nll = total / len(x)
    return {"test_nll": nll, "test_bpd": nll / (model.num_dims * math.log(2)), **likelihood_notes(model),
            "checkpoint": "best", "test_images": len(x)}


def metric_labels(extractor: FeatureExtractor) -> dict[str, str]:
    on = "Inception v3" if extractor.name == "inception" else f"{extractor.name} features"
    return {"fid": f"FID ({on})", "kid": f"KID ({on})", "is": f"IS ({extractor.name})",
            "precision": f"precision ({on})", "recall": f"recall ({on})"}


class _Progress:
    """Reports ``on_progress(phase, fraction)``: the classifier's first training as its own
    fraction, every later phase (samples, their features, the separate judging, the test
    likelihood) as the share of all images those phases pass, 0 to 1."""

    def __init__(self, on_progress: Callable[[str, float], None] | None):
        self.on_progress, self.done, self.total = on_progress, 0, 1

    def training(self) -> Callable[[float], None] | None:
        if self.on_progress is None:
            return None
        return lambda fraction: self.on_progress("training the classifier", fraction)

    def phase(self, name: str) -> Callable[[int], None] | None:
        """``advance(count)``: ``count`` more images through phase ``name``."""
        if self.on_progress is None:
            return None

        def advance(count: int) -> None:
            self.done += count
            self.on_progress(name, min(1.0, self.done / max(1, self.total)))

        return advance


def evaluate_run(run_dir, n: int = 10000, extractor: str = "classifier", inception_weights=None,
                 batch_size: int = 500, device: str = "auto", seed: int = 0, progress: bool = True,
                 budget=None, on_progress: Callable[[str, float], None] | None = None) -> dict:
    """Evaluate a run's best checkpoint; writes eval.json and returns the flat results.
    ``on_progress(phase, fraction)``: the classifier's first training (its own 0 to 1), then the
    images drawn, their features, the separate judging of conditional samples and the test
    likelihood (when eval.json has none yet), together 0 to 1."""
    from workbench.runs import open_run

    check_arguments(n, batch_size)
    run = open_run(run_dir)
    data = run.config.data
    root = data.root or None
    dev = resolve_device(device)
    model = run.load_model("best", dev)
    domain = classifier_domain(data.binarize, data.levels)
    report = _Progress(on_progress)
    ext = get_extractor(extractor, data.dataset, root, inception_weights, dev, progress, budget, domain,
                        on_progress=report.training())
    real = real_statistics(ext, data.dataset, "test", data.binarize, data.levels, root, batch_size, progress)
    judged_apart = model.num_classes is not None and ext.name != "classifier"
    needs_likelihood = "test_nll" not in run.read_eval()
    report.total = 2 * n + n * judged_apart + len(real.labels) * needs_likelihood

    samples, labels = draw_samples(model, n, batch_size, seed, progress, report.phase("sampling"))
    fake = ext.extract(samples, batch_size, progress, description="generated images",
                       on_advance=report.phase("features of the samples"))
    quality = sample_quality(real, fake, seed)
    if labels is not None:
        # Inception's classes are not the dataset's: whether samples respect their condition is
        # always read off the dataset classifier.
        judge = ext if ext.name == "classifier" else load_classifier(data.dataset, root, budget, dev, progress, domain,
                                                                     on_progress=report.training())
        judged = fake if judge is ext else judge.extract(samples, batch_size, progress, "classifying samples",
                                                         report.phase("classifying the samples"))
        quality["conditional_accuracy"] = metrics.conditional_accuracy(judged.probs, labels)
        quality["conditional_accuracy_by"] = judge.label

    step = getattr(model, "checkpoint_step", None)
    record = {"extractor": ext.name, "extractor_label": ext.label, "extractor_version": ext.version,
              "labels": metric_labels(ext), **quality, "n": n, "seed": seed, "real_split": "test",
              "real_images": len(real.features), "binarize": data.binarize, "levels": data.levels,
              "checkpoint_step": step, "evaluated": dt.datetime.now().isoformat(timespec="seconds")}
    previous = run.read_eval()
    likelihood = {k: previous[k] for k in ("test_nll", "test_bpd", "likelihood", "test_checkpoint_step")
                  if k in previous}
    if "test_nll" not in previous:
        x, y = load_test_split(data.dataset, data.binarize, data.levels, root)
        likelihood = {**test_likelihood(model, x, y, batch_size, seed, progress,
                                                    report.phase("test likelihood")), "test_checkpoint_step": step}
    likelihood.update(likelihood_notes(model))  # the trainer's eval.json may predate these fields
    run.update_eval({**likelihood, **keep_evaluation(previous, record)})
    state = run.status()
    training = state.get("state") in ("running", "paused")
    warning = (f"{run.path.name} is still training (status {state.get('state')} at step {state.get('step')}): "
               f"these figures are of checkpoint step {step}") if training else None
    return {"run": str(run.path), "model": run.config.model.name, **record, "warning": warning,
            **{k: likelihood[k] for k in ("test_nll", "test_bpd", "likelihood", "bound", "density") if k in likelihood}}


def keep_evaluation(previous: dict, record: dict) -> dict:
    """The eval.json entries that hold ``record`` beside the evaluations before it.

    ``evaluations`` lists one record per (extractor, n), each with the checkpoint step it is of;
    a later evaluation replaces only the one of its own extractor and n. ``previous[extractor]``,
    the flat record that older readers take, stays the one with the largest n (the latest among
    equals), so ``-n 1000`` never hides the n=10000 figures. Files from before this layout have
    only the flat records: they join the list on the first new evaluation."""
    kept = [r for r in previous.get("evaluations", []) if isinstance(r, dict)]
    for key, value in previous.items():  # an older file: its flat records become list entries
        if isinstance(value, dict) and "fid" in value and not any(
                r.get("extractor") == value.get("extractor", key) and r.get("n") == value.get("n") for r in kept):
            kept.append({**value, "extractor": value.get("extractor", key)})
    kept = [r for r in kept if (r.get("extractor"), r.get("n")) != (record["extractor"], record["n"])] + [record]
    kept.sort(key=lambda r: (str(r.get("extractor")), -(r.get("n") if isinstance(r.get("n"), int) else 0)))
    headline = previous.get(record["extractor"])
    if not isinstance(headline, dict) or not isinstance(headline.get("n"), int) or headline["n"] <= record["n"]:
        headline = record
    return {"evaluations": kept, record["extractor"]: headline}


def reference_figures(dataset: str = "fashion-mnist", n: int = 10000, extractor: str = "classifier",
                      binarize: str = "none", levels: int = 256, root: str | None = None, inception_weights=None,
                      batch_size: int = 500, device: str = "auto", seed: int = 0, progress: bool = True,
                      budget=None) -> dict:
    """What the metrics read for a perfect model and for a useless one: the real test split
    against n real training images (the floor; a model that reproduces the training data) and
    against n images of uniform noise on the model's level grid (the ceiling). Binarised data
    has 2 levels, whatever ``levels`` says."""
    check_arguments(n, batch_size)
    levels = 2 if binarize != "none" else levels
    dev = resolve_device(device)
    ext = get_extractor(extractor, dataset, root, inception_weights, dev, progress, budget,
                        classifier_domain(binarize, levels))
    real = real_statistics(ext, dataset, "test", binarize, levels, root, batch_size, progress)
    train_images, _ = load_split(dataset, "train", root)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train_images), generator=gen)[:n]
    train_x = to_model_domain(train_images[pick], binarize, levels, seed=seed)
    noise_x = torch.randint(0, levels, (len(pick), *dataset_info(dataset).image_shape), generator=gen).float() / (levels - 1)
    floor = sample_quality(real, ext.extract(train_x, batch_size, progress, "real train images"), seed)
    ceiling = sample_quality(real, ext.extract(noise_x, batch_size, progress, "uniform noise"), seed)
    real_is = metrics.inception_score(real.probs.astype(np.float64), splits=10)
    return {"dataset": dataset, "n": len(pick), "real_images": len(real.features), "binarize": binarize,
            "levels": levels, "extractor": ext.name, "extractor_label": ext.label, "labels": metric_labels(ext),
            "floor": floor, "ceiling": ceiling, "real_is_mean": real_is[0], "real_is_std": real_is[1]}


def _fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def results_table(result: dict) -> Table:
    """The results of ``evaluate_run`` as a rich table: metric, value, what it means."""
    labels = result["labels"]
    of = f", checkpoint step {result['checkpoint_step']}" if result.get("checkpoint_step") is not None else ""
    table = Table(title=f"{Path(result.get('run', '')).name or 'evaluation'}: {result['n']} samples, seed {result['seed']}{of}",
                  caption=f"extractor: {result['extractor_label']}; real side: {result['real_images']} test images")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("", style="dim")
    table.add_row(labels["fid"], _fmt(result["fid"]), "lower is better")
    table.add_row(labels["kid"], f"{_fmt(result['kid_mean'])} ± {_fmt(result['kid_std'], 2)}", "lower is better")
    table.add_row(labels["is"], f"{result['is_mean']:.3f} ± {result['is_std']:.3f}", "higher is better")
    table.add_row(labels["precision"], f"{result['precision']:.3f}", "share of samples on the data manifold")
    table.add_row(labels["recall"], f"{result['recall']:.3f}", "share of the data manifold covered")
    if "conditional_accuracy" in result:
        table.add_row("conditional accuracy", f"{result['conditional_accuracy']:.3f}",
                      f"samples classified as asked, by the {result['conditional_accuracy_by']}")
    if "test_nll" in result:
        from workbench.runindex import nll_kind

        kind = nll_kind(result)
        table.add_row("test NLL (nats)", f"{result['test_nll']:.3f}", kind)
        table.add_row("bits/dim", f"{result['test_bpd']:.4f}", kind)
    return table
