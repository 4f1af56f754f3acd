# FreeSWITCH (mod_sofia): registration/auth failures and challenges. The address is the
# "from ip ADDR" / "from ADDR" at the very end of the line, which sofia fills in from the
# network; the "[user@host]" before it is attacker text (see base.py for the injection check).
from __future__ import annotations

import re

from sipdeflect.detect.events import EventKind as K
from sipdeflect.detect.logs.base import LogFormat, Rule, Step, end, fld, lit

_ADDR = r"(?P<addr>[0-9a-fA-F:.]+)"


def _sofia(what: str) -> tuple[Step, ...]:
    """The C scanner's template of a "SIP auth WHAT (...) on sofia profile" rule."""
    return (
        lit(f"SIP auth {what} ("),
        fld("", "upper"),
        lit(") on sofia profile '"),
        fld("", "noquote0"),
        lit("' for ["),
        fld("account", "any"),
        lit("] from ip ", "unique"),
        fld("addr", "addr"),
        end(),
    )


RULES = (
    # sofia_reg_parse_auth() looks the nonce up in its own table first (unknown or expired
    # nonce -> AUTH_STALE -> a new challenge), so "auth failure" means the sender answered
    # a challenge sofia sent.
    Rule(
        "SIP auth failure (",
        re.compile(
            r"SIP auth failure \([A-Z]+\) on sofia profile '[^']*' for \[(?P<account>.*)\] "
            r"from ip " + _ADDR + r"$"
        ),
        {"": (K.AUTH_FAILED_WITH_CREDENTIALS, True)},
        candidates=re.compile(r"\] from ip " + _ADDR),
        repeat="] from ip ",
        fast=_sofia("failure"),
    ),
    Rule(
        "SIP auth challenge (",
        re.compile(
            r"SIP auth challenge \([A-Z]+\) on sofia profile '[^']*' for \[(?P<account>.*)\] "
            r"from ip " + _ADDR + r"$"
        ),
        {"": (K.CHALLENGE_SENT, False)},
        candidates=re.compile(r"\] from ip " + _ADDR),
        repeat="] from ip ",
        fast=_sofia("challenge"),
    ),
    Rule(
        "Can't find user [",
        re.compile(r"Can't find user \[(?P<account>.*)\] from " + _ADDR + r"$"),
        {"": (K.UNKNOWN_ACCOUNT, False)},
        candidates=re.compile(r"\] from " + _ADDR),
        repeat="] from ",
        fast=(
            lit("Can't find user ["),
            fld("account", "any"),
            lit("] from ", "unique"),
            fld("addr", "addr"),
            end(),
        ),
    ),
)

FORMAT = LogFormat(
    "freeswitch",
    RULES,
    sniff=re.compile(r"\[(?:WARNING|WARN|NOTICE|DEBUG|INFO|ERR|CRIT)\] (?:\[\w+\] )?\[?\w+\.c:\d+"),
)
