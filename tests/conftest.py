# Shared fixtures. Tests that need root and network namespaces take `netns_ok`; they skip
# with the reason elsewhere and run for real here (CI runs as root).
from __future__ import annotations

import pytest

from sipdeflect.lab.netns import leftover_namespaces, netns_unavailable

_REASON = netns_unavailable()


@pytest.fixture(scope="session")
def netns_ok() -> None:
    if _REASON is not None:
        pytest.skip(_REASON)


@pytest.fixture(autouse=True, scope="session")
def _no_leftover_namespaces() -> object:
    yield
    left = leftover_namespaces()
    assert not left, f"tests left network namespaces behind: {left}"
