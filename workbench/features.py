"""Feature extractors for the sample-quality metrics: features for FID, KID and precision/recall,
class probabilities for the Inception Score and conditional accuracy.

    extractor = get_extractor("classifier", "fashion-mnist", domain="binary")   # or "inception"
    out = extractor.extract(images)        # images: float (n, C, H, W) in [0, 1]
    out.features, out.probs                # float32 (n, d), float64 (n, K)

classifier
    A small CNN trained on the dataset's training split. Features: its penultimate layer (the
    128 ReLU units its last layer reads), divided by their root mean square on the training
    split; probabilities: its softmax over the dataset's classes. One classifier per
    domain: "grey" (images scaled to [0, 1], for models of 2 < L <= 256 levels) and "binary"
    (a fresh Bernoulli binarisation of every training batch, for binarised models). On
    Fashion-MNIST the grey classifier reaches 90.9 % test accuracy (2 epochs) but reads dynamically
    binarised images at 58 % (measured with the earlier 4-epoch budget, as are the next two
    figures); one trained on both kinds of batches stays at 90 % on grey images; the binary
    classifier reads binarised test images at 85.0 % (2 epochs; 82 % when thresholded). Hence two networks, each at home in its domain, so that IS and conditional
    accuracy mean something for binarised models too. Cached as
    ``cache_dir()/extractors/<dataset>-<domain>-<code hash>.pt`` with the fingerprint of the data
    it was trained on and its test accuracy (in its domain); trained the first time it is asked
    for (a few minutes on a CPU), and again when the data or the code changes.
inception
    The FID variant of Inception v3 (TF 2015-12-05 graph as ported by pytorch-fid): average
    pools that exclude padding, a max pool in the last block, 1008 output classes. Loads
    pytorch-fid's ``pt_inception-2015-12-05-*.pth`` from a given path, the torch hub cache or
    ``cache_dir()/extractors``; it never downloads. Images are resized to 299x299 (bilinear),
    grey repeated to three channels and scaled to [-1, 1]; features are the 2048-d pool. The
    Inception Score's probabilities follow the original IS code (Salimans et al. 2016): the
    softmax over all 1008 logits of ``softmax/logits/MatMul``, the pool times fc's weight
    WITHOUT fc's bias. (Taking classes 1..1000 with the bias, as torchvision-style ports do,
    gives a different number that is not comparable with published IS figures.)
"""
from __future__ import annotations

import hashlib
import inspect
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torchvision.models import inception as tv_inception

from workbench.data import dataset_info, load_split
from workbench.devices import PrivateStream
from workbench.errors import UserError
from workbench.paths import cache_dir

#: Bump to retrain every cached classifier (the source of the network and of its training
#: loop is hashed too, so editing either also invalidates the cache).
CLASSIFIER_VERSION = 1
INCEPTION_PATTERN = "pt_inception-2015-12-05-*.pth"
INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
EXTRACTORS = ("classifier", "inception")


def progress_bar(enabled: bool = True) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False)


@dataclass
class Extracted:
    features: np.ndarray  # float32 (n, d)
    probs: np.ndarray  # float64 (n, K)


class FeatureExtractor:
    """A network mapping images in [0, 1] to (features, class probabilities), evaluated in batches.

    ``name`` is "classifier" or "inception"; ``label`` is how results name it; ``version``
    identifies the weights, for the cache of real-data statistics."""

    name: str
    label: str
    version: str
    feature_dim: int
    num_classes: int

    def __init__(self, network: nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) of a batch already on the device."""
        raise NotImplementedError

    def extract(self, images: torch.Tensor, batch_size: int = 500, progress: bool = True,
                description: str = "features", on_advance=None) -> Extracted:
        """Features and class probabilities of ``images``; ``on_advance(count)`` after each batch."""
        feats, probs = [], []
        with torch.inference_mode(), progress_bar(progress) as bar:
            task = bar.add_task(f"{description} ({self.name})", total=len(images), info="")
            for batch in images.split(batch_size):
                f, logits = self.forward(batch.to(self.device, torch.float32))
                feats.append(f.float().cpu())
                probs.append(torch.softmax(logits.double(), 1).cpu())
                bar.advance(task, len(batch))
                if on_advance is not None:
                    on_advance(len(batch))
        return Extracted(torch.cat(feats).numpy(), torch.cat(probs).numpy())


# -- the dataset classifier -----------------------------------------------------------------
class DatasetClassifier(nn.Module):
    """conv-BN-ReLU, max-pool, conv-BN-ReLU, max-pool, then a 128-unit layer (the features) and
    the class logits. Inputs are images in [0, 1] of the dataset's shape."""

    def __init__(self, image_shape, num_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        c, h, w = image_shape

        def conv(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.body = nn.Sequential(conv(c, width), nn.MaxPool2d(2), conv(width, 2 * width), nn.MaxPool2d(2), nn.Flatten())
        self.features = nn.Sequential(nn.Linear(2 * width * (h // 4) * (w // 4), feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(self.body(x))
        return f, self.head(self.dropout(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


@dataclass(frozen=True)
class ClassifierBudget:
    """How the classifier is trained; tests shrink it to seconds on a tiny dataset."""

    epochs: int = 2  # 90.9 % grey test accuracy against 92.0 % for 4, in half the time (benchmarks/bench_classifier.py)
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 32
    max_train_images: int = 0  # 0: the whole training split
    seed: int = 0


DOMAINS = ("grey", "binary")


def classifier_domain(binarize: str, levels: int) -> str:
    """The classifier a model's samples are read by: "binary" for binarised data, else "grey"."""
    return "binary" if binarize != "none" or levels == 2 else "grey"


def to_domain(images: torch.Tensor, domain: str, generator: torch.Generator) -> torch.Tensor:
    """uint8 images -> floats in [0, 1]; for "binary", one Bernoulli draw per pixel."""
    x = images.float() / 255.0
    return torch.bernoulli(x, generator=generator) if domain == "binary" else x


def fit_classifier(model: DatasetClassifier, images: torch.Tensor, labels: torch.Tensor, budget: ClassifierBudget,
                   device: torch.device, domain: str = "grey", progress: bool = True,
                   stream: PrivateStream | None = None,
                   on_step: Callable[[int, int], None] | None = None,
                   announce: Callable[[float], None] | None = None) -> None:
    """AdamW with a one-cycle learning rate and cross-entropy on uint8 images brought into
    ``domain`` batch by batch (a new binarisation each time for "binary"). Dropout draws from
    ``stream`` (a PrivateStream), never from the global generator's stream."""
    gen = torch.Generator().manual_seed(budget.seed)
    stream = stream or PrivateStream(budget.seed, device)
    n = len(images)
    batch_size = min(budget.batch_size, n)
    steps_per_epoch = n // batch_size
    total = budget.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, weight_decay=budget.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=budget.lr, total_steps=total, pct_start=0.2)
    model.train()
    lines = progress and not sys.stdout.isatty()  # a file or pipe: plain lines, as genwb run prints
    started, done, next_line = time.monotonic(), 0, 0.1
    with progress_bar(progress and not lines) as bar:
        task = bar.add_task(f"training the {domain} classifier", total=total, info="")
        for epoch in range(budget.epochs):
            perm = torch.randperm(n, generator=gen)
            for step in range(steps_per_epoch):
                idx = perm[step * batch_size:(step + 1) * batch_size]
                x = to_domain(images[idx], domain, gen).to(device)
                with stream.draws():
                    logits = model(x)
                loss = F.cross_entropy(logits, labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{budget.epochs} loss {loss.item():.3f}")
                done += 1
                if done == min(TIMED_STEPS, total) and announce is not None:
                    announce((time.monotonic() - started) / done * total)
                if lines and done / total >= next_line - 1e-9:
                    next_line += 0.1
                    print(f"classifier: step {done}/{total} ({100 * done / total:.0f}%), epoch {epoch + 1}/"
                          f"{budget.epochs}, loss {loss.item():.3f}, {time.monotonic() - started:.0f} s", flush=True)
                if on_step is not None:
                    on_step(done, total)
    model.eval()


def classifier_accuracy(model: DatasetClassifier, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                        domain: str = "grey", batch_size: int = 1000, seed: int = 0) -> float:
    """Top-1 accuracy on uint8 images brought into ``domain`` (one fixed binarisation)."""
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    with torch.inference_mode():
        for xb, yb in zip(images.split(batch_size), labels.split(batch_size)):
            correct += (model(to_domain(xb, domain, gen).to(device)).argmax(1).cpu() == yb).sum().item()
    return correct / len(labels)


def feature_rms(model: DatasetClassifier, images: torch.Tensor, device: torch.device, domain: str = "grey",
                max_images: int = 10000, batch_size: int = 1000) -> float:
    """Root mean square of the feature entries over (up to ``max_images``) training images.
    Features are divided by it, which puts them on the scale the polynomial kernel of KID was
    made for (x.y / d of order one, as for Inception's pool features); FID and precision/recall
    do not care about the scale."""
    gen = torch.Generator().manual_seed(1)
    total, count = 0.0, 0
    with torch.inference_mode():
        for xb in images[:max_images].split(batch_size):
            f, _ = model.features_and_logits(to_domain(xb, domain, gen).to(device))
            total += f.double().pow(2).sum().item()
            count += f.numel()
    return math.sqrt(total / count) if total > 0 else 1.0


def _source_hash() -> str:
    """Hash of the code that defines the classifier, taken at import so that tests can patch
    functions without changing it."""
    parts = [inspect.getsource(obj) for obj in (DatasetClassifier, to_domain, fit_classifier, feature_rms)]
    return hashlib.blake2b("".join(parts).encode(), digest_size=8).hexdigest()


_SOURCE_HASH = _source_hash()


def classifier_code_hash(budget: ClassifierBudget) -> str:
    """The code version of a classifier: its source, its training budget and CLASSIFIER_VERSION."""
    key = f"{CLASSIFIER_VERSION}|{_SOURCE_HASH}|{sorted(asdict(budget).items())}"
    return hashlib.blake2b(key.encode(), digest_size=5).hexdigest()


def dataset_fingerprint(*tensors: torch.Tensor) -> str:
    """A hash of the shapes and every byte of the given tensors (a second for Fashion-MNIST at most)."""
    h = hashlib.blake2b(digest_size=10)
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def classifier_path(dataset: str, domain: str, budget: ClassifierBudget) -> Path:
    return cache_dir() / "extractors" / f"{dataset}-{domain}-{classifier_code_hash(budget)}.pt"


def _save_atomically(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class ClassifierExtractor(FeatureExtractor):
    name = "classifier"

    def __init__(self, network: DatasetClassifier, dataset: str, domain: str, version: str, test_accuracy: float,
                 feature_scale: float = 1.0, device: torch.device | str = "cpu"):
        super().__init__(network, device)
        self.dataset, self.domain, self.version, self.test_accuracy = dataset, domain, version, test_accuracy
        self.feature_scale = feature_scale
        self.feature_dim = network.head.in_features
        self.num_classes = network.head.out_features
        self.label = f"classifier ({dataset}, {domain}, {100 * test_accuracy:.1f}% test accuracy)"

    def forward(self, x):
        f, logits = self.network.features_and_logits(x)
        return f / self.feature_scale, logits


def _load_cached(path: Path, fingerprint: str, model: DatasetClassifier) -> tuple[float, float] | None:
    """(test accuracy, feature scale) after loading the cached weights into ``model``; None when
    there is no file, it is unreadable, or it was trained on other data."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["fingerprint"] != fingerprint:
            return None
        model.load_state_dict(saved["state_dict"])
        return float(saved["test_accuracy"]), float(saved["feature_scale"])
    except Exception:  # missing, truncated or foreign: train again and overwrite it
        return None


#: The first steps of the classifier's training are timed to say how long the rest takes.
TIMED_STEPS = 5


def training_notice(dataset: str, seconds: float, device: torch.device, path: Path) -> str:
    minutes = max(1, round(seconds / 60))
    return f"training the {dataset} classifier once (about {minutes} min on {device.type}; cached in {path})"


def load_classifier(dataset: str, root: str | None = None, budget: ClassifierBudget | None = None,
                    device: torch.device | str = "cpu", progress: bool = True, domain: str = "grey",
                    on_progress: Callable[[float], None] | None = None) -> ClassifierExtractor:
    """The dataset classifier of ``domain`` from the cache, trained first when missing or stale.
    The first training says so in one line with its estimated time (``progress``), prints a
    line per tenth when stdout is not a terminal, and reports its fraction done to
    ``on_progress`` after each batch."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    budget = budget or ClassifierBudget()
    info = dataset_info(dataset)
    device = torch.device(device)
    train_x, train_y = load_split(dataset, "train", root)
    test_x, test_y = load_split(dataset, "test", root)
    fingerprint = dataset_fingerprint(train_x, train_y, test_x, test_y)
    path = classifier_path(dataset, domain, budget)
    model = DatasetClassifier(info.image_shape, info.num_classes, width=budget.width)
    cached = _load_cached(path, fingerprint, model)
    if cached is not None:
        accuracy, scale = cached
    else:
        stream = PrivateStream(budget.seed, device)
        with stream.draws():
            model = DatasetClassifier(info.image_shape, info.num_classes, width=budget.width).to(device)
        if budget.max_train_images:
            train_x, train_y = train_x[:budget.max_train_images], train_y[:budget.max_train_images]
        announce = (lambda seconds: print(training_notice(dataset, seconds, device, path), flush=True)) if progress else None
        step = None if on_progress is None else (lambda done, total: on_progress(done / total))
        fit_classifier(model, train_x, train_y, budget, device, domain, progress, stream, step, announce)
        accuracy = classifier_accuracy(model, test_x, test_y, device, domain)
        scale = feature_rms(model, train_x, device, domain)
        _save_atomically({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                          "fingerprint": fingerprint, "test_accuracy": accuracy, "feature_scale": scale, "dataset": dataset,
                          "domain": domain, "budget": asdict(budget), "code_hash": classifier_code_hash(budget)}, path)
    version = f"{domain}-{classifier_code_hash(budget)}-{fingerprint[:8]}"
    return ClassifierExtractor(model, dataset, domain, version, accuracy, scale, device)


# -- Inception v3, FID variant --------------------------------------------------------------
class FIDInceptionA(tv_inception.InceptionA):
    """InceptionA whose average pool excludes the padding, as in the TF graph."""

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class FIDInceptionC(tv_inception.InceptionC):
    """InceptionC whose average pool excludes the padding."""

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class FIDInceptionE(tv_inception.InceptionE):
    """InceptionE with the TF pooling: an average pool excluding padding in the first E block
    (Mixed_7b), a max pool in the last one (Mixed_7c)."""

    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
        if self.max_pool:
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


class FIDInceptionV3(tv_inception.Inception3):
    """Inception v3 as in pytorch-fid, with its state-dict key names (Conv2d_1a_3x3.conv.weight,
    ..., Mixed_7c.branch_pool.bn.running_var, fc.weight, fc.bias). ``forward`` takes images
    already resized to 299x299 and scaled to [-1, 1] and returns (2048-d pool, 1008 logits)."""

    def __init__(self):
        super().__init__(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)

    def forward(self, x):
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"):
            x = getattr(self, name)(x)
        pool = torch.flatten(x, 1)
        return pool, self.fc(pool)


def inception_search_dirs() -> list[Path]:
    return [Path(torch.hub.get_dir()) / "checkpoints", cache_dir() / "extractors"]


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The weights file: ``path`` itself (or a match of INCEPTION_PATTERN inside it, for a folder),
    else the first match in the torch hub checkpoints folder or the genwb cache."""
    how = f"download {INCEPTION_URL} into {inception_search_dirs()[0]}/ or pass --inception-weights PATH"
    if path:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        matches = sorted(p.glob(INCEPTION_PATTERN)) if p.is_dir() else []
        if matches:
            return matches[-1]
        raise UserError(f"Inception weights not found at {p}; {how}")
    looked = inception_search_dirs()
    for folder in looked:
        matches = sorted(folder.glob(INCEPTION_PATTERN))
        if matches:
            return matches[-1]
    raise UserError(f"Inception weights {INCEPTION_PATTERN} not found (looked in {', '.join(map(str, looked))}); {how}")


def file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class InceptionExtractor(FeatureExtractor):
    """Features: the 2048-d pool. Logits: the 1008 outputs of the TF graph's
    ``softmax/logits/MatMul`` (pool @ fc.weight.T, no bias), as the original IS code takes them."""

    name = "inception"
    feature_dim = 2048
    num_classes = 1008

    def __init__(self, network: FIDInceptionV3, version: str, device: torch.device | str = "cpu"):
        super().__init__(network, device)
        self.version = version
        self.label = "Inception v3 (FID, pt_inception-2015-12-05)"

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        pool, _ = self.network(2 * x - 1)
        return pool, F.linear(pool, self.network.fc.weight)  # the MatMul before the bias


def load_inception(weights: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> InceptionExtractor:
    path = find_inception_weights(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network = FIDInceptionV3()
        network.load_state_dict(state)
    except Exception as e:
        raise UserError(f"cannot load Inception weights from {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                        f"fetch {INCEPTION_URL} again") from None
    return InceptionExtractor(network, file_hash(path), device)


def get_extractor(name: str, dataset: str, root: str | None = None, inception_weights=None,
                  device: torch.device | str = "cpu", progress: bool = True,
                  budget: ClassifierBudget | None = None, domain: str = "grey",
                  on_progress: Callable[[float], None] | None = None) -> FeatureExtractor:
    """"classifier" (of ``domain``, see classifier_domain) or "inception"; ``on_progress``
    follows the classifier's first training."""
    if name == "classifier":
        return load_classifier(dataset, root, budget=budget, device=device, progress=progress, domain=domain,
                               on_progress=on_progress)
    if name == "inception":
        return load_inception(inception_weights, device)
    raise UserError(f"unknown extractor {name!r}; allowed: {', '.join(EXTRACTORS)}")
