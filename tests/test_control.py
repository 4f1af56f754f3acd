"""Control socket: JSON lines over a real unix socket, root-only permissions, bad input."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sipdeflect.control import ControlClient, ControlError, ControlServer
from sipdeflect.errors import UsageError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run" / "ctl.sock"
    loop = asyncio.new_event_loop()
    srv = ControlServer(path)

    async def status(req: dict[str, Any]) -> dict[str, Any]:
        return {"sources": 3, "echo": req.get("x")}

    async def refuse(req: dict[str, Any]) -> dict[str, Any]:
        raise UsageError("refusing to block 192.0.2.10: own address")

    async def watch(req: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        for i in range(int(req.get("n", 3))):
            yield {"seq": i}

    srv.handler("status", status)
    srv.handler("block", refuse)
    srv.streamer("watch", watch)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(srv.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(srv.close())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(10)
    yield path
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)
    assert not path.exists()


def test_call_and_stream(server: Path) -> None:
    c = ControlClient(server)
    assert c.available()
    assert c.call("status", x=[1, "a"]) == {"ok": True, "sources": 3, "echo": [1, "a"]}
    assert list(c.stream("watch", n=4)) == [{"seq": i} for i in range(4)]


def test_errors_are_one_line_and_the_connection_survives(server: Path) -> None:
    c = ControlClient(server)
    with pytest.raises(ControlError, match="own address"):
        c.call("block")
    with pytest.raises(ControlError, match="unknown command 'nope'; have block, status, watch"):
        c.call("nope")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(server))
        f = s.makefile("rwb")
        for bad in (b"not json\n", b"[1,2]\n", b'{"cmd": 5}\n'):
            f.write(bad)
            f.flush()
            reply = json.loads(f.readline())
            assert reply["ok"] is False
            assert reply["error"].startswith("bad request")
        f.write(b'{"cmd": "status"}\n')
        f.flush()
        assert json.loads(f.readline())["sources"] == 3


def test_socket_is_private(server: Path) -> None:
    assert stat.S_IMODE(server.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.parent.stat().st_mode) == 0o700


def test_unreachable_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="not reachable"):
        ControlClient(tmp_path / "none.sock").call("status")
