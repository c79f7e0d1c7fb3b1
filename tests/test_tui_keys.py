"""`?` and the footer list the keys a user can press, in the user's words: per screen, under
headings ("Jobs", "Curves", "List", "General"), never a Python class name nor a list widget's
internals; in the sampling session only the keys that do something for this model and mode
(issue 17's tmux walk: "JobTable" headings, DataTable's page keys, class keys offered for an
unconditional MADE, mix and T while interpolating)."""
from __future__ import annotations

import re

import pytest
from textual.app import App
from textual.binding import Binding

from tests.conftest import offline_workspace, preset_text, train_tiny
from tests.tui_fakes import FixedQueue, job_info, make_run, wait_for
from workbench.tui.app import create_app
from workbench.tui.screens.detail import DetailScreen
from workbench.tui.screens.help import HelpScreen
from workbench.tui.screens.sampling import SamplingScreen
from workbench.tui.widgets.footer import footer_bindings

pytestmark = [pytest.mark.asyncio, pytest.mark.usefixtures("halfcell")]
CAMEL = re.compile(r"\b[A-Z][a-z0-9]+[A-Z]\w*")  # JobTable, DataTable, ListTable, CurvesPanel
INTERNALS = {"Page up", "Page down", "Top", "Bottom", "Home", "End", "Cursor left", "Cursor right",
             "Copy selected text", "Focus Next", "Focus Previous", "palette", "Select"}
PRESETS = {
    "made": preset_text('name = "made"\nhidden = [32]', "made"),  # unconditional
    "cvae": preset_text('name = "cvae"\nconditional = true\narch = "mlp"\nhidden = 32\nlatent_dim = 4\niw_samples = 2',
                        "cvae"),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    with offline_workspace(tmp_path_factory.mktemp("tui-keys")) as root:
        out = {}
        for name, text in PRESETS.items():
            (root / f"{name}.toml").write_text(text)
            out[name] = train_tiny(root / f"{name}.toml", root / "runs", ["train.max_steps=4"])
        yield out


async def open_help(pilot) -> HelpScreen:
    await pilot.press("question_mark")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))
    help_screen = pilot.app.screen
    check_words(help_screen)
    return help_screen


def check_words(help_screen: HelpScreen) -> None:
    """No class name anywhere in the list, its title or its headings; no widget internals."""
    table = help_screen.query_one("#help-keys")
    cells = [str(c) for i in range(table.row_count) for c in table.get_row_at(i)]
    words = [help_screen.title_text, *cells, *(s for row in help_screen.keys for s in row)]
    assert not [w for w in words if CAMEL.search(w)], words
    assert not INTERNALS & {description for _, description, _ in help_screen.keys}, help_screen.keys


def has(help_screen, key: str, description: str, section: str) -> bool:
    return any(key in keys.split() and d == description and s == section for keys, d, s in help_screen.keys)


async def test_help_on_the_home_lists_the_keys_by_heading(tmp_path):
    """Bug caught: "JobTable" and "DataTable"'s page and scroll keys listed in `?`."""
    run = make_run(tmp_path / "runs", "tiny-a", state="running")
    app = create_app(tmp_path / "runs", queue=FixedQueue([job_info("j1", "running", run_dir=str(run))]),
                     image_protocol="halfcell")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        shown = await open_help(pilot)
        assert shown.title_text == "the jobs screen"
        for key, description, section in [("c", "Cancel", "Jobs"), ("R", "Resume", "Jobs"), ("x", "Remove", "Jobs"),
                                          ("l", "Log scale", "Curves"), ("<", "Cursor ←", "Curves"),
                                          ("j", "Down", "List"), ("↓", "Down", "List"), ("G", "Last", "List"),
                                          ("q", "Quit", "General"), ("?", "This list of keys", "General")]:
            assert has(shown, key, description, section), (key, description, shown.keys)
        sections = list(dict.fromkeys(s for *_, s in shown.keys))
        assert sections == ["Jobs", "Curves", "List", "General"]


async def test_help_scrolls_to_its_last_key_at_80x24(tmp_path):
    """Bug caught (tmux walk at 80x24): the list, taller than its box, was clipped rather than
    scrolled, so G put the cursor on a row nobody could see and the last keys were out of reach."""
    app = create_app(tmp_path / "runs", queue=FixedQueue([job_info("j1", "running")]), image_protocol="halfcell")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        shown = await open_help(pilot)
        table = shown.query_one("#help-keys")
        await pilot.press("G")
        await pilot.pause()
        assert table.cursor_row == table.row_count - 1
        box = shown.query_one("Vertical").region
        assert table.region.bottom <= box.bottom and table.max_scroll_y > 0 and table.scroll_y == table.max_scroll_y


async def test_help_on_the_detail_groups_tabs_and_samples(tmp_path):
    run = make_run(tmp_path / "runs", "tiny-a")
    app = create_app(tmp_path / "runs", queue=FixedQueue([]), image_protocol="halfcell")
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(DetailScreen(run))
        await pilot.pause()
        shown = await open_help(pilot)
        assert shown.title_text == "the run detail"
        for key, description, section in [("s", "Sample", "Run"), ("o", "Overlay marked", "Run"), ("3", "Log", "Tabs"),
                                          ("[", "Earlier", "Samples"), ("m", "Smooth", "Curves"),
                                          ("esc", "Back", "General")]:
            assert has(shown, key, description, section), (key, description, shown.keys)


class SessionApp(App):
    BINDINGS = [Binding("question_mark", "keys", "Keys", key_display="?")]

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_mount(self) -> None:
        self.push_screen(SamplingScreen(self.run_dir))

    def action_keys(self) -> None:  # the app's `?`, as GenwbApp binds it
        from workbench.tui.screens.help import screen_keys

        self.push_screen(HelpScreen(self.screen.HELP_TITLE, screen_keys(self.screen, self)))


async def settle(pilot, screen, timeout=60.0):
    await wait_for(pilot, lambda: (screen.model is not None or screen.error is not None) and not screen.busy, timeout)
    await pilot.pause()


def footer_labels(screen) -> set[str]:
    return {binding.description for binding, _enabled, _tip in footer_bindings(screen)}


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_sampling_keys_of_an_unconditional_made(trained):
    """Bug caught: class and mix keys, e (mean/sample), i, o and v shown for an unconditional
    MADE, which has no classes, no decoder mean, no encoder and no codebook."""
    app = SessionApp(trained["made"])
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await settle(pilot, screen)
        assert screen.error is None
        gone = {"Mix", "Mean", "Sample", "Interpolate", "Recon", "Codes"}
        assert not gone & footer_labels(screen) and {"Draw again", "T−", "T+", "Animate"} <= footer_labels(screen)
        shown = await open_help(pilot)
        described = {d for _, d, _ in shown.keys}
        assert not (gone | {"Class"}) & described and {"Draw again", "T−", "Animate", "Save PNG"} <= described
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("3")  # a hidden key still says why it does nothing
        await wait_for(pilot, lambda: any("unconditional" in n for n in notes(app)))


async def test_sampling_keys_of_a_cvae_follow_the_mode(trained):
    """Bugs caught: `a` (animate) and `v` (codes) offered for a CVAE; mix and T kept in the
    interpolate and reconstruction modes, where they change nothing."""
    app = SessionApp(trained["cvae"])
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await settle(pilot, screen)
        assert screen.error is None and screen.mean  # a binarised CVAE shows the mean: e offers draws
        labels = footer_labels(screen)
        assert {"Mix", "T−", "T+", "Sample", "Interpolate", "Recon"} <= labels and not {"Animate", "Codes"} & labels
        await pilot.press("m", "7")  # a mixture: ←/→ move its weight
        await settle(pilot, screen)
        shown = await open_help(pilot)
        assert has(shown, "0-9", "Class", "Drawing") and has(shown, "i", "Interpolate", "Modes")
        assert has(shown, "←", "Mix weight − / path ←", "Drawing")
        await pilot.press("escape")
        for key, mode in (("i", "interpolate"), ("o", "recon")):
            await pilot.press(key)
            await settle(pilot, screen)
            assert screen.mode == mode
            labels = footer_labels(screen)
            assert not {"Mix", "T−", "T+"} & labels and "Draw again" in labels, (mode, labels)
            described = {d for _, d, _ in (await open_help(pilot)).keys}
            assert not {"Mix", "T−", "T+"} & described, (mode, described)
            walks = mode == "interpolate"  # ←/→ walk the path; in recon they would move nothing shown
            assert ("Mix weight − / path ←" in described) == walks, (mode, described)
            await pilot.press("escape")
            await pilot.pause()
        draws, temperature = screen.draws, screen.temperature
        await pilot.press("t")
        await wait_for(pilot, lambda: any("temperature steers drawn samples" in n for n in notes(app)))
        assert [n.title for n in app._notifications][-1] == "Not in this mode"  # the model has a temperature
        assert screen.draws == draws and screen.temperature == temperature and screen.mode == "recon"
