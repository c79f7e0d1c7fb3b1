"""The app in a real pseudo-terminal, as a user starts it: `genwb` quits with exit code 0 while an
evaluation runs (q then y), and exits after checkpointing when its terminal goes away (the pty's
master closed: SIGHUP, then EIO on every write), instead of hanging in Textual's shutdown."""
from __future__ import annotations

import json
import os
import pty
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import train_tiny

ROOT = Path(__file__).resolve().parent.parent


class AppInPty:
    """`genwb --runs RUNS` as the session leader of a new pty, its output read by a thread."""

    def __init__(self, runs: Path, env: dict):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the app, with the pty as its controlling terminal
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, "-m", "workbench.cli", "--runs", str(runs),
                                       "--image-protocol", "halfcell", "--cpu-slots", "1"], env)
        self.output = bytearray()
        self.status: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.output += data

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code (128+N for signal N), or None if it is still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status if self.status >= 0 else 128 - self.status
            time.sleep(0.1)
        return None

    def kill(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        try:
            os.close(self.fd)
        except OSError:
            pass


def wait_until(condition, timeout: float, what: str, app: AppInPty):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s; the app showed:\n{app.text()[-2000:]}")
        time.sleep(0.1)


def queue_jobs(runs: Path) -> dict:
    try:
        return {j["id"]: j for j in json.loads((runs / "queue.json").read_text())["jobs"]}
    except (OSError, ValueError, KeyError):
        return {}


@pytest.fixture
def env(tiny_preset, isolated):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm-256color", COLUMNS="100", LINES="30",
               TEXTUAL_ANIMATIONS="none")
    return env


@pytest.mark.slow
def test_q_y_while_an_evaluation_runs_exits_0_and_cancels_it(tiny_preset, isolated, env):
    """Bug caught (issue 16 item 2): "terminate called without an active exception", "Aborted",
    exit code 134 when quitting during an evaluation; or the evaluation left running/queued."""
    from workbench.jobs import JobQueue

    runs = isolated / "runs"
    run_dir = train_tiny(tiny_preset, runs)
    client = JobQueue(runs, work=False)
    job = client.submit_eval(run_dir, n=20000, batch_size=20)  # long enough to be running at q
    app = AppInPty(runs, env)
    try:
        wait_until(lambda: queue_jobs(runs).get(job, {}).get("state") == "running", 120, "the evaluation running", app)
        app.send("q")
        wait_until(lambda: "Evaluation" in app.text() and "cancelled" in app.text(), 30, "the quit question", app)
        app.send("y")
        rc = app.wait_exit(90)
        text = app.text()
        assert rc == 0, f"exit code {rc}:\n{text[-2000:]}"
        assert "Aborted" not in text and "terminate called" not in text and "Traceback" not in text
        assert queue_jobs(runs)[job]["state"] == "cancelled"
    finally:
        app.kill()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["terminal closed", "SIGHUP"])
def test_the_app_exits_after_checkpointing_when_its_terminal_goes_away(tiny_preset, isolated, env, how):
    """Bug caught (issue 16 case 9): the process never exiting after `tmux kill-session` (Textual's
    writer thread died on EIO and its bounded queue blocked the shutdown), or exiting without
    checkpointing the running job."""
    from workbench.jobs import JobQueue

    runs = isolated / "runs"
    client = JobQueue(runs, work=False)
    job = client.submit(tiny_preset, ["train.max_steps=1000000", "train.checkpoint_every=1000000",
                                      "train.val_every=1000000", "sample.every=1000000"])
    app = AppInPty(runs, env)
    try:
        def trained() -> bool:
            record = queue_jobs(runs).get(job, {})
            metrics = runs / (record.get("run_dir") or "/nonexistent") / "metrics.jsonl"  # relative to runs/
            return record.get("state") == "running" and metrics.exists() and metrics.stat().st_size > 500

        wait_until(trained, 120, "the job training", app)
        for _ in range(200):  # the app keeps redrawing: Textual's writer has work when the terminal goes
            if len(app.output) > 20000:
                break
            time.sleep(0.05)
        if how == "SIGHUP":  # as tmux kill-session sends it
            os.kill(app.pid, signal.SIGHUP)
        else:  # the terminal goes away: the kernel sends SIGHUP, and every write after fails (EIO)
            os.close(app.fd)
        rc = app.wait_exit(90)
        assert rc is not None, "the app did not exit after its terminal went away"
        record = queue_jobs(runs)[job]
        run_dir = runs / record["run_dir"]
        assert (run_dir / "checkpoints" / "last.pt").exists(), "no checkpoint written on the way out"
        assert record["state"] == "queued" and record["step"] > 0, record  # resumes at the next start
    finally:
        app.kill()


class DeadTerminal:
    """A terminal that is gone: every write fails as a hung-up tty's does (EIO)."""

    def __init__(self):
        self.writes = 0

    def write(self, text):
        self.writes += 1
        raise OSError(5, "Input/output error")

    def flush(self):
        raise OSError(5, "Input/output error")

    def fileno(self):
        return 2


@pytest.mark.parametrize("writes", [5, 100])
def test_writer_thread_survives_a_dead_terminal(writes):
    """Bug caught: Textual's WriterThread dies on the first EIO, and its bounded queue (30) then
    blocks the 31st write and stop() for ever; the app hung in its shutdown (issue 16 case 9)."""
    from workbench.tui.driver import SafeWriterThread

    gone = []
    writer = SafeWriterThread(DeadTerminal(), lambda: gone.append(1))
    writer.start()
    done = threading.Event()

    def shutdown():
        for _ in range(writes):
            writer.write("\x1b[?1049l frame")
        writer.stop()
        done.set()

    threading.Thread(target=shutdown, daemon=True).start()
    assert done.wait(10), "writes to a dead terminal blocked"
    assert gone == [1]



def test_input_thread_reading_a_dead_terminal_leaves_like_a_hang_up():
    """Bug caught: EIO on reading the terminal turned into Textual's panic (a traceback written to
    the gone terminal, jobs not checkpointed) instead of the hang-up path."""
    from workbench.tui.driver import GenwbDriver, TerminalGone

    posted = []

    class App:
        def post_message(self, message):
            posted.append(message)

        def call_later(self, *args):  # the panic path: must not be taken
            posted.append(("panic", args))

    driver = GenwbDriver.__new__(GenwbDriver)  # no terminal needed: only the thread's ending is tested
    driver._app, driver.terminal_gone = App(), False
    driver.exit_event = threading.Event()
    driver._file = DeadTerminal()

    def dead_read():
        raise OSError(5, "Input/output error")

    driver.run_input_thread = dead_read
    silenced = []
    import workbench.tui.driver as module

    real = module.silence_terminal_fds
    module.silence_terminal_fds = silenced.append  # keep this test process's own stdout and stderr
    try:
        driver._run_input_thread()
    finally:
        module.silence_terminal_fds = real
    assert len(posted) == 1 and isinstance(posted[0], TerminalGone)
    assert driver.terminal_gone and driver.exit_event.is_set() and silenced
