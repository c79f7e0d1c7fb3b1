"""`?` and the footer list the keys a user can press, in the user's words: per screen, under
headings ("Jobs", "Curves", "List", "General"), never a Python class name nor a list widget's
internals; in the sampling session only the keys that do something for this model and mode
(issue 17's tmux walk: "JobTable" headings, DataTable's page keys)."""
from __future__ import annotations

import re
import time

import pytest

from tests.tui_fakes import FixedQueue, job_info, make_run
from workbench.tui.app import create_app
from workbench.tui.screens.detail import DetailScreen
from workbench.tui.screens.help import HelpScreen

pytestmark = pytest.mark.asyncio
CAMEL = re.compile(r"\b[A-Z][a-z0-9]+[A-Z]\w*")  # JobTable, DataTable, ListTable, CurvesPanel
INTERNALS = {"Page up", "Page down", "Top", "Bottom", "Home", "End", "Cursor left", "Cursor right",
             "Copy selected text", "Focus Next", "Focus Previous", "palette", "Select"}


async def wait_for(pilot, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await pilot.pause(0.05)


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
