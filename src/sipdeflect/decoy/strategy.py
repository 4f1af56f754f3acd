# What the decoy answers, as a table (house rule 5). A request is reduced to a few features
# (method class, credentials present, SIPVicious svcrack's fixed probe tag, "this source was
# already challenged for this AOR"); the first table row that matches them names the answer
# and why the scanner quits on it. The rows are compiled into one dict keyed by the feature
# tuple, so deciding costs a handful of dict lookups. Pure: no I/O, no clock (`now` is given).
from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product
from typing import Protocol

from sipdeflect.sip.message import Request

# Method classes (RFC 3261 plus the common extension methods a PBX knows).
KNOWN_OTHER = frozenset(
    {"SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH"}
)
METHOD_CLASS = {
    "REGISTER": "REGISTER",
    "INVITE": "INVITE",
    "OPTIONS": "OPTIONS",
    "ACK": "ACK",
    "CANCEL": "CANCEL",
    "BYE": "BYE",
    **dict.fromkeys(KNOWN_OTHER, "OTHER"),
}
METHOD_CLASSES = ("REGISTER", "INVITE", "OPTIONS", "ACK", "CANCEL", "BYE", "OTHER", "UNKNOWN")

# SIPVicious svcrack sends its first, unauthenticated request with this fixed From tag
# (svcrack.py: localtag = '3206210844'); everything else it sends carries hex(ext:password).
SVCRACK_PROBE_TAG = b"tag=3206210844"

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER"


@dataclass(frozen=True, slots=True)
class Answer:
    """One row's answer. ``status`` None means silence."""

    name: str
    status: int | None
    challenge: str | None = None  # "www" -> 401 WWW-Authenticate, "proxy" -> 407
    remember: bool = False  # remember the AOR we challenged, to spot a repeat
    closes: bool = False  # an answer the scanner takes as final: it should stop now
    allow: bool = False  # 405 carries Allow (RFC 3261 21.4.6)
    why: str = ""
    smaller: Answer | None = None  # sent instead when this one would outgrow the request
    forget: bool = False  # the source answered our challenge: no longer a repeat offender
    drop_from_tag: bool = False  # answer with the From tag removed (svwar cannot decode it)
    remember_invite: bool = False  # remember INVITE_CHALLENGED: this source had a 407


@dataclass(frozen=True, slots=True)
class Row:
    """Match on features (None = any) -> answer. The first matching row wins."""

    methods: frozenset[str] | None
    auth: bool | None
    probe: bool | None
    repeat: bool | None
    answer: Answer


def _m(*names: str) -> frozenset[str]:
    return frozenset(names)


SILENT_ACK = Answer("ack", None, why="RFC 3261 17.2.1: an ACK is never answered")
SVCRACK_404 = Answer(
    "svcrack-probe-404",
    404,
    remember=True,
    closes=True,
    why="svcrack: 404 to its first probe = 'User not found': stops, reports nothing",
)
ACCEPT = Answer(
    "credentials-accepted-200",
    200,
    closes=True,
    forget=True,
    why="svcrack stops on any 200 (its 'password' is a guess we never checked)",
)
REPEAT_200 = Answer(
    "repeat-accepted-200",
    200,
    closes=True,
    why="a flooder that ignores the challenge and resends stops once it gets its 200",
)
FORBIDDEN = Answer(
    "forbidden-403",
    403,
    closes=True,
    why="the challenge would outgrow the request; svwar aborts on 403 too",
)
CHALLENGE = Answer(
    "challenge-401",
    401,
    challenge="www",
    remember=True,
    why="a challenge: svwar aborts on it (its first extension is random); svcrack answers it",
    smaller=FORBIDDEN,
)
INVITE_CHALLENGE = Answer(
    "invite-challenge-407",
    407,
    challenge="proxy",
    remember_invite=True,
    why="a challenge: svwar -m INVITE aborts on it (its first extension is random)",
    smaller=FORBIDDEN,
)
INVITE_RESCAN = Answer(
    "invite-rescan-404",
    404,
    closes=True,
    drop_from_tag=True,
    why="svwar deflected mid-scan: a From tag it cannot decode (getTag) sets nomore: it stops",
)
INVITE_REFUSED = Answer(
    "invite-forbidden-403", 403, closes=True, why="credentials never place a call here"
)
NO_TRANSACTION = Answer(
    "no-transaction-481", 481, closes=True, why="RFC 3261 9.2/15.1.2: no such call here"
)
NOT_ALLOWED = Answer(
    "not-allowed-405",
    405,
    allow=True,
    closes=True,
    why="svwar stops on a second 405; others get a proper 'not here'",
)
NOT_IMPLEMENTED = Answer(
    "not-implemented-501", 501, closes=True, why="RFC 3261 8.2.1: unknown method"
)

# The strategy. Read top to bottom; docs/decoy.md shows it as scanner -> answer -> why.
TABLE: tuple[Row, ...] = (
    Row(_m("ACK"), None, None, None, SILENT_ACK),
    # svcrack deflected mid-crack sends its probe-tagged REGISTER again after the 404 (it
    # only checks for one before cracking): challenge it, so it answers and gets its 200.
    Row(_m("REGISTER", "OPTIONS"), False, True, True, CHALLENGE),
    Row(None, False, True, None, SVCRACK_404),
    Row(_m("REGISTER", "OPTIONS"), True, None, None, ACCEPT),
    Row(_m("REGISTER", "OPTIONS"), False, None, True, REPEAT_200),
    Row(_m("REGISTER", "OPTIONS"), False, None, False, CHALLENGE),
    Row(_m("INVITE"), True, None, None, INVITE_REFUSED),
    Row(_m("INVITE"), False, None, True, INVITE_RESCAN),
    Row(_m("INVITE"), False, None, None, INVITE_CHALLENGE),
    Row(_m("CANCEL", "BYE"), None, None, None, NO_TRANSACTION),
    Row(_m("OTHER"), None, None, None, NOT_ALLOWED),
    Row(_m("UNKNOWN"), None, None, None, NOT_IMPLEMENTED),
)


# Answers meant to end the scan: a source that falls silent right after one received it.
CLOSING = frozenset(row.answer.name for row in TABLE if row.answer.closes) | frozenset(
    a.name for row in TABLE if (a := row.answer.smaller) is not None and a.closes
)


def compile_table(table: tuple[Row, ...]) -> dict[tuple[str, bool, bool, bool], Answer]:
    """Every feature combination -> the first matching row's answer. Total, or ValueError."""
    out: dict[tuple[str, bool, bool, bool], Answer] = {}
    flags = (False, True)
    for cls, auth, probe, repeat in product(METHOD_CLASSES, flags, flags, flags):
        for row in table:
            if (
                (row.methods is None or cls in row.methods)
                and row.auth in (None, auth)
                and row.probe in (None, probe)
                and row.repeat in (None, repeat)
            ):
                out[(cls, auth, probe, repeat)] = row.answer
                break
        else:
            raise ValueError(f"no row matches {(cls, auth, probe, repeat)}")
    return out


_COMPILED = compile_table(TABLE)


@dataclass(frozen=True, slots=True)
class Persona:
    """What the decoy claims to be. Nothing here is true of the real PBX."""

    realm: str = "asterisk"  # Asterisk's stock realm: generic, and says nothing about us
    server: str | None = None  # no Server header by default: svmap lists "unknown"


Index = Mapping[str, bytes]  # canonical header name -> first value (Headers.index)


class Fields(Protocol):
    """What an answer's extra headers read of a request: an Index, or a fastpath View."""

    def get(self, name: str, default: bytes, /) -> bytes: ...


INVITE_CHALLENGED = -1  # the remembered key after a 407 to an INVITE (aor_key is >= 1)


def aor_key(index: Index) -> int:
    """A small key for the request's target AOR (its raw To value) to spot repeats."""
    return zlib.crc32(index.get("to", b"")) or 1


Prepared = tuple[str, bool, bool, int]  # (method class, auth, probe, aor_key)


def prepare(method: str, index: Index) -> Prepared:
    """What the table needs from the request alone (the per-source part comes later)."""
    return (
        METHOD_CLASS.get(method, "UNKNOWN"),
        "authorization" in index or "proxy-authorization" in index,
        SVCRACK_PROBE_TAG in index.get("from", b""),
        aor_key(index),
    )


def features(method: str, index: Index, challenged: int) -> tuple[str, bool, bool, bool]:
    """The table's inputs. ``challenged`` is the AOR key this source was last challenged for."""
    return features_prepared(prepare(method, index), challenged)


def features_prepared(prepared: Prepared, challenged: int) -> tuple[str, bool, bool, bool]:
    cls, auth, probe, aor = prepared
    # For INVITE any earlier INVITE challenge counts: svwar moves on to the next extension.
    if cls == "INVITE":
        repeat = challenged == INVITE_CHALLENGED
    else:
        repeat = challenged != 0 and challenged == aor
    return (cls, auth, probe, repeat)


def decide_fields(method: str, index: Index, challenged: int) -> Answer:
    """The answer for a request given as method + header index."""
    return _COMPILED[features(method, index, challenged)]


def decide_prepared(prepared: Prepared, challenged: int) -> Answer:
    """The answer for a prepared request (the decoy's hot path: features_prepared inlined)."""
    cls, auth, probe, aor = prepared
    if cls == "INVITE":
        return _COMPILED[cls, auth, probe, challenged == INVITE_CHALLENGED]
    return _COMPILED[cls, auth, probe, challenged != 0 and challenged == aor]


def decide(request: Request, challenged: int) -> Answer:
    """The answer for ``request`` given what we know of its source."""
    return _COMPILED[features(request.method, request.headers.index, challenged)]


def untagged(value: bytes) -> bytes:
    """A From value without its tag parameter (for INVITE_RESCAN)."""
    head, sep, rest = value.partition(b">")
    params = rest if sep else head
    kept = b";".join(p for p in params.split(b";") if not p.strip().lower().startswith(b"tag="))
    return head + sep + kept if sep else kept


def nonce_for(index: Fields, now: float) -> str:
    """An opaque-looking nonce, pure: from the Call-ID and the current minute. Short,
    because the whole answer must stay smaller than the request."""
    return f"{zlib.crc32(index.get('call-id', b''), int(now) // 60):08x}"


_NO_HEADERS: list[tuple[str, str]] = []


def answer_headers(
    answer: Answer, index: Fields, persona: Persona, now: float
) -> list[tuple[str, str]]:
    """The extra header fields of ``answer`` (challenge, Allow, Server)."""
    if answer.challenge is None and not answer.allow and not persona.server:
        return _NO_HEADERS
    out: list[tuple[str, str]] = []
    if answer.challenge is not None:
        name = "WWW-Authenticate" if answer.challenge == "www" else "Proxy-Authenticate"
        nonce = nonce_for(index, now)
        out.append((name, f'Digest realm="{persona.realm}", nonce="{nonce}"'))
    if answer.allow:
        out.append(("Allow", ALLOW))
    if persona.server:
        out.append(("Server", persona.server))
    return out
