# A throwaway system container for tests: systemd as PID 1 on an overlay of this machine's
# root, inside a network namespace, so a unit can be run for real (systemctl, journald,
# the unit's sandboxing) without touching the host. What systemd-nspawn --volatile=overlay
# does, with util-linux only:
#
# - the root is an overlayfs: lower = the host's /, upper and work on a tmpfs mounted in
#   the container's own mount namespace (upper on the host's disk would sit inside the
#   lower layer). Every write lands in that tmpfs and dies with the namespace; files the
#   test provides are staged in a host directory and copied into the upper layer first.
# - fresh /proc (/proc/sys read-only: sysctls outside the network namespace are the
#   host's), read-only /sys, a cgroup2 hierarchy rooted at a cgroup made for the container
#   (a cgroup namespace), a tmpfs /dev with the harmless device nodes only, tmpfs /run and
#   /tmp, then pivot_root and umount of the old root: no host path stays reachable but the
#   read-only binds the test asks for.
# - PID 1 has no CAP_SYS_MODULE, CAP_SYS_TIME, CAP_SYS_RAWIO, ... in its bounding set, and
#   /proc/sys is read-only, so sysinit's units that would change the host kernel skip
#   themselves (their Condition*=); every generator is masked (no fstab mounts, no fsck, no
#   SysV or getty units), every unit the host enabled is masked (its PBX, database, fail2ban,
#   timers), and systemd boots into an empty target of ours.
#
# The pure part (boot_script, base_layer) builds text; Container does the I/O.
from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from sipdeflect.lab.netns import LabError, Netns

SYSTEMD = "/lib/systemd/systemd"
BOOT_TARGET = "sdf-boot.target"
# Out of PID 1's bounding set (so out of every service's): what could change the host.
DROP_CAPS = (
    "sys_module",
    "sys_time",
    "sys_rawio",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "mac_admin",
    "mac_override",
)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
GENERATOR_DIRS = ("/lib/systemd/system-generators", "/usr/lib/systemd/system-generators")
# What commands run inside get: nothing of the caller's environment (its PATH may lead to a
# checkout's venv, which the overlay shows too).
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
TOOLS = ("unshare", "nsenter", "setpriv", "pivot_root", "mount", "umount", "ip")


@dataclass(frozen=True)
class Bind:
    """A host path shown read-only at `path` inside the container."""

    host: Path
    path: str


@dataclass(frozen=True)
class Link:
    """A symlink in the upper layer (a /dev/null link masks a unit or generator)."""

    target: str


@dataclass(frozen=True)
class BootPlan:
    base: Path  # host directory: stage/ (copied into the upper layer), layer/, root/
    console: Path  # host file shown as /dev/console (systemd's own messages)
    binds: tuple[Bind, ...] = ()
    target: str = BOOT_TARGET
    drop_caps: tuple[str, ...] = DROP_CAPS
    devices: tuple[str, ...] = DEVICES
    env: Mapping[str, str] = field(default_factory=lambda: {"container": "sipdeflect-test"})


def boot_script(plan: BootPlan) -> str:
    """The /bin/sh script run as PID 1 of fresh mount/pid/cgroup/uts/ipc namespaces (inside
    the test's network namespace): it builds the root and execs systemd."""
    q = shlex.quote
    base, root = plan.base, plan.base / "root"
    r = q(str(root))
    lines = [
        "set -eu",
        f"mount -t tmpfs -o mode=0755 sdf-layer {q(str(base / 'layer'))}",
        f"mkdir {q(str(base / 'layer/upper'))} {q(str(base / 'layer/work'))}",
        f"cp -a {q(str(base / 'stage'))}/. {q(str(base / 'layer/upper'))}/",
        "mount -t overlay -o lowerdir=/,upperdir={u},workdir={w} sdf-root {r}".format(
            u=q(str(base / "layer/upper")), w=q(str(base / "layer/work")), r=r
        ),
        f"mount -t proc -o nosuid,nodev,noexec proc {r}/proc",
        f"mount --bind {r}/proc/sys {r}/proc/sys",
        f"mount -o remount,bind,ro {r}/proc/sys",
        f"[ ! -e {r}/proc/sysrq-trigger ] || {{ mount --bind {r}/proc/sysrq-trigger "
        f"{r}/proc/sysrq-trigger && mount -o remount,bind,ro {r}/proc/sysrq-trigger; }}",
        f"mount -t sysfs -o ro,nosuid,nodev,noexec sysfs {r}/sys",
        f"mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 {r}/sys/fs/cgroup",
        f"mount -t tmpfs -o mode=0755,nosuid dev {r}/dev",
    ]
    lines += [f"touch {r}/dev/{d} && mount --bind /dev/{d} {r}/dev/{d}" for d in plan.devices]
    lines += [
        f"touch {r}/dev/console && mount --bind {q(str(plan.console))} {r}/dev/console",
        f"mkdir {r}/dev/pts {r}/dev/shm",  # noqa: S108 - the container's, under its root
        f"mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts {r}/dev/pts",
        f"mount -t tmpfs -o mode=1777,nosuid,nodev shm {r}/dev/shm",  # noqa: S108
        f"ln -s pts/ptmx {r}/dev/ptmx && ln -s /proc/self/fd {r}/dev/fd",
        *(
            f"ln -s /proc/self/fd/{i} {r}/dev/{n}"
            for i, n in enumerate(("stdin", "stdout", "stderr"))
        ),
        f"mount -t tmpfs -o mode=0755,nosuid,nodev run {r}/run",
        f"mount -t tmpfs -o mode=1777,nosuid,nodev tmp {r}/tmp",  # noqa: S108
    ]
    for b in plan.binds:  # a directory or a file, made in the upper layer if missing
        src, dst = q(str(b.host)), f"{r}{q(b.path)}"
        lines += [
            f"if [ -d {src} ]; then mkdir -p {dst}; elif [ ! -e {dst} ]; then touch {dst}; fi",
            f"mount --bind {src} {dst} && mount -o remount,bind,ro {dst}",
        ]
    env = " ".join(q(f"{k}={v}") for k, v in plan.env.items())
    drop = ",".join(f"-{c}" for c in plan.drop_caps)
    lines += [
        f"cd {r}",
        "mkdir .sdf-oldroot",
        "pivot_root . .sdf-oldroot",
        "cd /",
        "umount -l /.sdf-oldroot",
        "rmdir /.sdf-oldroot",
        f"exec setpriv --bounding-set {drop} /usr/bin/env -i {env} {SYSTEMD} --unit={plan.target}",
    ]
    return "\n".join(lines) + "\n"


def base_layer(
    *, enabled: Iterable[str], generators: Iterable[str], machine_id: str, target: str
) -> dict[str, str | Link]:
    """The files every container gets (relative path -> text or Link): masks for the units
    the host enabled and for every generator, a volatile journal, a fresh machine id (the
    journal of the host stays apart), and the empty boot target."""
    out: dict[str, str | Link] = {}
    for unit in sorted(set(enabled)):
        out[f"etc/systemd/system/{unit}"] = Link("/dev/null")
    for gen in sorted(set(generators)):
        out[f"etc/systemd/system-generators/{gen}"] = Link("/dev/null")
    out["etc/systemd/journald.conf.d/sdf-test.conf"] = "[Journal]\nStorage=volatile\n"
    out["etc/machine-id"] = machine_id + "\n"
    out[f"etc/systemd/system/{target}"] = (
        "[Unit]\nDescription=sipdeflect test container\nAllowIsolate=yes\n"
    )
    return out


def container_unavailable() -> str | None:
    """Why this process cannot boot a test container, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to boot systemd in a container"
    if not Path("/proc/self/mountinfo").is_file():
        return "needs Linux"
    if not Path(SYSTEMD).is_file():
        return f"needs systemd ({SYSTEMD})"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)} (util-linux, iproute2)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "needs overlayfs in the kernel"
    if cgroup2_root() is None:
        return "needs a cgroup2 hierarchy (unified or hybrid)"
    return None


def cgroup2_root(mountinfo: str | None = None) -> Path | None:
    """Where the cgroup2 hierarchy is mounted (/sys/fs/cgroup or .../unified)."""
    text = Path("/proc/self/mountinfo").read_text() if mountinfo is None else mountinfo
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split()[4])
    return None


def _enabled_units(etc: Path = Path("/etc/systemd/system")) -> list[str]:
    names = [p.name for pat in ("*.wants/*", "*.requires/*") for p in etc.glob(pat)]
    return [n for n in names if not n.startswith(BOOT_TARGET)]


def _generators() -> list[str]:
    return [p.name for d in GENERATOR_DIRS if Path(d).is_dir() for p in Path(d).iterdir()]


class Container:
    """systemd as PID 1 on an overlay of /, in its own network namespace."""

    def __init__(self, binds: Sequence[Bind] = ()) -> None:
        self.netns = Netns("systemd")
        self.binds = tuple(binds)
        self.base = Path(tempfile.mkdtemp(prefix="sdf-ct-", dir="/var/tmp"))
        self.stage = self.base / "stage"
        self.console = self.base / "console.log"
        cg2 = cgroup2_root()
        if cg2 is None:
            raise LabError("no cgroup2 hierarchy")
        self.cgroup = cg2 / self.base.name
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0  # the container's PID 1, as the host sees it
        self._out: IO[bytes] | None = None
        for d in (self.stage, self.base / "layer", self.base / "root"):
            d.mkdir()
        self.console.touch()
        for rel, what in base_layer(
            enabled=_enabled_units(),
            generators=_generators(),
            machine_id=secrets.token_hex(16),
            target=BOOT_TARGET,
        ).items():
            if isinstance(what, Link):
                self.link(rel, what.target)
            else:
                self.put(rel, what)

    # -- before boot: the upper layer -------------------------------------------------------
    def put(self, path: str, text: str, mode: int = 0o644) -> Path:
        p = self.stage / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)
        return p

    def link(self, path: str, target: str) -> None:
        p = self.stage / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(target)

    # -- lifecycle --------------------------------------------------------------------------
    def boot(self, timeout: float = 20.0) -> Container:
        self.netns.create()
        self.cgroup.mkdir()
        script = self.base / "boot.sh"
        script.write_text(
            boot_script(BootPlan(base=self.base, console=self.console, binds=self.binds))
        )
        self._out = (self.base / "boot.log").open("wb")
        argv = [
            "/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup / "cgroup.procs"),
            # If this process dies, unshare gets SIGKILL and its child (PID 1) with it.
            "setpriv", "--pdeathsig", "KILL", "--",
            "nsenter", f"--net=/run/netns/{self.netns.name}", "--",
            "unshare", "--kill-child=SIGKILL", "--mount", "--pid", "--fork", "--cgroup",
            "--uts", "--ipc", "--propagation", "private", "--", "/bin/sh", str(script),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._out
        )
        deadline = time.monotonic() + timeout
        while not self.pid:
            self._check_alive()
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            with contextlib.suppress(OSError, ValueError):
                first = children.read_text().split()
                if first and os.readlink(f"/proc/{first[0]}/exe").endswith("/systemd"):
                    self.pid = int(first[0])
            self._wait(deadline, "systemd to start")
        while True:
            res = self.run(["systemctl", "is-system-running"], check=False)
            if res.stdout.strip() in ("running", "degraded"):
                return self
            self._wait(deadline, f"the boot to finish (is-system-running: {res.stdout.strip()})")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise LabError(f"the container exited {self.proc.returncode}: {self.boot_log()}")

    def _wait(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise LabError(f"timed out waiting for {what}: {self.boot_log()}")
        time.sleep(0.05)

    def boot_log(self) -> str:
        logs = [self.base / "boot.log", self.console]
        return " | ".join(p.read_text(errors="replace")[-2000:] for p in logs if p.exists())

    def stop(self) -> None:
        """Kill everything in the container (its cgroup), then drop cgroup, namespace, files."""
        if self.cgroup.is_dir():
            with contextlib.suppress(OSError):
                (self.cgroup / "cgroup.kill").write_text("1")
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # a pid namespace dies with its init
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._out is not None:
            self._out.close()
        if self.cgroup.is_dir():  # the cgroups systemd made in there, deepest first
            for top, _, _ in os.walk(self.cgroup, topdown=False):
                _rmdir_when_empty(Path(top))
        self.netns.delete()
        # The mounts lived in the container's mount namespace only: base holds plain files.
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Container:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- inside -----------------------------------------------------------------------------
    def argv(self, argv: Sequence[str]) -> list[str]:
        """Run argv in every namespace of the container, at its root (as root)."""
        return ["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w",
                "--", *argv]  # fmt: skip

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input_: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            self.argv(argv), capture_output=True, text=True, timeout=timeout, input=input_,
            check=False, env=ENV,
        )  # fmt: skip
        if check and res.returncode != 0:
            raise LabError(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}")
        return res

    def path(self, path: str) -> Path:
        """A path inside the running container, as the host reaches it (/proc/PID/root)."""
        return Path(f"/proc/{self.pid}/root") / path.lstrip("/")


def _rmdir_when_empty(d: Path, tries: int = 50) -> None:
    for _ in range(tries):  # the kernel frees a killed cgroup's tasks asynchronously
        try:
            d.rmdir()
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
        else:
            return
