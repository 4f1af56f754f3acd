# Type stub for the optional C accelerator (_cfast.c); see fastpath.py.
from collections.abc import Callable

def scan(data: bytes, /) -> tuple[str, dict[str, bytes], list[bytes]] | None: ...
def build(
    index: dict[str, bytes],
    vias: list[bytes],
    status: int,
    status_line: bytes,
    host: str,
    port: int,
    extra: bytes,
    clean: bool,
    /,
) -> bytes: ...
def configure(
    names: dict[bytes, str],
    canonical: Callable[[bytes], str],
    parse_error: type[Exception],
    methods: dict[bytes, str],
    mandatory: tuple[str, ...],
    /,
) -> None: ...
