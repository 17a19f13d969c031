"""A small headless-Chromium driver over the DevTools protocol, for the report's interactive tests.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol commands (JSON, each ended
by a NUL byte) on its file descriptor 3 and writes replies and events on 4. This needs only the
system browser (Debian's ``chromium``) and the standard library: no driver binary, no network, no
extra package. Mouse events go through ``Input.dispatchMouseEvent``, so a click is a real click
(the page's own handlers, plotly's included, see a mousedown / mouseup pair).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field


def browser_path() -> str | None:
    """The first Chromium or Chrome on PATH, or None."""
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@dataclass
class PageLog:
    """What the page did besides rendering: console errors, uncaught exceptions, every URL requested."""

    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def external(self) -> list[str]:
        """Requested URLs that would leave the machine (anything but file:, data:, blob:, about:)."""
        return [u for u in self.requests if not u.startswith(("file:", "data:", "blob:", "about:"))]


class Browser:
    """``with Browser() as b: page = b.open(url)``; one page at a time is enough for the tests."""

    def __init__(self, executable: str | None = None, width: int = 1400, height: int = 1000) -> None:
        self.executable = executable or browser_path()
        if self.executable is None:
            raise RuntimeError("no chromium / chrome on PATH")
        self.size = (width, height)
        self._id = 0
        self._buffer = b""
        self._events: list[dict] = []

    def __enter__(self) -> Browser:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        self._profile = tempfile.mkdtemp(prefix="probekit-chromium-")

        def child_fds() -> None:  # the protocol's fixed descriptors 3 (commands in) and 4 (replies out)
            a, b = os.dup(commands_read), os.dup(replies_write)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._process = subprocess.Popen(
            [
                self.executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile}",
                f"--window-size={self.size[0]},{self.size[1]}",
                "about:blank",
            ],
            preexec_fn=child_fds,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(replies_write)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # the browser may already be gone; it is killed below either way
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._commands)
        os.close(self._replies)
        shutil.rmtree(self._profile, ignore_errors=True)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        """Send one command and return its result; raises on a protocol error or after ``timeout`` s."""
        self._id += 1
        message: dict = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        reply = None
        while reply is None:
            for message in self._read(deadline):  # events that came with the reply are kept, not dropped
                if message.get("id") == self._id:
                    reply = message
                else:
                    self._events.append(message)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _read(self, deadline: float) -> list[dict]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed its protocol pipe")
            self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        return [json.loads(m) for m in messages]

    def open(self, url: str, timeout: float = 120) -> Page:
        """A new tab showing ``url``, returned once its load event has fired."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.size[0], "height": self.size[1], "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self.send("Page.navigate", {"url": url}, session=session)
        page.wait_event("Page.loadEventFired", timeout)
        return page

    def take_events(self, session: str) -> list[dict]:
        """The events of ``session`` received so far (removed from the queue)."""
        mine = [e for e in self._events if e.get("sessionId") == session]
        self._events = [e for e in self._events if e.get("sessionId") != session]
        return mine


class Page:
    """One tab: evaluate JavaScript, move and click the mouse, and the log of what it did."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.log = PageLog()

    def _drain(self) -> list[dict]:
        events = self.browser.take_events(self.session)
        for e in events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                self.log.console_errors.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                self.log.exceptions.append(str(details.get("exception", {}).get("description", details.get("text"))))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                self.log.console_errors.append(params["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent":
                self.log.requests.append(params["request"]["url"])
        return events

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        """Block until the page sends the event ``method``; returns its parameters."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self._drain():
                if e.get("method") == method:
                    return e.get("params", {})
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.browser.send("Runtime.evaluate", {"expression": "0"}, session=self.session)  # pumps the pipe
            time.sleep(0.05)

    def evaluate(self, expression: str, timeout: float = 60) -> object:
        """The JSON value of ``expression`` (promises awaited); raises if it throws."""
        result = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
            timeout=timeout,
        )
        self._drain()
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> object:
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still false after {timeout} s")
            time.sleep(0.1)

    def mouse(self, kind: str, x: float, y: float) -> None:
        """One mouse event at viewport coordinates: "mouseMoved", "mousePressed" or "mouseReleased"."""
        params = {"type": kind, "x": x, "y": y, "button": "left" if kind != "mouseMoved" else "none"}
        if kind != "mouseMoved":
            params["clickCount"] = 1
        self.browser.send("Input.dispatchMouseEvent", params, session=self.session)
        self._drain()

    def click(self, x: float, y: float) -> None:
        """Move to (x, y) and click there with the left button."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.mouse(kind, x, y)

    def screenshot(self, path: str | os.PathLike) -> None:
        """A PNG of the viewport."""
        import base64

        data = self.browser.send("Page.captureScreenshot", {"format": "png"}, session=self.session)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
