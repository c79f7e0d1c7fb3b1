"""CUDA graphs of the samplers (models.cudagraph): on CUDA, ``sample`` replays a captured graph
from its second call on and draws exactly the images the eager sampler draws from the same
noise; off CUDA nothing is captured. The CUDA tests skip where no GPU is available; on a GPU,
``python -m pytest tests/test_cudagraph.py -q`` runs them all. ``CudaGraphs``' bookkeeping (eager
first, captured second, replayed after; at most ``max_graphs`` kept; a failed capture eager for
good) is checked on any machine, with its three CUDA steps stood in for on the CPU."""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pytest
import torch

import models
from models.base import _sample_graphs
from models.cudagraph import CudaGraphs, device_lock

_needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; none here")


def cuda(test):
    return pytest.mark.cuda(_needs_cuda(test))

CASES = [  # (name, image shape, levels, classes, hyper-parameters): every model that opts in
    ("pixelcnn", (1, 8, 8), 2, None, dict(hidden_channels=16, num_layers=2, head_channels=16)),
    ("pixelcnn", (1, 8, 8), 2, None, dict(gated=True, hidden_channels=16, num_layers=2, head_channels=16)),
    ("pixelcnn", (3, 4, 4), 256, 3, dict(gated=True, hidden_channels=12, num_layers=1, head_channels=12,
                                         output="logistic_mixture", mixtures=3)),
    ("pixelcnn", (3, 4, 4), 4, 3, dict(hidden_channels=12, num_layers=1, head_channels=12)),
    ("row_lstm", (1, 8, 8), 2, None, dict(hidden=8, layers=2)),
    ("row_lstm", (3, 4, 4), 4, 3, dict(hidden=6, layers=1)),
    ("diagonal_bilstm", (1, 8, 8), 2, None, dict(hidden=8, layers=2)),
    ("diagonal_bilstm", (3, 4, 4), 256, None, dict(hidden=6, layers=1, output="logistic_mixture", mixtures=2)),
    ("ar", (1, 8, 8), 256, None, dict(p=9)),
    ("ar", (3, 4, 4), 2, 3, dict(p=5, noise="gaussian")),
    ("fvsbn", (1, 8, 8), 2, 3, {}),
    ("nade", (3, 4, 4), 4, None, dict(hidden_units=16)),
]


def _eager(model, noise, y, temperature=1.0):
    with torch.inference_mode():
        return model._sample_all(noise, y, temperature).clone()


def test_off_cuda_run_is_the_plain_call_and_captures_nothing():
    graphs = CudaGraphs()
    x = torch.arange(6.0)
    for _ in range(3):
        assert torch.equal(graphs.run("double", lambda t: t * 2, x), x * 2)
    assert not graphs.graphs and not graphs.seen and not graphs.failed


class _HostGraphs(CudaGraphs):
    """``CudaGraphs`` with its CUDA steps stood in for on the CPU: a "graph" is ``fn`` kept with
    static copies of the inputs, and a replay calls it again on them into the static output."""

    def __init__(self, max_graphs: int = 4, fails: Exception | None = None):
        super().__init__(max_graphs)
        self.captures, self.replays, self.fails = 0, 0, fails
        self.held: list[torch.device] = []  # the devices whose lock ``run`` took

    @staticmethod
    def _graphable(inputs) -> bool:
        return True

    def _holding(self, device):
        self.held.append(device)
        return self.lock

    def _capture(self, fn, inputs):
        self.captures += 1
        if self.fails is not None:
            raise self.fails
        static = [t.clone() for t in inputs]
        result, output = fn(*static), fn(*static)
        owner = self

        class Graph:
            def replay(self):
                owner.replays += 1
                output.copy_(fn(*static))

        return result, (static, output, Graph())


class _Counted:
    """``t * 2 + 1``, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, t):
        self.calls += 1
        return t * 2 + 1


def test_graphs_are_eager_first_captured_second_and_replayed_after():
    """Kills: the first call captured (``or`` made ``and``), a key never marked seen (never
    captured), a replay without copying the new inputs in, the static output returned without
    ``clone`` (the next replay would overwrite what an earlier call returned), and the inputs'
    device not passed on to take its lock."""
    graphs, fn = _HostGraphs(), _Counted()
    xs = [torch.arange(4.0) + 10 * i for i in range(5)]
    assert torch.equal(graphs.run("k", fn, xs[0]), xs[0] * 2 + 1)
    assert (fn.calls, graphs.captures, len(graphs.graphs)) == (1, 0, 0)
    assert torch.equal(graphs.run("k", fn, xs[1]), xs[1] * 2 + 1)  # the warm-up's answer
    assert (graphs.captures, len(graphs.graphs), graphs.replays) == (1, 1, 0)
    returned = [graphs.run("k", fn, x) for x in xs[2:]]
    assert (graphs.captures, graphs.replays, fn.calls) == (1, 3, 1 + 2 + 3)
    for x, y in zip(xs[2:], returned):
        assert torch.equal(y, x * 2 + 1)
    assert graphs.held == [torch.device("cpu")] * 5


def test_the_key_holds_the_input_shapes_and_dtypes_and_calls_without_inputs_are_plain():
    """Kills: shapes or dtypes left out of the key (a replay of another shape's graph), and the
    ``not inputs`` guard removed (``inputs[0]`` of no inputs)."""
    graphs, fn = _HostGraphs(), _Counted()
    for x in (torch.arange(4.0), torch.arange(6.0), torch.arange(4, dtype=torch.float64)):
        for _ in range(3):
            assert torch.equal(graphs.run("k", fn, x), x * 2 + 1)
    assert graphs.captures == 3 and len(graphs.graphs) == 3
    for _ in range(3):
        assert torch.equal(graphs.run("none", lambda: torch.ones(2)), torch.ones(2))
    assert graphs.captures == 3 and len(graphs.seen) == 3  # calls without inputs are neither seen nor captured


def test_at_most_max_graphs_are_kept_and_the_least_recently_replayed_goes():
    """Kills: ``>`` made ``>=`` (one graph too few), the newest evicted instead of the oldest,
    and a replay that does not count as a use (``move_to_end`` dropped)."""
    graphs, fn, x = _HostGraphs(max_graphs=2), _Counted(), torch.arange(3.0)
    for key in ("a", "a", "b", "b", "a", "c", "c"):
        graphs.run(key, fn, x)
    assert [key for key, _ in graphs.graphs] == ["a", "c"]
    assert graphs.captures == 3


def test_a_capture_that_fails_warns_once_in_one_line_and_stays_eager():
    """Kills: a failed key retried at every call, a second warning, the warning's text (type,
    whitespace folded, message cut at 160 characters) and where it points (a caller, not
    models/cudagraph.py itself)."""
    graphs = _HostGraphs(fails=RuntimeError("waits  for\nthe device " + "x" * 300))
    fn, x = _Counted(), torch.arange(4.0)
    with pytest.warns(RuntimeWarning) as caught:
        results = [graphs.run("k", fn, x) for _ in range(4)]
    assert len(caught) == 1 and Path(caught[0].filename).name != "cudagraph.py"  # mutmut adds a frame
    assert str(caught[0].message) == ("CUDA graph capture failed, sampling without it (RuntimeError: "
                                      + ("waits for the device " + "x" * 300)[:160] + ")")
    assert all(torch.equal(r, x * 2 + 1) for r in results)
    assert (graphs.captures, fn.calls, len(graphs.graphs)) == (1, 4, 0) and graphs.failed


def test_the_device_lock_off_cuda_is_a_null_context():
    """Kills ``device.type != "cuda"`` made ``==``: CPU code would take (or, without CUDA, fail
    to find) a GPU's lock."""
    for device in ("cpu", torch.device("cpu")):
        assert isinstance(device_lock(device), contextlib.nullcontext)


def test_cpu_sampling_is_unchanged():
    torch.manual_seed(0)
    model = models.build("pixelcnn", (1, 4, 4), 2, hidden_channels=8, num_layers=1, head_channels=8).eval()
    noise = torch.rand(3, 1, 4, 4)
    first, second = model.sample(3, noise=noise), model.sample(3, noise=noise)
    assert torch.equal(first, second) and torch.equal(first, model.sample_naive(3, noise=noise))
    assert not _sample_graphs(model).graphs


@cuda
@pytest.mark.parametrize("name,shape,levels,classes,hparams", CASES)
def test_graph_replays_draw_the_eager_images(name, shape, levels, classes, hparams):
    torch.manual_seed(0)
    model = models.build(name, shape, levels, classes, **hparams).to("cuda").eval()
    assert model.graph_sampling
    n = 5
    labels = None if classes is None else torch.arange(n, device="cuda") % classes
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed capture warns: fail the test
        for call in range(4):  # eager, warm-up + capture, replay, replay
            noise = torch.rand(n, *shape, device="cuda")
            x = model.sample(n, y=labels, noise=noise)
            assert torch.equal(x, _eager(model, noise, labels)), f"call {call}"
    assert len(_sample_graphs(model).graphs) == 1  # replayed, not re-captured


@cuda
def test_replays_follow_weights_updated_in_place_and_soft_labels():
    torch.manual_seed(1)
    model = models.build("pixelcnn", (3, 4, 4), 4, 3, hidden_channels=12, num_layers=1, head_channels=12).to("cuda").eval()
    soft = torch.tensor([[0.5, 0.5, 0.0]], device="cuda").expand(4, 3).contiguous()
    noise = torch.rand(4, 3, 4, 4, device="cuda")
    for _ in range(3):
        model.sample(4, y=soft, noise=noise)
    with torch.no_grad():  # as an optimiser step does: same storage, new values
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    for t in (1.0, 0.7):  # a new temperature is a new graph (eager first)
        for _ in range(3):
            noise = torch.rand(4, 3, 4, 4, device="cuda")
            assert torch.equal(model.sample(4, y=soft, noise=noise, temperature=t), _eager(model, noise, soft, t))
    assert len(_sample_graphs(model).graphs) == 2


@cuda
def test_a_capture_that_fails_stays_eager_with_one_warning():
    """... and leaves the thread's stream and the device's random generator as they were (torch
    marks the generator as capturing when a capture begins: left so, every later draw fails)."""
    graphs = CudaGraphs()
    x = torch.arange(4.0, device="cuda")
    stream = torch.cuda.current_stream()

    def syncs(t):
        return t * float(t.sum().item())  # waits for the device: not capturable

    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        for _ in range(2):
            assert torch.equal(graphs.run("s", syncs, x), x * 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(graphs.run("s", syncs, x + 1), (x + 1) * 10)
    assert not graphs.graphs and graphs.failed
    assert torch.cuda.current_stream() == stream
    torch.randn(8, device="cuda")  # not "Offset increment outside graph capture encountered unexpectedly"


@cuda
def test_a_training_job_draws_on_while_a_sampler_is_captured_beside_it(tiny_data, isolated):
    """The app's sampling session captures its sampler's graphs while a VAE job, which draws
    noise at every step, trains on the same GPU in another thread. While a capture runs torch
    refuses any other draw on the device; the job waits for it (models.cudagraph.device_lock)
    instead of failing."""
    import threading

    from tests.conftest import preset_text, train_losses
    from workbench import sampling

    preset = isolated / "vae.toml"
    vae = 'name = "vae"\narch = "mlp"\nhidden = 32\nlatent_dim = 4'
    preset.write_text(preset_text(vae, "vae").replace('device = "cpu"', 'device = "cuda"'))
    result = {}

    def job():
        try:
            result["losses"] = train_losses(preset, isolated / "runs", ["train.max_steps=1500", "train.val_every=250",
                                                                         "sample.every=500", "train.cuda_graph=false"])[2]
        except Exception as e:  # noqa: BLE001 - the test reports it
            result["error"] = e

    torch.manual_seed(0)
    model = models.build("pixelcnn", (1, 8, 8), 2, hidden_channels=16, num_layers=2, head_channels=16).to("cuda").eval()
    thread = threading.Thread(target=job)
    thread.start()
    captures = 0
    try:
        for n in range(2, 40):
            if not thread.is_alive():
                break
            for seed in range(3):  # the second call of a size captures its graph
                sampling.draw(model, n, seed=seed)
            captures += 1
    finally:
        thread.join()
    assert "error" not in result, result.get("error")
    assert len(result["losses"]) == 1500 // 2  # the tiny preset logs every 2 steps
    assert captures >= 2 and _sample_graphs(model).graphs and not _sample_graphs(model).failed
