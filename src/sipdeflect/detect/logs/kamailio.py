# Kamailio (and OpenSIPS): Kamailio logs nothing about failed authentication by itself, so
# users add one xlog line to their auth-failure branches (docs/detection.md, and
# sipdeflect.lab.kamailio.XLOG_AUTH_FAILED):
#
#   xlog("L_WARN", "sipdeflect: auth-failed src=$si port=$sp proto=$proto
#         reason=$var(why) user=$fU ua=$ua\n");    (on one line: one space where split)
#
# $si/$sp/$proto are filled by Kamailio from the socket; attacker text ($fU, $ua) comes last.
# The first "sipdeflect: " marker on the line is the genuine one; a second one means the
# attacker wrote one into its own text, and the line becomes LOG_INJECTION.
from __future__ import annotations

import re

from sipdeflect.detect.events import EventKind as K
from sipdeflect.detect.logs.base import LogFormat, Rule, end, fld, lit, oneof

_CRED = (K.AUTH_FAILED_WITH_CREDENTIALS, True)
# Reasons the documented config sets in $var(why). wrong-password and unknown-user are
# logged only when pv_auth_check() returned -2 (our own valid nonce, wrong password), so the
# sender answered our challenge; the others prove the address only over TCP/TLS.
REASONS = {
    "wrong-password": _CRED,
    "unknown-user": _CRED,
    "unknown-extension": (K.UNKNOWN_EXTENSION, False),
    "acl-reject": (K.ACL_REJECT, False),
    "rejected": (K.REJECTED, False),
}

RULES = (
    Rule(
        "sipdeflect: ",
        re.compile(
            r"sipdeflect: (?:auth-failed|rejected) src=(?P<addr>[0-9a-fA-F:.\[\]]+) "
            r"port=(?P<port>\d+) proto=(?P<proto>\w+) reason=(?P<reason>\S+) "
            r"user=(?P<account>.*?) ua=.*$"
        ),
        REASONS,
        candidates=re.compile(r"sipdeflect: \S+ src=(?P<addr>[0-9a-fA-F:.\[\]]+)"),
        pick=0,
        fast=(
            lit("sipdeflect: "),
            oneof("auth-failed", "rejected"),
            lit(" src="),
            fld("addr", "addrb"),
            lit(" port="),
            fld("port", "digits"),
            lit(" proto="),
            fld("proto", "word"),
            lit(" reason="),
            fld("reason", "nospace"),
            lit(" user="),
            fld("account", "any"),
            lit(" ua="),
            end(),
        ),
    ),
)

FORMAT = LogFormat(
    "kamailio",
    RULES,
    sniff=re.compile(r"kamailio\[\d+\]|<core>|<script>|sipdeflect: auth-failed| \d+\(\d+\) \w+: "),
)
