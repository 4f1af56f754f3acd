# One throwaway PostgreSQL (Debian's, run as `postgres` in a temp dir, unix socket only)
# per test module that asks for it; skipped with the reason where it cannot run.
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sipdeflect.lab.postgres import Postgres, postgres, postgres_unavailable


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    why = "needs root (initdb runs as postgres via runuser)" if os.geteuid() else None
    why = why or postgres_unavailable()
    if why:
        pytest.skip(why)
    with postgres() as server:
        yield server
