# Type stub for the optional C log scanner (_clog.c); see base.py.
from collections.abc import Callable

from sipdeflect.detect.events import Event

class Scanner:
    deferred: int
    def __init__(
        self,
        markers: tuple[tuple[bytes, int], ...],
        rules: tuple[tuple[object, ...], ...],
        origin: str,
        event_type: type[Event],
        address: Callable[[str], object],
        addr_cache: dict[str, object],
        stamp: Callable[..., object],
        parse_from: Callable[..., Event | None],
        seconds: tuple[object, ...],
        stamps_max: int,
        /,
    ) -> None: ...
    def scan(
        self, data: bytes | memoryview, ctx: object, first_line: int, /
    ) -> list[tuple[int, Event]]: ...

def json_lines(
    head: str, items: list[tuple[int, Event]], iso: dict[object, str], srcs: dict[int, object], /
) -> str | None: ...
def count_newlines(data: bytes | memoryview, /) -> int: ...
