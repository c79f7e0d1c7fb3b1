"""The sampling session's ``v`` on a bare VQ-VAE: the codebook statistics of test images
through the encoder, the same figures as ``genwb sample --mode codes``, and which images
they come from (issue 16, item 4)."""
from __future__ import annotations

import time

import pytest
from click.testing import CliRunner
from textual.app import App

from tests.conftest import offline_workspace, preset_text, train_tiny
from workbench.cli import main
from workbench.tui import settings
from workbench.tui.screens.sampling import SamplingScreen

VQVAE = 'name = "vqvae"\nnum_codes = 16\ncode_dim = 4\nchannels = 8\nres_channels = 4\nres_blocks = 1'
STEPS = ["train.max_steps=4", "train.val_every=4", "train.checkpoint_every=4", "sample.every=4"]


class SessionApp(App):
    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_mount(self) -> None:
        self.push_screen(SamplingScreen(self.run_dir, device="cpu"))


async def settle(pilot, screen, timeout=60.0):
    deadline = time.monotonic() + timeout
    await pilot.pause()
    while (screen.model is None and screen.error is None) or screen.busy:
        assert time.monotonic() < deadline, f"still busy: {screen._status}"
        await pilot.pause(0.02)
    await pilot.pause()


@pytest.mark.asyncio
async def test_v_shows_the_codes_of_test_images_as_genwb_sample_does(tmp_path):
    """Kills `v` counting uniformly random codes (it reported 121 of 128 used where the test
    images use 31): the app's usage figures equal `genwb sample --mode codes` on the same run,
    and the status says they come from test images."""
    settings.use_image_protocol("halfcell")
    try:
        with offline_workspace(tmp_path) as root:
            preset = root / "vqvae.toml"
            preset.write_text(preset_text(VQVAE, "vqvae"))
            run_dir = train_tiny(preset, root / "runs", STEPS)
            result = CliRunner().invoke(main, ["sample", str(run_dir), "--device", "cpu", "--mode", "codes",
                                               "--out", str(root / "codes.png")])
            assert result.exit_code == 0, result.output
            cli_note = result.stderr.strip().splitlines()[-1]
            cli_usage = cli_note.split("usage over", 1)[1]  # "N test images: U of K codes used, perplexity P"

            app = SessionApp(run_dir)
            async with app.run_test(size=(120, 40)) as pilot:
                screen = app.screen
                await settle(pilot, screen)
                await pilot.press("v")
                await settle(pilot, screen)
                assert screen.mode == "codes", screen._status
                status = screen._status
    finally:
        settings.use_image_protocol("auto")
    # The figures lead (the tmux walk at 80x24 cut them off the end of the line); then what is shown.
    assert status.startswith("usage over") and "codes of" in status and "test images" in status, status
    assert status.split("usage over", 1)[1].split(";")[0].strip() == cli_usage.strip(), (status, cli_note)
    used = int(cli_usage.split(":")[1].split(" of ")[0])
    assert used < 16  # a 4-step VQ-VAE on 60 test images does not use all 16 codes; random codes would
