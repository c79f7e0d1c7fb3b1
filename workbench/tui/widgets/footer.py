"""KeyFooter: Textual's footer with the keys a user must always find (back, quit, help) first,
so that a narrow terminal (80 columns) cuts the screen's other keys, never these."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

#: Actions kept at the front, in this order: leaving the screen, leaving the app, the key list.
ESSENTIAL = ("back", "app.pop_screen", "close", "app.quit", "quit", "app.keys", "keys")


def essential_rank(action: str) -> int:
    """0.. for an essential action (its place in ESSENTIAL), len(ESSENTIAL) for any other."""
    return ESSENTIAL.index(action) if action in ESSENTIAL else len(ESSENTIAL)


def footer_bindings(screen) -> list[tuple]:
    """(binding, enabled, tooltip) shown in the footer, one per action, essential actions first."""
    seen: dict[str, tuple] = {}
    for _node, binding, enabled, tooltip in screen.active_bindings.values():
        if binding.show and binding.action not in seen:
            seen[binding.action] = (binding, enabled, tooltip)
    return sorted(seen.values(), key=lambda item: essential_rank(item[0].action))  # stable: keeps the rest's order


class KeyFooter(Footer):
    """The same keys as Footer (without its binding groups), essential ones first."""

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        shown = footer_bindings(self.screen)
        self.styles.grid_size_columns = len(shown)
        for binding, enabled, tooltip in shown:
            yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description, binding.action,
                            disabled=not enabled, tooltip=tooltip).data_bind(compact=Footer.compact)
