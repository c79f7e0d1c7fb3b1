"""Datasets as uint8 tensors, their preprocessing into the model's domain, and batches.

Lookup order for a dataset's files: ``[data] root`` (or ``$GENWB_DATA``), then
``~/.cache/genwb/data``, then Debian's ``/usr/share/datasets/<name>``, then torchvision's
download into the cache when online. Within a folder, IDX files are found under ``<name>/``,
or torchvision's ``<Class>/raw/``.

Batches are a pure function of (seed, step): the shuffle of epoch e comes from a generator
seeded by (seed, e), and dynamic binarisation of a batch from one seeded by (seed, step). A run
resumed at step s therefore sees exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workbench.errors import UserError
from workbench.paths import cache_dir

DEBIAN_DIR = Path("/usr/share/datasets")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    torchvision_class: str
    how_to_get: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("fashion-mnist", (1, 28, 28), 10, "FashionMNIST",
                    "apt-get install dataset-fashion-mnist, or run once online"),
        DatasetInfo("mnist", (1, 28, 28), 10, "MNIST",
                    "run once online, or put the four IDX .gz files in <root>/mnist/"),
        DatasetInfo("kmnist", (1, 28, 28), 10, "KMNIST",
                    "run once online, or put the four IDX .gz files in <root>/kmnist/"),
        DatasetInfo("cifar10", (3, 32, 32), 10, "CIFAR10",
                    "run once online, or extract cifar-10-python.tar.gz into <root>/"),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]


def search_roots(root: str | None = None) -> list[Path]:
    roots = [Path(r).expanduser() for r in (root, os.environ.get("GENWB_DATA")) if r]
    return roots + [cache_dir() / "data"]


def _candidate_dirs(info: DatasetInfo, root: str | None) -> list[Path]:
    dirs = []
    for base in search_roots(root):
        dirs += [base / info.name, base / info.torchvision_class / "raw"]
    return dirs + [DEBIAN_DIR / info.name]


def _idx_path(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def how_to_get(info: DatasetInfo, root: str | None = None) -> str:
    """The advice of ``info`` with ``<root>`` replaced by the first place genwb looks."""
    return info.how_to_get.replace("<root>", str(search_roots(root)[0]))


def _cifar_candidates(root: str | None) -> list[Path]:
    """Folders that may hold ``cifar-10-batches-py/``: each root, its ``cifar10/``, and Debian's."""
    bases = []
    for base in search_roots(root):
        bases += [base, base / "cifar10"]
    return bases + [DEBIAN_DIR / "cifar10"]


def _cifar_dir(root: str | None) -> Path | None:
    for base in _cifar_candidates(root):
        if (base / "cifar-10-batches-py" / "data_batch_1").is_file():
            return base
    return None


def find_dataset(name: str, root: str | None = None) -> Path | None:
    """The folder that holds ``name``'s files, or None."""
    info = dataset_info(name)
    if name == "cifar10":
        return _cifar_dir(root)
    for folder in _candidate_dirs(info, root):
        if all(_idx_path(folder, stem) for stems in IDX_FILES.values() for stem in stems):
            return folder
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the format of the MNIST family."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return array.reshape(shape)
    except (OSError, ValueError, EOFError, IndexError) as e:
        raise UserError(f"cannot read {path}: {e}; delete the file and fetch the dataset again") from None


def _download(info: DatasetInfo) -> None:
    if os.environ.get("GENWB_OFFLINE"):
        raise OSError("GENWB_OFFLINE is set")
    import torchvision.datasets as tvd

    data_root = cache_dir() / "data"
    made = [p for p in (data_root, data_root / info.torchvision_class) if not p.exists()]
    try:
        getattr(tvd, info.torchvision_class)(root=str(data_root), train=True, download=True)
    except BaseException:
        # a failed download leaves no empty MNIST/raw behind to look like a dataset; what was there stays
        if made:
            shutil.rmtree(made[0], ignore_errors=True)
        else:
            raw = data_root / info.torchvision_class / "raw"
            if raw.is_dir() and not any(raw.iterdir()):
                raw.rmdir()
        raise


def load_split(name: str, split: str, root: str | None = None, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 (n, C, H, W) and labels as int64 (n,) of the "train" or "test" split."""
    info = dataset_info(name)
    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_dataset(name, root)
    if folder is None and download:
        try:
            _download(info)
        except Exception:  # offline, blocked, or a broken mirror: all end in the same advice
            pass
        folder = find_dataset(name, root)
    if folder is None:
        searched = [str(d) for d in (_candidate_dirs(info, root) if name != "cifar10" else _cifar_candidates(root))]
        raise UserError(f"dataset {name!r} not found (searched {', '.join(searched)}) and could not be downloaded; {how_to_get(info, root)}, or set [data] root / $GENWB_DATA")
    if name == "cifar10":
        import torchvision.datasets as tvd

        ds = tvd.CIFAR10(root=str(folder), train=split == "train", download=False)
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(ds.targets, dtype=torch.long)
    image_stem, label_stem = IDX_FILES[split]
    images = read_idx(_idx_path(folder, image_stem))
    labels = read_idx(_idx_path(folder, label_stem))
    if images.ndim != 3 or len(images) != len(labels) or images.shape[1:] != info.image_shape[1:]:
        raise UserError(f"{folder}: {split} files of {name!r} have unexpected shapes {images.shape} / {labels.shape}; fetch the dataset again")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def to_model_domain(images: torch.Tensor, binarize: str, levels: int, seed: int | torch.Generator = 0) -> torch.Tensor:
    """uint8 images -> floats in [0, 1] as the model sees them: binarised (levels 2) by a
    threshold at 1/2 or a Bernoulli draw, or quantised to k / (L - 1)."""
    x = images.float() / 255.0
    if binarize == "threshold":
        return (x > 0.5).float()
    if binarize == "dynamic":
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator(x.device).manual_seed(seed)
        return torch.bernoulli(x, generator=gen)
    if levels == 256:
        return x
    return torch.round(x * (levels - 1)) / (levels - 1)


def _mix(*parts: int) -> int:
    """A deterministic 63-bit seed from several integers."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0x7FFFFFFFFFFFFFFF
    return h


@dataclass
class Splits:
    """Train images stay uint8 (preprocessed per batch); validation and test are preprocessed
    once, dynamic binarisation included, with fixed seeds."""

    info: DatasetInfo
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


VAL_SPLIT_SEED, TEST_SPLIT_SEED = 1, 2  # the dynamic binarisation of the validation and test images


def load_test_split(dataset: str, binarize: str, levels: int, root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images in the model's domain (the binarisation every run and evaluation uses)
    and their labels."""
    images, labels = load_split(dataset, "test", root)
    return to_model_domain(images, binarize, levels, seed=TEST_SPLIT_SEED), labels


def load_data(data_cfg, device: torch.device = torch.device("cpu")) -> Splits:
    """Load and split a dataset per ``[data]``: the validation split is carved from the training
    set by a fixed permutation (the same for every run seed); the test set is kept apart."""
    info = dataset_info(data_cfg.dataset)
    images, labels = load_split(info.name, "train", data_cfg.root or None, data_cfg.download)
    test_images, test_labels = load_split(info.name, "test", data_cfg.root or None, data_cfg.download)
    if data_cfg.val_size >= len(images):
        raise UserError(f"[data] val_size = {data_cfg.val_size} leaves no training images ({len(images)} in all); lower it")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(12345))
    val_idx, train_idx = perm[: data_cfg.val_size], perm[data_cfg.val_size :]
    prep = lambda imgs, seed: to_model_domain(imgs, data_cfg.binarize, data_cfg.levels, seed).to(device)
    return Splits(
        info=info,
        train_images=images[train_idx].to(device),
        train_labels=labels[train_idx].to(device),
        val_x=prep(images[val_idx], VAL_SPLIT_SEED),
        val_y=labels[val_idx].to(device),
        test_x=prep(test_images, TEST_SPLIT_SEED),
        test_y=test_labels.to(device),
    )


class TrainBatches:
    """Training batches as a function of the step number (steps count from 1)."""

    def __init__(self, splits: Splits, data_cfg, seed: int):
        self.splits, self.cfg, self.seed = splits, data_cfg, seed
        self.batch_size = min(data_cfg.batch_size, len(splits.train_images))
        self.steps_per_epoch = len(splits.train_images) // self.batch_size
        self._epoch, self._perm = -1, None

    def epoch_of(self, step: int) -> int:
        return (step - 1) // self.steps_per_epoch

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = divmod(step - 1, self.steps_per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(_mix(self.seed, epoch))
            self._perm = torch.randperm(len(self.splits.train_images), generator=gen).to(self.splits.train_images.device)
            self._epoch = epoch
        idx = self._perm[index * self.batch_size : (index + 1) * self.batch_size]
        device = self.splits.train_images.device
        gen = torch.Generator(device).manual_seed(_mix(self.seed, epoch, index, 7))
        x = to_model_domain(self.splits.train_images[idx], self.cfg.binarize, self.cfg.levels, gen)
        return x, self.splits.train_labels[idx]


def describe_datasets(root: str | None = None) -> list[tuple[str, str, str]]:
    """(name, shape, where found or how to get it) for ``genwb data list``."""
    rows = []
    for info in DATASETS.values():
        folder = find_dataset(info.name, root)
        shape = "x".join(map(str, info.image_shape))
        rows.append((info.name, shape, str(folder) if folder else f"not found: {how_to_get(info, root)}"))
    return rows
