"""`genwb serve` in headless Chromium: the page opens, the app's jobs table arrives over the
websocket, and a key pressed in the page reaches the app (`?` opens the key list). Driven over the
Chrome DevTools Protocol with aiohttp (textual-serve's own dependency); skipped, with the reason,
where Debian's chromium or textual-serve is absent."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    import textual_serve  # noqa: F401
    import aiohttp
except ImportError:  # pragma: no cover - the skip says why
    aiohttp = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)"),
    pytest.mark.skipif(aiohttp is None, reason="needs textual-serve (pip install textual-serve)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer in {timeout} s") from None
            time.sleep(0.2)


class Browser:
    """Headless Chromium and one page, over the DevTools protocol; keeps the websocket frames the page receives."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=1400,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.frames = bytearray()
        self._id = 0
        self._pending: dict[int, asyncio.Future] = {}

    def devtools_url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        for line in self.proc.stderr:
            m = re.search(rb"DevTools listening on (ws://\S+)", line)
            if m:
                return m.group(1).decode()
            if time.monotonic() > deadline:
                break
        raise AssertionError("chromium did not start its DevTools endpoint")

    async def open(self, url: str) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.devtools_url(), max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        target = (await self.call("Target.createTarget", url="about:blank"))["targetId"]
        self.sid = (await self.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        await self.call("Network.enable", session=True)
        await self.call("Page.enable", session=True)
        await self.call("Page.navigate", url=url, session=True)

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data.get("result", data.get("error")))
            elif data.get("method") == "Network.webSocketFrameReceived":
                frame = data["params"]["response"]
                payload = frame["payloadData"]
                self.frames += base64.b64decode(payload) if frame.get("opcode") == 2 else payload.encode()

    async def call(self, method: str, session: bool = False, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.sid
        future = asyncio.get_running_loop().create_future()
        self._pending[self._id] = future
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, 30)

    async def wait_for(self, needle: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.frames:
            if time.monotonic() > deadline:
                tail = self.frames[-600:].decode("utf-8", "replace")
                raise AssertionError(f"{needle!r} not received in {timeout} s; last bytes: {tail!r}")
            await asyncio.sleep(0.1)

    async def key(self, char: str) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", session=True, type=kind, key=char, text=char if kind == "keyDown" else None)

    async def click(self, x: int, y: int) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    async def close(self) -> None:
        try:
            await self.ws.close()
            await self.session.close()
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def test_genwb_serve_shows_the_jobs_table_and_takes_keys(tmp_path):
    """Bug caught: `genwb serve` not serving the app, the page never receiving the jobs screen, or
    keys typed in the browser not reaching it."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), GENWB_OFFLINE="1", GENWB_CACHE=str(tmp_path / "cache"))
    server = subprocess.Popen([sys.executable, "-m", "workbench.cli", "serve", "--runs", str(tmp_path / "runs"),
                               "--port", str(port)], cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    browser = Browser(tmp_path / "profile")

    async def drive():
        try:
            await browser.open(f"http://localhost:{port}/")
            await browser.wait_for(b"step/total", 90)  # the jobs table's header, drawn by the app
            await browser.click(700, 450)
            await browser.key("?")
            await browser.wait_for(b"Keys of the jobs screen", 30)
        finally:
            await browser.close()

    try:
        wait_http(f"http://localhost:{port}/", 60)
        asyncio.run(drive())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
