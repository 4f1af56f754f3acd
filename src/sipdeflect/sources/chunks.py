# Reading a log file fast: big binary reads cut at the last newline, decoded once per
# chunk (UTF-8, invalid bytes replaced), so the detectors scan whole-line buffers with
# C-speed str.find instead of Python work per line.
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 4 << 20


def read_chunks(
    path: Path, chunk: int = CHUNK, progress: Callable[[int], None] | None = None
) -> Iterator[str]:
    """Whole-line text chunks of a file; the last one may lack its final newline."""
    carry = b""
    with path.open("rb") as fh:
        while True:
            data = fh.read(chunk)
            if progress is not None:
                progress(len(data))
            if not data:
                break
            data = carry + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data
                continue
            carry = data[cut:]
            yield data[:cut].decode("utf-8", "replace")
    if carry:
        yield carry.decode("utf-8", "replace")
