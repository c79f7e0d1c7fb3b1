"""ImageGrid: a picture (PIL image, PNG path, or a batch of images as a grid) drawn in the terminal.

Drawn with textual-image: Kitty graphics, Sixel, or half-cell blocks. "auto" uses the protocol
textual-image found by asking the terminal; a forced protocol (the `--image-protocol` option or the
user config file, see workbench.tui.settings) skips that probe, which can time out or lie over SSH
and in tmux.

Images are scaled by whole pixels with nearest neighbour, never blurred: this widget enlarges the
picture by the largest integer factor that fits (or shrinks it by nearest neighbour when even 1x
does not fit), pads it to whole terminal cells, and gives textual-image exactly that many cells,
so its own (smoothing) resize is the identity.
"""
from __future__ import annotations

import contextlib
import io
import math
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image as PILImage
from textual.app import ComposeResult
from textual.containers import Center
from textual.widget import Widget
from textual.widgets import Static

from workbench.tui import settings

HIGHLIGHT = (255, 170, 0)  # the frame around a highlighted image
Source = Any  # PIL.Image.Image | str | Path | torch.Tensor (n, C, H, W) or (C, H, W) | np.ndarray | None


class _NotATerminal(io.TextIOBase):
    """Stands in for sys.__stdout__ while textual-image is imported, so that it does not probe."""

    def __init__(self, real):
        self._real = real

    def isatty(self) -> bool:
        return False

    def write(self, s):  # pragma: no cover - nothing is written during the import
        return self._real.write(s)


@contextlib.contextmanager
def _no_probe() -> Iterator[None]:
    real = sys.__stdout__
    sys.__stdout__ = _NotATerminal(real)
    try:
        yield
    finally:
        sys.__stdout__ = real


def prepare(protocol: str) -> None:
    """Import textual-image for ``protocol``: "auto" asks the terminal which graphics it speaks
    (this must happen before Textual starts reading stdin, so the app calls it first, through
    settings.use_image_protocol); a forced protocol asks nothing, halfcell not even the cell size."""
    if "textual_image.widget" in sys.modules:
        return
    if protocol == "auto":
        import textual_image.widget  # noqa: F401
        return
    with _no_probe():
        import textual_image.renderable  # noqa: F401
    if protocol == "halfcell":
        with _no_probe():
            import textual_image.widget  # noqa: F401
    else:  # kitty and sixel draw in pixels: they need the terminal's cell size
        import textual_image.widget  # noqa: F401


def _widget_class(protocol: str) -> tuple[type[Widget], tuple[int, int] | None]:
    """The textual-image widget class for ``protocol`` and its pixels per cell (None: ask textual-image)."""
    prepare(protocol)
    import textual_image.renderable as renderables
    import textual_image.widget as widgets

    if protocol == "halfcell":
        return widgets.HalfcellImage, (1, 2)
    if protocol == "kitty":
        return widgets.TGPImage, None
    if protocol == "sixel":
        return widgets.SixelImage, None
    auto = renderables.Image
    if auto is renderables.HalfcellImage:
        return widgets.Image, (1, 2)
    if auto is renderables.UnicodeImage:
        return widgets.Image, (1, 1)
    return widgets.Image, None


def cell_pixels(protocol: str) -> tuple[int, int]:
    """How many image pixels one terminal cell shows (width, height) with ``protocol``."""
    _, fixed = _widget_class(protocol)
    if fixed is not None:
        return fixed
    from textual_image._terminal import get_cell_size

    size = get_cell_size()
    return max(1, size.width), max(1, size.height)


def fit_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The size to show a width x height picture at within max_width x max_height pixels: enlarged
    by the largest whole factor that fits, or, when it does not fit even at 1x, shrunk to fit
    (keeping the aspect ratio; shown with nearest neighbour, so each shown pixel is one source pixel)."""
    if width <= 0 or height <= 0 or max_width <= 0 or max_height <= 0:
        return 0, 0
    k = min(max_width // width, max_height // height)
    if k >= 1:
        return width * k, height * k
    f = min(max_width / width, max_height / height)
    return max(1, min(max_width, math.floor(width * f))), max(1, min(max_height, math.floor(height * f)))


def scale_nearest(picture: PILImage.Image, max_width: int, max_height: int) -> PILImage.Image:
    """``picture`` scaled to fit_size(...) with nearest neighbour."""
    w, h = fit_size(picture.width, picture.height, max_width, max_height)
    if (w, h) == picture.size or w == 0:
        return picture
    return picture.resize((w, h), PILImage.NEAREST)


def grid_shape(n: int, nrow: int | None) -> tuple[int, int]:
    """(images per row, rows) of workbench.images.grid for n images."""
    per_row = nrow or math.ceil(math.sqrt(n))
    return per_row, math.ceil(n / per_row)


def tile_size(n: int, height: int, width: int, nrow: int | None, max_width: int, max_height: int,
              pad: int = 1) -> tuple[int, int]:
    """The (height, width) of each image so that a grid of n of them, ``pad`` pixels apart, fits
    max_width x max_height: the images' own size if it fits, else the largest that does (same
    aspect ratio). Shrinking the images one by one keeps the lines between them, which shrinking
    the whole grid would drop."""
    per_row, rows = grid_shape(n, nrow)
    room_w, room_h = max_width - pad * (per_row + 1), max_height - pad * (rows + 1)
    if per_row * width <= room_w and rows * height <= room_h:
        return height, width
    f = min(room_w / (per_row * width), room_h / (rows * height))
    return max(1, math.floor(height * f)), max(1, math.floor(width * f))


def to_pil(image: Source, nrow: int | None = None) -> PILImage.Image:
    """A PIL image (RGB or L) from a PIL image, a PNG path, a (n, C, H, W)/(C, H, W) tensor in [0, 1]
    (laid out with workbench.images.grid) or a uint8 array. Raises OSError/ValueError for bad input."""
    if isinstance(image, PILImage.Image):
        return image
    if isinstance(image, (str, Path)):
        with PILImage.open(image) as opened:
            opened.load()  # decode now: a truncated file fails here, not while drawing
            return opened.copy()
    if isinstance(image, np.ndarray):
        return PILImage.fromarray(image)
    import torch

    if isinstance(image, torch.Tensor):
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[0] == 0:
            raise ValueError(f"expected images of shape (n, C, H, W), got {tuple(image.shape)}")
        from workbench import images as image_files  # torch: only for tensors, not at the app's start

        return PILImage.fromarray(image_files.grid(image, nrow))
    raise ValueError(f"cannot show a {type(image).__name__} as an image")


class ImageGrid(Widget):
    """Shows one picture as large as fits, by whole pixels.

    ``ImageGrid(image=None, *, protocol=None, nrow=None)``: ``protocol`` None takes the app's
    setting (settings.image_protocol()); ``nrow`` is the images per row for tensors.
    ``update(image, nrow=None)`` replaces the picture; a missing or corrupt PNG shows a message.
    """

    DEFAULT_CSS = """
    ImageGrid {
        width: 1fr;
        height: 1fr;
        align: center middle;
    }
    ImageGrid > Center { height: auto; }
    ImageGrid > .message {
        width: 100%;
        height: auto;
        content-align: center middle;
        text-align: center;
        color: $text-muted;
    }
    ImageGrid > .message.error { color: $error; }
    """

    def __init__(self, image: Source = None, *, protocol: str | None = None, nrow: int | None = None,
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.protocol = protocol or settings.image_protocol()
        if self.protocol not in settings.PROTOCOLS:
            raise ValueError(f"image protocol {self.protocol!r}: choose one of {', '.join(settings.PROTOCOLS)}")
        self._image_class, _ = _widget_class(self.protocol)
        self.picture: PILImage.Image | None = None  # the source picture, before scaling
        self._tiles: Any = None  # a (n, C, H, W) tensor source: shrunk image by image if too big
        self._nrow: int | None = None
        self._highlight: int | None = None
        self.shown: PILImage.Image | None = None  # what was handed to textual-image, scaled and padded
        self.message: str | None = None
        self._pending: tuple[Source, int | None] = (image, nrow)
        self._ready = False  # composed and mounted (is_mounted turns true only after on_mount)

    def compose(self) -> ComposeResult:
        yield Static("", classes="message")
        with Center():
            yield self._image_class(id="picture")

    def on_mount(self) -> None:
        self._ready = True
        image, nrow = self._pending
        self.update(image, nrow)

    def on_resize(self) -> None:
        self._layout_picture()

    def update(self, image: Source, nrow: int | None = None, highlight: int | None = None) -> None:
        """Show ``image`` (None clears it); for a batch of images, ``highlight`` frames image
        number ``highlight`` in colour. Never raises for a bad file: it shows why instead."""
        self._pending = (image, nrow)
        self._highlight = highlight
        if not self._ready:
            return
        self.message = None
        self._tiles, self._nrow = None, nrow
        try:
            if hasattr(image, "dim") and image.dim() == 3:
                image = image.unsqueeze(0)
            self.picture = None if image is None else to_pil(image, nrow)
            if hasattr(image, "dim"):
                self._tiles = image.detach().float().cpu()
        except FileNotFoundError:
            self.picture, self.message = None, f"no image at {image}"
        except (OSError, ValueError, PILImage.DecompressionBombError) as e:
            name = Path(image).name if isinstance(image, (str, Path)) else "image"
            self.picture, self.message = None, f"cannot show {name}: {e}"
        self._layout_picture()

    def capacity(self, tile_width: int, tile_height: int, pad: int = 1) -> tuple[int, int]:
        """How many tile_width x tile_height images (with ``pad`` pixels between them, as
        workbench.images.grid lays them out) fit at 1x in this widget: (per row, rows)."""
        cw, ch = cell_pixels(self.protocol)
        width, height = self.content_size.width * cw, self.content_size.height * ch
        return max(0, (width - pad) // (tile_width + pad)), max(0, (height - pad) // (tile_height + pad))

    def _layout_picture(self) -> None:
        if not self._ready:
            return
        label = self.query_one(".message", Static)
        picture_widget = self.query_one("#picture")
        label.set_class(self.message is not None, "error")
        label.update(self.message or ("" if self.picture is not None else "no image yet"))
        label.display = self.picture is None
        picture_widget.display = self.picture is not None
        if self.picture is None:
            self.shown = None
            picture_widget.image = None
            return
        cw, ch = cell_pixels(self.protocol)
        cells_w, cells_h = self.content_size.width, self.content_size.height
        if cells_w <= 0 or cells_h <= 0:
            return  # not laid out yet: on_resize comes back
        picture = self.picture
        if self._tiles is not None:
            n, _, h, w = self._tiles.shape
            th, tw = tile_size(n, h, w, self._nrow, cells_w * cw, cells_h * ch)
            if (th, tw) != (h, w):
                import torch.nn.functional as F

                picture = to_pil(F.interpolate(self._tiles, size=(th, tw), mode="nearest"), self._nrow)
            if self._highlight is not None and 0 <= self._highlight < n:
                from PIL import ImageDraw

                per_row, _ = grid_shape(n, self._nrow)
                r, q = divmod(self._highlight, per_row)
                picture = picture.convert("RGB")
                box = (q * (tw + 1), r * (th + 1), q * (tw + 1) + tw + 1, r * (th + 1) + th + 1)
                ImageDraw.Draw(picture).rectangle(box, outline=HIGHLIGHT)
        scaled = scale_nearest(picture.convert("RGB"), cells_w * cw, cells_h * ch)
        # Pad to whole cells so that textual-image's own resize is the identity (no smoothing).
        cols, rows = math.ceil(scaled.width / cw), math.ceil(scaled.height / ch)
        if (cols * cw, rows * ch) != scaled.size:
            padded = PILImage.new("RGB", (cols * cw, rows * ch), self._background())
            padded.paste(scaled, ((cols * cw - scaled.width) // 2, (rows * ch - scaled.height) // 2))
            scaled = padded
        self.shown = scaled
        picture_widget.styles.width = cols
        picture_widget.styles.height = rows
        picture_widget.image = scaled

    def _background(self) -> tuple[int, int, int]:
        _, color = self.background_colors
        return color.rgb
