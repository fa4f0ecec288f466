"""Open an HTML report in real headless Chromium (the system package; the tests skip, saying so,
where it is missing): the page's DOM after its scripts ran, a screenshot, and every network
request the page made.

A copy of the page gets a probe script (run at load: each image's decoded width, then the
clicks a test asks for) and is opened with a proxy on a closed local port, so nothing can be
fetched even if the page tried; Chromium's net log records each try anyway. The browser's own
background requests (updates, accounts) carry the initiator "not an origin" and are left out;
a request from the page carries its origin (a file:// page: "null")."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = [
    "--headless",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--proxy-server=127.0.0.1:9",
    "--virtual-time-budget=5000",
    "--hide-scrollbars",
]


def chromium() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless Chromium: install it (apt-get install -y chromium) to run the browser tests")


@dataclass
class Page:
    dom: str  # the document after load and the probe's clicks
    requests: list  # URLs the page itself asked for
    screenshot: Path


PROBE = """<script>window.addEventListener("load", function () {
  document.querySelectorAll("img").forEach(function (img, i) {
    img.setAttribute("data-probe-width", img.complete ? img.naturalWidth : -1);
  });
  %s
  document.body.setAttribute("data-probe", "done");
});</script>"""


def page_requests(netlog: Path) -> list:
    events = json.loads(netlog.read_text())["events"]
    sources: dict = {}
    for e in events:
        params = e.get("params") or {}
        entry = sources.setdefault(e["source"]["id"], {})
        for key in ("url", "initiator"):
            if key in params:
                entry[key] = params[key]
    return sorted(
        {
            s["url"]
            for s in sources.values()
            if "url" in s and s.get("initiator", "not an origin") != "not an origin"
        }
    )


def open_page(page: Path, work: Path, clicks: str = "", width: int = 1200, height: int = 3000) -> Page:
    """Open ``page`` (a copy, with the probe and ``clicks``: JavaScript run after load)."""
    browser = chromium()
    work.mkdir(parents=True, exist_ok=True)
    copy = work / page.name
    copy.write_text(page.read_text().replace("</body>", PROBE % clicks + "</body>"))
    flags = [*FLAGS, "--no-sandbox"] if os.geteuid() == 0 else list(FLAGS)
    netlog, shot = work / "net.json", work / "screenshot.png"

    def run(*extra):
        proc = subprocess.run(
            [browser, *flags, *extra, copy.as_uri()], capture_output=True, text=True, timeout=120, cwd=work
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    dom = run(f"--log-net-log={netlog}", "--dump-dom")
    requests = page_requests(netlog)
    run(f"--screenshot={shot}", f"--window-size={width},{height}")
    return Page(dom, requests, shot)


def column(dom: str, table_id: str, col: int) -> list:
    """The text of column ``col`` of the table with this id, in the order the DOM has its rows."""
    table = re.search(rf'<table[^>]*id="{table_id}".*?</table>', dom, re.S).group(0)
    body = table.split("<tbody>", 1)[1]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    return [re.sub(r"<[^>]+>", "", re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)[col]) for r in rows]


def check_page(page, figures: int):
    assert 'data-probe="done"' in page.dom, page.dom[-2000:]
    widths = [int(w) for w in re.findall(r'data-probe-width="(-?\d+)"', page.dom)]
    assert len(widths) == figures and all(w > 100 for w in widths), widths  # every figure decoded
    assert page.requests == []
    png = page.screenshot.read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 20_000  # a page drawn, not a blank one
