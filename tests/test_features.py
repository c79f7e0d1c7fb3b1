"""Feature extractors: the dataset classifier's cache (reuse, invalidation) and the FID Inception
network loading a state dict with pytorch-fid's key names."""
import numpy as np
import pytest
import torch

from tests.conftest import make_idx_dataset
from workbench import features
from workbench.errors import UserError
from workbench.features import ClassifierBudget, FIDInceptionV3, load_classifier, load_inception

TINY = ClassifierBudget(epochs=3, batch_size=24, lr=1e-2, width=4)



@pytest.fixture
def count_fits(monkeypatch):
    calls = []
    original = features.fit_classifier

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(features, "fit_classifier", counting)
    return calls


# -- classifier -----------------------------------------------------------------------------
def test_classifier_is_trained_once_cached_and_reused(tiny_data, count_fits):
    first = load_classifier("fashion-mnist", budget=TINY, progress=False)
    assert len(count_fits) == 1
    path = features.classifier_path("fashion-mnist", "grey", TINY)
    assert path.is_file() and path.parent == features.cache_dir() / "extractors"
    saved = torch.load(path, weights_only=True)
    assert saved["test_accuracy"] == first.test_accuracy
    # The classes of the fake data are a bright square at a class-dependent place: learnable.
    assert first.test_accuracy > 0.5
    assert first.name == "classifier" and "classifier (fashion-mnist, grey" in first.label

    second = load_classifier("fashion-mnist", budget=TINY, progress=False)
    assert len(count_fits) == 1, "a cached classifier was trained again"
    assert second.version == first.version
    x = torch.rand(5, 1, 28, 28)
    a, b = first.extract(x, progress=False), second.extract(x, progress=False)
    assert a.features.shape == (5, 128) and a.probs.shape == (5, 10)
    assert torch.allclose(torch.from_numpy(a.probs.sum(1)), torch.ones(5, dtype=torch.float64))
    assert (a.features == b.features).all()
    # features are scaled to unit root mean square on the training images
    train_x, _ = features.load_split("fashion-mnist", "train")
    f = first.extract(train_x.float() / 255, progress=False).features.astype(float)
    assert np.sqrt((f ** 2).mean()) == pytest.approx(1.0, rel=1e-4)


def test_classifier_is_retrained_when_the_data_changes(tiny_data, count_fits):
    first = load_classifier("fashion-mnist", budget=TINY, progress=False)
    make_idx_dataset(tiny_data / "fashion-mnist", seed=1)
    second = load_classifier("fashion-mnist", budget=TINY, progress=False)
    assert len(count_fits) == 2
    assert second.version != first.version
    load_classifier("fashion-mnist", budget=TINY, progress=False)
    assert len(count_fits) == 2


def test_classifier_is_retrained_when_its_code_version_changes(tiny_data, count_fits, monkeypatch):
    first = load_classifier("fashion-mnist", budget=TINY, progress=False)
    old_path = features.classifier_path("fashion-mnist", "grey", TINY)
    monkeypatch.setattr(features, "CLASSIFIER_VERSION", features.CLASSIFIER_VERSION + 1)
    new_path = features.classifier_path("fashion-mnist", "grey", TINY)
    assert new_path != old_path and new_path.name.startswith("fashion-mnist-")
    second = load_classifier("fashion-mnist", budget=TINY, progress=False)
    assert len(count_fits) == 2 and new_path.is_file()
    assert second.version != first.version
    # A different training budget is a different recipe, hence a different file too.
    assert features.classifier_path("fashion-mnist", "grey", ClassifierBudget()) != new_path


def test_binary_domain_has_its_own_classifier_trained_on_binarised_batches(tiny_data, count_fits, monkeypatch):
    assert features.classifier_domain("dynamic", 2) == features.classifier_domain("threshold", 2) == "binary"
    assert features.classifier_domain("none", 256) == features.classifier_domain("none", 16) == "grey"
    shown = []
    original = features.to_domain
    monkeypatch.setattr(features, "to_domain", lambda x, d, g: shown.append(o := original(x, d, g)) or o)
    grey = load_classifier("fashion-mnist", budget=TINY, progress=False)
    n_grey = len(shown)
    binary = load_classifier("fashion-mnist", budget=TINY, progress=False, domain="binary")
    assert len(count_fits) == 2 and binary.version != grey.version and "binary" in binary.label
    assert features.classifier_path("fashion-mnist", "binary", TINY).is_file()
    assert any(((x > 0) & (x < 1)).any() for x in shown[:n_grey])  # grey batches keep their grey levels
    assert all(((x == 0) | (x == 1)).all() for x in shown[n_grey:])  # binary batches are binary
    assert binary.test_accuracy > 0.5


def test_corrupt_classifier_file_is_replaced(tiny_data, count_fits):
    load_classifier("fashion-mnist", budget=TINY, progress=False)
    features.classifier_path("fashion-mnist", "grey", TINY).write_bytes(b"not a checkpoint")
    load_classifier("fashion-mnist", budget=TINY, progress=False)
    assert len(count_fits) == 2


# -- Inception ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inception_state():
    torch.manual_seed(0)
    return FIDInceptionV3().state_dict()


def test_inception_loads_documented_keys_and_gives_2048_features(tmp_path, inception_state):
    keys = set(inception_state)
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_mean", "Mixed_5b.branch_pool.conv.weight",
                "Mixed_6e.branch7x7dbl_5.bn.weight", "Mixed_7c.branch3x3dbl_3b.conv.weight", "fc.weight", "fc.bias"):
        assert key in keys
    assert not any(k.startswith("AuxLogits") for k in keys)
    assert inception_state["fc.weight"].shape == (1008, 2048)
    path = tmp_path / "pt_inception-2015-12-05-00000000.pth"
    torch.save(dict(inception_state), path)

    extractor = load_inception(path)
    grey = torch.rand(2, 1, 28, 28)
    out = extractor.extract(grey, batch_size=2, progress=False)
    assert out.features.shape == (2, 2048) and out.probs.shape == (2, 1008)
    assert (out.features >= 0).all()  # pooled ReLU activations
    assert abs(out.probs.sum(1) - 1).max() < 1e-9
    # grey images are repeated to three channels before the network
    rgb = extractor.extract(grey.expand(-1, 3, -1, -1), batch_size=2, progress=False)
    assert abs(out.features - rgb.features).max() < 1e-5
    # the loaded network carries the saved weights
    assert torch.equal(extractor.network.state_dict()["Mixed_7c.branch_pool.conv.weight"],
                       inception_state["Mixed_7c.branch_pool.conv.weight"])


def test_inception_score_probabilities_are_the_softmax_of_all_1008_logits_without_the_bias(inception_state):
    """Mutants: classes 1..1000 taken (the old convention), fc's bias added. The probabilities
    must equal softmax(pool @ fc.weight.T) over all 1008 outputs, with a large bias in place."""
    network = FIDInceptionV3()
    state = dict(inception_state)
    state["fc.bias"] = torch.linspace(-5, 5, 1008)
    network.load_state_dict(state)
    assert network.fc.out_features == 1008
    extractor = features.InceptionExtractor(network, "test")
    assert extractor.num_classes == 1008
    images = torch.rand(2, 1, 28, 28)
    out = extractor.extract(images, batch_size=2, progress=False)
    with torch.inference_mode():
        x = torch.nn.functional.interpolate(images.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear",
                                            align_corners=False)
        pool, _ = network.eval()(2 * x - 1)
        expected = torch.softmax((pool @ network.fc.weight.T).double(), 1).numpy()
    assert out.probs.shape == (2, 1008)
    assert abs(out.probs - expected).max() < 1e-6


def test_inception_is_found_in_the_torch_hub_cache(tmp_path, monkeypatch, inception_state):
    monkeypatch.setenv("GENWB_CACHE", str(tmp_path / "cache"))
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(UserError) as err:
        load_inception()
    message = str(err.value)
    assert "\n" not in message and str(hub / "checkpoints") in message and str(tmp_path / "cache") in message
    assert "--inception-weights" in message
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(dict(inception_state), hub / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth")
    assert features.find_inception_weights() == hub / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"


def test_missing_or_broken_inception_file_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="not found at"):
        load_inception(tmp_path / "nope.pth")
    bad = tmp_path / "pt_inception-2015-12-05-bad.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad)
    with pytest.raises(UserError, match="cannot load Inception weights") as err:
        load_inception(bad)
    assert "\n" not in str(err.value)
