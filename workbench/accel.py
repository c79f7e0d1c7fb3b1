"""Speed settings of the training step: bf16 autocast (``[train] bf16``), ``torch.compile`` of
the loss (``[train] compile``), with a fallback to the eager loss where compilation fails, and
the forward and backward captured in one CUDA graph (``[train] cuda_graph``, ``GraphStep``).

The eager fp32 step is the reference: ``compile = "off"`` and bf16 off run exactly the code
the Trainer always ran (the forward under a null context, then ``backward``).

``bf16 = "auto"`` turns autocast on only on CUDA, and only for models with at least
``BF16_AUTO_MIN_PARAMS`` trainable parameters. The threshold comes from the training
throughputs ``benchmarks/gpu_check.py`` measured on one H200 (torch 2.11; img/s fp32 -> bf16;
benchmarks/results/gpu_check-h200.json):

    model                          parameters   fp32     bf16     faster
    Diagonal BiLSTM (MNIST paper)     0.1 M         81       75   fp32
    PixelCNN 7x64 (binary)            0.1 M      5,793    5,016   fp32
    NADE (MNIST paper)                0.8 M     55,947   49,864   fp32
    MADE [1000] (binary)              1.6 M     68,939   58,459   fp32
    gated PixelCNN 10x128             3.6 M      2,525    2,062   fp32
    PixelCNN (MNIST paper)            3.5 M      1,445    1,335   fp32
    PixelCNN (CIFAR-10 paper)         4.3 M      1,647    1,312   fp32
    VQ-VAE (CIFAR-10 paper)           4.5 M     24,174   18,758   fp32
    VAE (MNIST paper)                 6.8 M     32,344   27,628   fp32
    Row LSTM (CIFAR-10 paper)         7.0 M         79       66   fp32
    Diagonal BiLSTM (CIFAR-10 paper)  7.8 M         46       38   fp32
    gated PixelCNN (CIFAR-10 paper)  64.0 M        286      443   bf16
    MADE 2x8000 (MNIST paper)        76.6 M     27,922   37,427   bf16

Every model up to 7.8 M parameters trained faster in fp32 and both above 60 M faster in bf16,
so the threshold sits at 20 M. (An earlier H200 measurement quoted in issue 12 had the gated
PixelCNN 10x128 3.3x faster in bf16; this session's did not reproduce it.) Set ``bf16 = true``
or ``false`` to decide per preset.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable

import torch

from models.cudagraph import capture
from workbench.errors import one_line

BF16_AUTO_MIN_PARAMS = 20_000_000
GRAPH_AUTO_MAX_PARAMS = 20_000_000
COMPILE_MODES = ("off", "default", "reduce-overhead")


def use_bf16(setting: bool | str, device_type: str, num_params: int) -> bool:
    """Whether to train under bf16 autocast: never off CUDA; ``"auto"`` by model size."""
    if device_type != "cuda":
        return False
    if setting == "auto":
        return num_params >= BF16_AUTO_MIN_PARAMS
    return bool(setting)


def use_cuda_graph(setting: bool | str, device_type: str, capturable: bool, num_params: int = 0, *,
                   compile: str = "off", data_parallel: bool = False) -> bool:
    """Whether to replay the training step from a CUDA graph: only on CUDA, never with
    ``compile`` (whose "reduce-overhead" mode has CUDA graphs of its own) nor under DDP (its
    gradient hooks run outside a graph); ``"auto"`` where the model says its loss can be
    captured (``model.loss_capturable()``) and has fewer than ``GRAPH_AUTO_MAX_PARAMS``
    parameters (a model that large is compute-bound, and the graph's memory pool keeps the
    step's activations allocated between steps); ``true`` tries whatever the model."""
    if device_type != "cuda" or compile != "off" or data_parallel:
        return False
    if setting == "auto":
        return capturable and num_params < GRAPH_AUTO_MAX_PARAMS
    return bool(setting)


def autocast(enabled: bool, cache: bool = True):
    # a graph capture needs autocast's cache off: a cached cast would be made once, at capture
    return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache) if enabled else contextlib.nullcontext()


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class LossStep:
    """One training step's forward and backward: ``parts = step(x, y)`` runs ``loss_fn(x, y)``
    under ``autocast`` and ``parts["loss"].backward()``.

    With ``mode`` "default" or "reduce-overhead", ``loss_fn`` runs through ``torch.compile``
    (which wraps the function, not the model: state_dicts keep their names). torch compiles
    lazily, at the first forward and at the first backward, so a compiler that fails (no C
    compiler, an unsupported operation, ...) fails there: the step then calls ``warn`` once
    with a one-line reason, drops the gradients of the failed attempt (``params``), and runs
    eagerly from then on. After a first compiled step, only torch's compilation errors (a
    recompilation for new shapes) fall back; any other error is the model's and propagates."""

    #: False: the caller zeroes (or drops) the gradients before every step.
    owns_grads = False

    def __init__(self, loss_fn: Callable, mode: str = "off", *, params=(), bf16: bool = False,
                 warn: Callable[[str], None] = _warn_stderr):
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
        self.eager, self.params, self.bf16, self.warn = loss_fn, list(params), bf16, warn
        self.compiled = None
        self.steps = 0
        # reduce-overhead replays CUDA graphs whose outputs the next replay overwrites: each
        # step is a new one for torch (the previous step's outputs are no longer read)
        self.mark_step = mode == "reduce-overhead"
        if mode != "off":
            try:
                self.compiled = torch.compile(loss_fn, mode=mode)
            except Exception as e:  # noqa: BLE001 - any failure to compile means: train eagerly
                self._fall_back(e)

    @property
    def is_compiled(self) -> bool:
        """Whether steps run compiled (False from the first failure on)."""
        return self.compiled is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.compiled is not None:
            try:
                if self.mark_step:
                    torch.compiler.cudagraph_mark_step_begin()
                return self._run(self.compiled, x, y)
            except (MemoryError, torch.cuda.OutOfMemoryError):
                raise
            except Exception as e:  # noqa: BLE001
                from torch._dynamo.exc import TorchDynamoException

                if self.steps and not isinstance(e, TorchDynamoException):
                    raise
                self._fall_back(e)
                for p in self.params:  # whatever the failed attempt accumulated
                    p.grad = None
        return self._run(self.eager, x, y)

    def _run(self, fn: Callable, x, y) -> dict[str, torch.Tensor]:
        with autocast(self.bf16):
            parts = fn(x, y)
        parts["loss"].backward()
        self.steps += 1
        return parts

    def _fall_back(self, error: Exception) -> None:
        self.compiled = None
        reason = one_line(error, 160) or "no message"
        self.warn(f"torch.compile failed ({type(error).__name__}: {reason}); training continues without compiling")


class GraphStep:
    """The training step's forward and backward replayed from one CUDA graph: ``parts =
    step(x, y)`` leaves the step's gradients in the parameters' ``.grad``, as ``LossStep`` does,
    for the optimiser (which stays eager, so that learning-rate schedules and checkpoints work
    as they always did).

    A small model at a small batch is launch-bound on a GPU: a Row LSTM's step is thousands of
    tiny kernels, each issued by Python and autograd. A replay issues them all at once. The
    first ``WARMUP`` steps run eagerly on a side stream (torch's recipe: lazy initialisations
    stay out of the capture); the next one is captured, with the gradients set to None so that
    the backward in the graph *writes* them (not adds to them); from then on each step copies
    its batch into the graph's input tensors and replays. The same kernels run on the same
    values, so a deterministic loss trains like the eager step; random draws (a VAE's noise)
    come from torch's graph-safe generator, a different stream of numbers than eagerly.

    The gradients are the graph's own tensors from the capture on: the step owns them
    (``owns_grads``), and the caller must not set them to None. A batch of another shape runs
    eagerly, accumulating into zeroed graph gradients. A capture that fails (a loss that waits
    for the device, ``.item()`` for instance) calls ``warn`` once with a one-line reason and
    the step runs eagerly from then on."""

    owns_grads = True
    WARMUP = 3

    def __init__(self, loss_fn: Callable, *, params=(), bf16: bool = False,
                 warn: Callable[[str], None] = _warn_stderr):
        self.loss_fn, self.params, self.bf16, self.warn = loss_fn, list(params), bf16, warn
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: tuple[torch.Tensor, torch.Tensor | None] = ()
        self.parts: dict[str, torch.Tensor] = {}
        self.failed = False
        self.eager_steps = 0

    @property
    def is_graphed(self) -> bool:
        """Whether steps replay a graph now."""
        return self.graph is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.graph is not None and self._fits(x, y):
            static_x, static_y = self.inputs
            static_x.copy_(x)
            if y is not None:
                static_y.copy_(y)
            self.graph.replay()
            return self.parts
        if self.graph is not None or self.failed or not x.is_cuda:
            return self._eager(x, y)
        if self.eager_steps < self.WARMUP:
            return self._warm_up(x, y)
        try:
            return self._capture(x, y)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever stops a capture: train eagerly
            self.failed, self.graph = True, None
            for p in self.params:  # whatever the failed capture left
                p.grad = None
            torch.cuda.synchronize(x.device)
            self.warn(f"CUDA graph capture of the training step failed ({type(e).__name__}: "
                      f"{one_line(e, 160) or 'no message'}); training continues without it")
            return self._eager(x, y)

    def _fits(self, x, y) -> bool:
        static_x, static_y = self.inputs
        if x.shape != static_x.shape or x.dtype != static_x.dtype or (y is None) != (static_y is None):
            return False
        return y is None or (y.shape == static_y.shape and y.dtype == static_y.dtype)

    def _forward_backward(self, x, y, cache: bool = True) -> dict[str, torch.Tensor]:
        with autocast(self.bf16, cache):
            parts = self.loss_fn(x, y)
        parts["loss"].backward()
        return {key: value.detach() for key, value in parts.items()}

    def _eager(self, x, y) -> dict[str, torch.Tensor]:
        for p in self.params:
            if p.grad is None:
                continue
            if self.graph is not None:
                p.grad.zero_()  # the graph's gradient tensors stay the parameters' own
            else:
                p.grad = None
        return self._forward_backward(x, y)

    def _warm_up(self, x, y) -> dict[str, torch.Tensor]:
        main = torch.cuda.current_stream(x.device)
        side = torch.cuda.Stream(x.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            parts = self._eager(x, y)
        main.wait_stream(side)
        self.eager_steps += 1
        return parts

    def _capture(self, x, y) -> dict[str, torch.Tensor]:
        for p in self.params:
            p.grad = None
        self.inputs = (x.clone(), None if y is None else y.clone())
        graph = torch.cuda.CUDAGraph()
        with capture(graph, x.device):
            parts = self._forward_backward(*self.inputs, cache=False)
        graph.replay()  # a capture runs nothing: this is the step's work
        self.graph, self.parts = graph, parts
        return parts


def training_step(loss_fn: Callable, *, compile: str, cuda_graph: bool, params=(), bf16: bool = False,
                  warn: Callable[[str], None] = _warn_stderr):
    """A ``GraphStep`` where ``cuda_graph`` (decided by ``use_cuda_graph``), else a ``LossStep``."""
    if cuda_graph:
        return GraphStep(loss_fn, params=params, bf16=bf16, warn=warn)
    return LossStep(loss_fn, compile, params=params, bf16=bf16, warn=warn)
