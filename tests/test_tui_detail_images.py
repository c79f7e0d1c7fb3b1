"""The detail screen's Samples tab draws by whole pixels, never below 1:1 (issue 17, item 2):
the sample grid pages when it does not fit, and the reconstruction pair fills its pane."""
from __future__ import annotations

import time

import pytest
import torch

from tests.tui_fakes import FixedQueue, job_info, make_run
from workbench.images import save_grid
from workbench.tui.app import create_app
from workbench.tui.widgets.image_grid import ImageGrid, arrange, cell_pixels, whole_scale

pytestmark = pytest.mark.asyncio


async def samples_tab(pilot, ready, timeout=60.0):
    await pilot.pause()
    await pilot.press("enter", "2")
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "the Samples tab did not show its images"
        await pilot.pause(0.05)
    await pilot.pause()


def app_with(tmp_path):
    run = make_run(tmp_path / "runs", "vq", model="vqvae", recon=True, steps=12)
    jobs = [job_info("j1", "done", step=12, run_dir=str(run))]
    return run, create_app(tmp_path / "runs", queue=FixedQueue(jobs), image_protocol="halfcell")


async def test_reconstruction_pair_fills_its_pane_at_a_whole_scale(tmp_path):
    """Catches the pair drawn as two long rows at the scale their width allows (a quarter of the
    pane, or shrunk below 1:1): laid out anew in pieces of pairs, it takes the largest whole scale
    of any such layout, and that scale fills the pane."""
    run, app = app_with(tmp_path)
    pairs = torch.rand(16, 1, 8, 8)  # 8 originals over 8 reconstructions: 73 x 19 pixels
    save_grid(pairs, run / "samples" / "recon-step-12.png", nrow=8)
    async with app.run_test(size=(160, 48)) as pilot:
        grid = None

        def ready():
            nonlocal grid
            grid = next(iter(app.screen.query("#recon-image").results(ImageGrid)), None)
            return grid is not None and grid.shown is not None and grid.count == 16

        await samples_tab(pilot, ready)
        cw, ch = cell_pixels(grid.protocol)
        width, height = grid.content_size.width * cw, grid.content_size.height * ch
        best = max(whole_scale(cols * 9 + 1, len(arrange(16, 8, cols, band=2)) * 9 + 1, width, height)
                   for cols in range(1, 9))
        assert grid.scale == best >= 2 and grid.note is None  # all 16 at once
        assert whole_scale(73, 19, width, height) < best  # the two long rows alone would be smaller
        shown_w, shown_h = grid.shown.size
        assert shown_w * 2 > width and shown_h * 2 > height  # more than half the pane each way
        # each piece keeps an original above its reconstruction: under image 0 is image 8
        import numpy as np

        picture, k = np.asarray(grid.shown)[..., 0], grid.scale
        top, left = np.argwhere(picture == 128)[0]  # the grid's outer line
        below = picture[top + 10 * k: top + 18 * k: k, left + k: left + 9 * k: k]
        assert np.array_equal(below, (pairs[8, 0] * 255).round().byte().numpy())


async def test_sample_grid_pages_with_pgdn_and_zooms_with_z(tmp_path):
    """Catches a detail screen that shrinks a 117-pixel grid into a 60-pixel pane, or whose
    page keys do not reach its grid."""
    run, app = app_with(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        grid = None

        def ready():
            nonlocal grid
            grid = next(iter(app.screen.query("#samples-image").results(ImageGrid)), None)
            return grid is not None and grid.shown is not None

        await samples_tab(pilot, ready)
        first = grid.shown_indices
        assert grid.scale >= 1 and grid.paged and 0 < len(first) < 16 and first[0] == 0
        await pilot.press("pagedown")
        await pilot.pause()
        assert grid.shown_indices[0] == len(first) and "pgup/pgdn" in grid.note
        await pilot.press("z")
        await pilot.pause()
        assert grid.shown_indices == [len(first)] and grid.scale >= 1
        await pilot.press("z")
        await pilot.pause()
        assert len(grid.shown_indices) == len(first)


async def test_footer_shows_every_samples_key_at_160_columns(tmp_path):
    """Bug caught (tmux walk, 160x48): on the Samples tab the footer cut `pgdn Page+` and
    `z Zoom`, the keys of the grid on screen: pairs such as < >, [ ] and pgup pgdn took two
    entries each, and every entry its roomy padding."""
    from workbench.tui.widgets.footer import KeyFooter

    run, app = app_with(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        grid = None

        def ready():
            nonlocal grid
            grid = next(iter(app.screen.query("#samples-image").results(ImageGrid)), None)
            return grid is not None and grid.shown is not None and grid.paged

        await samples_tab(pilot, ready)
        await pilot.pause()
        footer = app.screen.query_one(KeyFooter)
        keys = [k for k in footer.children if k.region.width]
        visible = {k.key_display for k in keys if k.region.right <= 160}
        assert {"esc", "q", "?", "pgup pgdn", "z", "[ ]", "s", "e"} <= visible
        assert "< >" not in visible  # the curve keys show on the Curves tab (tests/test_tui_views.py)
