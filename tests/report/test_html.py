"""The HTML/PNG report, generated through the CLI from an engine-driven store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sipdeflect.report.traffic import build_model
from tests.report.scenario import attack_store


def test_model_accounts_for_every_packet(tmp_path: Path) -> None:
    store = attack_store(tmp_path / "s.db")
    m = build_model(store.traffic(), store.events(), store.decisions())
    assert m.width == 60  # the scenario writes a row a minute: bars follow its resolution
    total = sum(r.packets for r in store.traffic())
    assert sum(sum(v) for v in m.series.values()) == total
    by_name = {s.source: s for s in m.sources}
    # The flooder never stops, so it sent the most, most of it dropped after its block.
    flooder, scanner = by_name["198.51.100.23"], by_name["203.0.113.66"]
    assert m.sources[0] is flooder
    assert flooder.by_place["dropped"] > flooder.by_place["decoy"] > 0
    assert scanner.by_place["dropped"] == 0  # it gave up in the decoy
    assert flooder.final_action == scanner.final_action == "block"
    assert set(scanner.accounts) == {"100", "101", "1000"}

    assert [d.action.value for d in m.marks] == ["deflect", "block", "deflect", "block"]


def test_cli_writes_report(tmp_path: Path) -> None:
    attack_store(tmp_path / "s.db").close()
    out = tmp_path / "out"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "sipdeflect",
            "report",
            "--db",
            str(tmp_path / "s.db"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    for name in ("traffic", "top", "timelines"):
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) > 10_000
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "friendly-scanner (" in page
    assert "2025-11-24 16:00:00Z" in page


def test_cli_abuse_report(tmp_path: Path) -> None:
    attack_store(tmp_path / "s.db").close()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "sipdeflect",
            "abuse-report",
            "203.0.113.66",
            "--db",
            str(tmp_path / "s.db"),
            "--out",
            str(tmp_path),
            "--org",
            "Example",
            "--contact",
            "abuse@pbx.example",
            "--domain",
            "pbx.example",
            "--own",
            "192.0.2.10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    email = (tmp_path / "203.0.113.66.email.txt").read_text()
    assert "192.0.2.10" not in email
    assert 'response="x"' not in email
    assert "deflect" in email
    assert "block" in email
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "sipdeflect",
            "abuse-report",
            "203.0.113.99",
            "--db",
            str(tmp_path / "s.db"),
            "--org",
            "E",
            "--contact",
            "a@e.x",
            "--domain",
            "e.x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "nothing recorded about 203.0.113.99" in res.stderr


def test_bin_width_fits_the_span() -> None:
    from sipdeflect.report.traffic import MAX_BINS, bin_width

    assert bin_width(0, 30) == 10  # a 30 s lab: 10 s bars
    assert bin_width(0, 3600) == 30
    assert bin_width(0, 86400) == 900
    assert bin_width(0, 1800, step=60) == 60  # rows a minute apart: never 30 s bars
    for span in (0, 45, 1999, 2000, 7200, 30 * 86400):
        w = bin_width(1_750_000_000, 1_750_000_000 + span)
        assert (span + 10) / w <= MAX_BINS or w == 86400
