# Reading a capture file (pcap or pcapng, by dpkt) as (timestamp, Segment) pairs, with the
# file position for progress bars. Frames are decoded by frames.py like live capture.
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import dpkt

from sipdeflect.errors import UsageError
from sipdeflect.sources.frames import Segment, decode


def read_pcap(
    path: Path, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[float, Segment]]:
    with path.open("rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        try:
            reader = (
                dpkt.pcapng.Reader(fh) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
            )
        except (ValueError, dpkt.dpkt.NeedData) as exc:
            raise UsageError(f"{path}: not a pcap/pcapng capture ({exc})") from None
        linktype = reader.datalink()
        last = 0
        for n, (ts, frame) in enumerate(reader):
            if progress is not None and n % 4096 == 0:
                pos = fh.tell()
                progress(pos - last)
                last = pos
            seg = decode(frame, linktype)
            if seg is not None:
                yield float(ts), seg
        if progress is not None:
            progress(fh.tell() - last)
