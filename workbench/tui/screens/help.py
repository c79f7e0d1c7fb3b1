"""The `?` screen: the keys a user can press on the screen below it, now, grouped under headings
("Jobs", "Curves", "List", "General"), as k9s and lazygit list theirs. Hidden keys are listed
too; keys switched off for this model or mode (``check_action`` False) are not, and widget
internals are left out: a list's own Textual bindings (DataTable's page and scroll keys, which
j/k, g/G and the arrows cover) show only where the app binds the same action, its keys merged
in ("j ↓ Down"). Any of escape, q or ? closes it."""
from __future__ import annotations

import dataclasses
import functools
import re

from rich.text import Text
from textual.actions import parse
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Static

from workbench.tui.widgets.footer import ESSENTIAL
from workbench.tui.widgets.table import ListTable

GENERAL = "General"
LIST = "List"
CURVES = "Curves"
#: Better words for the app's and Textual's own key descriptions.
RENAMED = {"command_palette": "Command palette", "focus_next": "Next field", "focus_previous": "Previous field",
           "keys": "This list of keys"}
_NUMBERED = re.compile(r"^(.*\S)\s+(\d+)$")  # "Class 3": one row for the digits, "0-9 Class"


@functools.lru_cache(maxsize=None)
def _own_bindings_of(kind: type) -> dict[str, str]:
    own: dict[str, str] = {}
    for cls in reversed(kind.__mro__):
        if cls.__module__.startswith("textual."):
            continue
        for binding in cls.__dict__.get("BINDINGS", []):
            if isinstance(binding, Binding):
                own[binding.action] = binding.description
    return own


def _own_bindings(node) -> dict[str, str]:
    """{action: description} bound by the app's classes of ``node`` (not Textual's own classes)."""
    return _own_bindings_of(type(node))


def _own_actions(node) -> set[str]:
    return {parse(action)[1] for action in _own_bindings(node)}


def heading(screen: Screen) -> str:
    """The heading of a screen's own keys: its ``HELP_HEADING`` ("Jobs"), never a class name."""
    return getattr(screen, "HELP_HEADING", None) or "This screen"


def section_of(screen: Screen, node, app, binding: Binding) -> str | None:
    """The heading a binding is listed under, or None for a widget internal left out."""
    name = parse(binding.action)[1]
    if binding.action in ESSENTIAL or name in ("quit", "keys", "command_palette", "pop_screen"):
        return GENERAL
    if name in ("focus_next", "focus_previous"):
        return GENERAL if any(field.is_on_screen for field in screen.query(Input)) else None  # a form's fields
    if name.startswith("curves_"):
        return CURVES
    if node is app:
        return GENERAL
    if node is screen:
        if name not in _own_actions(screen):
            return None  # Textual's own screen keys (copy text)
        return getattr(screen, "HELP_SECTIONS", {}).get(name) or heading(screen)
    if name not in _own_actions(node):
        return None  # a widget's internals, unless the app binds the same action on it
    return getattr(node, "HELP_HEADING", None) or LIST


def _digits(keys: list[str]) -> str:
    """"0 1 2 3" -> "0-3"; anything else joined with spaces."""
    if len(keys) > 2 and all(k.isdigit() and len(k) == 1 for k in keys):
        values = sorted(int(k) for k in keys)
        if values == list(range(values[0], values[-1] + 1)):
            return f"{values[0]}-{values[-1]}"
    return " ".join(keys)


def screen_keys(screen: Screen, app) -> list[tuple[str, str, str]]:
    """(keys, what it does, heading) for each action a user can press on ``screen`` now, the
    screen's own headings first, then the curves, the focused list's, and the general keys."""
    by_action: dict[tuple, list] = {}
    active = [(key, node, binding) for key, (node, binding, _enabled, _tooltip) in screen.active_bindings.items()]
    # Keys hidden for the selected item only (the jobs screen's c, p, R on a job they do not fit)
    # are still the screen's keys: listed, at their place among the screen's.
    always = getattr(screen, "HELP_ALWAYS", ())
    bound = {key for key, _, _ in active}
    hidden = [(key, screen, dataclasses.replace(binding, key=key)) for binding in screen.BINDINGS if isinstance(binding, Binding)
              and parse(binding.action)[1] in always for key in binding.key.split(",") if key not in bound]
    first_screen = next((i for i, (_, node, _) in enumerate(active) if node is screen), len(active))
    active[first_screen:first_screen] = hidden
    for key, node, binding in active:
        section = section_of(screen, node, app, binding)
        if section is None or binding.system:
            continue
        _, name, args = parse(binding.action)
        # The app's own words for an action where Textual binds it too (DataTable's "Cursor down").
        own = _own_bindings(node) if node is not app else {}
        description = RENAMED.get(name) or own.get(binding.action) or binding.description
        if not description:
            continue
        merge = (section, name, args)
        numbered = _NUMBERED.match(description)
        if numbered is not None and numbered.group(2) in key:  # "Class 0" ... "Class 9": one row
            merge, description = (section, name), numbered.group(1)
        entry = by_action.setdefault(merge, [[], description, section])
        entry[0].append(app.get_key_display(binding) or binding.key)
    rows = [(_digits(list(dict.fromkeys(keys))), description, section) for keys, description, section in by_action.values()]
    fixed = [CURVES, LIST, GENERAL]
    order = [s for s in dict.fromkeys(section for *_, section in rows) if s not in fixed] + fixed
    return sorted(rows, key=lambda row: order.index(row[2]))  # stable: a section keeps Textual's order


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 72; max-width: 100%; height: auto; max-height: 90%;
                            border: thick $accent; background: $surface; padding: 0 1; }
    HelpScreen #help-title { height: 1; text-style: bold; }
    /* A table taller than its box is clipped, not scrolled: it gets the box's room itself. */
    HelpScreen ListTable { height: auto; max-height: 70vh; }
    HelpScreen #help-hint { height: 1; color: $text-muted; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close", show=False)]

    def __init__(self, title: str, keys: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.title_text, self.keys = title, keys

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Keys of {self.title_text}", id="help-title")
            yield ListTable(cursor_type="row", id="help-keys")
            yield Static("escape, q or ? closes this list", id="help-hint")

    def on_mount(self) -> None:
        table = self.query_one(ListTable)
        table.add_columns("key", "does")
        section = None
        for keys, description, where in self.keys:
            if where != section:
                section = where
                table.add_row(Text(where, style="bold underline"), "")
            table.add_row(keys, description)
        table.focus()
