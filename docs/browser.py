"""A real headless Chromium driven over the DevTools protocol (aiohttp websockets only): open a
URL, wait, evaluate JavaScript, take a screenshot. Used by docs/screenshots.py and by the test that
checks the HTML front renders inside MLflow's artifact viewer.

`Browser()` starts `chromium --headless` on a free 127.0.0.1 port with a throw-away profile and
stops it on exit; `None` from `find_chromium()` means no Chromium is installed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, width: int = 1400, height: int = 900) -> None:
        self.size = (width, height)
        self.loop = asyncio.new_event_loop()

    def __enter__(self) -> Browser:
        self.profile = tempfile.mkdtemp(prefix="prunetune-chromium-")
        port = _free_port()
        self.proc = subprocess.Popen(
            [
                find_chromium(),
                *FLAGS,
                f"--remote-debugging-port={port}",
                f"--user-data-dir={self.profile}",
                f"--window-size={self.size[0]},{self.size[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        targets = None
        for _ in range(100):
            try:
                targets = json.load(
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2)
                )
                break
            except OSError:
                time.sleep(0.2)
        page = next(t for t in targets if t["type"] == "page")
        self.loop.run_until_complete(self._connect(page["webSocketDebuggerUrl"]))
        return self

    async def _connect(self, url: str) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url, max_msg_size=0)
        self.next_id = 0

    async def _call(
        self, method: str, params: dict | None = None, session: str | None = None
    ) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self.ws.send_str(json.dumps(msg))
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """One DevTools command (on the page, or on an attached target's `session`)."""
        return self.loop.run_until_complete(
            asyncio.wait_for(self._call(method, params, session), 60)
        )

    def frame_js(self, url_prefix: str, expression: str):
        """The value of a JavaScript expression inside the (out-of-process) frame whose URL starts
        with `url_prefix`, e.g. the sandboxed iframe of MLflow's HTML artifact viewer; None if there
        is no such frame."""
        targets = self.call("Target.getTargets")["targetInfos"]
        frame = next(
            (t for t in targets if t["type"] == "iframe" and t["url"].startswith(url_prefix)), None
        )
        if frame is None:
            return None
        session = self.call(
            "Target.attachToTarget", {"targetId": frame["targetId"], "flatten": True}
        )["sessionId"]
        got = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
        )
        return got.get("result", {}).get("value")

    def goto(self, url: str, settle: float = 4.0) -> None:
        """Open `url` and give the page `settle` seconds to render."""
        self.call("Page.navigate", {"url": url})
        time.sleep(settle)

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        got = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        return got.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> bool:
        """Poll a JavaScript condition until it is truthy (True) or `timeout` seconds pass
        (False)."""
        end = time.time() + timeout
        while time.time() < end:
            if self.js(expression):
                return True
            time.sleep(0.3)
        return False

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def __exit__(self, *exc) -> None:
        try:
            self.loop.run_until_complete(self.session.close())
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.loop.close()
            shutil.rmtree(self.profile, ignore_errors=True)
