# Following PBX logs as they grow. FileFollower polls (no inotify dependency): it reads
# new complete lines (raw bytes), waits for a file that does not exist yet, notices
# rotation by rename (the path now names another inode: the old file is read to its end
# first, then the new one from its start) and copytruncate (the file got shorter than our
# offset: start over). JournalFollower runs `journalctl -f -o json` (argv, no shell; the
# systemd Python binding is not a dependency) and yields (time, message) from its JSON
# lines. Every read is bounded in bytes; callers poll with their own clock.
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO


class FileFollower:
    def __init__(self, path: Path, *, from_start: bool = False, max_read: int = 4 << 20) -> None:
        self.path = path
        self.max_read = max_read
        self._fh: IO[bytes] | None = None
        self._ino: tuple[int, int] | None = None
        self._carry = b""
        self._from_start = from_start
        self.rotations = 0
        self.truncations = 0
        self._open(initial=True)

    def _open(self, *, initial: bool = False) -> bool:
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return False
        st = os.fstat(fh.fileno())
        if initial and not self._from_start:
            fh.seek(0, os.SEEK_END)  # an existing log: only what comes from now on
        self._fh, self._ino, self._carry = fh, (st.st_dev, st.st_ino), b""
        return True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def poll(self) -> bytes:
        """New complete lines since the last poll (at most max_read bytes' worth), as they
        are in the file, each ending with "\n" (for LogFormat.scan_bytes). Only "\n" ends
        a line: str.splitlines() would also break at "\r", U+2028, U+0085 and others,
        which a PBX writes raw inside a line when they come in attacker text."""
        if self._fh is None and not self._open():
            return b""
        assert self._fh is not None
        data = self._read(self._fh)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return data  # renamed away, the new one not created yet: keep the old fd
        if (st.st_dev, st.st_ino) != self._ino:
            data += self._read(self._fh, final=True)  # the rest of the rotated file
            self._fh.close()
            self._fh = None
            self.rotations += 1
            if self._open():
                assert self._fh is not None
                data += self._read(self._fh)
        elif st.st_size < self._fh.tell():
            self.truncations += 1  # copytruncate: the file was emptied under us
            self._fh.seek(0)
            self._carry = b""
            data += self._read(self._fh)
        return data

    def _read(self, fh: IO[bytes], *, final: bool = False) -> bytes:
        data = self._carry + fh.read(self.max_read)
        cut = data.rfind(b"\n") + 1
        self._carry = b"" if final else data[cut:]
        done = data if final else data[:cut]
        if done and not done.endswith(b"\n"):
            done += b"\n"  # a rotated file's last line: it must not join the next file's
        return done


JOURNAL_ARGV = ("journalctl", "--follow", "--output=json", "--lines=0", "--no-pager")


def journal_entry(line: str) -> tuple[datetime, str] | None:
    """(time, MESSAGE) of one `journalctl -o json` line; None for what is not an entry."""
    try:
        entry = json.loads(line)
        msg = entry["MESSAGE"]
        if isinstance(msg, list):  # non-UTF-8 messages come as a list of byte values
            msg = bytes(msg).decode("utf-8", "replace")
        usec = int(entry["__REALTIME_TIMESTAMP"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(msg, str):
        return None
    return datetime.fromtimestamp(usec / 1e6, UTC), msg


class JournalFollower:
    """`journalctl -f -o json` for the given matches (e.g. ["SYSLOG_IDENTIFIER=kamailio"])."""

    def __init__(self, matches: Sequence[str] = (), argv: Sequence[str] = JOURNAL_ARGV) -> None:
        self.argv = [*argv, *matches]
        self.proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def entries(self) -> Iterator[tuple[datetime, str]]:
        """Entries as journald delivers them, until stop() or journalctl exits."""
        with self._lock:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            got = journal_entry(line)
            if got is not None:
                yield got

    def stop(self) -> None:
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
                if self.proc.poll() is None:
                    self.proc.kill()
