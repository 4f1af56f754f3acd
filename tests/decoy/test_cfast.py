"""The C accelerator answers exactly as its Python twins: scan(), view() and build() give
equal results (or fail alike) on every vector, on odd Via/To shapes, on values with
CR/LF/NUL, and on a fuzzed corpus. ./dev test sets SIPDEFLECT_REQUIRE_C, so there it must
be built."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sipdeflect.decoy import fastpath
from sipdeflect.decoy.strategy import prepare
from tests.decoy.helpers import CAPTURED, VECTORS, sip
from tests.decoy.test_handle import _mutate
from tests.sanitized import CFAST, run_sanitized

pytestmark = pytest.mark.skipif(
    not fastpath.ACCELERATED and not os.environ.get("SIPDEFLECT_REQUIRE_C"),
    reason="the decoy's C accelerator is not built (needs gcc, python3-dev)",
)
ROOT = Path(__file__).parent.parent.parent
HANDMADE = [p.read_bytes() for p in sorted((VECTORS / "handmade").glob("*.sip"))]
SOURCES = [("203.0.113.5", 5099), ("2001:db8::7", 5060), ("198.51.100.1", 1)]
EXTRA = [[], [("WWW-Authenticate", 'Digest realm="asterisk", nonce="0badc0de"')]]


def test_it_is_built_and_in_use() -> None:
    assert fastpath.ACCELERATED, "SIPDEFLECT_REQUIRE_C is set but _cfast did not load"
    assert fastpath.scan is not fastpath.scan_py


def outcome(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except Exception as exc:  # both twins must fail alike
        return ("raised", type(exc))


def same_answers(index: dict[str, bytes], vias: list[bytes], clean: bool) -> None:
    for src in SOURCES:
        for status in (200, 100, 401, 404):
            for extra in EXTRA:
                want = outcome(fastpath.build_py, index, vias, status, src, extra, clean=clean)
                got = outcome(fastpath.build_c, index, vias, status, src, extra, clean=clean)
                assert got == want, (index, vias, status, src)


def same_view(data: bytes, want: fastpath.Scanned | None) -> None:
    """The C View of ``data`` against scan_py + prepare + build_py."""
    v = fastpath.view(data)
    if want is None:
        assert v is None, data
        return
    assert v is not None, data
    method, index, vias = want
    for src in SOURCES:  # before index/vias exist: reply() reads the datagram itself
        for status in (200, 100, 401, 404):
            for extra in EXTRA:
                lines = fastpath.extra_lines(extra) if extra else b""
                want_out = outcome(fastpath.build_py, index, vias, status, src, extra, clean=True)
                assert outcome(v.reply, status, *src, lines) == want_out, data
    assert v.prepared == prepare(method, index), data
    for name in ("from", "to", "call-id", "via", "authorization", "x-none"):
        assert v.get(name, b"-") == index.get(name, b"-")
    assert (v.data, v.method, v.index, v.vias, v.clean) == (data, method, index, vias, True)


def same_scan(data: bytes) -> bool:
    want = fastpath.scan_py(data)
    got = fastpath.scan(data)
    assert got == want, data
    same_view(data, want)
    if want is not None:
        same_answers(want[1], want[2], clean=True)
    return want is not None


def test_vectors() -> None:
    assert all(same_scan(d) for d in CAPTURED.values())
    for d in HANDMADE:
        same_scan(d)


@pytest.mark.parametrize(
    "via",
    [
        b"SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bK1;rport",
        b"SIP/2.0/UDP 203.0.113.5:5099;branch=z9hG4bK1",
        b"SIP/2.0/UDP 203.0.113.5;rport=1;received=1.2.3.4;RECEIVED=x",
        b"SIP/2.0/UDP [2001:db8::7]:5060;rport;branch=a",
        b"SIP/2.0/UDP [2001:db8::7;branch=a",
        b"SIP/2.0/UDP [;x",
        b"SIP/2.0/UDP",
        b"",
        b";;;",
        b"SIP/2.0/UDP a;  RPort ; received ;tag",
        b'SIP/2.0/UDP a;x="1,2", SIP/2.0/UDP b;rport',
        b" , SIP/2.0/UDP c;rport , ,",
        b",",
        b", ,",
        b"SIP/2.0/UDP <a,b>;rport,SIP/2.0/UDP d",
        b'SIP/2.0/UDP a;q="x\\",y", SIP/2.0/UDP e',
        b"SIP/2.0/UDP a\r\n;rport",
        b"SIP/2.0/UDP a\x00;rport=",
    ],
)
@pytest.mark.parametrize(
    "to",
    [
        b"<sip:100@x>",
        b"<sip:100@x>;tag=1",
        b"<sip:100@x> ; TAG = 2",
        b"<sip:100@x;tag=3>",
        b"sip:100@x;tag=4",
        b"",
        b">;\ttag\n=",
        b"<sip:a@b>\r\n;tag",
    ],
)
def test_odd_vias_and_tos(via: bytes, to: bytes) -> None:
    if b"\r" not in via + to and b"\n" not in via + to and b"\x00" not in via:
        head = b"REGISTER sip:x SIP/2.0\r\nVia: %s\r\nFrom: <sip:a@b>;tag=9\r\nTo: %s\r\n"
        same_scan(head % (via, to) + b"Call-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n")
    index = {"from": b"<sip:a@b>;tag=9", "to": to, "call-id": b"c\x00d", "cseq": b"1 REGISTER"}
    same_answers(index, [via, b"SIP/2.0/UDP second\n"], clean=False)
    same_answers({k: v for k, v in index.items() if k != "call-id"}, [via], clean=False)
    same_answers(index, [], clean=False)


@pytest.mark.parametrize(
    "fields",
    [
        b"Authorization: Digest x\r\n",
        b"authorization: Digest x\r\nAuthorization: y\r\n",
        b"Proxy-Authorization: Digest x\r\n",
        b"PROXY-AUTHORIZATION: Digest x\r\n",
        b"X-Authorization: no\r\nProxy-Authenticate: no\r\n",
        b"From: <sip:dup@b>;tag=3206210844\r\n",  # a second From: the first one counts
        b"Max-Forwards: 70\r\nv: SIP/2.0/UDP second;branch=b\r\nVIA: third\r\n",
    ],
)
@pytest.mark.parametrize("method", [b"REGISTER", b"INVITE", b"OPTIONS", b"NOTIFY", b"X-NEW"])
@pytest.mark.parametrize("from_tag", [b"3206210844", b"00"])
def test_view_prepares_as_strategy_does(fields: bytes, method: bytes, from_tag: bytes) -> None:
    data = (
        b"%s sip:100@x SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5099;branch=z9hG4bK1;rport\r\n"
        b"From: <sip:100@x>;tag=%s\r\nTo: <sip:100@x>\r\n%sCall-ID: 1\r\nCSeq: 7 %s\r\n\r\n"
    ) % (method, from_tag, fields, method)
    assert same_scan(data)


def test_fuzzed_corpus() -> None:
    rng = random.Random(11)
    seeds = [*CAPTURED.values(), *HANDMADE, sip("REGISTER", pad=10)]
    taken = 0
    for i in range(40_000):
        taken += same_scan(_mutate(rng, seeds[i % len(seeds)]))
    assert taken > 1000


def test_random_bytes_and_every_prefix() -> None:
    rng = random.Random(5)
    for _ in range(20_000):
        same_scan(rng.randbytes(rng.randrange(0, 600)))
    whole = sip("INVITE", pad=3)
    for n in range(len(whole) + 1):
        same_scan(whole[:n])


def test_bad_arguments_raise_instead_of_crashing() -> None:
    c = fastpath.C_MODULE
    assert c is not None
    with pytest.raises(TypeError):
        c.scan("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.build({"to": "str"}, [], 200, b"SIP/2.0 200 OK\r\n", "h", 1, b"", True)  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        c.build({}, [1], 200, b"", "h", 1, b"", True)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        c.view("text")  # type: ignore[arg-type]
    v = c.view(sip("REGISTER"))
    assert v is not None
    for status in (99, 700, -1):
        with pytest.raises(ValueError):
            v.reply(status, "h", 1, b"")
    with pytest.raises(TypeError):
        v.reply(200, b"h", 1, b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        v.get(b"to", b"")  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # a mandatory header the C code has no slot for
        c.configure({}, str, ValueError, {}, ("x-new",), {}, "U", b"t", str)


def test_the_c_table_of_common_names_agrees_with_canonical_name() -> None:
    import re

    from sipdeflect.sip.fields import canonical_name

    source = (Path(fastpath.__file__).parent / "_cfast.c").read_text()
    table = source[source.index("COMMON[][2]") : source.index("#define N_COMMON")]
    pairs = re.findall(r'\{"([^"]+)", "([^"]+)"\}', table)
    assert len(pairs) > 20
    for raw, name in pairs:
        assert canonical_name(raw.encode()) == name, raw


ASAN_DRIVER = r"""
import random, sys
sys.path.insert(0, sys.argv[1])
import _cfast
from sipdeflect.decoy import fastpath
from sipdeflect.decoy.strategy import prepare
from tests.decoy.helpers import CAPTURED, sip
from tests.decoy.test_handle import _mutate
from tests.sanitized import run_sanitized

fastpath.configure(_cfast)
rng = random.Random(3)
seeds = [*CAPTURED.values(), sip("REGISTER", pad=10), sip("INVITE", extra="v: a, b, ,c\r\n")]
taken = 0
for i in range(int(sys.argv[2])):
    data = _mutate(rng, seeds[i % len(seeds)]) if i % 4 else rng.randbytes(rng.randrange(400))
    got = _cfast.scan(data)
    assert got == fastpath.scan_py(data), data
    v = _cfast.view(data)
    if got is None:
        assert v is None
        continue
    taken += 1
    method, index, vias = got
    for status in (100, 200, 401):
        assert v.reply(status, "203.0.113.5", 5099, b"X: y\r\n") == fastpath.build_py(
            index, vias, status, ("203.0.113.5", 5099), [("X", "y")], clean=True)
    assert v.get("call-id", b"") == index.get("call-id", b"") and v.index == index
    assert v.vias == vias and v.prepared == prepare(method, index)
    for src in (("203.0.113.5", 5099), ("2001:db8::7", 1)):
        for clean in (True, False):
            try:
                want = fastpath.build_py(index, vias, 200, src, clean=clean)
            except IndexError:
                want = None
            try:
                out = _cfast.build(index, vias, 200, b"SIP/2.0 200 OK\r\n", *src, b"", clean)
            except IndexError:
                out = None
            assert out == want, data
# The batch I/O: datagrams of every size up to the largest UDP payload, over loopback.
import socket
from sipdeflect.decoy import mmsg
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
srv.bind(("127.0.0.1", 0))
srv.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_PKTINFO", 8), 1)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
cli.bind(("127.0.0.2", 0))
cli.settimeout(5)
batch = _cfast.Batch(srv.fileno(), 8, mmsg.decode_sockaddr, mmsg.decode_control)
for size in (0, 1, 300, 1500, 65507):
    for _ in range(3):
        cli.sendto(bytes([size % 251]) * size, srv.getsockname())
    got = []
    while len(got) < 3:
        got += batch.recv()
    assert all(len(d) == size and src == cli.getsockname() for d, src, anc in got), size
    assert batch.send([(i, d[: size // 2]) for i, (d, _, _) in enumerate(got)]) == 3
    for _ in range(3):
        assert len(cli.recv(65535)) == size // 2
print(taken)
"""


def test_no_memory_error_under_address_sanitizer(tmp_path: Path) -> None:
    """The C code reads attacker bytes: built with ASan and UBSan (abort on the first
    report), it runs a fuzzed corpus and must agree with Python and exit cleanly."""
    res = run_sanitized(tmp_path, CFAST, ASAN_DRIVER, "30000")
    assert res.returncode == 0, res.stderr[-3000:]
    assert int(res.stdout) > 1000  # the corpus reached build(), not only the deferrals
