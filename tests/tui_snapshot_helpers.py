"""What the snapshot tests share: a workspace of run folders made here, a fixed queue (no threads,
no timings), half-cell images, relative paths; and a pause that waits for a condition."""
from __future__ import annotations

import time


from tests.conftest import TINY_PRESET
from tests.tui_fakes import FixedQueue, classifier_eval, job_info, make_run
from workbench.tui.app import create_app


def make_workspace(tmp_path, monkeypatch):
    """tmp_path as the working directory, with runs/ and presets/ in it, so paths on screen are fixed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "tiny.toml").write_text(TINY_PRESET)
    runs = tmp_path / "runs"
    made = make_run(runs, "made-a", evaluation=classifier_eval(12.5, is_mean=4.5, nll=470.0), checkpoint=True)
    vq = make_run(runs, "vqvae-b", model="vqvae", parts=("recon", "commitment", "codebook", "perplexity", "codes_used"),
                  recon=True, steps=36, loss0=300.0, evaluation=classifier_eval(40.25, is_mean=2.5))
    live = make_run(runs, "made-c", state="running", steps=12, loss0=560.0)
    jobs = [job_info("j1", "done", step=24, loss=480.0, run_dir="runs/made-a"),
            job_info("j2", "done", name="vqvae", model="vqvae", step=36, total=36, loss=210.0, run_dir="runs/vqvae-b"),
            job_info("j3", "running", name="made-c", step=12, loss=530.0, images_per_s=96.5, eta_s=125, run_dir="runs/made-c"),
            job_info("j4", "waiting", name="prior", model="vqvae_prior", after="j3")]
    return {"runs": runs, "made": made, "vq": vq, "live": live, "jobs": jobs}


def app_for(workspace, jobs=None):
    return create_app("runs", queue=FixedQueue(workspace["jobs"] if jobs is None else jobs), image_protocol="halfcell")


async def settle(pilot, condition=lambda: True, timeout=120.0):
    """Wait for ``condition`` (a loaded machine may take long), then for the frame it leads to. A
    snapshot taken before its screen is ready would fail as a picture that says nothing of why."""
    deadline = time.monotonic() + timeout
    await pilot.pause()
    while not condition():
        assert time.monotonic() < deadline, f"the screen was not ready after {timeout:.0f} s: {condition.__name__}"
        await pilot.pause(0.1)
    await pilot.pause(0.3)
    await quiet_screen(pilot)


async def quiet_screen(pilot, limit_s: float = 10.0) -> None:
    """Wait until two frames 0.3 s apart are the same: panes that follow the cursor, coalesced
    updates and log tails land a frame or two after the state they show, later on a busy machine.
    (A blinking cursor never settles: after ``limit_s`` the picture is taken as it is.)"""
    end = time.monotonic() + limit_s
    before = pilot.app.export_screenshot()
    while time.monotonic() < end:
        await pilot.pause(0.3)
        now = pilot.app.export_screenshot()
        if now == before:
            return
        before = now


