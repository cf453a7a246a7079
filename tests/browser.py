"""A real headless Chromium (Debian's ``chromium`` package) for the report tests: the DOM a page
ends up with once its scripts have run, a screenshot, and the elements and text that DOM holds.

One Chromium per test session (per pytest-xdist worker): the first page starts it, every later page
opens in it, each in a browser context of its own (its own cookies, storage and cache, as a fresh
profile has), and it is closed when the session's process ends. It is driven over its DevTools pipe
(``--remote-debugging-pipe``: JSON messages ending in a NUL byte on file descriptors 3 and 4), the
protocol its own ``--dump-dom`` and ``--screenshot`` switches use, so a page costs a tab instead of
a browser start (about 2 s on 2 cores). A test only calls ``dump_dom`` or ``screenshot``."""

import atexit
import base64
import itertools
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="/usr/bin/chromium is missing (Debian package chromium)")
TIMEOUT_S = 120  # for one page, however loaded the machine
# What Chromium's own --dump-dom prints: the doctype, then the serialised document element.
SERIALISE = ("(document.doctype ? new XMLSerializer().serializeToString(document.doctype) + '\\n' : '')"
             " + document.documentElement.outerHTML")


class Chromium:
    """One headless Chromium process and its DevTools pipe; ``page(url)`` opens a tab in a fresh
    browser context, waits until it has loaded and its virtual clock has run on, and closes it."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="kdbench-chromium-")
        to_chromium, self._write = _pipe_above(10)
        self._read, from_chromium = _pipe_above(10)

        def wire():  # in the child, before exec: Chromium reads commands on fd 3, writes replies on fd 4
            os.dup2(to_chromium, 3)
            os.dup2(from_chromium, 4)

        self.process = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={self.profile}",
                                         "--remote-debugging-pipe", "about:blank"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=wire, close_fds=False)
        os.close(to_chromium), os.close(from_chromium)
        self._ids = itertools.count(1)
        self._buffer = b""
        self._events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """One DevTools command; its result (an AssertionError naming the method on an error)."""
        number = next(self._ids)
        message = {"id": number, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        reply = self._until(lambda m: m.get("id") == number, method)
        assert "error" not in reply, f"Chromium refused {method}: {reply['error']}"
        return reply.get("result", {})

    def wait(self, event: str, session: str) -> dict:
        """The next ``event`` of the tab ``session`` (one that came while waiting on a reply counts)."""
        for index, message in enumerate(self._events):
            if message.get("method") == event and message.get("sessionId") == session:
                return self._events.pop(index)
        return self._until(lambda m: m.get("method") == event and m.get("sessionId") == session, event)

    def _until(self, wanted, what: str) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if wanted(message):
                    return message
                if "method" in message:
                    self._events.append(message)
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self._read], [], [], left)[0], f"Chromium: no {what} in {TIMEOUT_S} s"
            chunk = os.read(self._read, 1 << 20)
            assert chunk, f"Chromium ended while waiting for {what} (exit code {self.process.poll()})"
            self._buffer += chunk

    def page(self, url: str, act, width: int = 1200, height: int = 900, budget_ms: int = 3000):
        """``act(session)`` on ``url`` once it has loaded and ``budget_ms`` of virtual time have run
        (timers fire, as with --virtual-time-budget), in a tab of its own; what ``act`` returns."""
        context = self.send("Target.createBrowserContext")["browserContextId"]
        try:
            target = self.send("Target.createTarget", {"url": "about:blank", "browserContextId": context})["targetId"]
            session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.send("Page.enable", session=session)
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
            self.send("Page.navigate", {"url": url}, session)  # then the clock: it runs while nothing loads
            self.send("Emulation.setVirtualTimePolicy",
                      {"policy": "pauseIfNetworkFetchesPending", "budget": budget_ms}, session)
            self.wait("Page.loadEventFired", session)
            self.wait("Emulation.virtualTimeBudgetExpired", session)
            return act(session)
        finally:
            self.send("Target.disposeBrowserContext", {"browserContextId": context})

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=60)
        os.close(self._read), os.close(self._write)
        shutil.rmtree(self.profile, ignore_errors=True)


def _pipe_above(lowest: int) -> tuple[int, int]:
    """A pipe (read, write) whose two ends are numbered ``lowest`` or above, so that wiring them to 3
    and 4 in the child cannot overwrite one with the other."""
    import fcntl

    ends = []
    for end in os.pipe():
        ends.append(fcntl.fcntl(end, fcntl.F_DUPFD_CLOEXEC, lowest))
        os.close(end)
    return ends[0], ends[1]


_shared: list[Chromium] = []


def browser() -> Chromium:
    """The session's Chromium, started at the first call (again if it has ended)."""
    if _shared and _shared[0].process.poll() is not None:
        _shared.pop().close()
    if not _shared:
        _shared.append(Chromium())
        atexit.register(_close_shared)
    return _shared[0]


def _close_shared() -> None:
    while _shared:
        _shared.pop().close()


def dump_dom(page: Path, profile: Path | None = None) -> str:
    """The page's DOM, serialised after it has loaded (its scripts and event handlers run, images
    loaded or failed) and the virtual clock has run on for 3 s (timers fire), as Chromium's
    ``--virtual-time-budget=3000 --dump-dom`` prints it. ``profile`` is not used (the page opens in a
    fresh browser context of the session's Chromium); it is accepted for callers that name one."""
    chromium = browser()

    def serialised(session):
        return chromium.send("Runtime.evaluate", {"expression": SERIALISE, "returnByValue": True},
                             session)["result"]["value"]

    shown = chromium.page(page.resolve().as_uri(), serialised)
    assert "<body" in shown, f"Chromium showed no page: {shown[:2000]}"
    return shown


def screenshot(page: Path, shot: Path, width: int = 1200, height: int = 900) -> Path:
    """A PNG of the page's first ``width`` x ``height`` pixels once it has loaded, as Chromium's
    ``--screenshot --window-size`` writes it."""
    chromium = browser()
    png = chromium.page(page.resolve().as_uri(), lambda session: chromium.send(
        "Page.captureScreenshot", {"format": "png"}, session)["data"], width, height)
    shot.write_bytes(base64.b64decode(png))
    return shot


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Dom(HTMLParser):
    """A serialised DOM read back: ``elements`` [(tag, {attribute: value}, the tags it sits in)] and
    ``text`` (every text node, entities decoded, joined)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict, tuple[str, ...]]] = []
        self._open: list[str] = []
        self._text: list[str] = []
        self.feed(html)
        self.close()
        self.text = "".join(self._text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {name: value or "" for name, value in attrs}, tuple(self._open)))
        if tag not in VOID:
            self._open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {name: value or "" for name, value in attrs}, tuple(self._open)))

    def handle_endtag(self, tag):
        if tag in self._open:  # Chromium's serialisation is well formed: close up to the element
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag):]

    def handle_data(self, data):
        self._text.append(data)
