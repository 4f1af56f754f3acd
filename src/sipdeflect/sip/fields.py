# Structured header values (RFC 3261 19.1 URIs, 20.10 name-addr, 20.42 Via, 20.16 CSeq).
# Each parser takes raw value bytes and returns a frozen value or raises SipParseError;
# they scan with str methods and a few compiled patterns, never eval or decode strictly.
from __future__ import annotations

import re

from sipdeflect.errors import SipParseError
from sipdeflect.sip.values import CSeq, NameAddr, Params, SipUri, Via, text

# RFC 3261 7.3.1: header fields whose values are comma-separated lists and may be split.
# (Authorization/WWW-Authenticate contain commas but are one value per field.)
LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
        "in-reply-to",
        "alert-info",
        "call-info",
        "error-info",
        "warning",
        "reply-to",
        "path",
        "service-route",
    }
)

# RFC 3261 7.3.3 compact forms (and RFC 3265/3515/3841/4028/4474 additions).
COMPACT = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VIA = re.compile(r"SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(\S.*)", re.IGNORECASE)
_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::(\d{1,5}))?")
_MAX_CSEQ = 2**31 - 1  # RFC 3261 8.1.1.5


_names: dict[bytes, str] = {}  # raw header name -> canonical name, bounded below
_NAME_CACHE_MAX = 1024


def canonical_name(raw: bytes) -> str:
    """Lower-case long form of a header name as it came off the wire (cached)."""
    name = _names.get(raw)
    if name is not None:
        return name
    try:
        s = raw.decode("ascii").strip(" \t")
    except UnicodeDecodeError:
        raise SipParseError("non-ASCII header name") from None
    if not TOKEN.fullmatch(s):
        raise SipParseError(f"bad header name {s[:40]!r}")
    s = s.lower()
    name = COMPACT.get(s, s)
    if len(_names) < _NAME_CACHE_MAX:  # attackers cannot grow it without bound
        _names[raw] = name
    return name


def split_list(value: bytes) -> list[bytes]:
    """Split a list header on commas outside quotes and <...> (RFC 3261 7.3.1)."""
    if b"," not in value:
        return [value]
    out: list[bytes] = []
    start = 0
    quoted = angle = escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == 0x5C:  # backslash
                escaped = True
            elif ch == 0x22:
                quoted = False
        elif ch == 0x22:
            quoted = True
        elif ch == 0x3C:
            angle = True
        elif ch == 0x3E:
            angle = False
        elif ch == 0x2C and not angle:
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    return [v for v in out if v]


def parse_params(items: list[str]) -> Params:
    """``;name[=value]`` items (already split on ';') -> params with lower-case names."""
    out: list[tuple[str, str | None]] = []
    for item in items:
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if not TOKEN.fullmatch(name):
            raise SipParseError(f"bad parameter name {name[:40]!r}")
        out.append((name, value.strip() if eq else None))
    return tuple(out)


def _hostport(s: str, what: str) -> tuple[str, int | None]:
    m = _HOSTPORT.fullmatch(s.strip())
    if m is None:
        raise SipParseError(f"bad host in {what}: {s[:60]!r}")
    port = int(m.group(2)) if m.group(2) else None
    if port is not None and port > 65535:
        raise SipParseError(f"port out of range in {what}")
    return m.group(1), port


def parse_via(value: bytes) -> Via:
    """One Via value: ``SIP/2.0/UDP host[:port];branch=...;rport``."""
    first, *rest = text(value).split(";")
    m = _VIA.fullmatch(first.strip())
    if m is None:
        raise SipParseError(f"bad Via {text(value[:60])!r}")
    host, port = _hostport(m.group(2), "Via")
    return Via(m.group(1).upper(), host, port, parse_params(rest))


def parse_uri(value: bytes) -> SipUri:
    """A SIP URI ``sip:user:password@host:port;params?headers`` (RFC 3261 19.1.1)."""
    s = text(value).strip()
    scheme, colon, rest = s.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in {"sip", "sips", "tel"}:
        raise SipParseError(f"unsupported URI {s[:60]!r}")
    rest, qmark, hdrs = rest.partition("?")
    if scheme == "tel":
        number, *params = rest.split(";")
        return SipUri(
            scheme, number or None, None, "", None, parse_params(params), hdrs if qmark else None
        )
    user: str | None = None
    password: str | None = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, pcolon, pw = userinfo.partition(":")
        password = pw if pcolon else None
    hostport, *params = rest.split(";")
    host, port = _hostport(hostport, "URI")
    return SipUri(scheme, user, password, host, port, parse_params(params), hdrs if qmark else None)


def parse_name_addr(value: bytes) -> NameAddr:
    """From/To/Contact: ``"Name" <uri>;tag=x`` or ``uri;tag=x`` (RFC 3261 20.10)."""
    s = text(value).strip()
    display: str | None = None
    if "<" in s:
        pre, _, after = s.partition("<")
        uri_s, gt, params_s = after.partition(">")
        if not gt:
            raise SipParseError("unterminated <URI>")
        pre = pre.strip()
        if pre.startswith('"') and pre.endswith('"') and len(pre) >= 2:
            display = pre[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif pre:
            display = pre
        params = params_s.split(";")
        if params and params[0].strip():
            raise SipParseError("junk after >")
        return NameAddr(display, parse_uri(uri_s.encode()), parse_params(params[1:]))
    uri_s, *params = s.split(";")
    return NameAddr(None, parse_uri(uri_s.encode()), parse_params(params))


def parse_cseq(value: bytes) -> CSeq:
    """``CSeq: 1 REGISTER``: a 32-bit sequence number and a method (RFC 3261 20.16)."""
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10:
        raise SipParseError(f"bad CSeq {text(value[:40])!r}")
    number = int(parts[0])
    method = parts[1].decode("ascii", "replace")
    if number > _MAX_CSEQ or not TOKEN.fullmatch(method):
        raise SipParseError(f"bad CSeq {text(value[:40])!r}")
    return CSeq(number, method)
