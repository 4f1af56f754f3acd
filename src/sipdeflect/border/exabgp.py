# ExaBGP as sipdeflect's BGP speaker, kept as a child process. ExaBGP reads API commands
# from the stdout of a process it runs; that process is `cat` of a FIFO the daemon writes,
# so commands are plain text lines ("announce route ...", RFC 7999 and RFC 8955 routes),
# no home-made BGP. The child dies with the daemon (PR_SET_PDEATHSIG), its session drops
# and the router withdraws everything; a new daemon starts a new speaker and announces
# what the store says is in force: the speaker's RIB is always rebuilt, never trusted.
# The text rendering at the top is pure; the Process class is the only I/O.
from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sipdeflect.border.plan import Changes, Entry, Mode
from sipdeflect.decisions import Network
from sipdeflect.errors import SipDeflectError

PR_SET_PDEATHSIG = 1
WRITE_WAIT = 2.0  # seconds a full command pipe may stay full before the speaker is rebuilt


class BorderError(SipDeflectError):
    """The BGP speaker cannot be started or driven (one line, for the log)."""


@dataclass(frozen=True, slots=True)
class SpeakerSettings:
    peer: str
    peer_as: int
    local_address: str
    local_as: int
    router_id: str
    next_hop: str  # "self" or an address
    communities: tuple[str, ...]
    mode: Mode
    sip_ports: tuple[int, ...]
    workdir: Path
    exabgp: str = "exabgp"


# -- pure: ExaBGP's configuration and API text ---------------------------------------------
def config_text(s: SpeakerSettings) -> str:
    v6 = ipaddress.ip_address(s.peer).version == 6
    fam = "ipv6" if v6 else "ipv4"
    families = []
    if s.mode in (Mode.RTBH, Mode.BOTH):
        families.append(f"{fam} unicast;")
    if s.mode in (Mode.FLOWSPEC, Mode.BOTH):
        families.append("ipv4 flow;")
    return f"""# written by sipdeflect: one neighbor, routes come from the API process only
process sipdeflect {{
    run /bin/cat {s.workdir / "commands"};
    encoder text;
}}
neighbor {s.peer} {{
    router-id {s.router_id};
    local-address {s.local_address};
    local-as {s.local_as};
    peer-as {s.peer_as};
    family {{ {" ".join(families)} }}
    api {{ processes [ sipdeflect ]; }}
}}
"""


def _flow_match(t: Network, ports: Sequence[int]) -> str:
    dport = f"={ports[0]}" if len(ports) == 1 else "[ " + " ".join(f"={p}" for p in ports) + " ]"
    return f"match {{ source {t}; protocol udp; destination-port {dport}; }}"


def flowspec_ok(t: Network) -> bool:
    return t.version == 4  # IPv6 FlowSpec (RFC 8956) is not rendered yet


def commands(changes: Changes, s: SpeakerSettings) -> list[str]:
    """ExaBGP API lines for these changes (withdrawals first)."""
    out: list[str] = []
    rtbh = s.mode in (Mode.RTBH, Mode.BOTH)
    flow = s.mode in (Mode.FLOWSPEC, Mode.BOTH)
    for t in changes.withdraw:
        if rtbh:
            out.append(f"withdraw route {t} next-hop {s.next_hop}")
        if flow and flowspec_ok(t):
            out.append(f"withdraw flow route {{ {_flow_match(t, s.sip_ports)} }}")
    for e in changes.announce:
        out += _announce(e, s, rtbh=rtbh, flow=flow)
    return out


def _announce(e: Entry, s: SpeakerSettings, *, rtbh: bool, flow: bool) -> list[str]:
    out = []
    t = e.target
    if rtbh:
        comm = " ".join(s.communities)
        attrs = f" community [ {comm} ]" if comm else ""
        out.append(f"announce route {t} next-hop {s.next_hop}{attrs}")
    if flow and flowspec_ok(t):
        out.append(f"announce flow route {{ {_flow_match(t, s.sip_ports)} then {{ discard; }} }}")
    return out


# -- I/O: the child process --------------------------------------------------------------------
def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Process:
    """One ExaBGP child and the FIFO its API process reads."""

    def __init__(self, settings: SpeakerSettings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self.log_path = settings.workdir / "exabgp.log"
        self.started = 0.0

    def start(self) -> None:
        s = self.settings
        exe = shutil.which(s.exabgp)
        if exe is None:
            raise BorderError(f"border: no BGP speaker: {s.exabgp!r} not found (Debian: exabgp)")
        s.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(s.workdir, 0o700)
        if self.log_path.exists():  # one log per speaker's life, and the one before
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        conf = s.workdir / "exabgp.conf"
        conf.write_text(config_text(s))
        fifo = s.workdir / "commands"
        with contextlib.suppress(FileNotFoundError):
            fifo.unlink()
        os.mkfifo(fifo, 0o600)
        # Read-write: opening never blocks, and `cat` sees EOF only when we are gone.
        # Non-blocking: a speaker that stops reading must never hold up the thread that
        # also applies the host's firewall (send() gives up after WRITE_WAIT).
        self._fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        env = {
            **os.environ,
            # Stay who we are: the FIFO and config are ours, in a 0700 directory.
            "exabgp.daemon.user": pwd.getpwuid(os.geteuid()).pw_name,
            "exabgp.daemon.daemonize": "false",
            "exabgp.log.destination": "stdout",
            "exabgp.api.ack": "false",  # `cat` never reads acks; they would fill its stdin
            "exabgp.api.cli": "false",
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # argv list, our own config file
                [exe, str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, before exec
            )
        self.started = time.time()
        deadline = time.monotonic() + 2.0  # a bad config makes it exit at once
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BorderError(f"border: exabgp exited at start: {self.last_log_line()}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, lines: Sequence[str]) -> None:
        if self._fd is None or not lines:
            return
        data = "".join(f"{ln}\n" for ln in lines).encode()
        deadline = time.monotonic() + WRITE_WAIT
        try:
            while data:
                try:
                    n = os.write(self._fd, data)
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([], [self._fd], [], left)[1]:
                        raise BorderError(
                            f"border: exabgp read no commands for {WRITE_WAIT:g} s"
                        ) from None
                    continue
                data = data[n:]
        except OSError as exc:
            raise BorderError(f"border: writing to exabgp failed: {exc}") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""

    def session(self) -> str:
        """ "up" when a TCP connection to the peer's port 179 is established in this host's
        kernel (ExaBGP logs no session loss at its default level), else "down"."""
        peer = ipaddress.ip_address(self.settings.peer)
        name = "/proc/net/tcp" if peer.version == 4 else "/proc/net/tcp6"
        try:
            text = Path(name).read_text()
        except OSError:
            return "unknown"
        return "up" if tcp_established(text, peer, 179) else "down"


def _proc_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host (little-endian)
    order."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def tcp_established(
    proc_net_tcp: str, peer: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> bool:
    """Is there an ESTABLISHED (state 01) connection to peer:port in this table?"""
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "01":
            continue
        addr, _, rport = fields[2].partition(":")
        try:
            if int(rport, 16) == port and _proc_address(addr) == peer:
                return True
        except ValueError:
            continue
    return False


def probe_peer(s: SpeakerSettings, timeout: float = 3.0) -> str | None:
    """Why the peer's BGP port cannot be reached from the local address (None: it can)."""
    try:
        with socket.create_connection(
            (s.peer, 179), timeout=timeout, source_address=(s.local_address, 0)
        ):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)
