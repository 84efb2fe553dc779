"""Drive headless Chromium over the DevTools protocol on a pipe (stdlib only; used by test_browser.py).

`--remote-debugging-pipe` makes Chromium read protocol commands from fd 3 and write replies and
events to fd 4, as NUL-terminated JSON; Puppeteer's `pipe: true` mode uses the same channel. It
needs no websocket client library and no open port. We open one page, collect every console
message, uncaught exception and browser log entry (failed loads land there), read the rendered
DOM back with JavaScript, and take a full-page screenshot.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--remote-debugging-pipe"]


def find_chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageRun:
    dom: str = ""
    probe: Any = None  # the value of the JavaScript expression evaluated after load
    console: list[dict] = field(default_factory=list)  # {"source", "level", "text"}
    screenshot: bytes = b""

    def errors(self) -> list[dict]:
        return [m for m in self.console if m["level"] in ("error", "assert")]


class _Pipe:
    def __init__(self, proc, write_fd: int, read_fd: int):
        self.proc, self.w, self.r = proc, write_fd, read_fd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None,
             timeout: float = 60.0) -> dict:
        self.next_id += 1
        msg: dict = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60.0) -> dict:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        while True:
            ev = self._read(timeout)
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError("chromium did not answer on the DevTools pipe")
            ready, _, _ = select.select([self.r], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)


def render(url: str, expression: str, *, profile: Path, width: int = 1280, timeout: float = 90.0) -> PageRun:
    """Load `url` headless; return its rendered DOM, the value of `expression`, console messages, a PNG."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium")
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def wire_fds() -> None:  # in the child: the protocol's fixed descriptors 3 (commands) and 4 (replies)
        # through spare numbers first: a pipe end may already be 3 or 4, and dup2 onto itself would
        # leave its close-on-exec flag set
        high_r, high_w = os.dup(to_chrome_r), os.dup(from_chrome_w)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=wire_fds, close_fds=False)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = _Pipe(proc, to_chrome_w, from_chrome_r)
    run = PageRun()
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        pipe.send("Page.navigate", {"url": url}, session=session)
        pipe.wait_event("Page.loadEventFired", timeout)
        value = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        run.probe = value.get("result", {}).get("value")
        run.dom = pipe.send("Runtime.evaluate", {"expression": "document.documentElement.outerHTML",
                                                 "returnByValue": True}, session=session)["result"]["value"]
        shot = pipe.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                         session=session, timeout=timeout)
        run.screenshot = base64.b64decode(shot["data"])
        for ev in pipe.events:  # console calls, uncaught exceptions, browser log entries (failed loads)
            p = ev.get("params", {})
            if ev.get("method") == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                run.console.append({"source": "console", "level": p.get("type", "log"), "text": text})
            elif ev.get("method") == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                run.console.append({"source": "exception", "level": "error",
                                    "text": d.get("exception", {}).get("description") or d.get("text", "")})
            elif ev.get("method") == "Log.entryAdded":
                e = p.get("entry", {})
                run.console.append({"source": e.get("source", "log"), "level": e.get("level", "info"),
                                    "text": f"{e.get('text', '')} {e.get('url', '')}".strip()})
        try:
            pipe.send("Browser.close", timeout=10)
        except RuntimeError:
            pass  # it may close the pipe before answering
    finally:
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return run
