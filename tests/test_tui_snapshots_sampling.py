"""Snapshots (pytest-textual-snapshot) of the sampling session at 80x24, 100x30 and 160x48, on a
tiny binarised VAE trained once for the module (seeded: the same weights, the same draws), with
half-cell images and the draw timings fixed.

Update them after a deliberate change with ``pytest tests/test_tui_snapshots_sampling.py
--snapshot-update`` and look at the SVGs in tests/__snapshots__/ before committing."""
from __future__ import annotations

import pytest
from textual.app import App

from tests.conftest import offline_workspace, preset_text, train_tiny
from tests.tui_snapshot_helpers import quiet_screen, settle
from workbench.tui import settings
from workbench.tui.screens import sampling as sampling_screen
from workbench.tui.screens.sampling import SamplingScreen

VAE = preset_text('name = "vae"\narch = "mlp"\nhidden = 32\nlatent_dim = 4', "vae")


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    with offline_workspace(tmp_path_factory.mktemp("tui-sampling-snapshots")) as root:
        (root / "vae.toml").write_text(VAE)
        yield train_tiny(root / "vae.toml", root / "runs")


@pytest.fixture(autouse=True)
def fixed(monkeypatch):
    settings.use_image_protocol("halfcell")
    monkeypatch.setattr(sampling_screen, "_clock", lambda: 0.0)  # "in 0.00 s" on every machine
    yield
    settings.use_image_protocol("auto")


class SessionApp(App):
    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_mount(self) -> None:
        self.push_screen(SamplingScreen(self.run_dir, seed=0))


def drawn(pilot) -> bool:
    screen = pilot.app.screen
    return isinstance(screen, SamplingScreen) and screen.draws >= 1 and not screen.busy


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 48)])
def test_sampling_session(vae_run, snap_compare, size):
    """The decoder's mean (the default for a binarised VAE), as many whole 28x28 images as fit at
    the largest whole scale, paged with a note where they do not all fit; the footer keeps esc."""
    async def run_before(pilot):
        await settle(pilot, lambda: drawn(pilot))
        await quiet_screen(pilot)

    assert snap_compare(SessionApp(vae_run), terminal_size=size, run_before=run_before)
