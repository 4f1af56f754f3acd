# Type stub for the optional C accelerator (_cfast.c); see fastpath.py.
from collections.abc import Callable, Sequence

class Batch:
    fd: int
    n: int
    send_errors: int
    truncated: int
    slots: list[int]
    names: memoryview
    def __init__(
        self,
        fd: int,
        n: int,
        decode_sockaddr: Callable[[bytes], tuple[str, int]],
        decode_control: Callable[[bytes], tuple[tuple[int, int, bytes], ...]],
    ) -> None: ...
    def recv(self) -> list[tuple[bytes, tuple[str, int], list[tuple[int, int, bytes]]]]: ...
    def send(self, replies: Sequence[tuple[int, bytes]], /) -> int: ...

class View:
    data: bytes
    method: str
    prepared: tuple[str, bool, bool, int]
    index: dict[str, bytes]
    vias: list[bytes]
    clean: bool
    def get(self, name: str, default: bytes, /) -> bytes: ...
    def reply(self, status: int, host: str, port: int, extra: bytes, /) -> bytes: ...

def view(data: bytes, /) -> View | None: ...
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
    method_class: dict[str, str],
    unknown_class: str,
    probe_tag: bytes,
    status_line: Callable[[int], bytes],
    /,
) -> None: ...
