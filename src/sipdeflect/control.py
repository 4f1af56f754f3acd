# Local control API: a unix stream socket (mode 0600 in a 0700 directory, so root only)
# speaking JSON lines. A request is {"cmd": NAME, ...args}; a reply is {"ok": true, ...} or
# {"ok": false, "error": "..."}. Handlers are registered by name; a streaming handler (watch)
# yields one object per line until the client goes away. No pickle, no eval: a bad line is
# answered with an error and the connection stays usable.
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from sipdeflect.errors import SipDeflectError

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
Streamer = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]
MAX_LINE = 64 * 1024
DEFAULT_SOCKET = "/run/sipdeflect/control.sock"  # [control] socket's default


class ControlError(SipDeflectError):
    """The daemon could not be reached or refused a request."""


class ControlServer:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.handlers: dict[str, Handler] = {}
        self.streamers: dict[str, Streamer] = {}
        self._server: asyncio.AbstractServer | None = None

    def handler(self, name: str, fn: Handler) -> None:
        self.handlers[name] = fn

    def streamer(self, name: str, fn: Streamer) -> None:
        self.streamers[name] = fn

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a killed daemon
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _send(writer, {"ok": False, "error": "request line too long"})
                    break
                if not line or await self._one(line, writer):
                    break
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                await writer.wait_closed()

    async def _one(self, line: bytes, writer: asyncio.StreamWriter) -> bool:
        """Answer one request line; True when the connection should close (after a stream)."""
        req, problem = _request(line)
        if req is None:
            await _send(writer, {"ok": False, "error": f"bad request: {problem}"})
            return False
        cmd = req["cmd"]
        if cmd in self.streamers:
            async for item in self.streamers[cmd](req):
                await _send(writer, item)
            return True  # a stream ends with the connection
        fn = self.handlers.get(cmd)
        if fn is None:
            known = ", ".join(sorted([*self.handlers, *self.streamers]))
            await _send(writer, {"ok": False, "error": f"unknown command {cmd!r}; have {known}"})
            return False
        try:
            reply = await fn(req)
        except SipDeflectError as exc:
            reply = {"ok": False, "error": str(exc)}
        await _send(writer, {"ok": True, **reply} if "ok" not in reply else reply)
        return False


def _request(line: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        req = json.loads(line)
    except ValueError as exc:
        return None, str(exc)
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        return None, "a request is a JSON object with a string 'cmd'"
    return req, ""


async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(json.dumps(obj, default=str).encode() + b"\n")
    await writer.drain()


class ControlClient:
    """Blocking client for the CLI."""

    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    def available(self) -> bool:
        return self.path.is_socket()

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(str(self.path))
        except PermissionError:
            s.close()
            raise ControlError(f"no permission to use {self.path} (run as root)") from None
        except OSError as exc:
            s.close()
            raise ControlError(
                f"sipdeflect daemon not reachable at {self.path}: {exc.strerror}"
            ) from None
        return s

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        with self._connect() as s:
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            reply = _lines(s)
            try:
                obj = next(reply)
            except StopIteration:
                raise ControlError("daemon closed the connection without answering") from None
        if not obj.get("ok"):
            raise ControlError(str(obj.get("error", "request failed")))
        return obj

    def stream(self, cmd: str, **args: Any) -> Iterator[dict[str, Any]]:
        s = self._connect()
        s.settimeout(None)
        try:
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            yield from _lines(s)
        finally:
            s.close()


def _lines(s: socket.socket) -> Iterator[dict[str, Any]]:
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ControlError("daemon sent something that is not a JSON object")
            yield obj
        chunk = s.recv(65536)
        if not chunk:
            return
        buf += chunk
