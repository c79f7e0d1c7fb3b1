"""The training step replayed from a CUDA graph (``[train] cuda_graph``, workbench.accel.GraphStep).

On a CPU: the models that claim a capturable loss (``loss_capturable()``) keep the claim, checked
on the meta device, where every wait for the device (``.item()``, ``nonzero``) raises and a spy
catches every tensor made from host data (the samplers that CUDA graphs replay, likewise); and
where the setting applies. On CUDA (skipped
elsewhere): a graphed step trains like the eager one, a batch of another shape and a failed
capture fall back."""
from __future__ import annotations

import copy
import glob

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import models
from workbench import accel
from workbench.config import load_config
from workbench.runs import build_model
from tests.conftest import preset_text, train_losses
from tests.test_cudagraph import CASES

_needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def cuda(test):
    return pytest.mark.cuda(_needs_cuda(test))


class HostData(Exception):
    """A tensor made from host data on the device, or copied there from the CPU."""


class _FactorySpy(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor, torch.Tensor.new_tensor):
            data = args[1] if func is torch.Tensor.new_tensor else args[0]
            target = kwargs.get("device", args[0].device if func is torch.Tensor.new_tensor else None)
            on_device = isinstance(data, torch.Tensor) and data.device.type != "cpu"
            if target is not None and torch.device(target).type != "cpu" and not on_device:
                raise HostData(f"{func.__name__} of host data on {target}")
        return func(*args, **kwargs)


class _CopySpy(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        nested = [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
        everything = tensors + nested
        if any(t.device.type != "cpu" for t in everything) and any(t.device.type == "cpu" and t.dim() for t in everything):
            raise HostData(f"{func} mixes CPU tensors with device tensors")  # e.g. a CPU index: copied over
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            source = tensors[-1]
            target = kwargs.get("device") or (tensors[0].device if func is torch.ops.aten.copy_.default else source.device)
            if source.device.type == "cpu" and torch.device(target).type != "cpu":
                raise HostData(f"{func} from the CPU to {target}")
        return func(*args, **kwargs)


def host_free(fn) -> None:
    """Run fn (on meta tensors); raise where it would wait for the device or copy host data
    to it: what a CUDA graph cannot capture."""
    with _FactorySpy(), _CopySpy():
        fn()


def _step_on_meta(model) -> None:
    c, h, w = model.image_shape
    x = torch.rand(4, c, h, w, device="meta")
    y = torch.arange(4, device="meta") % model.num_classes if model.num_classes else None

    def step():
        model.loss(x, y)["loss"].backward()

    host_free(step)


def _meta_model(preset: str, overrides=()):
    config = load_config(preset, list(overrides))
    with torch.device("meta"):
        return build_model(config).train()


def test_the_spy_catches_what_a_graph_cannot_capture():
    x = torch.rand(3, device="meta")
    with pytest.raises(RuntimeError, match="item"):
        host_free(lambda: x.sum().item())
    with pytest.raises(HostData):
        host_free(lambda: x * torch.tensor(0.5, device=x.device))
    with pytest.raises(HostData):
        host_free(lambda: x[torch.tensor([0, 2])])  # a CPU index into a device tensor
    with pytest.raises(HostData):
        host_free(lambda: x + torch.ones(3).to(x.device))
    host_free(lambda: x * 0.5 + torch.full((), 2.0, device=x.device))  # scalars are kernel arguments


PRESETS = sorted(p for p in glob.glob("presets/*.toml") if "prior" not in p)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.split("/")[-1])
def test_capturable_losses_never_wait_for_the_host(preset):
    model = _meta_model(preset)
    if not model.loss_capturable():
        pytest.skip(f"{model.registered_name} does not claim a capturable loss")
    _step_on_meta(model)


def test_the_claims_cover_the_launch_bound_models():
    """The models a graph speeds up most (small kernels, many per step) make the claim."""
    for name in ("ar", "fvsbn", "nade", "made", "pixelcnn", "row_lstm", "diagonal_bilstm", "vae", "cvae", "vqvae"):
        assert _meta_model(f"presets/{name}.toml").loss_capturable(), name


@pytest.mark.parametrize("name,shape,levels,classes,hparams", CASES)
def test_graph_sampled_models_never_wait_for_the_host(name, shape, levels, classes, hparams):
    """The samplers that CUDA graphs replay (``graph_sampling``) meet the same conditions."""
    with torch.device("meta"):
        model = models.build(name, shape, levels, classes, **hparams).eval()
    assert model.graph_sampling
    noise = torch.rand(3, *shape, device="meta")
    y = None if classes is None else torch.arange(3, device="meta") % classes
    host_free(lambda: model._sample_all(noise, y, 1.0))


def test_vae_warm_up_and_prior_claims():
    vae = _meta_model("presets/vae.toml", ["model.kl_warmup_steps=10"])
    assert vae.loss_capturable()
    _step_on_meta(vae)
    with torch.device("meta"):
        vq = models.build("vqvae", (1, 28, 28), levels=2, num_codes=16, code_dim=4, channels=8, res_channels=4,
                          res_blocks=1, ema=False, kmeans_init=False, restart_dead=False)
        prior = models.build("vqvae_prior", (1, 28, 28), levels=2, vqvae=vq, hidden_channels=8, num_layers=2,
                             head_channels=8, embed_dim=4).train()
    assert prior.loss_capturable()  # the frozen VQ-VAE only encodes: its own loss does not matter
    _step_on_meta(prior)


def test_vae_warm_up_weight_on_the_device_equals_the_host_formula():
    vae = models.build("vae", (1, 8, 8), levels=2, arch="mlp", hidden=8, latent_dim=2, beta=2.0, kl_warmup_steps=7)
    for steps in (0, 3, 7, 20):
        vae.steps.fill_(steps)
        assert vae.kl_weight() == pytest.approx(2.0 * min(1.0, steps / 7), rel=1e-7)


def test_made_with_several_masks_says_it_cannot_be_captured():
    made = _meta_model("presets/made.toml", ["model.num_masks=2"])
    assert not made.loss_capturable()
    with pytest.raises(RuntimeError):  # it picks its mask set on the host
        _step_on_meta(made)


M = 1_000_000


@pytest.mark.parametrize("setting, device, capturable, params, compile, ddp, expected", [
    ("auto", "cuda", True, M, "off", False, True),
    ("auto", "cuda", False, M, "off", False, False),
    ("auto", "cuda", True, 64 * M, "off", False, False),  # compute-bound: the graph's pool only costs memory
    (True, "cuda", True, 64 * M, "off", False, True),
    (True, "cuda", False, M, "off", False, True),         # true tries; a failed capture falls back
    (False, "cuda", True, M, "off", False, False),
    ("auto", "cpu", True, M, "off", False, False),        # CUDA only
    (True, "cpu", True, M, "off", False, False),
    ("auto", "cuda", True, M, "reduce-overhead", False, False),  # compile has its own graphs
    ("auto", "cuda", True, M, "off", True, False),        # not under DDP
])
def test_where_the_step_is_graphed(setting, device, capturable, params, compile, ddp, expected):
    assert accel.use_cuda_graph(setting, device, capturable, params, compile=compile, data_parallel=ddp) is expected


def test_the_setting_is_checked(tiny_preset):
    from workbench.errors import UserError

    assert load_config(tiny_preset, ["train.cuda_graph=false"]).train.cuda_graph is False
    with pytest.raises(UserError, match="cuda_graph"):
        load_config(tiny_preset, ["train.cuda_graph=sometimes"])


# -- on CUDA -------------------------------------------------------------------------------------
FAST = ["train.max_steps=12", "train.log_every=1", "train.val_every=0", "train.checkpoint_every=0",
        "sample.every=0", "eval.test=false", "run.device=cuda"]


def _train(preset, out, overrides=()):
    _, trainer, losses, warnings = train_losses(preset, out, [*FAST, *overrides])
    return trainer, losses, warnings


MODELS = {
    "row_lstm": 'name = "row_lstm"\nhidden = 8\nlayers = 2\nhead_channels = 8',
    "pixelcnn": 'name = "pixelcnn"\nhidden_channels = 8\nnum_layers = 2\nhead_channels = 8',
    "made": 'name = "made"\nhidden = [64]\nnum_masks = 1',
    "vae": 'name = "vae"\narch = "mlp"\nhidden = 32\nlatent_dim = 4\nkl_warmup_steps = 5',
}


def _preset(folder, model: str):
    path = folder / f"{model}.toml"
    path.write_text(preset_text(model=MODELS[model]) if model in MODELS else preset_text(model=model))
    return path


@cuda
@pytest.mark.parametrize("model", ["row_lstm", "pixelcnn", "made"])
def test_graphed_training_equals_eager(tiny_data, isolated, model):
    preset = _preset(isolated, model)
    eager, eager_losses, _ = _train(preset, isolated / "eager", ["train.cuda_graph=false"])
    graphed, losses, warnings = _train(preset, isolated / "graphed", ["train.cuda_graph=true"])
    assert warnings == []
    assert len(losses) == len(eager_losses) == 12
    assert losses == pytest.approx(eager_losses, rel=1e-5, abs=1e-5)
    for (key, a), b in zip(eager.model.state_dict().items(), graphed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), key


@cuda
def test_a_graphed_vae_trains_with_its_warm_up(tiny_data, isolated):
    """The VAE draws its noise inside the graph (another random stream than eagerly): it trains,
    and its warm-up counter advances once per replayed step."""
    preset = _preset(isolated, "vae")
    _, eager_losses, _ = _train(preset, isolated / "eager", ["train.cuda_graph=false"])
    graphed, losses, warnings = _train(preset, isolated / "graphed", ["train.cuda_graph=true"])
    assert warnings == [] and len(losses) == 12
    assert int(graphed.model.steps) == 12 and graphed.model.kl_weight() == 1.0
    assert losses[-1] < losses[0] and abs(losses[-1] - eager_losses[-1]) < 0.2 * abs(eager_losses[-1])


@cuda
def test_a_failed_capture_warns_once_and_trains_eagerly(tiny_data, isolated):
    preset = _preset(isolated, 'name = "made"\nhidden = [64]\nnum_masks = 2')
    _, eager_losses, _ = _train(preset, isolated / "eager", ["train.cuda_graph=false"])
    _, losses, warnings = _train(preset, isolated / "tried", ["train.cuda_graph=true"])
    assert len(warnings) == 1 and "CUDA graph capture of the training step failed" in warnings[0]
    assert "\n" not in warnings[0]
    assert losses == pytest.approx(eager_losses, rel=1e-5)


@cuda
def test_a_batch_of_another_shape_runs_eagerly_with_the_right_gradients():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1)).cuda()
    reference = copy.deepcopy(net)  # the same weights: no optimiser step here

    def loss_fn(x, y):
        return {"loss": net(x).pow(2).mean()}

    step = accel.GraphStep(loss_fn, params=list(net.parameters()))
    shapes = [8] * 6 + [3, 8, 3, 8]
    for i, rows in enumerate(shapes):
        x = torch.randn(rows, 5, device="cuda")
        reference.zero_grad(set_to_none=True)
        reference(x).pow(2).mean().backward()
        step(x)
        for a, b in zip(reference.parameters(), net.parameters()):
            assert torch.allclose(a.grad, b.grad, atol=1e-6), i
        assert step.is_graphed == (i >= step.WARMUP)
