"""``genwb diff`` and ``workbench.rundiff``: the config keys that differ, and the final metrics
side by side, from run folders trained here."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.conftest import offline_workspace, preset_text, train_tiny
from workbench.cli import main
from workbench.rundiff import MetricRow, diff_runs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny MADE runs that differ in model.hidden and train.lr only."""
    root = tmp_path_factory.mktemp("diff")
    with offline_workspace(root):
        preset = root / "made.toml"
        preset.write_text(preset_text('name = "made"\nhidden = [32]\nnum_masks = 2', "made"))
        a = train_tiny(preset, root / "runs")
        b = train_tiny(preset, root / "runs", ["model.hidden=[48]", "train.lr=0.001"])
        yield a, b


def test_two_runs_differ_in_exactly_the_keys_that_were_changed(two_runs):
    """Kills: keys that differ left out, keys that do not differ shown (run.name, the
    defaults), and a comparison of text instead of values."""
    a, b = two_runs
    d = diff_runs([a, b])
    assert [(r.key, r.values) for r in d.config] == [("model.hidden", [[32], [48]]), ("train.lr", [0.003, 0.001])]
    assert [r.text(1) for r in d.config] == ["[48]", "0.001"]
    assert d.names == [a.name, b.name]


def test_the_final_metrics_come_from_each_run_folder(two_runs):
    a, b = two_runs
    d = diff_runs([a, b])
    metrics = {r.label: r for r in d.metrics}
    for i, run in enumerate((a, b)):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        best = min((r for r in rows if r["split"] == "val"), key=lambda r: r["nll"])
        evaluation = json.loads((run / "eval.json").read_text())
        assert metrics["best val NLL (nats)"].values[i] == best["nll"]
        assert metrics["best val bits/dim"].values[i] == best["bpd"]
        assert metrics["test NLL (nats)"].values[i] == evaluation["test_nll"]
        assert metrics["test bits/dim"].values[i] == evaluation["test_bpd"]
        assert metrics["steps"].values[i] == 24 and metrics["state"].values[i] == "finished"
        assert metrics["test NLL is"].values[i] == "exact"
        assert 0 < metrics["training time"].values[i] <= metrics["wall time"].values[i] + 1  # stamps are in seconds
    nll = metrics["test NLL (nats)"]
    assert nll.best == {nll.values.index(min(nll.values))}


def test_evaluations_show_their_fid_and_is_and_a_run_without_one_shows_none(two_runs, tmp_path):
    import shutil

    a, b = (shutil.copytree(r, tmp_path / r.name) for r in two_runs)
    evaluation = json.loads((a / "eval.json").read_text())
    evaluation["classifier"] = {"fid": 11.32, "is_mean": 4.99, "n": 10000}
    (a / "eval.json").write_text(json.dumps(evaluation))
    metrics = {r.label: r for r in diff_runs([a, b]).metrics}
    assert metrics["FID (classifier)"].values == [11.32, None] and metrics["IS (classifier)"].values == [4.99, None]
    assert metrics["FID (classifier)"].text(0) == "11.32" and metrics["FID (classifier)"].text(1) == "—"


def test_three_runs_and_a_key_only_one_model_has(two_runs, tmp_path):
    """A run of another model: its hyper-parameters the others lack are shown against "—"."""
    a, b = two_runs
    c = shutil_copy_with_model(a, tmp_path)
    d = diff_runs([a, b, c])
    rows = {r.key: r for r in d.config}
    assert rows["model.name"].values == ["made", "made", "nade"]
    assert rows["model.num_masks"].text(2) == "—"


def shutil_copy_with_model(run, tmp_path):
    import shutil

    c = shutil.copytree(run, tmp_path / "nade-20260101-000000")
    text = (c / "config.toml").read_text().replace('name = "made"', 'name = "nade"').replace("num_masks = 2\n", "")
    (c / "config.toml").write_text(text)
    return c


def test_genwb_diff_prints_both_tables(two_runs):
    a, b = two_runs
    result = CliRunner().invoke(main, ["diff", str(a), str(b)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "model.hidden" in out and "[48]" in out and "train.lr" in out and "0.001" in out
    assert "model.num_masks" not in out and "run.name" not in out
    for label in ("best val NLL (nats)", "test NLL (nats)", "test bits/dim", "steps", "wall time"):
        assert label in out


@pytest.mark.parametrize("args, message", [
    (["{a}"], "give two or more run folders"),
    (["{a}", "{missing}"], "not a run folder"),
])
def test_bad_input_is_one_line(two_runs, tmp_path, args, message):
    a, _ = two_runs
    argv = [x.format(a=a, missing=tmp_path / "nothing") for x in args]
    result = CliRunner().invoke(main, ["diff", *argv])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_metric_rows_format_durations_and_pick_the_best():
    row = MetricRow("wall time", [3725.4, None, 59.6], better="lower", format="duration")
    assert [row.text(i) for i in range(3)] == ["1:02:05", "—", "0:01:00"] and row.best == {2}
    assert MetricRow("IS", [4.0, 5.0], better="higher").best == {1}
    assert MetricRow("steps", [10, 20]).best == set()
