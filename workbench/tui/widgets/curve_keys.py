"""The curve keys of a screen that shows a ``CurvesPanel`` (widgets/curves.py), mixed into the
screen: smoothing, log scale, the last N steps, and the step cursor. Light on purpose: the home
screen imports it at start-up, before any curve (and textual-plot) is loaded."""
from __future__ import annotations

from textual.binding import Binding

CURSOR = Binding.Group("Cursor")  # < and > show as one footer entry


class CurveKeys:
    """The curve keys of a screen that shows a ``CurvesPanel`` (mixed into the screen). The view
    settings (smoothing, log scale, last N) last for the session, on the app (``curve_prefs``):
    the curve of the next selected job, or of a detail opened from the home, starts with them."""

    @staticmethod
    def curve_bindings(show: bool) -> list[Binding]:
        return [
            Binding("l", "curves_log", "Log scale", show=show),
            Binding("m", "curves_smooth", "Smooth", show=show),
            Binding("L", "curves_zoom", "Last N", key_display="L", show=show),
            Binding("less_than_sign,comma", "curves_cursor(-1)", "Cursor ←", key_display="<", show=show, group=CURSOR),
            Binding("greater_than_sign,full_stop", "curves_cursor(1)", "Cursor →", key_display=">", show=show,
                    group=CURSOR),
        ]

    def _curve_panels(self) -> list:
        self.curves_shown()
        return list(self.query("CurvesPanel"))  # by name: importing it would load textual-plot

    def curves_shown(self) -> None:
        """Bring the curves into view (a screen with tabs switches to them)."""

    def _remember(self, **prefs) -> None:
        app = self.app
        if not hasattr(app, "curve_prefs"):
            app.curve_prefs = {}
        app.curve_prefs.update(prefs)

    def _change_panels(self, change, setting: str) -> None:
        """``change`` every curve panel shown, then keep the first one's ``setting`` for the session."""
        panels = self._curve_panels()
        for panel in panels:
            change(panel)
        if panels:
            self._remember(**{setting: getattr(panels[0], setting)})

    def action_curves_smooth(self) -> None:
        self._change_panels(lambda panel: panel.cycle_smoothing(), "smoothing")

    def action_curves_log(self) -> None:
        self._change_panels(lambda panel: setattr(panel, "log_scale", not panel.log_scale), "log_scale")

    def action_curves_zoom(self) -> None:
        self._change_panels(lambda panel: panel.cycle_zoom(), "zoom")

    def action_curves_cursor(self, delta: int) -> None:
        for panel in self._curve_panels():
            panel.move_cursor(delta)
