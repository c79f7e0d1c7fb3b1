"""Data: IDX files found in the documented order, a one-line error naming where it looked,
preprocessing into the model's domain, and batches that are a pure function of (seed, step)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import make_idx_dataset
from workbench.config import DataConfig
from workbench.data import TrainBatches, find_dataset, load_data, load_split, read_idx, to_model_domain
from workbench.errors import UserError


def test_reads_idx_files_from_the_configured_root(tiny_data):
    images, labels = load_split("fashion-mnist", "train", root=str(tiny_data))
    assert images.shape == (240, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (240,) and labels.dtype == torch.long and 0 <= labels.min() and labels.max() <= 9
    test_images, _ = load_split("fashion-mnist", "test", root=str(tiny_data))
    assert test_images.shape == (60, 1, 28, 28)


def test_lookup_order_root_then_env_then_cache(isolated, monkeypatch):
    first, second = isolated / "first", isolated / "second"
    make_idx_dataset(first / "fashion-mnist", n_train=10, n_test=5)
    make_idx_dataset(second / "fashion-mnist", n_train=20, n_test=5)
    make_idx_dataset(isolated / "cache" / "data" / "FashionMNIST" / "raw", n_train=30, n_test=5)
    assert find_dataset("fashion-mnist") == isolated / "cache" / "data" / "FashionMNIST" / "raw"
    monkeypatch.setenv("GENWB_DATA", str(second))
    assert len(load_split("fashion-mnist", "train")[0]) == 20
    assert len(load_split("fashion-mnist", "train", root=str(first))[0]) == 10


def test_missing_dataset_names_the_places_searched_and_the_fix(isolated, monkeypatch):
    monkeypatch.setattr("workbench.data.DEBIAN_DIR", isolated / "nowhere")
    with pytest.raises(UserError) as info:
        load_split("fashion-mnist", "train", root=str(isolated / "empty"))
    message = str(info.value)
    assert "dataset 'fashion-mnist' not found" in message and str(isolated / "empty") in message
    assert "apt-get install dataset-fashion-mnist" in message and "\n" not in message


def test_corrupt_idx_file_is_a_user_error(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="cannot read"):
        read_idx(path)


def test_model_domain():
    images = torch.tensor([[[[0, 100, 128, 255]]]], dtype=torch.uint8)
    assert to_model_domain(images, "threshold", 2).tolist() == [[[[0.0, 0.0, 1.0, 1.0]]]]
    assert torch.allclose(to_model_domain(images, "none", 256), images.float() / 255)
    q = to_model_domain(images, "none", 4)
    assert torch.allclose(q * 3, (q * 3).round()) and q.min() == 0 and q.max() == 1
    # Dynamic binarisation: Bernoulli with p = intensity; a fixed seed gives a fixed draw.
    many = torch.full((20000, 1, 1, 1), 64, dtype=torch.uint8)
    draw = to_model_domain(many, "dynamic", 2, seed=5)
    assert set(draw.unique().tolist()) <= {0.0, 1.0} and abs(draw.mean().item() - 64 / 255) < 0.01
    assert torch.equal(draw, to_model_domain(many, "dynamic", 2, seed=5))


def test_batches_are_a_function_of_seed_and_step(tiny_data):
    cfg = DataConfig(binarize="dynamic", levels=2, val_size=40, batch_size=20)
    splits = load_data(cfg)
    assert len(splits.train_images) == 200 and len(splits.val_x) == 40 and len(splits.test_x) == 60
    a, b = TrainBatches(splits, cfg, seed=1), TrainBatches(splits, cfg, seed=1)
    assert torch.equal(a.batch(7)[0], b.batch(7)[0])
    assert torch.equal(a.batch(3)[0], TrainBatches(splits, cfg, seed=1).batch(3)[0])  # out of order, same batch
    # One epoch is 10 batches; each visits every training image once, in a new order per epoch.
    epoch0 = torch.cat([a.batch(s)[1] for s in range(1, 11)])
    epoch1 = torch.cat([a.batch(s)[1] for s in range(11, 21)])
    assert sorted(epoch0.tolist()) == sorted(splits.train_labels.tolist()) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    # Dynamic binarisation gives a fresh draw of each image in every epoch.
    def epoch_images(first_step):
        xs = torch.cat([a.batch(s)[0] for s in range(first_step, first_step + 10)])
        out = torch.empty_like(xs)
        out[a._perm[: len(xs)]] = xs
        return out
    draw0, draw1 = epoch_images(1), epoch_images(11)
    assert not torch.equal(draw0, draw1)
    assert ((draw0 != draw1).float().mean() > 0.05)
    assert not torch.equal(a.batch(1)[0], TrainBatches(splits, cfg, seed=2).batch(1)[0])


def test_validation_split_is_carved_from_train_and_fixed(tiny_data):
    cfg = DataConfig(binarize="threshold", levels=2, val_size=40, batch_size=20)
    one, two = load_data(cfg), load_data(cfg)
    assert torch.equal(one.val_x, two.val_x)
    train = {tuple(r.flatten().tolist()) for r in one.train_images}
    raw, _ = load_split("fashion-mnist", "train")
    assert len(train) + 40 >= len({tuple(r.flatten().tolist()) for r in raw})
    with pytest.raises(UserError, match="val_size"):
        load_data(DataConfig(binarize="threshold", levels=2, val_size=240))


def test_advice_names_real_paths_and_cifar10_is_found_in_each_place_the_readme_lists(isolated, monkeypatch, tmp_path):
    """Catches: ``<root>`` printed literally in ``genwb data list`` and in the missing-dataset
    error, and CIFAR-10 looked up only in the roots (not in their ``cifar10/`` nor Debian's folder)."""
    from workbench import data

    rows = dict((name, where) for name, _, where in data.describe_datasets())
    assert "<root>" not in rows["mnist"] and str(isolated / "cache" / "data") in rows["mnist"]
    with pytest.raises(UserError) as e:
        load_split("cifar10", "train", str(tmp_path / "mine"))
    assert "<root>" not in str(e.value) and str(tmp_path / "mine") in str(e.value)
    assert "/usr/share/datasets/cifar10" in str(e.value)
    debian = tmp_path / "debian"
    (debian / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    (debian / "cifar10" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    monkeypatch.setattr(data, "DEBIAN_DIR", debian)
    assert find_dataset("cifar10") == debian / "cifar10"
    in_env = tmp_path / "env"
    (in_env / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    (in_env / "cifar10" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    monkeypatch.setenv("GENWB_DATA", str(in_env))
    assert find_dataset("cifar10") == in_env / "cifar10"


def test_a_failed_download_leaves_no_empty_folders(isolated, monkeypatch):
    """Catches: a download that fails after torchvision made ``MNIST/raw`` leaving the empty folder
    behind (the cache then looks as if it held MNIST). No network: the download is faked."""
    import torchvision.datasets as tvd

    def failing(root, train, download):
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)
        raise OSError("network unreachable")

    monkeypatch.delenv("GENWB_OFFLINE")
    monkeypatch.setattr(tvd, "MNIST", failing)
    with pytest.raises(UserError, match="not found"):
        load_split("mnist", "train")
    assert not (isolated / "cache" / "data").exists()
    kept = isolated / "cache" / "data" / "MNIST"
    kept.mkdir(parents=True)  # the user's own folder, there before the download: it stays
    with pytest.raises(UserError):
        load_split("mnist", "train")
    assert kept.is_dir() and not (kept / "raw").exists()
