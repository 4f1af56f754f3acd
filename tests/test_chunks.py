"""sources.chunks: whole-line chunks of a file from one reused buffer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sipdeflect.sources.chunks import read_byte_chunks, read_chunks


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
@pytest.mark.parametrize("final_newline", [True, False])
def test_chunks_are_whole_lines_and_add_up_to_the_file(
    tmp_path: Path, chunk: int, final_newline: bool
) -> None:
    rnd = random.Random(chunk)
    lines = [
        bytes(rnd.choice(b"ab\xc3\xa9 ") for _ in range(rnd.choice([0, 3, 70, 300])))
        for _ in range(200)
    ]
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    path = tmp_path / "log"
    path.write_bytes(data)
    seen: list[int] = []
    parts = []
    for view in read_byte_chunks(path, chunk, progress=seen.append):
        part = bytes(view)
        assert part.endswith(b"\n") or part == parts_tail(data, parts)
        parts.append(part)
    assert b"".join(parts) == data
    assert sum(seen) == len(data)  # the progress callback saw every byte read
    assert "".join(read_chunks(path, chunk)) == data.decode("utf-8", "replace")


def parts_tail(data: bytes, parts: list[bytes]) -> bytes:
    return data[sum(map(len, parts)) :]


def test_a_view_kept_past_its_turn_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"one\ntwo\nthree\n" * 1000)
    views = list(read_byte_chunks(path, 64))
    with pytest.raises(ValueError, match="released"):
        bytes(views[0])
