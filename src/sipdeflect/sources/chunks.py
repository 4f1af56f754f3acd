# Reading a log file fast: big binary reads cut at the last newline, so the detectors scan
# whole-line buffers at C speed (str.find, or the C log scanner on the bytes themselves)
# instead of doing Python work per line.
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 4 << 20


def read_byte_chunks(
    path: Path, chunk: int = CHUNK, progress: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """Whole-line byte chunks of a file; the last one may lack its final newline."""
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
            yield data[:cut]
    if carry:
        yield carry


def read_chunks(
    path: Path, chunk: int = CHUNK, progress: Callable[[int], None] | None = None
) -> Iterator[str]:
    """read_byte_chunks() decoded (UTF-8, invalid bytes replaced): a newline never falls
    inside a UTF-8 sequence, so decoding chunk by chunk equals decoding the file."""
    for data in read_byte_chunks(path, chunk, progress):
        yield data.decode("utf-8", "replace")
