# Reading a log file fast: big binary reads cut at the last newline, so the detectors scan
# whole-line buffers at C speed (str.find, or the C log scanner on the bytes themselves)
# instead of doing Python work per line.
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 1 << 20  # (4 MiB cost ~7% more CPU in logscan: more events and output at once)


def read_byte_chunks(
    path: Path, chunk: int = CHUNK, progress: Callable[[int], None] | None = None
) -> Iterator[memoryview]:
    """Whole-line chunks of a file (the last one may lack its final newline), as views into
    one buffer that every read reuses: each view is released when the next one is asked
    for (copy what must outlive that; a view kept longer raises instead of changing). A
    fresh buffer per read, and slicing it, cost a third of the reading in copies and page
    faults."""
    buf = bytearray(chunk)
    have = 0  # bytes carried over from the last read (a partial line), at the start of buf
    with path.open("rb", buffering=0) as fh:
        while True:
            if have == len(buf):  # one line longer than the buffer: a bigger buffer
                grown = bytearray(2 * len(buf))
                grown[:have] = buf
                buf = grown  # (a new one: views already handed out keep the old one alive)
            view = memoryview(buf)
            n = fh.readinto(view[have:])
            if progress is not None:
                progress(n)
            if not n:
                break
            end = have + n
            cut = buf.rfind(b"\n", 0, end) + 1
            if cut == 0:
                have = end
                continue
            out = view[:cut]
            yield out
            out.release()  # a view kept past its turn fails loudly instead of changing
            have = end - cut
            buf[:have] = buf[cut:end]  # the partial line to the front (same size: no resize)
    if have:
        yield memoryview(buf)[:have]


def read_chunks(
    path: Path, chunk: int = CHUNK, progress: Callable[[int], None] | None = None
) -> Iterator[str]:
    """read_byte_chunks() decoded (UTF-8, invalid bytes replaced): a newline never falls
    inside a UTF-8 sequence, so decoding chunk by chunk equals decoding the file."""
    for data in read_byte_chunks(path, chunk, progress):
        yield str(data, "utf-8", "replace")
