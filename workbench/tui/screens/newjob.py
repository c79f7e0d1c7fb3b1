"""The new-job form: a preset (from a list that shows each one's path under its presets folder and
its first comment line), its values as editable ``section.key = value`` fields (changed ones
become --set overrides), any other key of the config schema or of the model's hyper-parameters
(added from a completing input), the device, and optionally a job to wait for.

The whole config is validated with ``workbench.config.parse_config`` before it is submitted;
the first problem shows as one line under the form, and nothing is queued until it is fixed.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from pathlib import Path

from rich.text import Text

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from workbench.config import SECTION_TYPES, toml_value
from workbench.errors import UserError
from workbench.jobs import FINISHED
from workbench.tui.widgets.footer import KeyFooter
from workbench.tui.widgets.table import ListOptions

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


def preset_label(path: Path) -> str:
    """The preset's path under its ``presets`` folder (``made.toml``, ``paper/made_mnist.toml``)."""
    parts = Path(path).parts
    if "presets" in parts:
        at = len(parts) - 1 - parts[::-1].index("presets")
        return "/".join(parts[at + 1:])
    return Path(path).name


def preset_description(text: str) -> str:
    """The preset's first comment line; a sentence that runs on to the next line is cut at its
    last colon, or marked with an ellipsis."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#") and line.lstrip("# ").strip():
            line = line.lstrip("#").strip()
            if line.endswith((".", ")")) and line.count("(") == line.count(")"):
                return line
            if ": " in line:
                return line[:line.rindex(": ")]
            return line.rstrip(",;") + "…"
        if line:
            break
    return ""


def schema_keys() -> dict[str, str]:
    """``section.key`` -> its default, as TOML, for every key of the config schema but the model's
    own hyper-parameters (those depend on the model: ``model_keys``)."""
    keys = {}
    for section, cls in SECTION_TYPES.items():
        for f in dataclasses.fields(cls):
            if f.name == "hparams":
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
            keys[f"{section}.{f.name}"] = toml_value(default) if default is not None else ""
    return keys


def model_keys(name: str) -> dict[str, str]:
    """``model.<hyper-parameter>`` -> its default for the model ``name`` (imports the models: call it in a thread)."""
    import models

    try:
        allowed = models.hyperparameters(name)
    except ValueError:
        return {}
    out = {}
    for key, default in allowed.items():
        try:
            out[f"model.{key}"] = "" if default is None else toml_value(list(default) if isinstance(default, tuple) else default)
        except TypeError:
            out[f"model.{key}"] = ""
    return out


def parse_addition(text: str, known: dict[str, str]) -> tuple[str, str]:
    """``("section.key", "value")`` from ``section.key = value`` (or ``section.key`` alone: its
    default); a UserError naming the nearest key for an unknown one."""
    key, _, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if key not in known:
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else "; → completes a key of the schema"
        raise UserError(f"unknown key {key!r}{hint}" if key else "type section.key = value, e.g. run.threads = 1")
    return key, value if value else known[key]


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

    HELP_TITLE = "the new-job form"
    HELP_HEADING = "New job"

    DEFAULT_CSS = """
    NewJobScreen { align: center middle; }
    NewJobScreen > Vertical { width: 110; max-width: 100%; height: 90%; border: thick $primary;
                              background: $surface; padding: 0 1; }
    NewJobScreen .row { height: auto; }
    NewJobScreen .row > Label { width: auto; padding: 0 1 0 0; }
    NewJobScreen #fields .row > Label { width: 24; padding: 0 1 0 0; }
    NewJobScreen #add-row > Label { width: 24; padding: 0 1 0 0; }
    NewJobScreen .row > Input { width: 1fr; }
    NewJobScreen .row > Select { width: 1fr; }
    NewJobScreen #preset { height: auto; max-height: 35%; min-height: 3; border: round $secondary;
                           text-wrap: nowrap; text-overflow: ellipsis; }
    NewJobScreen #preset:focus { border: round $accent; }
    NewJobScreen #fields { height: 1fr; min-height: 3; border: round $secondary; }
    NewJobScreen #device-row { margin: 0 0 1 0; }
    NewJobScreen #bottom { height: auto; margin: 1 0 0 0; }
    NewJobScreen #error { color: $error; width: 1fr; height: auto; }
    NewJobScreen #buttons { width: auto; height: 1; }
    NewJobScreen #buttons > Button { margin: 0 0 0 2; }
    """
    BINDINGS = [Binding("escape", "close", "Cancel"), Binding("ctrl+s", "submit", "Submit")]

    def __init__(self) -> None:
        super().__init__()
        self.presets: list[Path] = []
        self.original: dict[str, str] = {}
        self.known: dict[str, str] = schema_keys()  # the keys the add-key input completes and accepts
        self.preset: Path | None = None
        self.preset_text = ""
        self.drafts: dict[Path, list[tuple[str, str]]] = {}  # fields as left, per preset visited
        self._submitting = False

    def compose(self) -> ComposeResult:
        self.presets = find_presets(self.app.runs_dir)
        labels = [preset_label(p) for p in self.presets]
        # Names in one column, as wide as the longest up to a third of the screen (paper/ ones are long).
        width = min(max((len(label) for label in labels), default=0), max(16, self.app.size.width // 3)) + 2
        options = []
        for path, label in zip(self.presets, labels):
            try:
                about = preset_description(path.read_text())
            except OSError:
                about = ""
            prompt = Text(label.ljust(width) if len(label) < width else label + "  ", no_wrap=True, overflow="ellipsis")
            if labels.count(label) > 1:  # the same name in two presets folders: say whose
                prompt.append(f"({path.parent}) ", style="italic")
            prompt.append(about, style="dim")
            options.append(Option(prompt, id=str(path)))
        jobs = [(f"{j.id} {j.name} ({j.state})", j.id) for j in self.app.jobs if j.state not in FINISHED]
        with Vertical():
            yield Static("[b]New job[/b]  j/k ↑/↓ preset · tab next field · ctrl+s submit · esc close", id="newjob-title")
            yield ListOptions(*options, id="preset")
            with Horizontal(classes="row", id="device-row"):
                yield Label("device")
                yield Select([("as the preset says", "preset")] + [(d, d) for d in self.app.devices],
                             value="preset", id="device", allow_blank=False, compact=True)
                yield Label(" after job")
                yield Select(jobs, prompt="start at once", id="after", allow_blank=True, compact=True)
            with Horizontal(classes="row", id="add-row"):
                yield Label("add key (→ completes)")
                yield Input(placeholder="section.key = value, e.g. run.threads = 1", id="add-key", compact=True,
                            suggester=SuggestFromList(list(self.known), case_sensitive=False))
            # The fields are reached by tab one by one; the scrolling box itself never takes the focus.
            yield VerticalScroll(id="fields", can_focus=False)
            with Horizontal(id="bottom"):
                yield Static("", id="error")
                with Horizontal(id="buttons"):
                    yield Button("Submit", variant="primary", id="submit", compact=True)
                    yield Button("Cancel", id="cancel", compact=True)
        yield KeyFooter()

    def on_mount(self) -> None:
        if not self.presets:
            self.query_one("#error", Static).update(
                f"no presets found in ./presets, beside {self.app.runs_dir} or in {PROJECT}; run genwb from the project folder")
        self.query_one("#preset", OptionList).focus()

    def choose(self, preset: Path | str) -> None:
        """Highlight ``preset`` in the list (which loads its fields)."""
        self.query_one("#preset", OptionList).highlighted = [str(p) for p in self.presets].index(str(preset))

    async def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "preset" and event.option.id != str(self.preset):
            await self.load_preset(Path(event.option.id))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id == "preset":  # enter on a preset: on to its settings
            self.focus_next()

    async def load_preset(self, path: Path) -> None:
        """Show ``path``'s fields; edits made to the preset shown before are kept for a return to it."""
        fields = self.query_one("#fields", VerticalScroll)
        if self.preset is not None:
            self.drafts[self.preset] = [(f.name, f.value) for f in fields.query(Input).results(Input)]
        await fields.remove_children()
        self.original, self.preset = {}, path
        error = self.query_one("#error", Static)
        try:
            self.preset_text = path.read_text()
            pairs = preset_fields(self.preset_text)
        except (OSError, tomllib.TOMLDecodeError) as e:
            error.update(f"{preset_label(path)}: {e}")
            return
        error.update("")
        self.original = dict(pairs)
        shown = self.drafts.get(path, pairs)
        await fields.mount_all([self._row(key, value) for key, value in shown])
        self._title_fields()
        self.known = schema_keys()
        self._set_suggestions()
        model = tomllib.loads(self.preset_text).get("model", {}).get("name")
        if isinstance(model, str):
            self._load_model_keys(model, path)

    @staticmethod
    def _row(key: str, value: str) -> Horizontal:
        return Horizontal(Label(key), Input(value, id=f"field-{key.replace('.', '--')}", name=key, compact=True),
                          classes="row")

    def _set_suggestions(self) -> None:
        self.query_one("#add-key", Input).suggester = SuggestFromList(list(self.known), case_sensitive=False)

    @work(thread=True, exit_on_error=False, group="model-keys", exclusive=True)
    def _load_model_keys(self, model: str, path: Path) -> None:
        """The model's hyper-parameters, read off the UI thread (the model registry imports torch)."""
        keys = model_keys(model)
        self.app.call_from_thread(self._got_model_keys, keys, path)

    def _got_model_keys(self, keys: dict[str, str], path: Path) -> None:
        if path == self.preset:
            self.known.update(keys)
            self._set_suggestions()

    async def add_key(self, text: str) -> None:
        """Add (or focus) the field ``section.key = value`` typed into the add-key input."""
        error = self.query_one("#error", Static)
        if self.preset is None:
            error.update("choose a preset first")
            return
        try:
            key, value = parse_addition(text, self.known)
        except UserError as e:
            error.update(str(e))
            return
        error.update("")
        fields = self.query_one("#fields", VerticalScroll)
        existing = [f for f in fields.query(Input).results(Input) if f.name == key]
        if existing:
            field = existing[0]
            if "=" in text:
                field.value = value
        else:
            await fields.mount(self._row(key, value))
            field = [f for f in fields.query(Input).results(Input) if f.name == key][0]
        self.query_one("#add-key", Input).value = ""
        field.scroll_visible()
        self._title_fields()

    def _title_fields(self) -> None:
        changed = len(self.overrides())
        self.query_one("#fields", VerticalScroll).border_title = (
            f"{preset_label(self.preset)} · {len(self.original)} values" + (f", {changed} changed" if changed else ""))

    def overrides(self) -> list[str]:
        """``section.key=value`` for every field changed from the preset (added ones included)."""
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

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "add-key":
            await self.add_key(event.value)
        else:
            self.action_submit()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        error = self.query_one("#error", Static)
        if self.preset is None:
            error.update("choose a preset first")
            return
        if self._submitting:
            return
        device = self.query_one("#device", Select).value
        after = self.query_one("#after", Select).value
        self._submitting = True
        error.update("checking the config and the data…")
        self._submit(str(self.preset), self.overrides(), None if after is Select.NULL else after,
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
        self.app.notify(f"queued {job_id} from {preset_label(Path(preset))}" + (f" after {after}" if after else ""))
        self.app.refresh_jobs(force=True)
        self.dismiss(job_id)
