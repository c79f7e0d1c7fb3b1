"""The suite's own guards (tests/conftest.py), checked on a CPU machine with a faked CUDA: a test
without the ``cuda`` mark sees no device, in-process and in its subprocesses; a ``cuda`` test sees
the real answer; a process a test leaves behind in a session of its own is killed at teardown."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

INNER_CONFTEST = """
import torch
torch.cuda.is_available = lambda: True  # a GPU server, as far as the tests can tell
from tests.conftest import pytest_configure, _cpu_unless_cuda_and_no_stray_processes  # noqa: F401
"""

INNER_TESTS = """
import os, subprocess, sys
import pytest, torch
from workbench.devices import resolve_device

def test_plain_sees_the_cpu():
    assert resolve_device("auto").type == "cpu"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    out = subprocess.run([sys.executable, "-c", "import os; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "''"

@pytest.mark.cuda
def test_marked_sees_the_device():
    assert torch.cuda.is_available() and resolve_device("auto").type == "cuda"
    assert os.environ.get("CUDA_VISIBLE_DEVICES") != ""

def test_leaves_a_daemon(tmp_path):
    # the child starts a grandchild in a session of its own and exits: an orphan, as torchrun's workers
    code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
            " start_new_session=True); open(sys.argv[1], 'w').write(str(p.pid))")
    subprocess.run([sys.executable, "-c", code, os.environ["PIDFILE"]], check=True)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_tests_see_the_cpu_unless_marked_cuda_and_leave_no_process(tmp_path):
    """Catches: the fixture not hiding CUDA from unmarked tests (``auto`` picks the GPU, the
    subprocess sees it), hiding it from ``cuda`` tests, or leaving an orphan in its own session alive."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent(INNER_CONFTEST))
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TESTS))
    pidfile = tmp_path / "pid"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIDFILE": str(pidfile)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 passed" in proc.stdout, proc.stdout[-3000:]
    pid = int(pidfile.read_text())
    end = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _alive(pid), f"the orphan {pid} outlived the test that started it"
