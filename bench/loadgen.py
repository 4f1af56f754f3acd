# A lean SIP REGISTER flood generator for the decoy benchmark. One UDP socket per source
# address (127.1.x.y, so a target sees thousands of sources), one pre-built datagram per
# source (the write-up's friendly-scanner REGISTER), sent round-robin at a paced rate in
# 1 ms slices; replies are drained every 20 ms so the generator's own sockets never overflow
# (the benchmark reads the kernel's UdpRcvbufErrors and must see only the target's drops).
# With --unique every datagram differs (a counter in the Via branch, as a scanner that
# varies its requests), so a target cannot answer a repeat from memory.
# Bounded: it stops after --seconds, or after --max-packets, whichever comes first.
# Prints one JSON object: sent, replies, seconds, achieved rate.
from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import time

LOOPBACK_ONLY = "127."


def register(src: str, port: int, dst: str, n: int) -> bytes:
    return (
        f"REGISTER sip:{dst} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src}:{port};branch=z9hG4bK-{n:010d};rport\r\n"
        "Content-Length: 0\r\n"
        f'From: "2011" <sip:2011@{dst}>;tag={n:08x}\r\n'
        "Accept: application/sdp\r\n"
        "User-Agent: friendly-scanner\r\n"
        f'To: "2011" <sip:2011@{dst}>\r\n'
        "Contact: sip:123@1.1.1.1\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Call-ID: {3361196543 + n}\r\n"
        "Max-Forwards: 70\r\n\r\n"
    ).encode()


def source_address(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dst", default="127.0.0.1:5060")
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--rate", type=float, required=True, help="datagrams per second")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--max-packets", type=int, default=2_000_000)
    ap.add_argument("--unique", action="store_true", help="make every datagram different")
    args = ap.parse_args(argv)
    host, _, port_s = args.dst.rpartition(":")
    if not host.startswith(LOOPBACK_ONLY):
        print("loadgen only floods loopback (127.0.0.0/8)", file=sys.stderr)
        return 2
    dst = (host, int(port_s))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.sources + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.sources + 64), hard))
    socks: list[socket.socket] = []
    msgs: list[bytes] = []
    for i in range(args.sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind((source_address(i), 0))
        socks.append(s)
        msgs.append(register(source_address(i), s.getsockname()[1], host, i))
    # (send, datagram, offset of the branch's 10 digits); bytearrays only when --unique
    pairs = [
        (s.sendto, bytearray(m) if args.unique else m, m.index(b"z9hG4bK-") + 8)
        for s, m in zip(socks, msgs, strict=True)
    ]
    n_pairs = len(pairs)
    total = min(args.max_packets, int(args.rate * args.seconds))
    sent = replies = 0
    k = 0
    t0 = time.perf_counter()
    next_drain = t0 + 0.02

    def drain() -> int:
        got = 0
        for s in socks:
            try:
                while True:
                    s.recv(65535)
                    got += 1
            except BlockingIOError:
                pass
        return got

    while sent < total:
        now = time.perf_counter()
        if now - t0 > args.seconds * 1.5:
            break  # the generator cannot keep up: stop anyway, bounded in time
        due = min(total, int((now - t0) * args.rate) + 1)
        while sent < due:
            send, msg, mark = pairs[k]
            if args.unique:
                msg[mark : mark + 10] = b"%010d" % sent  # type: ignore[index]
            k += 1
            if k == n_pairs:
                k = 0
            try:
                send(msg, dst)
            except BlockingIOError:
                break  # our own send buffer is full: try again next slice
            sent += 1
        if now >= next_drain:
            replies += drain()
            next_drain = now + 0.02
        else:
            time.sleep(0.0002)
    elapsed = time.perf_counter() - t0
    time.sleep(0.3)  # let the target answer what is queued
    replies += drain()
    print(
        json.dumps(
            {
                "sent": sent,
                "replies": replies,
                "seconds": round(elapsed, 3),
                "achieved_rate": round(sent / elapsed, 1) if elapsed else 0.0,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
