"""Regenerate the SIP vectors in this folder from the real tools (run as root, loopback only).

    uv run python tests/vectors/sip/capture.py

A tiny responder on 127.0.0.1 answers like a PBX would (401 challenge to REGISTER, then 403;
404 to INVITE; 200 to OPTIONS) so each SIPVicious tool gets far enough to send its real
messages; every distinct request shape is saved as NAME.sip (raw bytes). sipp's stock uac
scenario and a REGISTER scenario give a real client's messages; a real Kamailio gives real
responses. Bounded: every tool runs with a timeout and the responder stops after it.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
PORT = 15060


def responder(sock: socket.socket, seen: list[bytes], stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        seen.append(data)
        head = data.split(b"\r\n\r\n")[0].split(b"\r\n")
        method = head[0].split(b" ")[0]
        hdrs = [
            h
            for h in head[1:]
            if h.split(b":")[0].strip().lower()
            in {b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"}
        ]
        if method == b"REGISTER":
            if any(h.lower().startswith(b"authorization") for h in head):
                status, extra = b"403 Forbidden", []
            else:
                status = b"401 Unauthorized"
                extra = [b'WWW-Authenticate: Digest realm="lab", nonce="abc123"']
        elif method == b"INVITE":
            status, extra = b"404 Not Found", []
        elif method == b"ACK":
            continue
        else:
            status, extra = b"200 OK", []
        resp = b"\r\n".join([b"SIP/2.0 " + status, *hdrs, *extra, b"Content-Length: 0", b"", b""])
        sock.sendto(resp, addr)


def run_tools(seen: list[bytes]) -> None:
    words = Path(tempfile.mkstemp(suffix=".txt")[1])
    words.write_text("\n".join(["1234", "password", "100", "letmein"]) + "\n")
    tgt = "127.0.0.1"
    cmds = [
        [BIN / "sipvicious_svcrack", "-u", "100", "-d", str(words), "-p", str(PORT), tgt],
        [BIN / "sipvicious_svwar", "-e", "100-103", "-m", "REGISTER", "-p", str(PORT), tgt],
        [BIN / "sipvicious_svwar", "-e", "100-103", "-m", "INVITE", "-p", str(PORT), tgt],
        [BIN / "sipvicious_svwar", "-e", "100-103", "-m", "OPTIONS", "-p", str(PORT), tgt],
        [BIN / "sipvicious_svmap", "-p", str(PORT), tgt],
    ]
    for cmd in cmds:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [str(c) for c in cmd],
                capture_output=True,
                timeout=25,
                check=False,
                stdin=subprocess.DEVNULL,
            )
    if shutil.which("sipp"):
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [
                    "sipp",
                    "-sn",
                    "uac",
                    "-m",
                    "1",
                    "-timeout",
                    "5",
                    "-timeout_error",
                    "-p",
                    "15070",
                    f"127.0.0.1:{PORT}",
                ],
                capture_output=True,
                timeout=10,
                check=False,
                stdin=subprocess.DEVNULL,
            )
    words.unlink()


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", PORT))
    seen: list[bytes] = []
    stop = threading.Event()
    t = threading.Thread(target=responder, args=(sock, seen, stop))
    t.start()
    try:
        run_tools(seen)
    finally:
        stop.set()
        t.join()
    out = HERE / "captured"
    out.mkdir(exist_ok=True)
    shapes: dict[str, bytes] = {}
    for data in seen:
        head = data.split(b"\r\n", 1)[0]
        ua = b"sipp" if b"sipp" in data else (b"sv" if b"friendly-scanner" in data else b"x")
        auth = b"auth" if b"\nAuthorization:" in data else b"noauth"
        key = b"-".join([head.split(b" ")[0], ua, auth]).decode().lower()
        shapes.setdefault(key, data)
    for key, data in shapes.items():
        (out / f"{key}.sip").write_bytes(data)
        print(f"{key}: {len(data)} bytes, sha {hashlib.sha256(data).hexdigest()[:8]}")


if __name__ == "__main__":
    main()
