"""The new-job form: a preset, its values as editable ``section.key = value`` fields (changed
ones become --set overrides), the device, and optionally a job to wait for.

The whole config is validated with ``workbench.config.parse_config`` before it is submitted;
the first problem shows as one line under the form, and nothing is queued until it is fixed.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from workbench.config import toml_value
from workbench.errors import UserError
from workbench.jobs import FINISHED
from workbench.tui.widgets.footer import KeyFooter

# The checkout genwb runs from (``pip install -e .``): its presets are offered wherever genwb starts.
PROJECT = Path(__file__).resolve().parents[3]


def find_presets(runs_dir: Path, cwd: Path | None = None) -> list[Path]:
    """Preset files in ./presets, ./presets/paper, the same folders beside the runs folder, and
    those of the checkout genwb runs from."""
    cwd = Path.cwd() if cwd is None else cwd
    seen, found = set(), []
    for base in (cwd, Path(runs_dir).resolve().parent, PROJECT):
        for folder in (base / "presets", base / "presets" / "paper"):
            for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
                if path.resolve() not in seen:
                    seen.add(path.resolve())
                    found.append(path)
    return found


def preset_fields(text: str) -> list[tuple[str, str]]:
    """``("section.key", "value")`` for each value of a preset's tables."""
    raw = tomllib.loads(text)
    return [(f"{section}.{key}", toml_value(value))
            for section, table in raw.items() if isinstance(table, dict)
            for key, value in table.items() if not isinstance(value, dict)]


def device_choices() -> list[str]:
    """auto, cpu and each CUDA device (this imports torch: the app calls it in a thread at start)."""
    choices = ["auto", "cpu"]
    try:
        import torch

        choices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:  # no torch build with CUDA: CPU only
        pass
    return choices


def clean_error(message: str, preset: str) -> str:
    """A config error as one clean line: the preset by its file name, ``[model]: num_masks`` as
    ``model.num_masks``, no empty fields (``made.toml: : ...``)."""
    line = (message.strip().splitlines() or ["invalid"])[0]
    line = line.replace(str(preset), Path(preset).name)
    line = re.sub(r"\[([\w.]+)\]: (\w+)", r"\1.\2", line)
    parts = [p for p in (part.strip() for part in line.split(": ")) if p]
    return ": ".join(parts) or "invalid"


class NewJobScreen(ModalScreen[str | None]):
    """Dismissed with the new job's id, or None."""

    DEFAULT_CSS = """
    NewJobScreen { align: center middle; }
    NewJobScreen > Vertical { width: 96; max-width: 100%; height: 90%; border: thick $primary;
                              background: $surface; padding: 0 1; }
    NewJobScreen .row { height: auto; }
    NewJobScreen .row > Label { width: 28; padding: 1 1 0 0; }
    NewJobScreen #fields .row > Label { padding: 0 1 0 0; }
    NewJobScreen .row > Input { width: 1fr; }
    NewJobScreen .row > Select { width: 1fr; }
    NewJobScreen #fields { height: 1fr; border: round $secondary; }
    NewJobScreen #error { color: $error; height: auto; }
    NewJobScreen #buttons { height: 3; align-horizontal: right; }
    """
    BINDINGS = [Binding("escape", "close", "Cancel"), Binding("ctrl+s", "submit", "Submit")]

    def __init__(self) -> None:
        super().__init__()
        self.presets: list[Path] = []
        self.original: dict[str, str] = {}
        self.preset_text = ""
        self._submitting = False

    def compose(self) -> ComposeResult:
        self.presets = find_presets(self.app.runs_dir)
        cwd = Path.cwd()
        options = [(str(p.relative_to(cwd)) if p.is_relative_to(cwd) else str(p), str(p)) for p in self.presets]
        jobs = [(f"{j.id} {j.name} ({j.state})", j.id) for j in self.app.jobs if j.state not in FINISHED]
        with Vertical():
            yield Static("[b]New job[/b]  tab moves between fields · ctrl+s submits · esc closes")
            with Horizontal(classes="row"):
                yield Label("preset")
                yield Select(options, prompt="choose a preset", id="preset", allow_blank=True)
            with Horizontal(classes="row"):
                yield Label("device")
                yield Select([("as the preset says", "preset")] + [(d, d) for d in self.app.devices],
                             value="preset", id="device", allow_blank=False)
            with Horizontal(classes="row"):
                yield Label("after job (optional)")
                yield Select(jobs, prompt="start at once", id="after", allow_blank=True)
            yield VerticalScroll(id="fields")
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Submit", variant="primary", id="submit")
                yield Button("Cancel", id="cancel")
        yield KeyFooter()

    def on_mount(self) -> None:
        if not self.presets:
            self.query_one("#error", Static).update(
                f"no presets found in ./presets, beside {self.app.runs_dir} or in {PROJECT}; run genwb from the project folder")
        self.query_one("#preset", Select).focus()

    async def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "preset":
            return
        fields = self.query_one("#fields", VerticalScroll)
        await fields.remove_children()
        self.original = {}
        if event.value is Select.NULL:
            return
        try:
            self.preset_text = Path(event.value).read_text()
            pairs = preset_fields(self.preset_text)
        except (OSError, tomllib.TOMLDecodeError) as e:
            self.query_one("#error", Static).update(f"{event.value}: {e}")
            return
        self.query_one("#error", Static).update("")
        self.original = dict(pairs)
        rows = []
        for key, value in pairs:
            rows.append(Horizontal(Label(key), Input(value, id=f"field-{key.replace('.', '--')}", name=key, compact=True),
                                   classes="row"))
        await fields.mount_all(rows)

    def overrides(self) -> list[str]:
        """``section.key=value`` for every field changed from the preset."""
        out = []
        for field in self.query("#fields Input").results(Input):
            if self.original.get(field.name) != field.value.strip():
                out.append(f"{field.name}={field.value.strip()}")
        return out

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self.action_submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        error = self.query_one("#error", Static)
        preset = self.query_one("#preset", Select).value
        if preset is Select.NULL:
            error.update("choose a preset first")
            return
        if self._submitting:
            return
        device = self.query_one("#device", Select).value
        after = self.query_one("#after", Select).value
        self._submitting = True
        error.update("checking the config and the data…")
        self._submit(str(preset), self.overrides(), None if after is Select.NULL else after,
                     None if device == "preset" else device)

    @work(thread=True, exit_on_error=False, group="submit")
    def _submit(self, preset: str, overrides: list[str], after: str | None, device: str | None) -> None:
        """Validate and queue off the UI thread: the first config check imports torch and the
        queue looks for the data, which can take seconds."""
        from workbench.config import parse_config

        try:
            parse_config(self.preset_text, preset, overrides)
            job_id = self.app.queue.submit(preset, overrides, after=after, device=device)
        except UserError as e:
            self.app.call_from_thread(self._refused, clean_error(str(e), preset))
        except Exception as e:  # the queue refused: show it, keep the form
            self.app.call_from_thread(self._refused, f"{type(e).__name__}: {e}")
        else:
            self.app.call_from_thread(self._queued, job_id, preset, after)

    def _refused(self, message: str) -> None:
        self._submitting = False
        self.query_one("#error", Static).update(message)

    def _queued(self, job_id: str, preset: str, after: str | None) -> None:
        self._submitting = False
        self.app.notify(f"queued {job_id} from {Path(preset).name}" + (f" after {after}" if after else ""))
        self.app.refresh_jobs(force=True)
        self.dismiss(job_id)
