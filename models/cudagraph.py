"""CUDA graphs for the samplers: a function of a few tensors, replayed from a CUDA graph that
captured it, so that the hundreds of small kernel launches a sampler makes per subpixel (and
the Python that issues them) cost one graph launch per call.

``CudaGraphs.run(key, fn, *inputs)`` returns ``fn(*inputs)``. Off CUDA it is exactly that call.
On CUDA, the first call with a key runs ``fn`` eagerly (a one-off sample pays nothing for
capturing); the second warms ``fn`` up on a side stream (that run is the call's answer) and
captures it into a graph with static copies of the inputs; every later call copies its inputs
into those and replays the graph. The replay launches the same kernels on the same values as
the eager run, so it gives the same tensor, under these conditions on ``fn``:

- it reads nothing but its inputs and tensors that keep their storage between calls (a model's
  parameters updated in place by an optimiser are fine: the graph reads them as they are now);
  whatever else it depends on (shapes, Python numbers such as a temperature, the storage of the
  parameters) must be part of ``key``: the input shapes, dtypes and devices always are;
- it neither waits for the device (``.item()``, ``.tolist()``, data-dependent Python control
  flow) nor draws random numbers: the uniforms come in as an input.

A capture that fails (an operation that synchronises, for instance) leaves its key eager for
good, with one warning. At most ``max_graphs`` graphs (and their memory pools) are kept.
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from collections import OrderedDict
from typing import Callable, Hashable

import torch


class CudaGraphs:
    def __init__(self, max_graphs: int = 4):
        self.max_graphs = max_graphs
        self.graphs: OrderedDict = OrderedDict()  # key -> (static inputs, static output, graph)
        self.seen: set = set()                    # keys called once (eagerly)
        self.failed: set = set()                  # keys whose capture failed: eager for good
        self.lock = threading.Lock()

    def run(self, key: Hashable, fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
        if not inputs or not self._graphable(inputs):
            return fn(*inputs)
        key = (key, tuple((tuple(t.shape), t.dtype, t.device) for t in inputs))
        with self._holding(inputs[0].device):
            entry = self.graphs.get(key)
            if entry is not None:
                self.graphs.move_to_end(key)
                static_inputs, output, graph = entry
                for static, t in zip(static_inputs, inputs):
                    static.copy_(t)
                graph.replay()
                return output.clone()
            if key in self.failed or key not in self.seen:
                self.seen.add(key)
                return fn(*inputs)
            try:
                result, entry = self._capture(fn, inputs)
            except Exception as e:  # noqa: BLE001 - whatever stops a capture: stay eager
                self.failed.add(key)
                warnings.warn(f"CUDA graph capture failed, sampling without it "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:160]})", RuntimeWarning, stacklevel=2)
                return fn(*inputs)
            self.graphs[key] = entry
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
            return result

    # The three CUDA-specific steps of ``run``; everything else in it is bookkeeping, which
    # tests/test_cudagraph.py checks on any machine by standing in for these three.
    @staticmethod
    def _graphable(inputs) -> bool:
        return all(t.is_cuda for t in inputs)

    @contextlib.contextmanager
    def _holding(self, device):
        # the device's lock first (a capture takes it): one order for every thread
        with device_lock(device), self.lock, torch.cuda.device(device):
            yield

    @staticmethod
    def _capture(fn, inputs):
        """Warm up on a side stream (as torch's documentation asks: lazy initialisations stay
        out of the capture), then capture. Returns the warm-up's result and the entry
        (static inputs, static output, graph); a failure waits for the device, then raises."""
        device = inputs[0].device
        try:
            static_inputs = [t.clone() for t in inputs]
            main, side = torch.cuda.current_stream(device), torch.cuda.Stream(device)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                result = fn(*static_inputs)
            main.wait_stream(side)
            result.record_stream(main)  # made on the side stream, read on the main one
            graph = torch.cuda.CUDAGraph()
            with capture(graph, device):
                output = fn(*static_inputs)
        except Exception:
            torch.cuda.synchronize(device)
            raise
        return result, (static_inputs, output, graph)


_DEVICE_LOCKS: dict[int, threading.RLock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()


def device_lock(device):
    """The lock of a CUDA device's default random generator (a null context off CUDA).

    While a thread captures a CUDA graph, torch refuses every draw from the device's default
    generator made outside that capture ("Offset increment outside graph capture encountered
    unexpectedly"), from any thread. So every capture holds this lock (``capture``), and so does
    code that draws random numbers on the device in a thread that may run beside another one's
    capture: the Trainer around its steps, validation and sampling, and workbench.sampling. A
    draw then waits for a capture to end (a second or two, once per graph) instead of failing."""
    device = torch.device(device)
    if device.type != "cuda":
        return contextlib.nullcontext()
    index = device.index if device.index is not None else torch.cuda.current_device()
    with _DEVICE_LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(index, threading.RLock())


@contextlib.contextmanager
def capture(graph: torch.cuda.CUDAGraph, device: torch.device):
    """Capture the block into ``graph`` on a side stream of ``device``, thread-local (other
    threads may go on launching work meanwhile), holding ``device_lock``. A capture that fails
    (an operation that waits for the device) leaves the device's default generator as it was
    before: torch marks it as capturing when a capture begins and unmarks it only when one ends
    well (and ``torch.cuda.graph`` would also leave its capture stream current)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    generator = torch.cuda.default_generators[index]
    with device_lock(device):
        before = generator.clone_state()
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # as torch.cuda.graph does: the graph's pool gets what was cached
        try:
            with torch.cuda.stream(torch.cuda.Stream(device)):
                graph.capture_begin(capture_error_mode="thread_local")
                try:
                    yield
                finally:
                    graph.capture_end()
        except BaseException:
            generator.graphsafe_set_state(before)
            raise
