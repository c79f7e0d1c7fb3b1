"""ImageGrid: a picture (PIL image, PNG path, or a batch of images as a grid) drawn in the terminal.

Drawn with textual-image: Kitty graphics, Sixel, or half-cell blocks. "auto" uses the protocol
textual-image found by asking the terminal; a forced protocol (the `--image-protocol` option or the
user config file, see workbench.tui.settings) skips that probe, which can time out or lie over SSH
and in tmux.

Images are shown by whole pixels, never blurred and never below 1:1: a picture is enlarged by
the largest integer factor that fits, padded to whole terminal cells, and given to textual-image
in exactly that many cells, so its own (smoothing) resize is the identity. A batch of images (a
tensor, or a PNG grid as workbench.images.grid writes it) is laid out anew to fill the pane, and
when its images do not all fit at 1x the pane shows as many whole images as fit, with a one-line
note ("images 1-6 of 64"); ``page(±1)`` pages through them and ``toggle_zoom()`` shows one image
alone, as large as fits. What does not fit even alone at 1x is cropped, with a note, not shrunk.
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
from textual.message import Message
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


def whole_scale(width: int, height: int, max_width: int, max_height: int) -> int:
    """The largest whole factor k such that a width x height picture, k times enlarged, fits
    max_width x max_height; 0 when it does not fit even at 1x."""
    if width <= 0 or height <= 0 or max_width <= 0 or max_height <= 0:
        return 0
    return max(0, min(max_width // width, max_height // height))


def enlarge(picture: PILImage.Image, k: int) -> PILImage.Image:
    """``picture`` k times enlarged by nearest neighbour (each pixel a k x k block)."""
    return picture if k == 1 else picture.resize((picture.width * k, picture.height * k), PILImage.NEAREST)


def grid_shape(n: int, nrow: int | None) -> tuple[int, int]:
    """(images per row, rows) of workbench.images.grid for n images."""
    per_row = nrow or math.ceil(math.sqrt(n))
    return per_row, math.ceil(n / per_row)


def split_grid(arr: np.ndarray, per_row: int | None = None, tile: tuple[int, int] | None = None,
               n: int | None = None) -> tuple[np.ndarray, int, tuple[int, ...]] | None:
    """The images of a grid picture (H, W, 3) laid out as workbench.images.grid does (1-pixel
    lines of one colour around and between them): (tiles (n, h, w, 3), images per row, line
    colour), or None if ``arr`` is not such a grid. ``tile`` and ``per_row`` are known for a
    tensor; for a PNG they are found from the lines (trailing empty slots are dropped)."""
    rows_px, cols_px = arr.shape[:2]
    line = tuple(int(v) for v in arr[0, 0])
    if tile is None:
        is_line = (arr == np.asarray(line, dtype=arr.dtype)).all(-1)
        full_cols, full_rows = is_line.all(0), is_line.all(1)

        def period(full: np.ndarray, size: int) -> int | None:
            for p in range(3, size):
                if (size - 1) % p == 0 and full[::p].all():
                    return p
            return None

        pw, ph = period(full_cols, cols_px), period(full_rows, rows_px)
        if pw is None or ph is None:
            return None
        tile = (ph - 1, pw - 1)
    h, w = tile
    per_row = per_row or (cols_px - 1) // (w + 1)
    rows = (rows_px - 1) // (h + 1)
    if per_row < 1 or rows < 1:
        return None
    tiles = np.stack([arr[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w]
                      for r in range(rows) for q in range(per_row)])
    if n is None:
        n = len(tiles)
        while n > 1 and (tiles[n - 1] == np.asarray(line, dtype=arr.dtype)).all():
            n -= 1  # an empty slot at the end of the last row
    return tiles[:n], per_row, line


def arrange(n: int, per_row: int, cols: int, band: int = 1, side: bool = False) -> list[list[int | None]]:
    """The image indices of each shown row when n images, ``per_row`` to a row, are laid out
    ``cols`` to a row. ``band`` rows go together (2: originals over their reconstructions): each
    band is cut into pieces ``cols`` wide, stacked; band 1 simply wraps the sequence. ``side``
    puts each column of a band side by side instead (an original, then its reconstruction),
    ``cols`` such groups to a row, for a pane too low for the band's rows."""
    if band <= 1:
        return [list(range(i, min(i + cols, n))) for i in range(0, n, cols)]
    rows: list[list[int | None]] = []
    grid_rows = math.ceil(n / per_row)
    if side:
        groups = [[r * per_row + q for r in range(top, min(top + band, grid_rows))]
                  for top in range(0, grid_rows, band) for q in range(per_row)]
        for i in range(0, len(groups), cols):
            rows.append([j if j < n else None for g in groups[i: i + cols] for j in g])
        return rows
    for top in range(0, grid_rows, band):
        for left in range(0, per_row, cols):
            for r in range(top, min(top + band, grid_rows)):
                row = [r * per_row + q for q in range(left, min(left + cols, per_row))]
                rows.append([i if i < n else None for i in row])
    return rows


def compose_grid(tiles: np.ndarray, rows: list[list[int | None]], line: tuple[int, ...],
                 highlight: int | None = None) -> PILImage.Image:
    """The images ``rows`` name, one pixel apart on ``line``'s colour; ``highlight`` framed."""
    _, h, w, c = tiles.shape
    cols = max(len(r) for r in rows)
    out = np.empty((len(rows) * (h + 1) + 1, cols * (w + 1) + 1, c), dtype=np.uint8)
    out[:] = np.asarray(line, dtype=np.uint8)
    frame = None
    for r, row in enumerate(rows):
        for q, i in enumerate(row):
            if i is None:
                continue
            out[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = tiles[i]
            if i == highlight:
                frame = (q * (w + 1), r * (h + 1), q * (w + 1) + w + 1, r * (h + 1) + h + 1)
    picture = PILImage.fromarray(out)
    if frame is not None:
        from PIL import ImageDraw

        ImageDraw.Draw(picture).rectangle(frame, outline=HIGHLIGHT)
    return picture


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
    """Shows one picture, or a batch of images, as large as fits by whole pixels, never below 1:1.

    ``ImageGrid(image=None, *, protocol=None, nrow=None, keys=None, too_small=None)``: ``protocol``
    None takes the app's setting (settings.image_protocol()); ``nrow`` is the images per row for
    tensors; ``keys`` is the hint the note gives for paging (the screen binds the keys, e.g.
    "pgup/pgdn · z zoom"); ``too_small``, where given, is said instead of showing a crop.
    ``update(image, nrow=None, highlight=None, band=1, step=1)`` replaces the picture; a missing or
    corrupt PNG shows a message. ``page(delta)`` and ``toggle_zoom()`` move through a batch that
    does not fit; ``scale``, ``shown_indices`` and ``note`` say what is on screen.
    """

    class NoteChanged(Message):
        """The note (paging, zoom, cropping) changed; a container shows it where the grid has no
        row for it (``shown_below`` False)."""

        def __init__(self, grid: "ImageGrid", note: str | None, shown_below: bool) -> None:
            super().__init__()
            self.grid, self.note, self.shown_below = grid, note, shown_below

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
    ImageGrid > .note {
        dock: bottom;
        width: 100%;
        height: 1;
        text-align: center;
        color: $text-muted;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, image: Source = None, *, protocol: str | None = None, nrow: int | None = None,
                 keys: str | None = None, too_small: str | None = None, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.protocol = protocol or settings.image_protocol()
        if self.protocol not in settings.PROTOCOLS:
            raise ValueError(f"image protocol {self.protocol!r}: choose one of {', '.join(settings.PROTOCOLS)}")
        self._image_class, _ = _widget_class(self.protocol)
        self.keys = keys
        self.too_small = too_small  # said instead of a crop, where not even one image fits at 1x
        self._cropped = False
        self.picture: PILImage.Image | None = None  # the source picture, before scaling
        self._tiles: np.ndarray | None = None  # (n, h, w, 3): the images of a batch or a PNG grid
        self._per_row = 1
        self._line: tuple[int, ...] = (128, 128, 128)
        self._nrow: int | None = None
        self._band, self._step = 1, 1
        self._highlight: int | None = None
        self._page = 0  # the page of a batch that does not fit at 1x
        self._zoom: int | None = None  # the image shown alone, or None
        self.shown: PILImage.Image | None = None  # what was handed to textual-image, scaled and padded
        self.scale = 0  # the whole factor the shown picture is enlarged by (0: nothing shown)
        self.shown_indices: list[int] = []  # the images of a batch on screen
        self.pages = 1
        self.note: str | None = None  # the line under the picture: paging, zoom or cropping
        self._note_line = True  # False where the note's row would leave no room for a row of images
        self._posted_note: tuple[str | None, bool] = (None, False)
        self.message: str | None = None
        self._pending: tuple[Source, int | None] = (image, nrow)
        self._ready = False  # composed and mounted (is_mounted turns true only after on_mount)

    def compose(self) -> ComposeResult:
        yield Static("", classes="message")
        yield Static("", classes="note")
        with Center():
            yield self._image_class(id="picture")

    def on_mount(self) -> None:
        self._ready = True
        image, nrow = self._pending
        self.update(image, nrow, self._highlight, self._band, self._step)

    def on_resize(self) -> None:
        self._layout_picture()

    @property
    def count(self) -> int:
        """Images in the batch shown (0 for a single picture or none)."""
        return 0 if self._tiles is None else len(self._tiles)

    @property
    def paged(self) -> bool:
        """Not every image of the batch is on screen: page() and toggle_zoom() have work to do."""
        return self._zoom is not None or (self.count > 0 and len(self.shown_indices) < self.count)

    def update(self, image: Source, nrow: int | None = None, highlight: int | None = None,
               band: int = 1, step: int = 1) -> None:
        """Show ``image`` (None clears it); for a batch of images, ``highlight`` frames image
        number ``highlight`` in colour (and the page follows it). ``band`` grid rows (``step``
        columns) stay together when the batch is laid out anew: 2 rows for originals over their
        reconstructions, 2 columns for pairs side by side. Never raises for a bad file."""
        self._pending = (image, nrow)
        self._highlight, self._band, self._step = highlight, max(1, band), max(1, step)
        if not self._ready:
            return
        self.message = None
        before = self.count
        self._tiles, self._nrow = None, nrow
        try:
            if hasattr(image, "dim") and image.dim() == 3:
                image = image.unsqueeze(0)
            self.picture = None if image is None else to_pil(image, nrow)
            if self.picture is not None:
                arr = np.asarray(self.picture.convert("RGB"))
                if hasattr(image, "dim"):
                    n, _, h, w = image.shape
                    found = split_grid(arr, grid_shape(n, nrow)[0], (h, w), n)
                else:
                    found = split_grid(arr)
                if found is not None:
                    self._tiles, self._per_row, self._line = found
        except FileNotFoundError:
            self.picture, self.message = None, f"no image at {image}"
        except (OSError, ValueError, PILImage.DecompressionBombError) as e:
            name = Path(image).name if isinstance(image, (str, Path)) else "image"
            self.picture, self.message = None, f"cannot show {name}: {e}"
        if self.count != before:  # another batch: from its first page, not zoomed
            self._page, self._zoom = 0, None
        self._layout_picture()

    def page(self, delta: int) -> bool:
        """Show the next (delta 1) or previous (-1) page, or image when zoomed; False if there is none."""
        if self._zoom is not None:
            target = self._zoom + delta
            if not 0 <= target < self.count:
                return False
            self._zoom = target
        else:
            target = self._page + delta
            if not self.paged or not 0 <= target < self.pages:
                return False
            self._page, self._highlight = target, None
        self._layout_picture()
        return True

    def toggle_zoom(self) -> bool:
        """Show the highlighted (else the first shown) image alone, as large as fits; again: back.
        False when there is no batch to zoom into."""
        if self._zoom is not None:
            first = self._zoom
            self._zoom = None
            self._layout_picture()
            if self._band == 1 and self.shown_indices and first not in self.shown_indices:
                self._page = first // len(self.shown_indices)  # back to the page of that image
                self._layout_picture()
            return True
        if self.count < 2:
            return False
        if self._highlight is not None and 0 <= self._highlight < self.count:
            self._zoom = self._highlight
        else:
            self._zoom = self.shown_indices[0] if self.shown_indices else 0
        self._layout_picture()
        return True

    def capacity(self, tile_width: int, tile_height: int, pad: int = 1) -> tuple[int, int]:
        """How many tile_width x tile_height images (with ``pad`` pixels between them, as
        workbench.images.grid lays them out) fit at 1x in this widget: (per row, rows)."""
        cw, ch = cell_pixels(self.protocol)
        width, height = self.content_size.width * cw, self.content_size.height * ch
        return max(0, (width - pad) // (tile_width + pad)), max(0, (height - pad) // (tile_height + pad))

    # -- layout -------------------------------------------------------------------------------------
    def _choose(self, width: int, height: int) -> tuple[PILImage.Image, int, str | None]:
        """(picture at 1x, whole scale, note) for a pane of width x height pixels, with one cell
        row kept for the note where one is needed; sets shown_indices and pages."""
        _, ch = cell_pixels(self.protocol)
        self.pages = 1
        if self._tiles is None:
            self.shown_indices = []
            return self._fit_or_crop(self.picture, width, height, ch, "")
        n, h, w, _ = self._tiles.shape
        if self._zoom is not None:
            self._zoom = max(0, min(n - 1, self._zoom))
            self.shown_indices = [self._zoom]
            alone = PILImage.fromarray(self._tiles[self._zoom])
            picture, k, note = self._fit_or_crop(alone, width, height, ch, f"image {self._zoom + 1} of {n}", always=True)
            return picture, k, f"{note} · {self.keys}" if self.keys else note
        per_row, band, step = self._per_row, self._band, self._step
        widest = per_row if band > 1 else max(per_row, n)
        best: tuple[int, int, bool] | None = None  # (scale, cols, side by side)
        for side in (False, True) if band > 1 else (False,):
            for cols in range(step, widest + 1, step):
                rows = arrange(n, per_row, cols, band, side)
                k = whole_scale(max(map(len, rows)) * (w + 1) + 1, len(rows) * (h + 1) + 1, width, height)
                if k >= 1 and (best is None or k > best[0] or (k == best[0] and (cols, side) == (per_row, False))):
                    best = (k, cols, side)
        if best is not None:  # everything fits: laid out to fill the pane
            k, cols, side = best
            self.shown_indices = list(range(n))
            rows = arrange(n, per_row, cols, band, side)
            return compose_grid(self._tiles, rows, self._line, self._highlight), k, None
        # Not all at 1x: as many whole images as fit, a page at a time, above the note.
        room = height - ch
        fit_cols = (width - 1) // (w + 1)
        fit_rows = (room - 1) // (h + 1)
        if fit_rows < 1 and (height - 1) // (h + 1) >= 1:  # the note would cost the only row: no note line
            room, fit_rows, self._note_line = height, 1, False
        cols = min(per_row if band > 1 else max(per_row, fit_cols), fit_cols)
        cols -= cols % step if cols >= step else 0
        if cols < 1 or fit_rows < 1:  # not even one image: the first one shown, cropped
            first = self._highlight if self._highlight is not None and 0 <= self._highlight < n else 0
            self.shown_indices = [first]
            alone = PILImage.fromarray(self._tiles[first])
            return self._fit_or_crop(alone, width, height, ch, f"image {first + 1} of {n}" if n > 1 else "", always=True)
        side = band > 1 and fit_rows < band and fit_cols >= band  # too low for a band: its pairs side by side
        rows = arrange(n, per_row, fit_cols // band if side else cols, band, side)
        per_page = fit_rows - fit_rows % band if band > 1 and fit_rows >= band else fit_rows
        self.pages = math.ceil(len(rows) / per_page)
        if self._highlight is not None and 0 <= self._highlight < n:
            self._page = next(i // per_page for i, row in enumerate(rows) if self._highlight in row)
        self._page = max(0, min(self.pages - 1, self._page))
        page = rows[self._page * per_page: (self._page + 1) * per_page]
        self.shown_indices = sorted(i for row in page for i in row if i is not None)
        picture = compose_grid(self._tiles, page, self._line, self._highlight)
        k = max(1, whole_scale(picture.width, picture.height, width, room))
        if band > 1:
            left = self.shown_indices[0] % per_row
            right = max(i % per_row for i in self.shown_indices)
            where = f"columns {left + 1}-{right + 1} of {per_row}" if left != right else f"column {left + 1} of {per_row}"
        else:
            first, last = self.shown_indices[0], self.shown_indices[-1]
            where = f"images {first + 1}-{last + 1} of {n}" if last > first else f"image {first + 1} of {n}"
        keys = f" · {self.keys}" if self.keys else ""
        return picture, k, f"{where} (page {self._page + 1}/{self.pages}){keys}"

    def _fit_or_crop(self, picture: PILImage.Image, width: int, height: int, ch: int, what: str,
                     always: bool = False) -> tuple[PILImage.Image, int, str | None]:
        """``picture`` at the largest whole scale that fits, else cropped to the pane (never shrunk)."""
        said = [what] if what else []
        room = height - ch if always else height
        k = whole_scale(picture.width, picture.height, width, room)
        if k >= 1:
            return picture, k, (" · ".join(said + [f"{k}x"]) if always else None)
        if always and whole_scale(picture.width, picture.height, width, height) >= 1:
            self._note_line = False  # the note's row would crop it: the image, without the note
            return picture, 1, " · ".join(said + ["1x"])
        room = height - ch
        self._cropped = True
        crop = picture.crop((0, 0, min(picture.width, width), min(picture.height, max(1, room))))
        said.append(f"cropped to {crop.width}x{crop.height} of {picture.width}x{picture.height} px: enlarge the terminal")
        return crop, 1, " · ".join(said)

    def _layout_picture(self) -> None:
        if not self._ready:
            return
        label = self.query_one(".message", Static)
        note = self.query_one(".note", Static)
        picture_widget = self.query_one("#picture")
        label.set_class(self.message is not None, "error")
        label.update(self.message or ("" if self.picture is not None else "no image yet"))
        label.display = self.picture is None
        picture_widget.display = self.picture is not None
        if self.picture is None:
            self.shown, self.scale, self.shown_indices, self.note = None, 0, [], None
            note.display = False
            picture_widget.image = None
            self._post_note(False)
            return
        cw, ch = cell_pixels(self.protocol)
        cells_w, cells_h = self.content_size.width, self.content_size.height
        if cells_w <= 0 or cells_h <= 0:
            return  # not laid out yet: on_resize comes back
        self._note_line, self._cropped = True, False
        picture, k, self.note = self._choose(cells_w * cw, cells_h * ch)
        if self._cropped and self.too_small:
            self.shown, self.scale, self.shown_indices, self.note = None, 0, [], self.too_small
            label.update(self.too_small)
            label.display, picture_widget.display, note.display = True, False, False
            picture_widget.image = None
            self._post_note(True)  # said in the grid itself
            return
        note.update(self.note or "")
        note.display = self.note is not None and self._note_line
        self._post_note(note.display)
        self.scale = k
        scaled = enlarge(picture.convert("RGB"), k)
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

    def _post_note(self, shown_below: bool) -> None:
        if (self.note, shown_below) != self._posted_note:
            self._posted_note = (self.note, shown_below)
            self.post_message(self.NoteChanged(self, self.note, shown_below))

    def _background(self) -> tuple[int, int, int]:
        _, color = self.background_colors
        return color.rgb
