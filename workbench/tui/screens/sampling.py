"""The sampling session: draw from a run's checkpoint from the keyboard, over workbench.sampling.

    SamplingScreen(run_dir, which="best" | "last", seed=0)

Keys: space/r draw again (new seed), 0-9 class (conditional runs), m mix the class with the next
digit pressed (m again ends the mix; ←/→ move the second class's weight by 0.1), t/T lower/raise
the temperature along TEMPERATURES, i interpolation between two test images (←/→ walk it; the
current step large, the path below), o reconstructions, a animate generation subpixel by subpixel
(autoregressive models; code by code for the VQ-VAE prior), v the VQ-VAE code grid (i, o, v again:
back to samples), e the decoder's mean or draws (latent models; the mean is the default for a
binarised VAE and CVAE), pgup/pgdn (or ,/.) page through a grid that does not fit at 1x, z one
image alone as large as fits, w write the grid as a PNG into <run>/samples/session-<time>.png,
esc stop an animation, else go back. Any key stops an animation. Only the keys that do something
for the model and mode show in the footer and in `?` (no class keys for an unconditional model, no
mix or T while interpolating or reconstructing); pressing one of the others says why. As many samples as fit the image area at 1x (1 to 64) are drawn, unless ``n`` is
given; when the terminal is resized, the samples are drawn again (same seed) to fill it.

Every draw runs in one exclusive thread worker; results come back as messages tagged with a
generation number, so a result that a newer key press made stale is dropped. The UI thread
never waits on torch.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
import time
from pathlib import Path
from typing import Any

from textual import events, work
from textual.actions import parse
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import get_current_worker

from workbench.classnames import labelled
from workbench.tui.widgets.footer import KeyFooter
from workbench.tui.widgets.image_grid import ImageGrid, cell_pixels

TEMPERATURES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0)
FPS = 15  # animation frames shown per second at most
MAX_SAMPLES = 64  # as many as fit the screen at 1x, between MIN_SAMPLES and this
MIN_SAMPLES = 1  # what is drawn is what fits: more would only be paged (the grid pages a fixed n)
N_RECON = 8
INTERP_STEPS = 9
MODES = ("samples", "interpolate", "recon", "animate", "codes")
_clock = time.perf_counter  # the draw timings shown; snapshot tests fix it


@dataclasses.dataclass(frozen=True)
class Request:
    """What to draw: a snapshot of the session's settings, tagged with a generation number."""

    gen: int
    mode: str
    n: int
    nrow: int | None  # images per row of the grid
    seed: int
    temperature: float
    label: int | None
    mix: tuple[int, int] | None
    weight: float  # the weight of mix[1]
    mean: bool = False  # the decoder's mean instead of draws (latent models)


class SessionLoaded(Message):
    def __init__(self, run: Any, model: Any, step: int | None, checkpoint: str) -> None:
        super().__init__()
        self.run, self.model, self.step, self.checkpoint = run, model, step, checkpoint


class SessionDrawn(Message):
    """A grid (or one animation frame) drawn by the worker for request ``gen``."""

    def __init__(self, gen: int, images: Any, nrow: int | None, *, done: int | None = None,
                 total: int | None = None, final: bool = True, seconds: float = 0.0, note: str | None = None) -> None:
        super().__init__()
        self.gen, self.images, self.nrow, self.note = gen, images, nrow, note
        self.done, self.total, self.final, self.seconds = done, total, final, seconds


class SessionFailed(Message):
    def __init__(self, gen: int, text: str) -> None:
        super().__init__()
        self.gen, self.text = gen, text


def _error_text(error: BaseException) -> str:
    from workbench.errors import UserError

    if isinstance(error, UserError):
        return str(error)
    return f"{type(error).__name__}: {error}"


PAGE = Binding.Group("Page")  # pgup and pgdn show as one footer entry

class SamplingScreen(Screen):
    """Draws from one run's model; see the module docstring for the keys."""

    HELP_TITLE = "the sampling session"
    HELP_HEADING = "Drawing"
    HELP_SECTIONS = {"interpolate": "Modes", "reconstruct": "Modes", "animate": "Modes", "codes": "Modes",
                     "page": "Images", "zoom": "Images", "write": "Images"}

    DEFAULT_CSS = """
    SamplingScreen { layout: vertical; }
    SamplingScreen #settings { height: auto; padding: 0 1; background: $boost; }
    SamplingScreen #status { height: 1; padding: 0 1; color: $text-muted; }
    SamplingScreen #main { height: 1fr; }
    SamplingScreen #strip { height: 6; display: none; }
    SamplingScreen.interpolating #strip { display: block; }
    SamplingScreen.interpolating.-cramped #main { display: none; }
    """

    BINDINGS = [
        Binding("space,r", "redraw", "Draw again"),
        # One key, two labels: the footer names what e switches to.
        Binding("e", "mean(True)", "Mean"),
        Binding("e", "mean(False)", "Sample"),
        Binding("pageup,comma", "page(-1)", "Page−", key_display="pgup", group=PAGE),
        Binding("pagedown,full_stop", "page(1)", "Page+", key_display="pgdn", group=PAGE),
        *[Binding(str(k), f"digit({k})", f"Class {k}", show=False) for k in range(10)],
        Binding("m", "mix", "Mix"),
        Binding("left", "arrow(-1)", "Mix weight − / path ←", show=False),
        Binding("right", "arrow(1)", "Mix weight + / path →", show=False),
        Binding("t", "temperature(-1)", "T−"),
        Binding("T", "temperature(1)", "T+"),
        Binding("i", "interpolate", "Interpolate"),
        Binding("o", "reconstruct", "Recon"),
        Binding("a", "animate", "Animate"),
        Binding("v", "codes", "Codes"),
        Binding("z", "zoom", "Zoom"),
        Binding("w", "write", "Save PNG"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, run_dir: str | Path, which: str = "best", seed: int = 0, *, n: int | None = None,
                 device: str = "auto", name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self.run_dir = Path(run_dir)
        self.which = which
        self.device = device
        self.n = n  # samples per draw; None: as many as fit the screen
        self.run: Any = None
        self.model: Any = None
        self.checkpoint: str = which
        self.checkpoint_step: int | None = None
        self.error: str | None = None
        # the session's settings (only the UI thread touches them)
        self.mode = "samples"
        self.seed = seed
        self.temperature = 1.0
        self.label: int | None = None
        self.mix: tuple[int, int] | None = None
        self.weight = 0.5
        self.mean = False  # the decoder's mean instead of draws; set for the model once it is loaded
        self.awaiting_mix = False
        self.interp_step = 0
        # what is on screen
        self.last: Any = None  # the tensor grid drawn last (what `w` writes)
        self.last_nrow: int | None = None
        self.frames_shown = 0  # animation frames shown for the current animation
        self.draws = 0  # finished draws
        self.saved: list[Path] = []
        self._gen = 0
        self._busy_gen: int | None = None
        self._frame_in_flight = threading.Event()
        # One draw at a time: a superseded worker cannot be interrupted mid-call, and sampling
        # seeds torch's global RNG, so two overlapping draws could disturb each other's seed.
        self._model_lock = threading.Lock()
        self._status = "loading the model…"
        self._resize_timer: Any = None
        self._relayout_pending = False  # resized during a draw: check the layout when it ends

    # -- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(self._settings_text(), id="settings")
        yield Static(self._status, id="status")
        yield ImageGrid(id="main", keys="pgup/pgdn page · z zoom")
        yield ImageGrid(id="strip")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._load()

    # -- model properties ----------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.run.config.model.name if self.run is not None else "?"

    @property
    def num_classes(self) -> int | None:
        return getattr(self.model, "num_classes", None) or None

    def _supports(self, op: str) -> bool:
        from workbench import sampling

        if op == "temperature":
            return self.model_name in sampling.TEMPERATURE
        return self.model_name in sampling.OPERATIONS.get(op, set())

    @property
    def has_mean(self) -> bool:
        from workbench import sampling

        return self.model is not None and self.model_name in sampling.MEAN

    @property
    def has_temperature(self) -> bool:
        return self.model is not None and self._supports("temperature")

    def why_not(self, op: str) -> str | None:
        """None if the model supports ``op`` ("class", "mix", "temperature", or a mode of
        workbench.sampling.OPERATIONS), else one line that says why not."""
        if self.model is None:
            return self.error or "the model is still loading"
        name = self.model_name
        if op in ("class", "mix"):
            if not self.num_classes:
                return (f"this {name} is unconditional: classes and mixtures need a class-conditional "
                        "run (train one with conditional = true)")
            return None
        if op == "temperature":
            return None if self._supports(op) else f"{name} has no temperature (its codes are uniform; its prior has one)"
        if self._supports(op):
            return None
        return {
            "interpolate": f"interpolation walks between encoded images: {name} has no encoder (vae, cvae, vqvae have one)",
            "recon": f"reconstruction needs an encoder: {name} has none (vae, cvae, vqvae have one)",
            "progress": f"{name} draws every pixel at once: only autoregressive models (and the VQ-VAE prior) animate",
            "codes": f"{name} has no codebook: the code grid is for vqvae and vqvae_prior",
        }.get(op, f"{name} cannot do {op}")

    def _refuse(self, op: str) -> bool:
        reason = self.why_not(op)
        if reason:
            self.notify(reason, title="Not for this model", severity="warning", timeout=4)
        return reason is not None

    # -- what the screen says -----------------------------------------------------------------------
    def _settings_text(self) -> str:
        if self.model is None:
            return f"[b]{self.run_dir.name}[/b] · {self.error or 'loading…'}"
        parts = [f"[b]{self.model_name}[/b]"]
        step = f", step {self.checkpoint_step}" if self.checkpoint_step is not None else ""
        parts.append(f"checkpoint {self.checkpoint}{step}")
        # Interpolation and reconstruction start from test images: class, mix and T play no part.
        drawing = self.mode not in ("interpolate", "recon")
        if self.num_classes and drawing:
            dataset = self._dataset()
            if self.mix:
                a, b = self.mix
                parts.append(f"mix {labelled(dataset, a)}×{1 - self.weight:.1f} + {labelled(dataset, b)}×{self.weight:.1f}")
            else:
                parts.append(f"class {labelled(dataset, self.label)}" if self.label is not None else "classes in turn")
        if self.has_temperature and drawing:
            parts.append(f"T {self.temperature:g}")
        if self.has_mean and self.mode == "samples":
            parts.append("decoder mean" if self.mean else "sampled")
        parts.append(f"seed {self.seed}")
        mode = self.mode
        if mode == "interpolate":
            mode += f" {self.interp_step + 1}/{INTERP_STEPS}"
        parts.append(f"mode {mode}")
        return " · ".join(parts)

    def _dataset(self) -> str | None:
        """The run's dataset name (for class names), from its config.toml, read once."""
        if not hasattr(self, "_dataset_name"):
            from workbench.runindex import read_config

            data = read_config(self.run_dir).get("data", {})
            self._dataset_name = data.get("dataset") if isinstance(data, dict) else None
        return self._dataset_name

    def _refresh_labels(self) -> None:
        self.query_one("#settings", Static).update(self._settings_text())
        self.query_one("#status", Static).update(self._status)

    # -- loading ------------------------------------------------------------------------------------
    @work(thread=True, exit_on_error=False, group="load")
    def _load(self) -> None:
        from workbench import sampling

        try:
            run, model = sampling.load(self.run_dir, which=self.which, device=self.device)
            checkpoint = self.which  # sampling.load falls back to the other one where this one is missing
            if not run.checkpoint_path(checkpoint).exists():
                checkpoint = "last" if checkpoint == "best" else "best"
            step = None
            try:
                import torch

                state = torch.load(run.checkpoint_path(checkpoint), map_location="cpu", weights_only=True, mmap=True)
                step = int(state.get("step")) if isinstance(state, dict) and state.get("step") is not None else None
            except Exception:  # the step is only shown; the model loaded already
                pass
            self.post_message(SessionLoaded(run, model, step, checkpoint))
        except Exception as e:
            self.post_message(SessionFailed(-1, _error_text(e)))

    def on_session_loaded(self, message: SessionLoaded) -> None:
        self.run, self.model = message.run, message.model
        self.checkpoint, self.checkpoint_step = message.checkpoint, message.step
        from workbench import sampling

        self.mean = sampling.default_mean(self.model)
        self._start("samples")

    # -- drawing ------------------------------------------------------------------------------------
    def _layout(self) -> tuple[int, int]:
        """(n, images per row) for a grid of samples: as many as fit the image area at 1x."""
        shape = getattr(self.model, "image_shape", None) or (1, 28, 28)
        cols, rows = self.query_one("#main", ImageGrid).capacity(shape[-1], shape[-2])
        cols, rows = max(1, min(cols, 8)), max(1, min(rows, 8))
        n = self.n or max(MIN_SAMPLES, min(MAX_SAMPLES, cols * rows))
        return n, cols if cols * rows >= n else math.ceil(math.sqrt(n))

    def _request(self) -> Request:
        self._gen += 1
        n, nrow = self._layout()
        if self.mode == "recon":  # a row of originals over a row of their reconstructions
            n = nrow = max(2, min(N_RECON, nrow))
        elif self.mode == "codes":  # pairs: an image's coloured codes, then the decoded image
            n, nrow = max(1, min(N_RECON, n // 2)), max(2, nrow - nrow % 2)
        elif self.mode == "interpolate":
            n, nrow = 2, INTERP_STEPS
        return Request(self._gen, self.mode, n, nrow, self.seed, self.temperature, self.label, self.mix, self.weight,
                       self.mean and self.has_mean)

    def _start(self, mode: str | None = None) -> None:
        """Draw the current settings in ``mode`` (default: the current mode)."""
        if self.model is None:
            self.notify(self.why_not("samples") or "", severity="warning")
            return
        if mode is not None:
            self.mode = mode
        self.set_class(self.mode == "interpolate", "interpolating")
        self.frames_shown = 0
        request = self._request()
        self._busy_gen = request.gen
        self._frame_in_flight.clear()
        self._status = "animating…" if request.mode == "animate" else "drawing…"
        self._refresh_labels()
        self.refresh_bindings()  # the keys of this mode
        self._draw(request)

    @property
    def busy(self) -> bool:
        """A draw or an animation is under way."""
        return self._busy_gen is not None

    @property
    def animating(self) -> bool:
        return self.busy and self.mode == "animate"

    def _label_argument(self, request: Request, sampling) -> Any:
        if request.mix is not None:
            a, b = request.mix
            return sampling.soft_label(self.num_classes, {a: 1.0 - request.weight, b: request.weight})
        return request.label

    @work(thread=True, exit_on_error=False, exclusive=True, group="draw")
    def _draw(self, request: Request) -> None:
        from workbench import sampling

        worker = get_current_worker()
        with self._model_lock:
            if not worker.is_cancelled:  # superseded while waiting: skip the work
                self._draw_now(request, sampling, worker)

    def _draw_now(self, request: Request, sampling, worker) -> None:
        started = _clock()
        note = None
        try:
            model, label = self.model, self._label_argument(request, sampling)
            temperature = {"temperature": request.temperature} if self.has_temperature else {}
            if request.mode == "samples":
                images = sampling.draw(model, request.n, label=label, seed=request.seed, mean=request.mean,
                                       **temperature)
                nrow = request.nrow
            elif request.mode == "recon":
                x, y = sampling.test_images(self.run, request.n, seed=request.seed)
                images = sampling.reconstruct(model, x, y if self.num_classes else None)
                nrow = request.n
            elif request.mode == "interpolate":
                x, y = sampling.test_images(self.run, 2, seed=request.seed)
                ends = (y[:1], y[1:2]) if self.num_classes else None  # a CVAE's label walks too
                images = sampling.interpolate(model, x[:1], x[1:2], INTERP_STEPS, y=ends)
                nrow = INTERP_STEPS
            elif request.mode == "codes":
                prior = {"label": label, **temperature} if self.model_name == "vqvae_prior" else {}
                codes, note = sampling.codes_view(self.run, model, request.n, seed=request.seed, **prior)
                images, nrow = codes.picture, request.nrow
            elif request.mode == "animate":
                self._play_progress(request, sampling, label, worker, started)
                return
            else:
                raise ValueError(f"unknown mode {request.mode}")
            if not worker.is_cancelled:
                self.post_message(SessionDrawn(request.gen, images, nrow, seconds=_clock() - started,
                                               note=note))
        except Exception as e:
            if not worker.is_cancelled:
                self.post_message(SessionFailed(request.gen, _error_text(e)))

    def _play_progress(self, request: Request, sampling, label, worker, started: float) -> None:
        model = self.model
        if self.model_name == "vqvae_prior":
            total = math.prod(model.code_shape)
        else:
            total = math.prod(model.image_shape)
        every = max(1, total // 1024)
        frames = sampling.progress(model, request.n, every=every, label=label,
                                   temperature=request.temperature, seed=request.seed)
        last_post, latest = 0.0, None
        try:
            for latest in frames:
                if worker.is_cancelled:
                    return
                now = _clock()
                # At most FPS frames a second, and only once the UI has taken the previous one.
                if now - last_post >= 1 / FPS and not self._frame_in_flight.is_set():
                    self._frame_in_flight.set()
                    done, x = latest
                    self.post_message(SessionDrawn(request.gen, x, request.nrow, done=done, total=total,
                                                   final=False, seconds=now - started))
                    last_post = now
        finally:
            frames.close()
        if latest is not None and not worker.is_cancelled:
            done, x = latest
            self.post_message(SessionDrawn(request.gen, x, request.nrow, done=done, total=total, final=True,
                                           seconds=_clock() - started))

    def on_session_drawn(self, message: SessionDrawn) -> None:
        if message.gen != self._gen:
            return  # a newer request replaced this one
        self._frame_in_flight.clear()
        self.last, self.last_nrow = message.images, message.nrow
        if message.total is not None:
            self.frames_shown += 1
            self._status = f"frame {self.frames_shown}: {message.done}/{message.total} subpixels"
        if self.mode == "interpolate":
            strip = self.query_one("#strip", ImageGrid)
            _, cell_height = cell_pixels(strip.protocol)
            # one row of images at 1x, and the note's row for when they do not all fit across
            tall = math.ceil((message.images.shape[-2] + 2) / cell_height) + 1
            strip.styles.height = max(3, min(self.size.height // 2, tall))
            # Too low for the current step above the path at 1x: the path alone, its step framed.
            chrome = sum(self.query_one(f"#{w}").outer_size.height for w in ("settings", "status")) + 1
            room = self.size.height - chrome - strip.styles.height.value
            cramped = room < math.ceil((message.images.shape[-2] + 2) / cell_height)
            self.set_class(cramped, "-cramped")
            if cramped:
                strip.styles.height = max(3, min(self.size.height - chrome, tall))
            self.interp_step = min(self.interp_step, len(message.images) - 1)
            self.query_one("#main", ImageGrid).update(message.images[self.interp_step])
            strip.update(message.images, nrow=message.nrow, highlight=self.interp_step)
        else:
            # Originals over reconstructions, and codes beside their images, stay together when the grid is laid out anew.
            together = {"band": 2} if self.mode == "recon" else {"step": 2} if self.mode == "codes" else {}
            self.query_one("#main", ImageGrid).update(message.images, nrow=message.nrow, **together)
        self.refresh_bindings()
        if message.final:
            self._busy_gen = None
            self.draws += 1
            what = {"interpolate": "interpolation", "recon": f"{len(message.images) // 2} reconstructions",
                    "codes": "code grid"}.get(self.mode, f"{len(message.images)} images")
            self._status = (f"animated in {message.seconds:.2f} s, {self.frames_shown} frames shown"
                            if message.total is not None else f"{what} in {message.seconds:.2f} s")
            if message.note:  # "usage over 1000 test images: 11 of 16 codes used, perplexity 7.2; codes of ..."
                # The figures first: at 80 columns the status line is cut after some 78 characters.
                head, sep, tail = message.note.partition("; ")
                self._status = f"{tail}; {head}" if sep else message.note
                self._status += f" · {what} in {message.seconds:.2f} s"
            if self._relayout_pending:
                self._relayout_pending = False
                self.call_after_refresh(self._relayout)
        self._refresh_labels()

    def on_session_failed(self, message: SessionFailed) -> None:
        if message.gen == -1:
            self.error = message.text
            self._status = "cannot load the model"
            self.query_one("#main", ImageGrid).update(None)
            self.notify(message.text, title="Cannot load the model", severity="error", timeout=8)
            self.refresh_bindings()
        elif message.gen != self._gen:
            return
        else:
            self._busy_gen = None
            self._status = "the draw failed"
            self.notify(message.text, title="Drawing failed", severity="error", timeout=8)
        self._refresh_labels()

    def _stop_animation(self) -> bool:
        """Stop a running animation (keeps its last frame); True if there was one."""
        if self.mode != "animate" or self._busy_gen is None:
            return False
        self._gen += 1  # frames still in the queue are stale now
        self._busy_gen = None
        self.workers.cancel_group(self, "draw")
        self._status = f"animation stopped after {self.frames_shown} frames"
        self.mode = "samples"
        self._refresh_labels()
        self.refresh_bindings()
        return True

    # -- keys -----------------------------------------------------------------------------------------
    def action_redraw(self) -> None:
        if self.model is None:
            return self._start()
        self.seed += 1
        self._start("samples" if self.mode == "animate" else None)

    def action_digit(self, k: int) -> None:
        if self._refuse("class"):
            self.awaiting_mix = False
            return
        if k >= self.num_classes:
            self.notify(f"class {k} does not exist: this model has {self.num_classes} classes "
                        f"(0–{self.num_classes - 1})", severity="warning")
            return
        if self.awaiting_mix:
            self.awaiting_mix = False
            first = self.label if self.label is not None else 0
            if k == first:
                self.notify(f"mixing {k} with itself is class {k}: press m and another digit", severity="warning")
                return
            self.mix, self.weight = (first, k), 0.5
        else:
            self.mix, self.label = None, k
        self._start("samples")  # classes steer draws; recon and interpolation use the test images' own

    def action_mix(self) -> None:
        if self._refuse("mix"):
            return
        if self.mix is not None:  # m again leaves the mixture
            self.mix = None
            self._start("samples")
            return
        self.awaiting_mix = True
        first = self.label if self.label is not None else 0
        self.notify(f"mix class {first} with which class? Press its digit (esc cancels)", title="Mix")

    def action_arrow(self, delta: int) -> None:
        if self.mode == "interpolate" and self.last is not None:
            self.interp_step = max(0, min(INTERP_STEPS - 1, self.interp_step + delta))
            self.query_one("#main", ImageGrid).update(self.last[self.interp_step])
            self.query_one("#strip", ImageGrid).update(self.last, nrow=INTERP_STEPS, highlight=self.interp_step)
            self._refresh_labels()
        elif self.mix is not None:
            self.weight = round(max(0.0, min(1.0, self.weight + 0.1 * delta)), 1)
            self._start("samples")
        else:
            self.notify("←/→ move the mixture weight (m) or walk an interpolation (i)", severity="warning")

    def action_temperature(self, direction: int) -> None:
        if self._refuse("temperature"):
            return
        if direction < 0:
            lower = [t for t in TEMPERATURES if t < self.temperature - 1e-9]
            if not lower:
                self.notify(f"T {self.temperature:g} is the lowest step", severity="warning")
                return
            self.temperature = lower[-1]
        else:
            higher = [t for t in TEMPERATURES if t > self.temperature + 1e-9]
            if not higher:
                self.notify(f"T {self.temperature:g} is the highest step", severity="warning")
                return
            self.temperature = higher[0]
        self._start("samples" if self.mode in ("animate", "recon", "interpolate") else None)

    def _toggle(self, mode: str, op: str) -> None:
        if self._refuse(op):
            return
        self.interp_step = INTERP_STEPS // 2 if mode == "interpolate" else 0
        self._start("samples" if self.mode == mode and mode != "animate" else mode)

    def action_interpolate(self) -> None:
        self._toggle("interpolate", "interpolate")

    def action_reconstruct(self) -> None:
        self._toggle("recon", "recon")

    def action_codes(self) -> None:
        self._toggle("codes", "codes")

    def action_animate(self) -> None:
        if self.mode == "animate" and self._busy_gen is not None:
            self._stop_animation()
            return
        self._toggle("animate", "progress")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Only keys that do something for this model and mode show (in the footer and in `?`);
        pressing one of the others says why (``on_key``)."""
        if action == "mean":  # one of the two e bindings, by what e would switch to
            return self.has_mean and bool(parameters[0]) != self.mean
        if action in ("page", "zoom"):
            grids = self.query("#main").results(ImageGrid)
            main = next(grids, None)
            if main is None:
                return False
            return main.paged if action == "page" else main.count >= 2
        return self.refusal(action, parameters) is None

    def refusal(self, action: str, parameters: tuple[object, ...] = ()) -> str | None:
        """Why ``action`` does nothing for this model and mode now (None: it does something)."""
        from_tests = self.mode in ("interpolate", "recon")  # these start from test images
        if action == "digit":
            reason = self.why_not("class")
            if reason is None and parameters and int(parameters[0]) >= self.num_classes:
                k = int(parameters[0])
                return (f"class {k} does not exist: this model has {self.num_classes} classes "
                        f"(0–{self.num_classes - 1})")
            return reason
        if action == "mix":
            if from_tests and self.model is not None and self.num_classes:
                return f"{self.mode} starts from test images: mixtures steer drawn samples (space draws them)"
            return self.why_not("mix")
        if action == "temperature":
            if from_tests and self.has_temperature:
                return f"{self.mode} starts from test images: the temperature steers drawn samples (space draws them)"
            return self.why_not("temperature")
        if action == "arrow":
            if self.mode == "interpolate" or (self.mix is not None and self.mode == "samples"):
                return None
            return "←/→ move the mixture weight (m) or walk an interpolation (i)"
        op = {"interpolate": "interpolate", "reconstruct": "recon", "codes": "codes", "animate": "progress"}.get(action)
        return self.why_not(op) if op is not None else None

    def on_key(self, event: events.Key) -> None:
        # Any key stops an animation; keys with an action then do it, esc does nothing more.
        if self.animating and event.key not in ("a",):
            self._stop_animation()
            if event.key == "escape":
                event.stop()
                event.prevent_default()
                return
        # A key hidden for this model or mode (check_action False) would do nothing: say why.
        reason = self._hidden_key_reason(event.key)
        if reason is not None:
            event.stop()
            event.prevent_default()
            if self.awaiting_mix:
                self.awaiting_mix = False
            title = None if self.model is None else "Not in this mode" if self._mode_refusal(event.key) else "Not for this model"
            self.notify(reason, title=title, severity="warning", timeout=4)

    def _mode_refusal(self, key: str) -> bool:
        """Whether ``key`` would do something in the samples mode (it is refused for this mode only)."""
        mode = self.mode
        try:
            self.mode = "samples"
            return self._hidden_key_reason(key) is None
        finally:
            self.mode = mode

    def _hidden_key_reason(self, key: str) -> str | None:
        """The reason a key of this screen is hidden now, if every binding of it is hidden."""
        reasons = []
        for binding in self.BINDINGS:
            if key not in binding.key.split(","):
                continue
            _, name, params = parse(binding.action)
            if name == "mean" and self.model is not None and not self.has_mean:
                return self._no_mean()
            if name in ("mean", "page", "zoom"):
                return None  # hidden for their own reasons (e is the other mean binding's too)
            reason = self.refusal(name, params)
            if reason is None:
                return None
            reasons.append(reason)
        return reasons[0] if reasons else None

    def action_mean(self, mean: bool) -> None:
        if not self.has_mean:
            self.notify(self._no_mean(), title="Not for this model", severity="warning", timeout=4)
            return
        self.mean = mean
        self.refresh_bindings()
        self._start("samples")

    def _no_mean(self) -> str:
        return (f"{self.model_name} has no decoder mean: its samples are drawn pixel by pixel (vae, cvae, vqvae, "
                "vqvae_prior have one)")

    def action_page(self, delta: int) -> None:
        main = self.query_one("#main", ImageGrid)
        if not main.page(delta):
            self.notify("no more images that way" if main.paged else "every image is on screen", severity="warning")
        self.refresh_bindings()

    def action_zoom(self) -> None:
        self.query_one("#main", ImageGrid).toggle_zoom()
        self.refresh_bindings()

    # -- resizing -------------------------------------------------------------------------------------
    def on_resize(self) -> None:
        # Redraw once the size has settled (a drag sends many resizes), so the grid fills the new size.
        if self._resize_timer is not None:
            self._resize_timer.stop()
        self._resize_timer = self.set_timer(0.15, self._relayout)
        self.call_after_refresh(self.refresh_bindings)

    def _relayout(self) -> None:
        """Draw the samples again (same seed) when the grid that fits now differs from the one shown."""
        self._resize_timer = None
        if self.model is None or self.mode != "samples" or self.n is not None or self.last is None:
            return
        if self.busy:
            self._relayout_pending = True
            return
        n, nrow = self._layout()
        if (n, nrow) != (len(self.last), self.last_nrow):
            self._start()

    def action_write(self) -> None:
        if self.last is None or self.run is None:
            self.notify("nothing drawn yet", severity="warning")
            return
        from workbench.images import save_grid

        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = self.run.path / "samples"
        path = folder / f"session-{stamp}.png"
        k = 1
        while path.exists():
            k += 1
            path = folder / f"session-{stamp}-{k}.png"
        try:
            save_grid(self.last, path, nrow=self.last_nrow)
        except OSError as e:
            self.notify(f"cannot write {path}: {e.strerror or e}", title="Not saved", severity="error")
            return
        self.saved.append(path)
        self.notify(str(path), title="Saved")

    def action_back(self) -> None:
        if self._stop_animation():
            return
        if self.awaiting_mix:
            self.awaiting_mix = False
            self.notify("mix cancelled")
            return
        self.workers.cancel_group(self, "draw")
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
        else:
            self.app.exit()
