# A throwaway PostgreSQL from Debian for the fleet's tests and benchmark: initdb and pg_ctl
# run as the `postgres` user (initdb refuses root) in a fresh temporary directory, listening
# on a unix socket and, when asked, on TCP at addresses of a namespace it runs in (the
# fleet lab's database host); stop() removes everything. kill()/start() give a
# test the database outage it needs. Every wait is bounded.
from __future__ import annotations

import contextlib
import glob
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sipdeflect.lab.netns import LabError, Netns

PG_USER = "postgres"


def pg_bin(tool: str) -> str | None:
    """A PostgreSQL server tool from Debian's packages (newest version), or None."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=_version)
    return found[-1] if found else None


def _version(path: str) -> tuple[int, ...]:
    part = Path(path).parts[-3]
    return tuple(int(x) for x in part.split(".") if x.isdigit())


def postgres_unavailable() -> str | None:
    """Why a throwaway server cannot run here, or None."""
    if pg_bin("initdb") is None or pg_bin("pg_ctl") is None:
        return "needs Debian's postgresql (initdb, pg_ctl under /usr/lib/postgresql)"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"needs a {PG_USER!r} user to run the server as"
    if shutil.which("runuser") is None:
        return "needs runuser (util-linux)"
    return None


class Postgres:
    """``ns``/``listen``: run the server inside that namespace, also on TCP at those
    addresses (comma-separated), so a test can cut a node off it with a firewall rule."""

    def __init__(self, ns: Netns | None = None, listen: str = "") -> None:
        self.ns, self.listen = ns, listen
        self.dir = Path(tempfile.mkdtemp(prefix="sdf-pg-"))
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.log = self.dir / "server.log"
        self.dbname = "fleet"

    @property
    def dsn(self) -> str:
        return f"host={self.sock} dbname={self.dbname} user={PG_USER}"

    def tcp_dsn(self, host: str) -> str:
        return f"host={host} port=5432 dbname={self.dbname} user={PG_USER}"

    def _as_pg(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", PG_USER, "--", *argv]
        res = subprocess.run(
            self.ns.argv(cmd) if self.ns is not None else cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.dir,
        )
        if res.returncode != 0:
            raise LabError(f"{' '.join(argv)}: {res.stderr.strip() or res.stdout.strip()}")
        return res

    def init(self) -> Postgres:
        u = pwd.getpwnam(PG_USER)
        self.sock.mkdir()
        for p in (self.dir, self.sock):
            shutil.chown(p, u.pw_uid, u.pw_gid)
        self.dir.chmod(0o755)
        initdb = pg_bin("initdb") or "initdb"
        self._as_pg([initdb, "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8"])
        self.start()
        psql = str(Path(initdb).with_name("createdb"))
        self._as_pg([psql, "-h", str(self.sock), self.dbname])
        return self

    def start(self) -> None:
        opts = f"-k {self.sock} -c listen_addresses='{self.listen}' -c fsync=off"
        opts += " -c max_connections=50"
        if self.listen:  # trust on TCP too: the lab's addresses exist only in namespaces
            hba = self.data / "pg_hba.conf"
            if "sdf-lab" not in hba.read_text():
                hba.write_text(hba.read_text() + "host all all 192.0.2.0/24 trust # sdf-lab\n")
        pg_ctl = pg_bin("pg_ctl") or "pg_ctl"
        self._as_pg([pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start"])

    def kill(self) -> None:
        """The database goes away at once (immediate shutdown: no checkpoint, clients cut)."""
        pg_ctl = pg_bin("pg_ctl") or "pg_ctl"
        self._as_pg([pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def stop(self) -> None:
        pg_ctl = pg_bin("pg_ctl") or "pg_ctl"
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(LabError, subprocess.TimeoutExpired):
                self._as_pg([pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres(ns: Netns | None = None, listen: str = "") -> Iterator[Postgres]:
    pg = Postgres(ns, listen)
    try:
        yield pg.init()
    finally:
        pg.stop()
