# Supervision for the daemon's long-running parts (log followers, wire capture, decoy):
# each is a named coroutine factory; when one raises it is reported and restarted after an
# exponential backoff (doubling from min to max, reset once it has run healthily for
# `healthy` seconds). Nothing fails silently and one broken source never stops the rest.
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Report = Callable[[str, str], None]


@dataclass(slots=True)
class TaskState:
    name: str
    state: str = "starting"  # running | backoff | stopped
    restarts: int = 0
    last_error: str | None = None
    started: float = 0.0
    backoff: float = 0.0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(
        self,
        report: Report,
        *,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
        healthy: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.report = report
        self.min_backoff, self.max_backoff, self.healthy = min_backoff, max_backoff, healthy
        self.clock = clock
        self.tasks: dict[str, TaskState] = {}

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        st = TaskState(name, backoff=self.min_backoff)
        self.tasks[name] = st
        st.task = asyncio.create_task(self._keep(st, factory), name=name)

    async def _keep(self, st: TaskState, factory: Callable[[], Awaitable[None]]) -> None:
        while True:
            st.state, st.started = "running", self.clock()
            try:
                await factory()
                st.last_error = "exited"
                self.report(st.name, "exited; restarting")
            except asyncio.CancelledError:
                st.state = "stopped"
                raise
            except Exception as exc:  # supervision boundary: report, back off, restart
                st.last_error = f"{type(exc).__name__}: {exc}"
                self.report(st.name, f"failed: {st.last_error}")
            if self.clock() - st.started >= self.healthy:
                st.backoff = self.min_backoff
            st.state = "backoff"
            st.restarts += 1
            await asyncio.sleep(st.backoff)
            st.backoff = min(st.backoff * 2, self.max_backoff)

    async def stop(self) -> None:
        for st in self.tasks.values():
            if st.task is not None:
                st.task.cancel()
        for st in self.tasks.values():
            if st.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await st.task

    def status(self) -> dict[str, dict[str, object]]:
        return {
            n: {"state": s.state, "restarts": s.restarts, "last_error": s.last_error}
            for n, s in self.tasks.items()
        }
