"""The app's non-Textual parts: run folders read back (runindex), bounded curve buffers,
reference figures, and the CLI entry that opens the app (its factory, its import hygiene)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tests.tui_fakes import classifier_eval, count_reads, make_run
from workbench.reference import reference
from workbench.runindex import Curves, MetricsTail, Series, eval_rows, latest_samples, scan_runs, sparkline


def test_series_stays_bounded_and_keeps_the_ends():
    series = Series(capacity=64)
    for i in range(1_000_000):
        series.append(i, -i)
    assert 32 <= len(series) < 64
    xs, ys = series.points()
    assert xs[0] == 0 and xs[-1] == 999_999 and ys[-1] == -999_999
    gaps = {b - a for a, b in zip(series.xs, series.xs[1:])}
    assert gaps == {series.stride}  # evenly spread


def test_curves_and_tail_read_only_new_whole_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail, curves = MetricsTail(path), Curves()
    assert tail.read_new() == []
    path.write_text('{"step": 1, "split": "train", "loss": 3.0, "kl": 1.0, "lr": 0.1}\n{"step": 2, "spl')
    curves.feed(tail.read_new())
    assert curves.names() == ["train/loss", "train/kl"]
    with open(path, "a") as f:
        f.write('it": "train", "loss": 2.0}\n{"step": 2, "split": "val", "nll": 9.0, "bpd": NaN}\n')
    curves.feed(tail.read_new())
    assert curves.get("train/loss").points() == ([1.0, 2.0], [3.0, 2.0])
    assert curves.get("val/nll").points() == ([2.0], [9.0]) and curves.get("val/bpd") is None
    path.write_text('{"step": 1, "split": "train", "loss": 5.0}\n')  # a resume rewrote it shorter
    rows = tail.read_new()
    assert tail.restarted and rows == [{"step": 1, "split": "train", "loss": 5.0}]


def test_tail_starts_again_when_a_resume_replaces_the_file_with_a_longer_one(tmp_path):
    path, new = tmp_path / "metrics.jsonl", tmp_path / "new"
    path.write_text('{"step": 1}\n')
    tail = MetricsTail(path)
    assert tail.read_new() == [{"step": 1}] and not tail.restarted
    new.write_text('{"step": 1, "loss": 2.0}\n{"step": 2}\n')
    new.replace(path)  # as Run.truncate_metrics does; rows came after it before the next read
    assert tail.read_new() == [{"step": 1, "loss": 2.0}, {"step": 2}] and tail.restarted


def test_tail_can_skip_to_the_recent_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": i, "loss": 1.0}) + "\n" for i in range(10_000)))
    tail = MetricsTail(path)
    tail.skip_to_tail(1000)
    rows = tail.read_new()
    assert 0 < len(rows) < 100 and rows[-1]["step"] == 9999 and rows[0]["step"] == 10_000 - len(rows)


def test_sparkline():
    assert sparkline([]) == ""
    assert sparkline([1, 1, 1], 5) == "▁▁▁"
    assert sparkline([8, 4, 0], 5) == "█▅▁"
    assert len(sparkline(list(range(1000)), 12)) == 12


def test_scan_runs_reads_state_best_nll_and_fid(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "b", evaluation=classifier_eval(12.5, nll=470.0), recon=True)
    make_run(runs, "a", state="interrupted", steps=12)
    (runs / "junk").mkdir()
    rows = scan_runs(runs)
    assert [r.name for r in rows] == ["a", "b"]
    a, b = rows
    assert (a.state, a.step, a.total, a.best_val_nll, a.fid, a.finished) == ("interrupted", 12, 24, 540.0 - 36, None, False)
    assert (b.model, b.dataset, b.binarize, b.best_val_nll, b.bpd, b.fid) == ("made", "fashion-mnist", "dynamic", 468.0,
                                                                          470.0 / 543.4, 12.5)
    assert latest_samples(b.path) == (b.path / "samples" / "step-24.png", b.path / "samples" / "recon-step-24.png")
    assert latest_samples(a.path)[1] is None
    assert scan_runs(tmp_path / "missing") == []


def test_eval_rows_one_per_extractor_and_unevaluated_runs(tmp_path):
    runs = tmp_path / "runs"
    both = classifier_eval(12.5, nll=470.0)
    both["inception"] = {**both["classifier"], "extractor": "inception", "extractor_label": "Inception v3", "fid": 80.0}
    make_run(runs, "a", evaluation=both)
    make_run(runs, "b")
    rows = eval_rows(runs)
    assert [(r.name, r.extractor, r.values.get("fid")) for r in rows] == [
        ("a", "classifier", 12.5), ("a", "inception", 80.0), ("b", "", None)]
    assert rows[0].values["test_nll"] == 470.0 and rows[0].values["is_mean"] == 3.0


def test_reference_figures_from_results_files_or_the_readme(tmp_path):
    figures = {"dataset": "mnist", "binarize": "threshold", "n": 500, "extractor": "classifier",
               "floor": {"fid": 0.5}, "ceiling": {"fid": 99.0}}
    (tmp_path / "fid_reference-x.json").write_text(json.dumps(figures))
    ref = reference("mnist", "threshold", folder=tmp_path)
    assert ref.floor == {"fid": 0.5} and ref.ceiling == {"fid": 99.0} and "n = 500" in ref.source
    # Mutant: rows keyed by dataset and binarised-or-not only. Threshold figures are not those of
    # dynamic binarisation, classifier figures not Inception's, 256 levels not 4.
    assert reference("mnist", "dynamic", folder=tmp_path) is None
    assert reference("mnist", "threshold", folder=tmp_path, extractor="inception") is None
    readme = reference("fashion-mnist", "none", folder=tmp_path / "none")
    assert readme.floor["fid"] == 0.082 and readme.ceiling["fid"] == 178.40 and "README" in readme.source
    assert readme.levels == 256 and readme.extractor == "classifier"
    assert reference("fashion-mnist", "none", folder=tmp_path / "none", levels=4) is None
    assert reference("fashion-mnist", "none", folder=tmp_path / "none", extractor="inception") is None
    assert reference("fashion-mnist", "threshold", folder=tmp_path / "none") is None
    assert reference("fashion-mnist", "dynamic", folder=tmp_path / "none").floor["fid"] == 0.061
    assert reference("cifar10", "none", folder=tmp_path) is None


def test_genwb_without_a_command_opens_the_app_from_the_factory(tmp_path, monkeypatch):
    import workbench.tui.app as tui_app
    from workbench.cli import main

    opened = []

    class Recorder:
        def run(self):
            opened.append("run")

        def close_queue(self):
            opened.append("closed")

    def fake_create_app(runs_dir, **kwargs):
        opened.append((str(runs_dir), kwargs))
        return Recorder()

    monkeypatch.setattr(tui_app, "create_app", fake_create_app)
    monkeypatch.delenv("GENWB_IMAGE_PROTOCOL", raising=False)
    result = CliRunner().invoke(main, ["--runs", str(tmp_path), "--image-protocol", "halfcell", "--cpu-slots", "2"])
    assert result.exit_code == 0, result.output
    assert opened == [(str(tmp_path), {"image_protocol": "halfcell", "cpu_slots": 2}), "run", "closed"]


def test_headless_commands_never_import_textual(tmp_path):
    """genwb run/eval/sample/queue (and their --help) load no Textual module."""
    code = """
import sys
from click.testing import CliRunner
from workbench.cli import main
runner = CliRunner()
for args in (["queue", "list", "--runs", sys.argv[1]], ["run", "--help"], ["eval", "--help"], ["sample", "--help"],
             ["queue", "work", "--help"], ["--help"]):
    result = runner.invoke(main, args)
    assert result.exit_code == 0, (args, result.output)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "textual_image", "textual_plot")
                or m.startswith("workbench.tui"))
print(loaded)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_tail_skips_a_huge_unterminated_line_with_bounded_reads(tmp_path, monkeypatch):
    """Hostile case 18: metrics.jsonl ends in a line far longer than any row, still unterminated.
    Catches: a tail that reads the whole pending line again on every call (unbounded bytes), one
    that keeps it in memory, and one that parses its later end as a row."""
    import workbench.runindex as runindex

    monkeypatch.setattr(runindex, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(runindex, "CHUNK_BYTES", 4096)
    reads = count_reads(monkeypatch, runindex)
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n' + '{"step": 2, "loss": "' + "x" * 200_000)
    tail = MetricsTail(path)
    assert tail.read_new(budget=8192) == [{"step": 1, "loss": 2.0}]
    assert sum(n for n, _ in reads) <= 8192 and tail.more
    calls = 0
    while tail.more:
        calls += 1
        reads.clear()
        assert tail.read_new(budget=8192) == []
        assert sum(n for n, _ in reads) <= 8192  # bounded per call
    assert calls < 40
    reads.clear()
    assert tail.read_new(budget=8192) == [] and sum(n for n, _ in reads) == 0  # skipped for good: never read again
    with open(path, "a") as f:
        f.write('", "end": 1}\n{"step": 3, "loss": 1.5}\n')
    assert tail.read_new(budget=8192) == [{"step": 3, "loss": 1.5}]


def test_tail_skips_an_over_long_whole_line_and_reads_on(tmp_path, monkeypatch):
    """Catches a tail that gives up (or stalls) after a terminated line longer than MAX_LINE_BYTES."""
    import workbench.runindex as runindex

    monkeypatch.setattr(runindex, "MAX_LINE_BYTES", 100)
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "pad": "' + "y" * 500 + '"}\n{"step": 3}\n')
    assert MetricsTail(path).read_new() == [{"step": 1}, {"step": 3}]
    tail = MetricsTail(path)
    tail.skip_to_tail(60)  # the window ends inside nothing long: starts at a whole line
    assert tail.read_new() == [{"step": 3}]


def test_run_live_state_reads_step_from_metrics_state_from_the_lease(tmp_path):
    """status.json says running at step 0 (written at the start), the metrics reach 170, and
    nobody holds the lease: the run shows "interrupted" at 170. A queue job's state wins.
    Catches the browser's stale "0/300" and "running" for a dead process."""
    from tests.tui_fakes import job_info
    from workbench.runlive import RunLive

    run = make_run(tmp_path / "runs", "made-a", state="running", steps=12)
    (run / "status.json").write_text(json.dumps({"state": "running", "step": 0}))
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 170, "split": "train", "loss": 1.0}) + "\n")
    live = RunLive(run).read()
    assert (live.state, live.step, live.holder) == ("interrupted", 170, None)
    job = job_info("j3", "cancelled", step=160, run_dir=str(run))
    assert RunLive(run).read(job).state == "cancelled"
