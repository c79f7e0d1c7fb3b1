"""Lists that move like a list in nvitop, k9s or less: j/k and the arrows move the cursor, g/Home
go to the first row and G/End to the last. Every list in the app is one of these: ``ListTable``
for tables, ``ListOptions`` for option lists; both take their keys from ``CURSOR_BINDINGS``."""
from __future__ import annotations

from textual.binding import Binding
from textual.widgets import DataTable, OptionList

#: The keys every list shares; a list names its own ``cursor_down``, ``cursor_up``,
#: ``cursor_first`` and ``cursor_last`` actions.
CURSOR_BINDINGS = [
    Binding("j", "cursor_down", "Down", show=False),
    Binding("k", "cursor_up", "Up", show=False),
    Binding("g,home", "cursor_first", "First", show=False),
    Binding("G,end", "cursor_last", "Last", show=False),
]


class ListTable(DataTable):
    BINDINGS = CURSOR_BINDINGS

    def action_cursor_first(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_cursor_last(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)


class ListOptions(OptionList):
    BINDINGS = CURSOR_BINDINGS

    def action_cursor_first(self) -> None:
        self.action_first()

    def action_cursor_last(self) -> None:
        self.action_last()
