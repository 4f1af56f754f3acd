"""The HTML report as a person sees it: Debian's headless Chromium loads report.html from a
loopback HTTP server, takes a screenshot, and records its network log. The graphs must be
on the screenshot (pixels of the graphs' own colours), and the page must request nothing
but itself: every URL request the page made (Chromium's net log) is to the loopback
origin, and the server saw only the page (no favicon either: the page names a data: one).
Chromium resolves no host name at all here (--host-resolver-rules), so nothing could
leave the machine even if the page asked."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from sipdeflect.report.html import COLORS
from tests.report.scenario import attack_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a VM without user namespaces for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


class _Log(http.server.SimpleHTTPRequestHandler):
    seen: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append(self.path)
        super().do_GET()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, list[str], Path]]:
    attack_store(tmp_path / "s.db").close()
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "sipdeflect", "report", "--db", str(tmp_path / "s.db"),
         "--out", str(out)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    seen: list[str] = []
    handler = type("Handler", (_Log,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=out))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen, tmp_path
    finally:
        server.shutdown()
        server.server_close()


def _page_requests(netlog: Path) -> list[str]:
    """URLs of the URL request jobs the page started (its --log-net-log JSON): those in
    the page's network isolation partition. Chromium's own (update and clock checks,
    accounts) run outside it and fail here to resolve, by the resolver rule above."""
    data = json.loads(netlog.read_text())
    start = data["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in data["events"]
        if e.get("type") == start
        and "url" in e.get("params", {})
        and str(e["params"].get("network_isolation_key", "")).startswith("http://127.0.0.1")
    ]


def _pixels_near(img: np.ndarray, color: str, tolerance: float = 0.06) -> int:
    rgb = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(img[:, :, :3] - rgb).max(axis=2) < tolerance).sum())


def test_chromium_shows_the_graphs_and_requests_nothing_else(
    served: tuple[str, list[str], Path],
) -> None:
    origin, seen, tmp = served
    shot, netlog = tmp / "report.png", tmp / "netlog.json"
    assert CHROMIUM is not None
    res = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--log-net-log={netlog}",
         "--window-size=1280,2400", f"--screenshot={shot}", f"{origin}/report.html"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert seen == ["/report.html"], seen
    urls = _page_requests(netlog)
    assert f"{origin}/report.html" in urls
    outside = [u for u in urls if not u.startswith(origin + "/")]
    assert outside == [], outside
    img = mpimg.imread(shot)
    assert img.shape[0] == 2400
    assert img.shape[1] == 1280
    # Bars of each place, as the graphs draw them: thousands of pixels each.
    for place in ("pbx", "decoy", "dropped"):
        assert _pixels_near(img, COLORS[place]) > 2000, place
