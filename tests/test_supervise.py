"""Supervisor: failing parts are reported and restarted with growing backoff."""

from __future__ import annotations

import asyncio

import pytest

from sipdeflect.supervise import Supervisor

pytestmark = pytest.mark.timeout(30)


def test_failures_are_reported_restarted_and_backed_off() -> None:
    reports: list[tuple[str, str]] = []
    runs = {"flaky": 0, "steady": 0}

    async def flaky() -> None:
        runs["flaky"] += 1
        raise OSError("log file vanished")

    async def steady() -> None:
        runs["steady"] += 1
        await asyncio.sleep(3600)

    async def main() -> Supervisor:
        sup = Supervisor(lambda n, m: reports.append((n, m)), min_backoff=0.01, max_backoff=0.04)
        sup.start("flaky", flaky)
        sup.start("steady", steady)
        await asyncio.sleep(0.3)
        await sup.stop()
        return sup

    sup = asyncio.run(main())
    st = sup.status()
    assert runs["steady"] == 1
    assert st["steady"]["restarts"] == 0
    assert st["steady"]["state"] == "stopped"
    # 0.01 + 0.02 + 0.04 + 0.04 ... within 0.3 s: several restarts, far fewer than unbounded.
    assert 3 <= runs["flaky"] <= 12
    assert st["flaky"]["last_error"] == "OSError: log file vanished"
    assert reports[0] == ("flaky", "failed: OSError: log file vanished")
    assert all(name == "flaky" for name, _ in reports)
