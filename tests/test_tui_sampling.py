"""The sampling session screen, the ImageGrid widget and the image-protocol setting.

Two tiny runs are trained once for the module (a class-conditional MADE and an unconditional
VAE); the screen runs in a minimal App with images forced to half-cell blocks."""
from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from textual.app import App
from textual.widgets import Static

from tests.conftest import offline_workspace, preset_text, train_tiny
from workbench import sampling
from workbench.errors import UserError
from workbench.tui import settings
from workbench.tui.screens.sampling import INTERP_STEPS, SamplingScreen
from workbench.tui.widgets.image_grid import HIGHLIGHT, ImageGrid, arrange, enlarge, split_grid, whole_scale

pytestmark = pytest.mark.usefixtures("halfcell")

# Two mask sets: the animation must end on the draw even when each image picks its own.
PRESETS = {
    "made": (preset_text('name = "made"\nconditional = true\nhidden = [32]\nnum_masks = 2', "made"), ["train.max_steps=6"]),
    "vae": (preset_text('name = "vae"\narch = "mlp"\nhidden = 32\nlatent_dim = 4\niw_samples = 2', "vae"), []),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    with offline_workspace(tmp_path_factory.mktemp("tui-sampling")) as root:
        made = {}
        for name, (text, overrides) in PRESETS.items():
            (root / f"{name}.toml").write_text(text)
            made[name] = train_tiny(root / f"{name}.toml", root / "runs", overrides)
        yield made


class SessionApp(App):
    def __init__(self, run_dir, **kwargs):
        super().__init__()
        self.run_dir, self.kwargs = run_dir, kwargs

    def on_mount(self) -> None:
        self.push_screen(SamplingScreen(self.run_dir, **self.kwargs))


async def settle(pilot, screen, timeout=30.0):
    """Wait until the model is loaded and no draw is under way."""
    deadline = time.monotonic() + timeout
    await pilot.pause()
    while (screen.model is None and screen.error is None) or screen.busy:
        assert time.monotonic() < deadline, f"still busy: {screen._status}"
        await pilot.pause(0.02)
    await pilot.pause()


@contextlib.asynccontextmanager
async def session(run_dir, **kwargs):
    """A SessionApp on ``run_dir`` once its model is loaded and the first draw is done: (app, pilot, screen)."""
    app = SessionApp(run_dir, **kwargs)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await settle(pilot, screen)
        yield app, pilot, screen


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


def shown_settings(screen) -> str:
    return str(screen.query_one("#settings", Static).render())


# -- the session ------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_class_mixture_and_temperature_keys_change_what_is_drawn(runs):
    async with session(runs["made"], seed=5) as (app, pilot, screen):
        assert screen.error is None and screen.draws == 1 and screen.checkpoint_step == 6
        model, n = screen.model, len(screen.last)
        assert n >= 4 and screen.last.shape[1:] == (1, 28, 28)
        assert torch.equal(screen.last, sampling.draw(model, n, seed=5))

        await pilot.press("3")
        await settle(pilot, screen)
        assert screen.label == 3 and "class 3 Dress" in shown_settings(screen)  # Fashion-MNIST's name
        assert torch.equal(screen.last, sampling.draw(model, n, label=3, seed=5))

        await pilot.press("m", "7")
        await settle(pilot, screen)
        assert screen.mix == (3, 7) and screen.weight == 0.5 and "mix 3 Dress×0.5 + 7 Sneaker×0.5" in shown_settings(screen)
        assert torch.equal(screen.last, sampling.draw(model, n, label=sampling.soft_label(10, {3: 0.5, 7: 0.5}), seed=5))

        await pilot.press("right")
        await settle(pilot, screen)
        assert screen.weight == pytest.approx(0.6)
        mixed = sampling.soft_label(10, {3: 0.4, 7: 0.6})
        assert torch.equal(screen.last, sampling.draw(model, n, label=mixed, seed=5))

        await pilot.press("t", "t", "t")
        await settle(pilot, screen)
        assert screen.temperature == pytest.approx(0.7) and "T 0.7" in shown_settings(screen)
        cold = sampling.draw(model, n, label=mixed, temperature=0.7, seed=5)
        assert torch.equal(screen.last, cold)
        assert not torch.equal(cold, sampling.draw(model, n, label=mixed, seed=5))

        await pilot.press("T")
        await settle(pilot, screen)
        assert screen.temperature == pytest.approx(0.8)

        await pilot.press("space")
        await settle(pilot, screen)
        assert screen.seed == 6 and "seed 6" in shown_settings(screen)
        assert torch.equal(screen.last, sampling.draw(model, n, label=mixed, temperature=0.8, seed=6))

        await pilot.press("m")  # m again leaves the mixture
        await settle(pilot, screen)
        assert screen.mix is None and torch.equal(screen.last, sampling.draw(model, n, label=3, temperature=0.8, seed=6))


@pytest.mark.asyncio
async def test_w_writes_the_grid_into_the_run_folder(runs):
    async with session(runs["made"], seed=1) as (app, pilot, screen):
        await pilot.press("w")
        await pilot.pause()
        [path] = screen.saved
        assert path.parent == runs["made"] / "samples" and path.name.startswith("session-") and path.suffix == ".png"
        assert str(path) in notes(app)
        with PILImage.open(path) as saved:
            shown = np.asarray(saved)
        from workbench.images import grid

        assert np.array_equal(shown, grid(screen.last, screen.last_nrow))


@pytest.mark.asyncio
async def test_a_animates_and_ends_on_the_plain_draw(runs):
    async with session(runs["made"], seed=2) as (app, pilot, screen):
        await pilot.press("4", "a")
        assert screen.mode == "animate"
        await settle(pilot, screen)
        assert screen.frames_shown >= 2 and "frames shown" in screen._status
        assert torch.equal(screen.last, sampling.draw(screen.model, len(screen.last), label=4, seed=2))


@pytest.mark.asyncio
async def test_any_key_stops_an_animation_and_esc_then_goes_back(runs, monkeypatch):
    real = sampling.progress

    def slow(*args, **kwargs):
        for frame in real(*args, **kwargs):
            time.sleep(0.01)
            yield frame

    monkeypatch.setattr(sampling, "progress", slow)
    async with session(runs["made"]) as (app, pilot, screen):
        await pilot.press("a")
        deadline = time.monotonic() + 20
        while screen.frames_shown < 1:
            assert time.monotonic() < deadline
            await pilot.pause(0.02)
        await pilot.press("escape")
        assert app.screen is screen and not screen.busy and "stopped" in screen._status
        frames = screen.frames_shown
        await pilot.pause(0.3)
        assert screen.frames_shown == frames  # no frame arrives after the stop
        await pilot.press("escape")
        assert app.screen is not screen


@pytest.mark.asyncio
async def test_keys_the_model_cannot_honour_say_why(runs):
    async with session(runs["made"]) as (app, pilot, screen):
        draws = screen.draws
        for key in ("i", "o", "v", "left"):
            await pilot.press(key)
        await settle(pilot, screen)
        said = notes(app)
        assert any("no encoder" in s for s in said) and any("needs an encoder" in s for s in said)
        assert any("no codebook" in s for s in said) and any("mixture weight" in s for s in said)
        assert screen.draws == draws and screen.mode == "samples"

    async with session(runs["vae"]) as (app, pilot, screen):
        for key in ("3", "m", "a"):
            await pilot.press(key)
        said = notes(app)
        assert sum("unconditional" in s for s in said) == 2 and any("animate" in s for s in said)
        assert screen.label is None and screen.mode == "samples"


@pytest.mark.asyncio
async def test_interpolation_walks_and_reconstructions_show_on_a_vae(runs):
    async with session(runs["vae"]) as (app, pilot, screen):
        await pilot.press("i")
        await settle(pilot, screen)
        assert screen.mode == "interpolate" and screen.last.shape == (INTERP_STEPS, 1, 28, 28)
        middle = screen.interp_step
        await pilot.press("right", "right")
        assert screen.interp_step == middle + 2 and f"{middle + 3}/{INTERP_STEPS}" in shown_settings(screen)
        main = screen.query_one("#main", ImageGrid)
        assert main.picture.size == (30, 30)  # one image, with its frame
        strip = screen.query_one("#strip", ImageGrid)
        assert strip.display and strip.picture.size[0] > 8 * 28
        framed = (np.asarray(strip.shown) == HIGHLIGHT).all(-1)  # the current step, framed
        columns = np.flatnonzero(framed.any(0))
        # the strip's page follows the current step (120 columns hold 4 of the 9 at 1x)
        shown, k = strip.shown_indices, strip.scale
        assert screen.interp_step in shown and k >= 1
        left = (strip.shown.width - (len(shown) * 29 + 1) * k) // 2
        assert framed.any() and columns.min() == left + shown.index(screen.interp_step) * 29 * k
        await pilot.press("o")
        await settle(pilot, screen)
        n = screen.last_nrow
        assert screen.mode == "recon" and screen.last.shape == (2 * n, 1, 28, 28)
        x, _ = sampling.test_images(screen.run, n, seed=screen.seed)
        assert torch.equal(screen.last[:n], x)
        await pilot.press("o")  # again: back to samples
        await settle(pilot, screen)
        assert screen.mode == "samples"


@pytest.mark.asyncio
async def test_a_run_without_a_checkpoint_says_so(tmp_path, runs):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(runs["vae"], bare)
    shutil.rmtree(bare / "checkpoints")
    async with session(bare) as (app, pilot, screen):
        assert "no checkpoint" in screen.error and any("no checkpoint" in s for s in notes(app))
        await pilot.press("space", "3", "w")  # nothing to draw: still alive
        assert app.screen is screen


# -- ImageGrid ----------------------------------------------------------------------------------------
def test_whole_scale_and_layout_helpers_never_shrink():
    """Catches a scale below 1 (the old nearest-neighbour shrink), a wrong re-wrap of the grid,
    and a PNG grid whose images are not found again."""
    assert whole_scale(28, 28, 100, 60) == 2
    assert whole_scale(29, 10, 29, 10) == 1
    assert whole_scale(100, 50, 40, 40) == 0  # does not fit: 0, never a fraction
    assert whole_scale(0, 5, 10, 10) == 0
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    big = np.asarray(enlarge(PILImage.fromarray(src), 4))
    assert np.array_equal(big, src.repeat(4, 0).repeat(4, 1))  # every pixel a 4x4 block
    assert arrange(5, 5, 2) == [[0, 1], [2, 3], [4]]
    # originals (0-3) over reconstructions (4-7), cut 2 wide: each piece keeps its pairs
    assert arrange(8, 4, 2, band=2) == [[0, 1], [4, 5], [2, 3], [6, 7]]
    # too low for a band's two rows: each original beside its reconstruction
    assert arrange(6, 3, 2, band=2, side=True) == [[0, 3, 1, 4], [2, 5]]
    from workbench.images import grid

    images = torch.rand(7, 1, 5, 4)
    tiles, per_row, line = split_grid(np.asarray(PILImage.fromarray(grid(images, 3)).convert("RGB")))
    assert per_row == 3 and tiles.shape == (7, 5, 4, 3) and line == (128, 128, 128)
    assert np.array_equal(tiles[6, ..., 0], (images[6, 0] * 255).round().byte().numpy())
    assert split_grid(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)) is None  # not a grid


class GridApp(App):
    def compose(self):
        yield ImageGrid(id="grid")


@pytest.mark.asyncio
async def test_image_grid_shows_pngs_by_whole_pixels_and_survives_bad_files(tmp_path):
    good = tmp_path / "good.png"
    PILImage.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(good)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:40])
    app = GridApp()
    async with app.run_test(size=(40, 12)) as pilot:
        grid = app.query_one(ImageGrid)
        assert grid.protocol == "halfcell"
        grid.update(good)
        await pilot.pause()
        # 40 x 12 cells = 40 x 24 half-cell pixels: 8 x 8 enlarges 3x to 24 x 24 = 24 x 12 cells
        assert grid.shown.size == (24, 24) and grid.query_one("#picture").size == (24, 12)
        src = np.asarray(PILImage.open(good).convert("RGB"))
        assert np.array_equal(np.asarray(grid.shown), src.repeat(3, 0).repeat(3, 1))
        for bad, said in ((corrupt, "cannot show corrupt.png"), (tmp_path / "missing.png", "no image at")):
            grid.update(bad)
            await pilot.pause()
            assert grid.picture is None and said in grid.message
            assert said in str(grid.query_one(".message", Static).render())
        grid.update(torch.rand(6, 1, 4, 4), nrow=3)
        await pilot.pause()
        assert grid.message is None and grid.picture.size == (16, 11)


@pytest.mark.asyncio
async def test_image_grid_pages_whole_tiles_and_never_draws_below_one_to_one():
    """Issue 17: images never below 1:1. Catches the old shrink (64 images of 8x8 squeezed into
    a 40x24-pixel pane), a scale that is not a whole factor, paging that repeats or skips
    images, a zoom that is not the largest whole factor, and a shrink instead of a crop."""
    app = GridApp()
    async with app.run_test(size=(40, 12)) as pilot:  # 40 x 24 half-cell pixels
        grid = app.query_one(ImageGrid)
        images = torch.rand(64, 1, 8, 8)
        grid.update(images, nrow=8)
        await pilot.pause()
        k, shown = grid.scale, grid.shown_indices
        assert k >= 1 and grid.paged and grid.pages == 8
        assert shown == list(range(8)) and grid.note.startswith("images 1-8 of 64 (page 1/8)")
        assert grid.note in str(grid.query_one(".note", Static).render())
        # the picture handed to textual-image: 4 x 2 whole tiles one pixel apart, times k, centred in whole cells
        width, height = 4 * 9 + 1, 2 * 9 + 1
        picture = np.asarray(grid.shown)
        assert picture.shape[1] - width * k in (0, 1) and picture.shape[0] - height * k in (0, 1)
        left, top = (picture.shape[1] - width * k) // 2, (picture.shape[0] - height * k) // 2
        for slot, i in ((0, 0), (5, 5)):
            r, q = divmod(slot, 4)
            y, x = top + (1 + r * 9) * k, left + (1 + q * 9) * k
            expected = (images[i, 0] * 255).round().byte().numpy().repeat(k, 0).repeat(k, 1)
            assert np.array_equal(picture[y: y + 8 * k, x: x + 8 * k, 0], expected)  # pixel for pixel
        assert grid.page(1)
        await pilot.pause()
        assert grid.shown_indices == list(range(8, 16)) and "images 9-16 of 64" in grid.note
        assert grid.page(-1) and not grid.page(-1) and grid.shown_indices == list(range(8))
        assert grid.toggle_zoom()
        await pilot.pause()
        # one 8x8 image alone: 2x is the largest whole factor under 24 - 2 (the note's row) pixels
        assert grid.shown_indices == [0] and grid.scale == 2 and "image 1 of 64" in grid.note
        assert grid.toggle_zoom() and grid.shown_indices == list(range(8))
        await pilot.resize_terminal(120, 40)  # 120 x 80 pixels: all of them at 1x, no note
        await pilot.pause()
        assert grid.shown_indices == list(range(64)) and grid.scale == 1 and grid.note is None
        await pilot.resize_terminal(40, 12)
        await pilot.pause()
        assert grid.shown_indices == list(range(8))
        grid.update(torch.rand(2, 1, 30, 60))  # not even one fits at 1x: cropped, not shrunk
        await pilot.pause()
        assert grid.scale == 1 and grid.shown.size == (40, 22) and "cropped to 40x22 of 60x30" in grid.note


# -- settings -----------------------------------------------------------------------------------------
def test_image_protocol_comes_from_cli_env_or_the_user_config(tmp_path, monkeypatch):
    monkeypatch.delenv(settings.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    warnings: list[str] = []
    assert settings.config_path() == tmp_path / "genwb" / "config.toml"
    assert settings.resolve_image_protocol(None, warn=warnings.append) == "auto"  # no file
    (tmp_path / "genwb").mkdir()
    settings.config_path().write_text('[tui]\nimage_protocol = "halfcell"\n')
    assert settings.resolve_image_protocol(None, warn=warnings.append) == "halfcell"
    assert settings.resolve_image_protocol("kitty", warn=warnings.append) == "kitty"
    monkeypatch.setenv(settings.ENV_VAR, "sixel")
    assert settings.resolve_image_protocol(None, warn=warnings.append) == "sixel"
    monkeypatch.delenv(settings.ENV_VAR)
    assert warnings == []
    with pytest.raises(UserError, match="--image-protocol"):
        settings.resolve_image_protocol("iterm", warn=warnings.append)

    settings.config_path().write_text('[tui]\nimage_protocol = "retina"\n')
    assert settings.resolve_image_protocol(None, warn=warnings.append) == "auto"
    settings.config_path().write_text('[tui\nimage_protocol = "halfcell"\n')
    assert settings.resolve_image_protocol(None, warn=warnings.append) == "auto"
    assert len(warnings) == 2 and "retina" in warnings[0] and "not valid TOML" in warnings[1]
    assert all("\n" not in w for w in warnings)

    monkeypatch.setenv("XDG_CONFIG_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert settings.config_path() == tmp_path / "home" / ".config" / "genwb" / "config.toml"


# -- issue 17: the decoder's mean, and resizing --------------------------------------------------------
def footer_labels(screen) -> list[str]:
    from workbench.tui.widgets.footer import footer_bindings

    return [binding.description for binding, _enabled, _tip in footer_bindings(screen)]


@pytest.mark.asyncio
async def test_e_toggles_the_decoder_mean_which_is_the_default_for_a_binarised_vae(runs):
    """Issue 17: binarised VAE samples looked like noise (the session drew Bernoulli samples and
    had no key for the decoder's mean). Catches a session that draws by default for a binarised
    VAE, an `e` that does not reach sampling.draw(mean=...), and a footer naming the wrong switch."""
    async with session(runs["vae"], seed=3) as (app, pilot, screen):
        model, n = screen.model, len(screen.last)
        assert model.levels == 2 and sampling.default_mean(model) and screen.mean
        assert torch.equal(screen.last, sampling.draw(model, n, seed=3, mean=True))
        assert ((screen.last > 0) & (screen.last < 1)).any()  # probabilities, not a draw
        assert "decoder mean" in shown_settings(screen)
        assert "Sample" in footer_labels(screen) and "Mean" not in footer_labels(screen)
        await pilot.press("e")
        await settle(pilot, screen)
        assert not screen.mean and set(screen.last.unique().tolist()) <= {0.0, 1.0}  # Bernoulli draws
        assert torch.equal(screen.last, sampling.draw(model, n, seed=3))
        assert "sampled" in shown_settings(screen) and "Mean" in footer_labels(screen)
        await pilot.press("e")
        await settle(pilot, screen)
        assert screen.mean and torch.equal(screen.last, sampling.draw(model, n, seed=3, mean=True))

    async with session(runs["made"]) as (app, pilot, screen):  # no decoder: no e in the footer
        assert not sampling.default_mean(screen.model) and not screen.mean
        labels = footer_labels(screen)
        assert "Mean" not in labels and "Sample" not in labels
        draws = screen.draws
        await pilot.press("e")
        await settle(pilot, screen)
        assert screen.draws == draws


@pytest.mark.asyncio
async def test_the_session_redraws_its_grid_when_the_terminal_grows_and_shrinks(runs):
    """Issue 17: the session showed 4 images at 100x30 and did not redraw when the terminal grew.
    Catches a grid that keeps its first size (no redraw on resize, in either direction)."""
    app = SessionApp(runs["vae"], seed=4)

    async def resized(pilot, screen, size):
        draws = screen.draws
        await pilot.resize_terminal(*size)
        deadline = time.monotonic() + 30
        while screen.draws == draws or screen.busy:
            assert time.monotonic() < deadline, f"no redraw at {size}"
            await pilot.pause(0.05)
        await pilot.pause()
        return screen.query_one("#main", ImageGrid)

    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await settle(pilot, screen)
        main = screen.query_one("#main", ImageGrid)
        small_n, small_shown = len(screen.last), len(main.shown_indices)
        assert main.scale >= 1 and 1 <= small_shown <= small_n
        main = await resized(pilot, screen, (160, 48))
        big_n, big_shown = len(screen.last), len(main.shown_indices)
        assert big_n > small_n and big_shown == big_n > small_shown  # more drawn, and all on screen
        assert torch.equal(screen.last, sampling.draw(screen.model, big_n, seed=4, mean=True))
        main = await resized(pilot, screen, (80, 24))
        assert (len(screen.last), len(main.shown_indices)) == (small_n, small_shown)


@pytest.mark.asyncio
async def test_reconstructions_stay_beside_their_originals_in_a_low_terminal(runs):
    """At 100x30 (half-cell) two rows of 28-pixel images do not fit: catches a page that shows
    the originals alone, their reconstructions a page later."""
    app = SessionApp(runs["vae"])
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await settle(pilot, screen)
        await pilot.press("o")
        await settle(pilot, screen)
        main, n = screen.query_one("#main", ImageGrid), screen.last_nrow
        shown = main.shown_indices
        assert main.scale >= 1 and shown and all((i + n if i < n else i - n) in shown for i in shown)
