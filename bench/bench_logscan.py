# logscan throughput against fail2ban-regex on the same generated 200k-line Asterisk log.
# The log mixes ordinary Asterisk chatter with the failure lines of a brute force and a
# scan (half each, from 2,000 sources, a realistic attack-day mix), so both the prefilter
# and the per-line parse are exercised. We time the whole CLI (`sipdeflect logscan --json`
# to /dev/null, process start included) and the in-process scan; fail2ban-regex runs its
# stock asterisk filter. Figures go to bench/results/logscan.json.
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import save
from sipdeflect.detect.logs import FORMATS, Context
from sipdeflect.detect.verdict import Verdicts
from sipdeflect.sources.chunks import read_chunks

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


def make_log(path: Path, lines: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    ips = [f"198.51.{rnd.randrange(256)}.{rnd.randrange(1, 255)}" for _ in range(2000)]
    out = []
    for i in range(lines):
        t = f"[2024-05-01 {10 + i // 36000:02d}:{i // 600 % 60:02d}:{i // 10 % 60:02d}] "
        tmpl = rnd.choice(ATTACK) if i % 2 else rnd.choice(NOISE)
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
            )
        )
    path.write_text("\n".join(out) + "\n")


def in_process(path: Path) -> tuple[float, int]:
    ctx = Context(year=2024, default=datetime(2024, 5, 1, tzinfo=UTC))
    fmt = FORMATS["asterisk"]
    t0 = time.perf_counter()
    n = 0
    verdicts = Verdicts()
    for buf in read_chunks(path):
        for _, ev in fmt.scan(buf, ctx):
            verdicts.feed(ev)
            n += 1
    return time.perf_counter() - t0, n


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench logscan")
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--no-fail2ban", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "asterisk.log"
        make_log(log, args.lines)
        best, events = min(in_process(log) for _ in range(3))
        figures: dict[str, object] = {
            "lines": args.lines,
            "events": events,
            "in_process_lines_per_s": round(args.lines / best),
        }
        exe = Path(sys.executable).parent / "sipdeflect"
        t0 = time.perf_counter()
        subprocess.run(
            [str(exe), "logscan", "--json", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        cli = time.perf_counter() - t0
        figures["cli_json_lines_per_s"] = round(args.lines / cli)
        f2b = shutil.which("fail2ban-regex")
        if f2b and not args.no_fail2ban:
            t0 = time.perf_counter()
            res = subprocess.run(
                [f2b, str(log), "/etc/fail2ban/filter.d/asterisk.conf"],
                capture_output=True,
                text=True,
                check=False,
            )
            f2b_s = time.perf_counter() - t0
            matched = next((ln for ln in res.stdout.splitlines() if ln.startswith("Lines:")), "")
            figures["fail2ban_regex_lines_per_s"] = round(args.lines / f2b_s)
            figures["fail2ban_regex_summary"] = matched.strip()
            figures["speedup_cli_vs_fail2ban"] = round(f2b_s / cli, 1)
        save("logscan", figures)
    return 0
