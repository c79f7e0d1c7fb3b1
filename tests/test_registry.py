"""The model registry (models/__init__.py): every architecture of the course is found by name,
built with the contract's arguments and its own hyper-parameters, and a wrong name gets a hint."""
import subprocess
import sys

import pytest
import torch

import models
from models.base import GenerativeModel

COURSE = ["ar", "cvae", "diagonal_bilstm", "fvsbn", "made", "nade", "pixelcnn", "row_lstm",
          "vae", "vqvae", "vqvae_prior"]


@pytest.fixture
def fake_name():
    """A name registered by the test and removed after it, so the registry stays the course's."""
    yield "registry_test_fake"
    models._REGISTRY.pop("registry_test_fake", None)


def _fake_class():
    class Fake(GenerativeModel):
        def __init__(self, image_shape, levels=2, num_classes=None, width=3, *args, depth=1, **kwargs):
            super().__init__(image_shape, levels, num_classes)
            self.width, self.depth, self.extra = width, depth, kwargs
            self.bias = torch.nn.Parameter(torch.zeros(1))

    return Fake


def test_every_model_of_the_course_is_registered_and_sorted():
    """Kills: `names()` unsorted, a module skipped by discovery, a wrong registered name."""
    assert models.names() == COURSE
    for name in COURSE:
        assert models.get(name).registered_name == name


def test_a_fresh_process_finds_every_model_by_discovery_alone():
    """In a process that has imported no model module, ``names()`` imports them all itself (the
    test process has imported them through the tests, so discovery cannot be seen here). Kills
    ``_discover`` walking another path, importing only base and layers, only private modules,
    or failing on ``startswith(None)``."""
    assert models.names() == COURSE  # in-process too, so that mutation testing runs this test for _discover
    code = "import models, sys; sys.stdout.write(' '.join(models.names()))"
    # a deadline that names what it waited for: the import of torch and the models
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == COURSE


def test_an_unknown_name_gets_the_closest_and_the_list():
    """Kills: the hint or the list dropped, a wrong close match, `in` inverted, text in place of
    a hint where no name is close."""
    with pytest.raises(ValueError, match=r"unknown model 'mdae' \(did you mean 'made'\?\); known models: ar, cvae, "):
        models.get("mdae")
    with pytest.raises(ValueError) as e:
        models.get("zzzzzz")
    assert str(e.value) == f"unknown model 'zzzzzz'; known models: {', '.join(COURSE)}"  # no hint, nothing in its place


def test_a_name_is_registered_once(fake_name):
    """Kills: the duplicate check dropped or inverted (`is` for `is not`)."""
    fake = models.register(fake_name)(_fake_class())
    assert fake.registered_name == fake_name and models.get(fake_name) is fake
    assert models.register(fake_name)(fake) is fake  # the same class again is harmless
    with pytest.raises(ValueError, match="'registry_test_fake' registered twice"):
        models.register(fake_name)(_fake_class())
    assert models.get(fake_name) is fake


def test_hyperparameters_are_the_models_own_keywords(fake_name):
    """Kills: the contract's arguments kept, `*args` or `**kwargs` counted, keyword-only or
    positional-or-keyword ones dropped, defaults replaced."""
    models.register(fake_name)(_fake_class())
    assert models.hyperparameters(fake_name) == {"width": 3, "depth": 1}
    assert models.hyperparameters("made") == {"hidden": (500,), "num_masks": 1, "order": "natural",
                                              "order_agnostic": True, "seed": 0}


def test_build_passes_the_contract_and_the_hyperparameters(fake_name):
    """Kills: a shape, levels or classes argument lost or not converted, hyper-parameters dropped."""
    models.register(fake_name)(_fake_class())
    model = models.build(fake_name, [1, torch.tensor(4), 5.0], levels="4", num_classes=3, width=7, depth=2)
    assert model.image_shape == (1, 4, 5) and model.levels == 4 and model.num_classes == 3
    assert (model.width, model.depth, model.extra) == (7, 2, {})
    default = models.build(fake_name, (1, 2, 2))
    assert (default.levels, default.num_classes, default.width, default.depth) == (2, None, 3, 1)


def test_build_rejects_unknown_hyperparameters_with_hints(fake_name):
    """Kills: the check dropped, the hints or the allowed list lost, unsorted names."""
    with pytest.raises(ValueError, match=r"unknown hyper-parameter 'hiden' \(did you mean 'hidden'\?\), 'zzz' "
                                         r"for model 'made'; allowed: hidden, num_masks, order, order_agnostic, seed$"):
        models.build("made", (1, 2, 2), zzz=1, hiden=[4])

    class Bare(GenerativeModel):
        pass

    models.register(fake_name)(Bare)
    with pytest.raises(ValueError, match=r"for model 'registry_test_fake'; allowed: none$"):
        models.build(fake_name, (1, 2, 2), width=1)
