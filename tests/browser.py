"""A real headless Chromium (Debian's ``chromium`` package) for the report tests: the DOM a page
ends up with once its scripts have run, and the elements and text that DOM holds."""

import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="/usr/bin/chromium is missing (Debian package chromium)")


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run Chromium headless with its own profile folder (several tests may run it at once)."""
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def dump_dom(page: Path, profile: Path) -> str:
    """The page's DOM, serialised after it has loaded (its scripts and event handlers run, images
    loaded or failed) and the virtual clock has run on for a while (timers fire)."""
    shown = chromium(profile, "--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri())
    assert "<body" in shown.stdout, f"Chromium showed no page: {shown.stderr[-2000:]}"
    return shown.stdout


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
