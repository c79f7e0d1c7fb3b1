"""Feature extractors for the sample-quality metrics: features for FID, KID and precision/recall,
class probabilities for the Inception Score and conditional accuracy.

    extractor = get_extractor("classifier", "fashion-mnist")   # or "inception"
    out = extractor.extract(images)        # images: float (n, C, H, W) in [0, 1]
    out.features, out.probs                # float32 (n, d), float64 (n, K)

classifier
    A small CNN trained on the dataset's training split, raw images scaled to [0, 1]. Features:
    its penultimate layer (128 ReLU units); probabilities: its softmax over the dataset's
    classes. Cached as ``cache_dir()/extractors/<dataset>-<code hash>.pt`` together with the
    fingerprint of the data it was trained on and its test accuracy; trained the first time it
    is asked for (a few minutes on a CPU), and again when the data or the code changes.
    It is trained on the raw images only: metrics compare generated samples with real images
    processed exactly as the model's training data (binarised, quantised), so both sides of a
    distance go through the same, slightly off-domain, network; distances stay comparable
    within one (dataset, binarize, levels) setting, not across settings.
inception
    The FID variant of Inception v3 (TF 2015-12-05 graph as ported by pytorch-fid): average
    pools that exclude padding, a max pool in the last block, 1008 output classes. Loads
    pytorch-fid's ``pt_inception-2015-12-05-*.pth`` from a given path, the torch hub cache or
    ``cache_dir()/extractors``; it never downloads. Images are resized to 299x299 (bilinear),
    grey repeated to three channels and scaled to [-1, 1]; features are the 2048-d pool, the
    probabilities the softmax over classes 1..1000 as in the TF Inception Score code.
"""
from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torchvision.models import inception as tv_inception

from workbench.data import dataset_info, load_split
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
                description: str = "features") -> Extracted:
        feats, probs = [], []
        with torch.inference_mode(), progress_bar(progress) as bar:
            task = bar.add_task(f"{description} ({self.name})", total=len(images), info="")
            for batch in images.split(batch_size):
                f, logits = self.forward(batch.to(self.device, torch.float32))
                feats.append(f.float().cpu())
                probs.append(torch.softmax(logits.double(), 1).cpu())
                bar.advance(task, len(batch))
        return Extracted(torch.cat(feats).numpy(), torch.cat(probs).numpy())


# -- the dataset classifier -----------------------------------------------------------------
class DatasetClassifier(nn.Module):
    """conv-BN-ReLU x2, max-pool, x2, max-pool, then a 128-unit layer (the features) and the
    class logits. Inputs are images in [0, 1] of the dataset's shape."""

    def __init__(self, image_shape, num_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        c, h, w = image_shape

        def conv(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.body = nn.Sequential(conv(c, width), conv(width, width), nn.MaxPool2d(2),
                                  conv(width, 2 * width), conv(2 * width, 2 * width), nn.MaxPool2d(2), nn.Flatten())
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

    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 32
    max_train_images: int = 0  # 0: the whole training split
    seed: int = 0


def fit_classifier(model: DatasetClassifier, images: torch.Tensor, labels: torch.Tensor, budget: ClassifierBudget,
                   device: torch.device, progress: bool = True) -> None:
    """Adam with a one-cycle learning rate, cross-entropy, uint8 images scaled to [0, 1] per batch."""
    gen = torch.Generator().manual_seed(budget.seed)
    n = len(images)
    steps_per_epoch = max(1, n // budget.batch_size)
    total = budget.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, weight_decay=budget.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=budget.lr, total_steps=total, pct_start=0.2)
    model.train()
    with progress_bar(progress) as bar:
        task = bar.add_task("training the classifier", total=total, info="")
        for epoch in range(budget.epochs):
            perm = torch.randperm(n, generator=gen)
            for step in range(steps_per_epoch):
                idx = perm[step * budget.batch_size:(step + 1) * budget.batch_size]
                x = images[idx].to(device, torch.float32) / 255.0
                loss = F.cross_entropy(model(x), labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{budget.epochs} loss {loss.item():.3f}")
    model.eval()


def classifier_accuracy(model: DatasetClassifier, images: torch.Tensor, labels: torch.Tensor,
                        device: torch.device, batch_size: int = 1000) -> float:
    """Top-1 accuracy on uint8 images (scaled to [0, 1]) or float images already in [0, 1]."""
    correct = 0
    with torch.inference_mode():
        for xb, yb in zip(images.split(batch_size), labels.split(batch_size)):
            x = xb.to(device, torch.float32)
            x = x / 255.0 if xb.dtype == torch.uint8 else x
            correct += (model(x).argmax(1).cpu() == yb).sum().item()
    return correct / len(labels)


def _source_hash() -> str:
    """Hash of the code that defines the classifier, taken at import so that tests can patch
    functions without changing it."""
    parts = [inspect.getsource(obj) for obj in (DatasetClassifier, fit_classifier)]
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


def classifier_path(dataset: str, budget: ClassifierBudget) -> Path:
    return cache_dir() / "extractors" / f"{dataset}-{classifier_code_hash(budget)}.pt"


def _save_atomically(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class ClassifierExtractor(FeatureExtractor):
    name = "classifier"

    def __init__(self, network: DatasetClassifier, dataset: str, version: str, test_accuracy: float,
                 device: torch.device | str = "cpu"):
        super().__init__(network, device)
        self.dataset, self.version, self.test_accuracy = dataset, version, test_accuracy
        self.feature_dim = network.head.in_features
        self.num_classes = network.head.out_features
        self.label = f"classifier ({dataset}, {100 * test_accuracy:.1f}% test accuracy)"

    def forward(self, x):
        return self.network.features_and_logits(x)


def load_classifier(dataset: str, root: str | None = None, budget: ClassifierBudget | None = None,
                    device: torch.device | str = "cpu", progress: bool = True) -> ClassifierExtractor:
    """The dataset classifier from the cache, trained first when it is missing or stale."""
    budget = budget or ClassifierBudget()
    info = dataset_info(dataset)
    device = torch.device(device)
    train_x, train_y = load_split(dataset, "train", root)
    test_x, test_y = load_split(dataset, "test", root)
    fingerprint = dataset_fingerprint(train_x, train_y, test_x, test_y)
    path = classifier_path(dataset, budget)
    model = DatasetClassifier(info.image_shape, info.num_classes, width=budget.width)
    saved = None
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file: retrain and overwrite it
            saved = None
    if saved is not None and saved.get("fingerprint") == fingerprint:
        model.load_state_dict(saved["state_dict"])
        accuracy = saved["test_accuracy"]
    else:
        torch.manual_seed(budget.seed)
        model = DatasetClassifier(info.image_shape, info.num_classes, width=budget.width).to(device)
        if budget.max_train_images:
            train_x, train_y = train_x[:budget.max_train_images], train_y[:budget.max_train_images]
        fit_classifier(model, train_x, train_y, budget, device, progress)
        accuracy = classifier_accuracy(model, test_x, test_y, device)
        _save_atomically({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                          "fingerprint": fingerprint, "test_accuracy": accuracy, "dataset": dataset,
                          "budget": asdict(budget), "code_hash": classifier_code_hash(budget)}, path)
    version = f"{classifier_code_hash(budget)}-{fingerprint[:8]}"
    return ClassifierExtractor(model, dataset, version, accuracy, device)


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
    name = "inception"
    feature_dim = 2048
    num_classes = 1000

    def __init__(self, network: FIDInceptionV3, version: str, device: torch.device | str = "cpu"):
        super().__init__(network, device)
        self.version = version
        self.label = "Inception v3 (FID, pt_inception-2015-12-05)"

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        pool, logits = self.network(2 * x - 1)
        return pool, logits[:, 1:1001]


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
                  budget: ClassifierBudget | None = None) -> FeatureExtractor:
    if name == "classifier":
        return load_classifier(dataset, root, budget=budget, device=device, progress=progress)
    if name == "inception":
        return load_inception(inception_weights, device)
    raise UserError(f"unknown extractor {name!r}; allowed: {', '.join(EXTRACTORS)}")
