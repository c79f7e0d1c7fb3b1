"""The curves at TensorBoard's standard (issue 17, item 3): smoothing, a log axis with real tick
values, markers for sparse series, the legend outside the plot, one shared x-range and "the last
N steps", a step cursor with a read-out, overlay aliases and colours; and the home table's
sparkline over the whole run. Unit tests of ``widgets/plotting.py``, Pilot tests of the panel."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from textual_plot import PlotWidget
from textual_plot.plot_widget import LinePlot, ScatterPlot

from tests.tui_fakes import FixedQueue, job_info, make_run
from workbench.tui.app import create_app
from workbench.tui.screens.detail import DetailScreen
from workbench.tui.widgets.curves import MARKER, SPARSE_POINTS, TWIN_MARKER, CurvesPanel, Line, _merge_identical, split_twin
from workbench.tui.widgets.plotting import (
    LogAxisFormatter,
    ema,
    last_steps,
    move_cursor,
    nearest,
    run_aliases,
    x_window,
)

SIZE = (120, 40)


# -- unit: the pure helpers ----------------------------------------------------------------------
def test_ema_is_tensorboards_debiased_formula():
    """Bugs caught: no debiasing (the first point pulled to (1-w)*y = 4), the debias power off by
    one, the weights swapped (w*y), a non-finite value counted or smoothed into the rest."""
    w = 0.6
    # By hand: s1 = 0.4*10 = 4 -> 4/0.4 = 10; s2 = 0.6*4 + 0.4*20 = 10.4 -> 10.4/0.64 = 16.25;
    # s3 = 0.6*10.4 + 0.4*30 = 18.24 -> 18.24/0.784.
    assert ema([10, 20, 30], w) == pytest.approx([10.0, 16.25, 18.24 / 0.784])
    out = ema([10, float("nan"), 20], w)
    assert out[0] == pytest.approx(10) and math.isnan(out[1]) and out[2] == pytest.approx(16.25)
    assert ema([5, 7, 9], 0.0) == [5, 7, 9]  # weight 0: the raw values
    assert ema([3, 3, 3, 3], 0.99) == pytest.approx([3, 3, 3, 3])  # debiased: a constant stays put


def test_log_axis_ticks_are_real_values():
    """Bug caught (issue 17): a log axis labelled with log10 numbers ("2.8 .. 4.2") instead of the
    values; also ticks that are not at the logs of their labels."""
    f = LogAxisFormatter()
    ticks, labels = f.get_ticks_and_labels(math.log10(20), math.log10(500))
    assert labels == ["20", "50", "100", "200", "500"]
    assert ticks == pytest.approx([math.log10(float(v)) for v in labels])
    # The axis: log10 from 2.8 to 4.2 is 631 to 15849 nats.
    assert f.get_ticks_and_labels(2.8, 4.2)[1] == ["1000", "2000", "5000", "1e4"]
    assert f.get_ticks_and_labels(2, 6)[1] == ["100", "1000", "1e4", "1e5", "1e6"]
    narrow_ticks, narrow = f.get_ticks_and_labels(math.log10(230), math.log10(260))  # less than 2x: linear steps
    assert narrow == ["235", "240", "245", "250", "255", "260"]
    assert narrow_ticks == pytest.approx([math.log10(float(v)) for v in narrow])


def test_last_steps_window_and_aliases():
    """Bugs caught: the zoom showing the first N steps, an unrounded N, the window leaving the run;
    aliases that keep the timestamp, or give two runs of one name the same alias."""
    assert last_steps(24000, 0.5) == 10000 and last_steps(24000, 0.1) == 2000 and last_steps(24000, None) is None
    assert x_window(2, 60, 20) == (40, 60)
    assert x_window(2, 60, None) == (2, 60)
    assert x_window(50, 60, 100) == (50, 60)
    assert x_window(7, 7, None) == (6, 8)  # one step: a window around it
    dirs = [Path("runs/made-20260101-120000"), Path("runs/made-20260102-090000"), Path("runs/vae-20260101-000000"),
            Path("runs/made-20260103-000000")]
    assert run_aliases(dirs) == ["made", "made#2", "vae", "made#3"]


def test_nearest_and_cursor_moves():
    """Bugs caught: the cursor starting at the oldest step, running off the ends, ignoring the
    stride; the nearest point taken as the next one rather than the closest."""
    assert nearest([6, 12, 18, 24], [1, 2, 3, 4], 20) == (18, 3)
    assert nearest([6, 12, 18, 24], [1, 2, 3, 4], 22) == (24, 4)
    assert nearest([], [], 3) is None
    steps = [2, 4, 6, 8, 10]
    assert move_cursor(steps, None, -1) == 10
    assert move_cursor(steps, 10, -1) == 8
    assert move_cursor(steps, 7.1, 1) == 10  # nearest logged step (8), then one on
    assert move_cursor(steps, 2, -1) == 2 and move_cursor(steps, 10, 1) == 10
    assert move_cursor(steps, 10, -1, stride=3) == 4


def test_validation_and_short_series_are_sparse():
    """Bug caught: a validation series with many points drawn as a bare line (its points, logged
    far apart, vanish in it), or a long training series cluttered with markers."""
    xs = list(range(40))
    assert Line("loss", "val NLL", xs, xs, "red", validation=True).sparse
    assert not Line("loss", "train loss", xs, xs, "green").sparse
    assert Line("parts", "kl", xs[:SPARSE_POINTS - 1], xs[:SPARSE_POINTS - 1], "green").sparse


# -- Pilot: the panel ------------------------------------------------------------------------------
def write_metrics(run: Path, rows: list[dict]) -> None:
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def detail_app(tmp_path, run: Path, steps: int = 24):
    queue = FixedQueue([job_info("j1", "done", step=steps, total=steps, run_dir=str(run))])
    return create_app(tmp_path / "runs", queue=queue, image_protocol="halfcell")


async def open_detail(pilot) -> CurvesPanel:
    await pilot.pause()
    await pilot.press("enter")
    assert isinstance(pilot.app.screen, DetailScreen)
    panel = pilot.app.screen.query_one(CurvesPanel)
    await wait_drawn(pilot, panel)
    return panel


async def wait_drawn(pilot, panel, condition=lambda: True):
    for _ in range(100):
        await pilot.pause(0.05)
        if panel._loaded and panel._drawn is not None and not panel._polling and condition():
            return
    raise AssertionError("the curves were not drawn")


def labelled(plot: PlotWidget, label: str):
    return plot._datasets[plot._labels.index(label)]


@pytest.mark.asyncio
async def test_smoothing_draws_the_ema_bright_over_a_faint_raw_line(tmp_path):
    """Bugs caught: no smoothing drawn, the raw line dropped or drawn as bright as the smoothed one,
    the smoothing key not cycling 0.6 -> 0.9 -> 0.99 -> 0."""
    run = make_run(tmp_path / "runs", "long", steps=80)  # 40 training points: a dense series
    rows = [{"step": s, "split": "train", "loss": 500.0 + (30 if s % 4 else -30) - s} for s in range(2, 81, 2)]
    write_metrics(run, rows)
    raw = [r["loss"] for r in rows]
    async with detail_app(tmp_path, run, 80).run_test(size=SIZE) as pilot:
        panel = await open_detail(pilot)
        loss = pilot.app.screen.query_one("#plot-loss", PlotWidget)
        assert panel.smoothing == 0.6
        smooth = labelled(loss, "train loss")
        assert isinstance(smooth, LinePlot) and "dim" not in smooth.line_style
        assert list(smooth.y) == pytest.approx(ema(raw, 0.6))
        faint = [d for d, label in zip(loss._datasets, loss._labels) if label is None]
        assert len(faint) == 1 and "dim" in faint[0].line_style and list(faint[0].y) == pytest.approx(raw)
        for weight in (0.9, 0.99, 0.0):
            await pilot.press("m")
            await wait_drawn(pilot, panel, lambda: panel.smoothing == weight)
            assert list(labelled(loss, "train loss").y) == pytest.approx(ema(raw, weight))
        assert len(loss._datasets) == 1  # smoothing off: the raw line alone, bright
        assert "smoothing 0" in str(pilot.app.screen.query_one("#curves-status").render())


@pytest.mark.asyncio
async def test_log_scale_ticks_read_real_nats(tmp_path):
    """Bug caught (issue 17): "log10 nats" with ticks 2.8 .. 4.2 on the log scale."""
    run = make_run(tmp_path / "runs", "made-a")
    async with detail_app(tmp_path, run).run_test(size=SIZE) as pilot:
        panel = await open_detail(pilot)
        await pilot.press("l")
        await wait_drawn(pilot, panel, lambda: panel.log_scale)
        loss = pilot.app.screen.query_one("#plot-loss", PlotWidget)
        assert isinstance(loss._y_formatter.inner, LogAxisFormatter)
        assert "log10" not in loss._y_label
        ticks, labels = loss._y_formatter.get_ticks_and_labels(loss._y_min, loss._y_max)
        assert len(labels) >= 2
        values = [float(v) for v in labels]
        assert all(460 <= v <= 540 for v in values), labels  # the losses' own range, in nats
        assert ticks == pytest.approx([math.log10(v) for v in values])


@pytest.mark.asyncio
async def test_a_single_validation_point_is_drawn_as_a_visible_marker(tmp_path):
    """Bug caught (issue 17): one validation row drew nothing (a line needs two points), or a
    single braille dot; also the marker missing from the rendered canvas."""
    run = make_run(tmp_path / "runs", "one-val", steps=80)
    rows = [{"step": s, "split": "train", "loss": 500.0 - s} for s in range(2, 81, 2)]
    rows.append({"step": 40, "split": "val", "nll": 470.0})
    write_metrics(run, rows)
    async with detail_app(tmp_path, run, 80).run_test(size=SIZE) as pilot:
        panel = await open_detail(pilot)
        loss = pilot.app.screen.query_one("#plot-loss", PlotWidget)
        val = labelled(loss, "val NLL")
        assert isinstance(val, ScatterPlot) and val.hires_mode is None and val.marker == MARKER
        assert list(val.x) == [40] and list(val.y) == [470]
        assert isinstance(labelled(loss, "train loss"), LinePlot)  # 40 points: a line, no markers
        await pilot.pause(0.2)
        canvas = loss.query_one("#plot")
        assert any(MARKER in "".join(row) for row in canvas._buffer)
        assert f"{MARKER} val NLL" in str(pilot.app.screen.query_one("#legend-loss").render())
        del panel


@pytest.mark.asyncio
async def test_dense_validation_markers_leave_the_training_line_visible(tmp_path):
    """Bug caught (tmux walk, 100x30 home): 280 validation rows drew 280 full-cell markers in a
    46-column plot, a row of dots over the training line. Markers are thinned to one per
    MARKER_COLUMNS columns, the newest kept; the faint line still joins every point."""
    from workbench.tui.widgets.curves import MARKER_COLUMNS

    run = make_run(tmp_path / "runs", "dense-val", steps=2000)
    rows = []
    for s in range(2, 2001, 2):
        rows.append({"step": s, "split": "train", "loss": 500.0 - s / 10})
        if s % 10 == 0:
            rows.append({"step": s, "split": "val", "nll": 490.0 - s / 10})
    write_metrics(run, rows)
    async with detail_app(tmp_path, run, 2000).run_test(size=(100, 30)) as pilot:
        panel = await open_detail(pilot)
        loss = pilot.app.screen.query_one("#plot-loss", PlotWidget)
        markers = labelled(loss, "val NLL")
        assert isinstance(markers, ScatterPlot)
        assert 2 <= len(markers.x) <= loss.size.width // MARKER_COLUMNS
        assert markers.x[-1] == 2000  # the newest validation is always marked
        joined = [d for d in loss._datasets if isinstance(d, LinePlot) and len(d.x) == 200]
        assert joined, "the faint line through every validation point"
        del panel


@pytest.mark.asyncio
async def test_legend_is_under_the_plot_not_over_the_data(tmp_path):
    """Bug caught (issue 17): the legend box drawn over the newest data, in the plot's corner."""
    run = make_run(tmp_path / "runs", "vq", model="vqvae", parts=("recon", "commitment"))
    async with detail_app(tmp_path, run).run_test(size=SIZE) as pilot:
        await open_detail(pilot)
        screen = pilot.app.screen
        for name in ("loss", "parts"):
            plot = screen.query_one(f"#plot-{name}", PlotWidget)
            legend = screen.query_one(f"#legend-{name}")
            assert not plot.query_one("#legend").display  # textual-plot's own, over the data: off
            assert legend.region.y >= plot.region.bottom and legend.region.height >= 1
        assert "recon" in str(screen.query_one("#legend-parts").render())


@pytest.mark.asyncio
async def test_every_plot_shares_one_x_range_with_overlay_and_last_n(tmp_path):
    """Bugs caught (issue 17): the overlay widening only the first plot's x-range; plots with
    x-ranges of their own (also after zooming one with textual-plot's own keys); the last-N zoom
    missing a plot or not cycling back to the whole run."""
    run = make_run(tmp_path / "runs", "vq-a", model="vqvae", parts=("recon", "perplexity"))
    longer = make_run(tmp_path / "runs", "vq-b", model="vqvae", steps=60)
    async with detail_app(tmp_path, run).run_test(size=SIZE) as pilot:
        panel = await open_detail(pilot)
        screen = pilot.app.screen
        plots = list(screen.query(PlotWidget))
        assert len(plots) == 3 and all(p.display for p in plots)

        def limits():
            return {(p._x_min, p._x_max) for p in plots}

        assert limits() == {(2, 24)}
        pilot.app.marked_runs.add(longer)
        await pilot.press("o")
        await wait_drawn(pilot, panel, lambda: panel.overlay and panel.window == (2, 60))
        await pilot.pause(0.2)
        assert limits() == {(2, 60)}  # the parts and codebook plots follow the overlaid run's steps
        await pilot.press("L")  # the last half of 58 steps, rounded: 20
        await wait_drawn(pilot, panel, lambda: panel.zoom == 1)
        await pilot.pause(0.2)
        assert limits() == {(40, 60)} and "last 20 steps" in str(screen.query_one("#curves-status").render())
        await pilot.press("L")
        await wait_drawn(pilot, panel, lambda: panel.zoom == 2)
        await pilot.pause(0.2)
        assert limits() == {(55, 60)}
        await pilot.press("L")
        await wait_drawn(pilot, panel, lambda: panel.zoom == 0)
        await pilot.pause(0.2)
        assert limits() == {(2, 60)}
        plots[0].focus()  # textual-plot's own zoom keys, on one plot: the others follow it
        await pilot.press("plus")
        await pilot.pause(0.3)
        assert len(limits()) == 1 and limits() != {(2, 60)}


@pytest.mark.asyncio
async def test_cursor_reads_the_values_at_a_step(tmp_path):
    """Bugs caught: the read-out missing a series, taking the next logged point instead of the
    nearest one, hiding the step of a series logged elsewhere; the cursor line not on every plot."""
    run = make_run(tmp_path / "runs", "vq", model="vqvae", parts=("recon",))
    async with detail_app(tmp_path, run).run_test(size=SIZE) as pilot:
        panel = await open_detail(pilot)
        cursor_line = pilot.app.screen.query_one("#curves-cursor")
        assert not cursor_line.display
        await pilot.press("less_than_sign")
        await wait_drawn(pilot, panel, lambda: panel.cursor == 24)
        assert panel.cursor_text() == "step 24: train loss 480 · val NLL 468 · recon 22"
        await pilot.press("less_than_sign", "less_than_sign")  # 24 -> 22 -> 20
        await wait_drawn(pilot, panel, lambda: panel.cursor == 20)
        # val is logged every 6 steps: its nearest point is 18's, and says so.
        assert panel.cursor_text() == "step 20: train loss 490 · val NLL 486 @18 · recon 20"
        await pilot.pause(0.2)
        assert cursor_line.display and "val NLL 486 @18" in str(cursor_line.render())
        for plot in pilot.app.screen.query(PlotWidget):
            if plot.display:
                assert [v.x for v in plot._v_lines] == [20]
        await pilot.press("greater_than_sign")
        await wait_drawn(pilot, panel, lambda: panel.cursor == 22)


@pytest.mark.asyncio
async def test_overlay_gives_each_run_a_colour_and_a_short_alias(tmp_path):
    """Bugs caught (issue 17): two runs of one name and seed hiding each other (one colour, one
    label, or one drawn over the other unnamed); aliases that keep the timestamp."""
    runs = tmp_path / "runs"
    main = make_run(runs, "made-20260101-000000")
    twin = make_run(runs, "made-20260102-000000")  # the same preset and seed: the same curve
    other = make_run(runs, "made-20260103-000000", loss0=600.0)
    async with detail_app(tmp_path, main).run_test(size=SIZE) as pilot:
        panel = await open_detail(pilot)
        pilot.app.marked_runs.update({other})
        await pilot.press("o")
        await wait_drawn(pilot, panel, lambda: panel.overlay and len(panel.lines) == 4)
        lines = [(line.label, line.colour) for line in panel.lines]
        assert [label for label, _ in lines] == ["made train", "made val", "made#2 train", "made#2 val"]
        assert lines[0][1] == lines[1][1] and lines[0][1] != lines[2][1]  # one colour per run
        await pilot.press("o")  # off, then on with the twin marked too
        await wait_drawn(pilot, panel, lambda: not panel.overlay)
        pilot.app.marked_runs.update({twin})
        await pilot.press("o")
        await wait_drawn(pilot, panel, lambda: panel.overlay and len(panel.others) == 2
                         and any(" = " in line.label for line in panel.lines))
        labels = [line.label for line in panel.lines]
        # The twin's lines equal the main run's: one line each, named for both runs.
        assert "made train = made#2 train" in labels and "made val = made#2 val" in labels
        assert "made#3 train" in labels
        legend = str(pilot.app.screen.query_one("#legend-loss").render())
        assert "made#2" in legend and "made#3" in legend and "20260103" not in legend


def test_a_run_that_coincides_with_another_for_part_of_its_steps_is_marked_its_twin():
    """Bugs caught: only whole-series twins merged, so a run of one seed that stopped earlier
    (or is still training) was drawn over the other's identical steps, as one line; a twin
    found by a single common point (any two runs meet somewhere); or the split losing the join."""
    xs = [float(x) for x in range(2, 82, 2)]
    a = Line("loss", "made train", xs, [500 - x for x in xs], "green")
    b = Line("loss", "made#2 train", xs[:20], [500 - x for x in xs[:20]], "red")
    c = Line("loss", "vae train", xs, [600 - x for x in xs], "cyan")
    d = Line("loss", "other train", [1.0, 2.0], [7.0, 498.0], "blue")  # meets a at step 2 only
    merged = _merge_identical([a, b, c, d, Line("loss", "made#3 train", xs, list(a.ys), "yellow")])
    assert [line.label for line in merged] == ["made train = made#3 train", "made#2 train", "vae train", "other train"]
    twin = merged[1]
    assert (twin.twin, twin.shared_to) == ("made train", 40.0) and merged[2].twin is None and merged[3].twin is None
    (mx, _), (px, py) = split_twin(twin)
    assert mx == xs[:20] and px == [40.0]  # all shared: markers, and the line joins at step 40
    longer = _merge_identical([b, a])[1]  # the later run went on: markers to 40, a line after
    (mx, _), (px, _) = split_twin(longer)
    assert longer.twin == "made#2 train" and mx == xs[:20] and px[0] == 40.0 and px[-1] == 80.0


@pytest.mark.asyncio
async def test_overlay_marks_a_run_that_follows_another_for_part_of_its_steps(tmp_path):
    """Issue 17: two runs of one seed hid each other in the overlay; identical series were merged,
    but a run stopped earlier (here 70 of 120 steps) was drawn over the other as one line."""
    runs = tmp_path / "runs"
    main = make_run(runs, "made-20260101-000000", steps=120)
    twin = make_run(runs, "made-20260102-000000", steps=70)  # the same seed, stopped at step 70
    async with detail_app(tmp_path, main, steps=120).run_test(size=SIZE) as pilot:
        panel = await open_detail(pilot)
        pilot.app.marked_runs.update({twin})
        await pilot.press("o")
        await wait_drawn(pilot, panel, lambda: panel.overlay and len(panel.lines) == 4)
        by_label = {line.label: line for line in panel.lines}
        assert by_label["made#2 train"].twin == "made train" and by_label["made#2 train"].shared_to == 70
        assert by_label["made#2 val"].twin == "made val" and by_label["made#2 val"].shared_to == 66
        legend = str(pilot.app.screen.query_one("#legend-loss").render())
        assert f"{TWIN_MARKER} made#2 train (= made train to step 70)" in legend
        plot = pilot.app.screen.query_one("#plot-loss", PlotWidget)
        drawn = labelled(plot, "made#2 train")
        assert isinstance(drawn, ScatterPlot) and drawn.marker == TWIN_MARKER


@pytest.mark.asyncio
async def test_home_curve_status_shows_the_values_at_80x24(tmp_path):
    """Bug caught (tmux walk at 80x24): the status line began with the run's name, which the
    pane's border already shows, and the pane cut it before the validation NLL."""
    run = make_run(tmp_path / "runs", "made-20261205-124124")
    app = create_app(tmp_path / "runs", queue=FixedQueue([job_info("j1", "done", step=24, run_dir=str(run))]),
                     image_protocol="halfcell")
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            found = app.screen.query(CurvesPanel)
            if found and found.first()._loaded and found.first()._drawn is not None:
                break
        status = app.screen.query_one("#curves-status")
        visible = str(status.render())[:status.content_size.width]
        assert "val NLL 468 (best 468)" in visible and run.name not in visible, visible
        plot = app.screen.query_one("#plot-loss", PlotWidget)
        columns = plot.query_one("#plot").content_size.width
        xs = plot._x_formatter.get_ticks(2, 24)  # the ticks this plot asks for at its width
        assert len(xs) >= 2 and (xs[1] - xs[0]) / 22 * columns >= 4, (columns, xs)


@pytest.mark.asyncio
async def test_curve_keys_on_the_home_screen_and_in_the_help(tmp_path):
    """Bugs caught: the curve keys missing from the home screen or from `?`; the home's curve
    forgetting the view settings when another job is selected, or the detail not taking them."""
    runs = tmp_path / "runs"
    a, b = make_run(runs, "made-a"), make_run(runs, "made-b", loss0=600.0)
    queue = FixedQueue([job_info("j1", "done", step=24, run_dir=str(a)), job_info("j2", "done", step=24, run_dir=str(b))])
    app = create_app(runs, queue=queue, image_protocol="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        panel = None
        for _ in range(100):
            await pilot.pause(0.05)
            found = app.screen.query(CurvesPanel)
            if found and found.first()._loaded:
                panel = found.first()
                break
        assert panel is not None and panel.main.run_dir == a
        await pilot.press("m", "l")
        await wait_drawn(pilot, panel, lambda: panel.smoothing == 0.9 and panel.log_scale)
        await pilot.press("j")
        for _ in range(100):
            await pilot.pause(0.05)
            found = app.screen.query(CurvesPanel)
            if found and found.first().main.run_dir == b and found.first()._loaded:
                break
        moved = app.screen.query_one(CurvesPanel)
        assert moved.main.run_dir == b and moved.smoothing == 0.9 and moved.log_scale
        await pilot.press("enter")  # the detail's curves start with the session's settings too
        await pilot.pause(0.3)
        detail = app.screen.query_one(CurvesPanel)
        assert isinstance(app.screen, DetailScreen) and detail.smoothing == 0.9 and detail.log_scale
        await pilot.press("escape")
        await pilot.pause(0.2)
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        rows = [[str(c) for c in app.screen.query_one("#help-keys").get_row_at(i)]
                for i in range(app.screen.query_one("#help-keys").row_count)]
        described = {row[1] for row in rows}
        assert {"Smooth", "Log scale", "Last N", "Cursor ←", "Cursor →"} <= described


# -- the home table's sparkline ---------------------------------------------------------------------
def test_job_sparkline_covers_the_whole_run_downsampled(tmp_path):
    """Bug caught (issue 17): the sparkline showing only the first points of a run (a buffer that
    stops filling) or only the last ones (a ring buffer): here the loss drops only in the last
    fifth, so either would draw a flat line."""
    run = tmp_path / "runs" / "long"
    run.mkdir(parents=True)
    write_metrics(run, [{"step": s, "split": "train", "loss": 100.0 if s <= 8000 else 0.0} for s in range(2, 10001, 2)])
    app = create_app(tmp_path / "runs", queue=FixedQueue([]), image_protocol="halfcell")
    line = app._spark(job_info("j1", "done", step=10000, total=10000, run_dir=str(run)))
    assert len(line) == 14 and line.startswith("█" * 10) and line.endswith("▁▁")


@pytest.mark.parametrize("rows", [5, 9, 14, 30])
@pytest.mark.parametrize("low,high", [(13.0, 47.0), (192.0, 292.0), (0.011, 0.93)])
def test_y_ticks_stay_three_rows_apart_whatever_the_plot_height(rows, low, high):
    """textual-plot asks for 8 ticks at every height: on a 9-row plot ticks every 5 nats fell 1
    and 2 rows apart in turn. Catches a formatter that ignores the plot's height."""
    from textual_plot.axis_formatter import NumericAxisFormatter

    from workbench.tui.widgets.plotting import SpacedTicks

    ticks = SpacedTicks(NumericAxisFormatter(), lambda: rows).get_ticks(low, high)
    assert all(low <= t <= high for t in ticks) and len(ticks) >= (2 if rows >= 12 else 1)
    row_of = [(t - low) / (high - low) * rows for t in ticks]
    assert all(b - a >= 3 - 1e-9 for a, b in zip(row_of, row_of[1:]))


def test_x_ticks_leave_room_between_their_labels():
    """Bug caught (tmux walk at 80x24): textual-plot's x steps aim at five intervals whatever the
    width, so a 35-column plot of 8790 steps read "1000200030004000500060007008000"."""
    from workbench.tui.widgets.plotting import ColumnTicks

    for columns, lo, hi in [(35, 0, 8790), (35, 2, 24), (20, 0, 1), (120, 0, 100_000), (30, 40, 60), (35, 0, 15240)]:
        ticks = ColumnTicks(lambda c=columns: c)
        xs = ticks.get_ticks(lo, hi)
        labels = ticks.get_labels_for_ticks(xs)
        assert len(xs) >= 2 and all(lo <= x <= hi for x in xs), (columns, xs)
        cells_apart = (xs[1] - xs[0]) / (hi - lo) * columns
        assert cells_apart >= max(map(len, labels)) + 2, (columns, xs, labels)
        assert len(set(labels)) == len(labels), labels  # every label says its own value
        assert (hi - xs[-1]) / (hi - lo) * columns >= len(labels[-1]) / 2, (columns, xs)  # not cut at the edge
    assert ColumnTicks(lambda: 35).get_ticks(0, 8790) == [0, 2000, 4000, 6000, 8000]
