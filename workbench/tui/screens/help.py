"""The `?` screen: every key of the screen below it (its own, its focused list's, the app's),
shown and hidden ones alike, as k9s and lazygit list theirs. Any of escape, q or ? closes it."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from workbench.tui.widgets.table import ListTable


def screen_keys(screen: Screen, app) -> list[tuple[str, str, str]]:
    """(keys, what it does, where) for each action bound on ``screen`` now, in the order Textual
    tries them: the focused widget first, then its containers, the screen, the app."""
    by_action: dict[tuple[int, str], list] = {}
    for _key, (node, binding, _enabled, _tooltip) in screen.active_bindings.items():
        if not binding.description or binding.system:
            continue
        entry = by_action.setdefault((id(node), binding.action), [[], binding.description, node])
        entry[0].append(app.get_key_display(binding) or binding.key)
    rows = []
    for keys, description, node in by_action.values():
        where = "app" if node is app else ("screen" if node is screen else type(node).__name__)
        rows.append((" ".join(dict.fromkeys(keys)), description, where))
    return rows


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 72; max-width: 100%; height: auto; max-height: 90%;
                            border: thick $accent; background: $surface; padding: 0 1; }
    HelpScreen #help-title { height: 1; text-style: bold; }
    HelpScreen ListTable { height: auto; max-height: 30; }
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
        table.add_columns("key", "does", "where")
        for row in self.keys:
            table.add_row(*row)
        table.focus()
