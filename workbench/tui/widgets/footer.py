"""KeyFooter: Textual's footer with the keys a user must always find (back, quit, help) first,
so that a narrow terminal (80 columns) cuts the screen's other keys, never these. Bindings that
share a ``Binding.Group`` show as one entry ("< > Cursor"), and the footer packs its keys tighter
(Textual's compact style) when they would not fit otherwise."""
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


def footer_entries(screen, key_display) -> list[tuple[str, str, str, str, bool, str]]:
    """(key, key display, description, action, enabled, tooltip) per footer entry: the bindings of
    one ``Binding.Group`` merged into one entry, at the place of the first of them."""
    entries: list[list] = []
    groups: dict[str, list] = {}
    for binding, enabled, tooltip in footer_bindings(screen):
        shown = key_display(binding) or binding.key
        if binding.group is not None and binding.group.description in groups:
            entry = groups[binding.group.description]
            entry[1] += f" {shown}"
            entry[4] = entry[4] or enabled
            continue
        entry = [binding.key, shown, binding.group.description if binding.group else binding.description,
                 binding.action, enabled, tooltip]
        if binding.group is not None:
            groups[binding.group.description] = entry
        entries.append(entry)
    return [tuple(e) for e in entries]


def footer_width(entries, compact: bool) -> int:
    """Cells the entries take in a Footer: " k desc " each, or "k desc" and a margin when compact."""
    return sum(len(display) + len(description) + (2 if compact else 3) for _k, display, description, *_ in entries)


class KeyFooter(Footer):
    """The same keys as Footer (without its binding groups), essential ones first."""

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        entries = footer_entries(self.screen, self.app.get_key_display)
        # Compact only when the roomy style would cut keys: the screen's width, as the footer spans it.
        self.compact = footer_width(entries, False) > self.screen.size.width
        self.styles.grid_size_columns = len(entries)
        for key, display, description, action, enabled, tooltip in entries:
            yield FooterKey(key, display, description, action,
                            disabled=not enabled, tooltip=tooltip).data_bind(compact=Footer.compact)

    async def on_resize(self) -> None:
        if self._bindings_ready and self.compact != (
                footer_width(footer_entries(self.screen, self.app.get_key_display), False) > self.screen.size.width):
            await self.recompose()
