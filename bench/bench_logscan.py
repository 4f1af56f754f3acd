# logscan throughput against fail2ban-regex on the same generated 200k-line Asterisk log,
# for several mixes of lines (MIXES): the bench's own, half failure lines (a brute force
# plus a scan from 2,000 sources, what the log looks like under attack) and one line in
# ten; half the lines security-log InvalidPassword events with challenge fields (a quarter
# of them with a ReceivedChallenge that is not ours); and half the lines drawn from every
# Asterisk failure the filter and logscan both read (chan_sip, PJSIP, each security event
# kind, AMI, IAX2, the dialplan's "Rejecting unknown SIP connection"); and those two with
# every line a failure. fail2ban's stock asterisk filter matches exactly the lines logscan
# makes events of: the bench checks that its count of matched lines equals ours. Both the
# prefilter (ordinary Asterisk chatter) and the per-line parse are exercised. In CPU
# seconds, pinned to one core (the machine is shared):
#   in-process     read + parse + the policy (no output), best of 3, as logscan does it
#                  (the C scanner when built); also split into read + parse alone and the
#                  policy alone (over the same events), and read + parse in Python alone
#                  (LogFormat.scan, what runs without the C scanner), and logscan's
#                  JSON line formatting alone
#   CLI --json     `sipdeflect logscan --json LOG` to a pipe, start-up included: one
#                  JSON line per event on stdout, the flag table on stderr; start-up
#                  alone is the same command on a one-line log; also the same command
#                  with SIPDEFLECT_NO_C=1 (Python only)
#   fail2ban-regex `fail2ban-regex LOG asterisk.conf` (stock filter): prints a summary
#                  (hit counts per regex, date templates, line counts)
#   fail2ban-regex -o row: the same, printing one line per failure instead (ip, time,
#                  fields): like with like for our --json
# Children run as a user runs them: without PYTHONUNBUFFERED / PYTHONDONTWRITEBYTECODE
# (a harness may set them: every write a system call, every import compiled from source),
# after one untimed warm-up run of each program. Our CLI: the best of 2 runs.
# Figures go to bench/results/logscan.json.
from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import save
from sipdeflect.commands.logscan import _Lines
from sipdeflect.detect.events import Event
from sipdeflect.detect.logs import FORMATS, Context
from sipdeflect.detect.verdict import Verdicts
from sipdeflect.sources.chunks import read_byte_chunks, read_chunks

NOISE = (
    "VERBOSE[{pid}][C-0000{c:04x}] pbx.c: Executing [{ext}@from-internal:1] "
    'Dial("PJSIP/{ext}-0000{c:04x}", "PJSIP/{ext2},30,tT") in new stack',
    "VERBOSE[{pid}] res_pjsip_registrar.c: Added contact 'sip:{ext}@10.0.0.{o}:5060' "
    "to AOR '{ext}' with expiration of 3600 seconds",
    "VERBOSE[{pid}][C-0000{c:04x}] app_dial.c: PJSIP/{ext2}-0000{c:04x} answered "
    "PJSIP/{ext}-0000{c:04x}",
    "WARNING[{pid}] res_rtp_asterisk.c: RTP Read error: Unable to determine sender",
)
ATTACK = (
    "NOTICE[{pid}] chan_sip.c: Registration from '<sip:{ext}@203.0.113.1>' failed for "
    "'{ip}:{port}' - Wrong password",
    "NOTICE[{pid}] chan_sip.c: Registration from '\"{ext}\"<sip:{ext}@203.0.113.1>' failed "
    "for '{ip}:{port}' - No matching peer found",
    "NOTICE[{pid}] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from "
    "'<sip:{ext}@203.0.113.1>' failed for '{ip}:{port}' (callid: {c:08x}) - Failed to "
    "authenticate",
    'SECURITY[{pid}] res_security_log.c: SecurityEvent="InvalidAccountID",EventTV='
    '"2024-05-01T10:00:00.000+0000",Severity="Error",Service="PJSIP",EventVersion="1",'
    'AccountID="{ext}",SessionID="{c:08x}",LocalAddress="IPV4/UDP/203.0.113.1/5060",'
    'RemoteAddress="IPV4/UDP/{ip}/{port}"',
    "NOTICE[{pid}][C-0000{c:04x}] chan_sip.c: Call from '' ({ip}:{port}) to extension "
    "'00972{ext}' rejected because extension not found in context 'default'.",
)


# Security-log InvalidPassword as chan_sip and PJSIP write it: with our Challenge and the
# ReceivedChallenge of the request (equal: the sender saw our challenge, a credentialed
# failure; different: a plain one).
INVALID_PASSWORD = (
    'SECURITY[{pid}] res_security_log.c: SecurityEvent="InvalidPassword",EventTV='
    '"2024-05-01T10:00:00.000+0000",Severity="Error",Service="SIP",EventVersion="2",'
    'AccountID="{ext}",SessionID="0x7f{c:08x}",LocalAddress="IPV4/UDP/203.0.113.1/5060",'
    'RemoteAddress="IPV4/UDP/{ip}/{port}",Challenge="{n:08x}",ReceivedChallenge="{n:08x}",'
    'ReceivedHash="{h:032x}"',
    'SECURITY[{pid}] res_security_log.c: SecurityEvent="InvalidPassword",EventTV='
    '"2024-05-01T10:00:00.000+0000",Severity="Error",Service="PJSIP",EventVersion="2",'
    'AccountID="{ext}",SessionID="{c:08x}-{h:032x}",LocalAddress="IPV4/TCP/203.0.113.1/'
    '5060",RemoteAddress="IPV4/TCP/{ip}/{port}",Challenge="{n:08x}/{h:032x}",'
    'ReceivedChallenge="{n:08x}/{h:032x}",ReceivedHash="{h:032x}"',
    'SECURITY[{pid}] res_security_log.c: SecurityEvent="InvalidPassword",EventTV='
    '"2024-05-01T10:00:00.000+0000",Severity="Error",Service="SIP",EventVersion="2",'
    'AccountID="{ext}",SessionID="0x7f{c:08x}",LocalAddress="IPV4/UDP/203.0.113.1/5060",'
    'RemoteAddress="IPV4/UDP/{ip}/{port}",Challenge="{n:08x}",ReceivedChallenge="{m:08x}",'
    'ReceivedHash="{h:032x}"',
)
# Every other failure both fail2ban's filter and logscan read, in the wording of
# fail2ban's own test log where it has one.
OTHERS = (
    "NOTICE[{pid}] chan_sip.c: Registration from '<sip:{ext}@203.0.113.1>' failed for "
    "'{ip}:{port}' - Device does not match ACL",
    "NOTICE[{pid}] res_pjsip/pjsip_distributor.c: Request 'INVITE' from "
    "'<sip:{ext}@203.0.113.1>' failed for '{ip}:{port}' (callid: {c:08x}) - No matching "
    "endpoint found",
    'SECURITY[{pid}] res_security_log.c: SecurityEvent="ChallengeResponseFailed",EventTV='
    '"2024-05-01T10:00:00.000+0000",Severity="Error",Service="PJSIP",EventVersion="1",'
    'AccountID="<unknown>",SessionID="{c:08x}-{h:032x}",LocalAddress="IPV4/UDP/203.0.113.1/'
    '5060",RemoteAddress="IPV4/UDP/{ip}/{port}",Challenge="{n}/{h:032x}",'
    'Response="{h:032x}",ExpectedResponse=""',
    'SECURITY[{pid}] res_security_log.c: SecurityEvent="FailedACL",EventTV="2024-05-01T10:'
    '00:00.000+0000",Severity="Error",Service="SIP",EventVersion="1",AccountID="{ext}",'
    'SessionID="0x7f{c:08x}",LocalAddress="IPV4/UDP/203.0.113.1/5060",RemoteAddress='
    '"IPV4/UDP/{ip}/{port}",ACLName="no_extension_match"',
    "NOTICE[{pid}] manager.c: {ip} failed to authenticate as 'admin{ext}'",
    "NOTICE[{pid}] manager.c: {ip} tried to authenticate with nonexistent user 'op{ext}'",
    "NOTICE[{pid}] chan_iax2.c: Host {ip} failed MD5 authentication for '{ext}' "
    "({h:032x} != {n:032x})",
    "NOTICE[{pid}] chan_iax2.c: No registration for peer '{ext}' (from {ip})",
    "NOTICE[{pid}] chan_sip.c: hacking attempt detected '{ip}'",
    'WARNING[{pid}][C-0000{c:04x}] Ext. s: "Rejecting unknown SIP connection from {ip}:{port}"',
)
# name -> (share of failure lines, the failure lines to draw from)
MIXES: dict[str, tuple[float, tuple[str, ...]]] = {
    "bench-50": (0.5, ATTACK),
    "bench-10": (0.1, ATTACK),
    "invalidpassword-50": (0.5, INVALID_PASSWORD + INVALID_PASSWORD[:1]),
    "all-50": (0.5, ATTACK + INVALID_PASSWORD + OTHERS),
    # every line a failure: the least in our favour (fail2ban's cost per line varies little)
    "invalidpassword-100": (1.0, INVALID_PASSWORD + INVALID_PASSWORD[:1]),
    "all-100": (1.0, ATTACK + INVALID_PASSWORD + OTHERS),
}


def make_log(
    path: Path, lines: int, attack: float = 0.5, seed: int = 7, failures: tuple[str, ...] = ATTACK
) -> None:
    rnd = random.Random(seed)
    ips = [f"198.51.{rnd.randrange(256)}.{rnd.randrange(1, 255)}" for _ in range(2000)]
    out = []
    for i in range(lines):
        t = f"[2024-05-01 {10 + i // 36000:02d}:{i // 600 % 60:02d}:{i // 10 % 60:02d}] "
        tmpl = rnd.choice(failures) if rnd.random() < attack else rnd.choice(NOISE)
        extra = {}
        if "{n" in tmpl:  # (drawn only here: the bench's own mixes stay as they were)
            extra = {"n": rnd.getrandbits(32), "m": rnd.getrandbits(32), "h": rnd.getrandbits(128)}
        out.append(
            t
            + tmpl.format(
                pid=rnd.randrange(1000, 30000),
                c=rnd.randrange(1 << 16),
                ext=rnd.randrange(100, 9999),
                ext2=rnd.randrange(100, 999),
                o=rnd.randrange(2, 250),
                ip=rnd.choice(ips),
                port=rnd.randrange(1024, 65535),
                **extra,
            )
        )
    path.write_text("\n".join(out) + "\n")


CHILD_ENV = {
    k: v for k, v in os.environ.items() if k not in {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
}


def child_cpu(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(CPU seconds, wall seconds, stdout) of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(
        argv, capture_output=True, text=True, check=False, env={**CHILD_ENV, **(env or {})}
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, res.stdout


def best_child(
    argv: list[str], runs: int, warm: bool = True, env: dict[str, str] | None = None
) -> tuple[float, float, str]:
    """The run with the least CPU of ``runs`` (after one untimed warm-up run)."""
    if warm:
        child_cpu(argv, env)
    return min((child_cpu(argv, env) for _ in range(runs)), key=lambda r: r[0])


def in_process(path: Path) -> tuple[float, int]:
    ctx = Context(year=2024, default=datetime(2024, 5, 1, tzinfo=UTC))
    fmt = FORMATS["asterisk"]
    t0 = time.process_time()
    n = 0
    feed = Verdicts().feed
    for data in read_byte_chunks(path):
        for _, ev in fmt.scan_bytes(data, ctx):
            feed(ev)
            n += 1
    return time.process_time() - t0, n


def parse_only(path: Path) -> tuple[float, list[Event]]:
    """in_process() without the policy: read + parse, keeping the events."""
    ctx = Context(year=2024, default=datetime(2024, 5, 1, tzinfo=UTC))
    fmt = FORMATS["asterisk"]
    t0 = time.process_time()
    events = [ev for data in read_byte_chunks(path) for _, ev in fmt.scan_bytes(data, ctx)]
    return time.process_time() - t0, events


def parse_python(path: Path) -> float:
    """parse_only() through LogFormat.scan, the Python path (no C scanner)."""
    ctx = Context(year=2024, default=datetime(2024, 5, 1, tzinfo=UTC))
    fmt = FORMATS["asterisk"]
    t0 = time.process_time()
    for buf in read_chunks(path):
        for _ in fmt.scan(buf, ctx):
            pass
    return time.process_time() - t0


def json_only(path: Path, events: list[Event]) -> float:
    """logscan --json's line formatting alone (C when built), over the same events."""
    block = _Lines().json_block(path)
    items = list(enumerate(events, 1))
    t0 = time.process_time()
    for i in range(0, len(items), 4096):
        block(items[i : i + 4096])
    return time.process_time() - t0


def policy_only(events: list[Event]) -> float:
    verdicts = Verdicts()
    feed = verdicts.feed
    t0 = time.process_time()
    for ev in events:
        feed(ev)
    return time.process_time() - t0


def one_mix(log: Path, lines: int, name: str, fail2ban: bool) -> dict[str, object]:
    attack, failures = MIXES[name]
    make_log(log, lines, attack, failures=failures)
    scanner = FORMATS["asterisk"]._scanner
    handed_back = scanner.deferred if scanner is not None else 0
    best, events = min(in_process(log) for _ in range(3))
    handed_back = (scanner.deferred - handed_back) // 3 if scanner is not None else lines
    parse_s, evs = min((parse_only(log) for _ in range(3)), key=lambda r: r[0])
    policy_s = min(policy_only(evs) for _ in range(3))
    json_s = min(json_only(log, evs) for _ in range(3))
    python_s = min(parse_python(log) for _ in range(3))
    fig: dict[str, object] = {
        "mix": name,
        "failure_share": attack,
        "events": events,
        "c_scanner_handed_back_lines": handed_back,
        "c_scanner": FORMATS["asterisk"].accelerated,
        "in_process_lines_per_cpu_s": round(lines / best),
        "in_process_parse_only_lines_per_cpu_s": round(lines / parse_s),
        "in_process_parse_python_lines_per_cpu_s": round(lines / python_s),
        "policy_us_per_event": round(policy_s / max(len(evs), 1) * 1e6, 2),
        "json_lines_us_per_event": round(json_s / max(len(evs), 1) * 1e6, 2),
    }
    exe = Path(sys.executable).parent / "sipdeflect"
    argv = [str(exe), "logscan", "--json", str(log)]
    cpu, wall, out = best_child(argv, 2)
    assert out.count("\n") == events, "the CLI printed one JSON line per event"
    fig["cli_json_lines_per_cpu_s"] = round(lines / cpu)
    fig["cli_json_wall_s"] = round(wall, 2)
    cpu_py, _, out_py = best_child(argv, 1, env={"SIPDEFLECT_NO_C": "1"})
    assert out_py == out, "with and without C, the same JSON lines"
    fig["cli_json_python_lines_per_cpu_s"] = round(lines / cpu_py)
    f2b = shutil.which("fail2ban-regex")
    if f2b and fail2ban:
        filt = "/etc/fail2ban/filter.d/asterisk.conf"
        cpu_f, wall_f, out = best_child([f2b, str(log), filt], 1)
        summary = next((ln for ln in out.splitlines() if ln.startswith("Lines:")), "")
        matched = summary.split(" lines, ")[1].split(" ignored, ")[1].split(" matched")[0]
        assert int(matched) == events, f"fail2ban-regex matched other lines: {summary}"
        fig["fail2ban_regex_lines_per_cpu_s"] = round(lines / cpu_f)
        fig["fail2ban_regex_wall_s"] = round(wall_f, 2)
        fig["fail2ban_regex_summary"] = summary.strip()
        cpu_r, wall_r, out = best_child([f2b, "-o", "row", str(log), filt], 1, warm=False)
        fig["fail2ban_regex_rows_lines_per_cpu_s"] = round(lines / cpu_r)
        fig["fail2ban_regex_rows_wall_s"] = round(wall_r, 2)
        fig["fail2ban_regex_rows_printed"] = out.count("\n")
        fig["speedup_in_process"] = round(cpu_f / best, 1)
        fig["speedup_cli_json_vs_rows"] = round(cpu_r / cpu, 1)
        fig["speedup_cli_json_vs_summary"] = round(cpu_f / cpu, 1)
        fig["speedup_cli_json_python_vs_rows"] = round(cpu_r / cpu_py, 1)
    return fig


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench logscan")
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--no-fail2ban", action="store_true")
    ap.add_argument("--cpu", type=int, default=1, help="core to pin to (children inherit)")
    ap.add_argument("--mix", action="append", choices=list(MIXES), help="only these mixes")
    args = ap.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "asterisk.log"
        one = Path(tmp) / "one.log"
        make_log(one, 1, 1.0)
        exe = Path(sys.executable).parent / "sipdeflect"
        startup, _, _ = best_child([str(exe), "logscan", "--json", str(one)], 3)
        figures: dict[str, object] = {
            "lines": args.lines,
            "pinned_cpu": args.cpu,
            "clock": "CPU seconds (process_time / child rusage): the machine is shared",
            "cli_startup_cpu_s": round(startup, 3),
            "mixes": [one_mix(log, args.lines, m, not args.no_fail2ban) for m in args.mix or MIXES],
        }
        save("logscan", figures)
    return 0
