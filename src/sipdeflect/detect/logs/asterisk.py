# Asterisk: chan_sip, PJSIP (res_pjsip distributor), the security event log
# (res_security_log), IAX2, AMI and the common dialplan "Rejecting unknown SIP connection".
# Each rule anchors the address on the field Asterisk fills in itself (after "failed for",
# RemoteAddress=, the "(addr:port)" of "Call from"), never on the From header, user names
# or the SessionID, which are attacker text; see base.py for the injection check.
from __future__ import annotations

import re

from sipdeflect.detect.events import EventKind as K
from sipdeflect.detect.logs.base import LogFormat, Rule, end, fld, lit, opt

_CRED = (K.AUTH_FAILED_WITH_CREDENTIALS, True)

# chan_sip check_auth(): "Wrong password" is reached only when the nonce matched the one
# sent in this dialog (a wrong nonce gets a new challenge instead), so the sender saw it.
_CHAN_SIP = {
    "Wrong password": _CRED,
    "No matching peer found": (K.UNKNOWN_ACCOUNT, False),
    "Username/auth name mismatch": (K.AUTH_FAILED, False),
    "Device does not match ACL": (K.ACL_REJECT, False),
    "Peer is not supposed to register": (K.ACL_REJECT, False),
    "ACL error (permit/deny)": (K.ACL_REJECT, False),
    "Not a local domain": (K.ACL_REJECT, False),
}
# res_pjsip: "Failed to authenticate" is AUTH_FAIL from the digest authenticator, which is
# only returned for a nonce it issued (a stale or foreign nonce is AUTH_STALE: a challenge).
_PJSIP = {
    "No matching endpoint found": (K.UNKNOWN_ACCOUNT, False),
    "Not match Endpoint ACL": (K.ACL_REJECT, False),
    "Not match Endpoint Contact ACL": (K.ACL_REJECT, False),
    "Failed to authenticate": _CRED,
    "Error to authenticate": (K.AUTH_FAILED, False),
}
_SECURITY = {
    "ChallengeResponseFailed": _CRED,
    "InvalidAccountID": (K.UNKNOWN_ACCOUNT, False),
    "FailedACL": (K.ACL_REJECT, False),
    "ChallengeSent": (K.CHALLENGE_SENT, False),
    "RequestNotAllowed": (K.REJECTED, False),
    "AuthMethodNotAllowed": (K.REJECTED, False),
    "RequestBadFormat": (K.REJECTED, False),
    "UnexpectedAddress": (K.REJECTED, False),
    "SessionLimit": (K.REJECTED, False),
    "MemLimit": (K.REJECTED, False),
    "LoadAvg": (K.REJECTED, False),
}
_HOSTPORT = r"(?P<hostport>\[[0-9a-fA-F:.]+\](?::\d+)?|[0-9a-fA-F:.]+)"
_ONE = {"": (K.REJECTED, False)}
# AccountID and SessionID are attacker text and come before the addresses; fields after
# RemoteAddress (Challenge, ReceivedChallenge, ReceivedHash, Response) partly too.
_SEC_TAIL = (
    r'(?:.*?AccountID="(?P<account>[^"]*)")?.*'
    r',RemoteAddress="IPV[46]/(?P<proto>\w+)/(?P<addr>[^/"]+)/(?P<port>\d+)"'
)
_SEC_ADDR = re.compile(r'RemoteAddress="IPV[46]/\w+/(?P<addr>[^/"]+)/\d+"')
_SEC_FAST = (
    lit('SecurityEvent="', "unique"),
    fld("reason", "word"),
    lit('"'),
    opt('AccountID="', "account", '"'),
    lit(',RemoteAddress="IPV', "unique"),
    fld("", "4or6"),
    lit("/"),
    fld("proto", "word"),
    lit("/"),
    fld("addr", "noslashdq"),
    lit("/"),
    fld("port", "digits"),
    lit('"'),
)

RULES = (
    Rule(
        "Registration from '",
        re.compile(
            r"Registration from '(?P<account>.*)' failed for '" + _HOSTPORT + r"' - "
            r"(?P<reason>[^']+?)\.?$"
        ),
        _CHAN_SIP,
        default=(K.REJECTED, False),
        candidates=re.compile(r"' failed for '" + _HOSTPORT + "'"),
        repeat="' failed for '",
        account_in_uri=True,
        fast=(
            lit("Registration from '", "unique"),
            fld("account", "any"),
            lit("' failed for '", "unique"),
            fld("hostport", "hostport"),
            lit("' - "),
            fld("reason", "noquote"),
            end(strip_dot=True),
        ),
    ),
    Rule(
        "' (callid: ",
        re.compile(
            r"Request (?:'[A-Z]+' )?from '(?P<account>.*)' failed for '"
            + _HOSTPORT
            + r"' \(callid: .*\) - (?P<reason>[^-]+?)$"
        ),
        _PJSIP,
        default=(K.REJECTED, False),
        candidates=re.compile(r"' failed for '" + _HOSTPORT + r"' \(callid: "),
        repeat="' failed for '",
        account_in_uri=True,
        fast=(
            lit("Request "),
            fld("", "optmethod"),
            lit("from '"),
            fld("account", "any"),
            lit("' failed for '", "unique"),
            fld("hostport", "hostport"),
            lit("' (callid: "),
            lit(") - ", "last"),
            fld("reason", "nodash"),
            end(),
        ),
    ),
    Rule(
        "rejected because extension not found",
        re.compile(
            r"Call from '.*' \((?:(?P<proto>[A-Z]+):)?" + _HOSTPORT + r"\) to extension "
            r"'(?P<account>.*)' rejected because extension not found in context '[^']*'\.?$"
        ),
        {"": (K.UNKNOWN_EXTENSION, False)},
        candidates=re.compile(r"\((?:[A-Z]+:)?" + _HOSTPORT + r"\) to extension '"),
        repeat=") to extension '",
        fast=(
            lit("Call from '"),
            lit("' (", "last"),
            fld("", "proto_hostport"),
            lit(") to extension '"),
            fld("account", "any"),
            lit("' rejected because extension not found in context '", "last"),
            fld("", "context_tail"),
            end(),
        ),
    ),
    # InvalidPassword proves the challenge was seen only when ReceivedChallenge equals the
    # Challenge Asterisk sent; otherwise it is a plain failure. The template is the other
    # security events' (a reason other than InvalidPassword is outside the table: handed
    # back). The challenge check (base._challenge_answered(), _clog.c's
    # challenge_answered()) takes the pair after the last RemoteAddress only, and none at
    # all when attacker text imitates Challenge= or ReceivedChallenge= anywhere.
    Rule(
        'SecurityEvent="InvalidPassword"',
        re.compile(r'SecurityEvent="(?P<reason>InvalidPassword)"' + _SEC_TAIL),
        {"InvalidPassword": _CRED},
        candidates=_SEC_ADDR,
        repeat="RemoteAddress=",
        challenge_check=True,
        fast=_SEC_FAST,
    ),
    Rule(
        'SecurityEvent="',
        re.compile(r'SecurityEvent="(?P<reason>\w+)"' + _SEC_TAIL),
        _SECURITY,
        candidates=_SEC_ADDR,
        repeat="RemoteAddress=",
        fast=_SEC_FAST,
    ),
    # AMI (manager.c) runs over TCP: the handshake proves the address.
    Rule(
        " failed to authenticate as '",
        re.compile(
            r"manager\.c: (?P<addr>[0-9a-fA-F:.]+) failed to authenticate as '(?P<account>.*)'"
        ),
        {"": _CRED},
        fast=(
            lit("manager.c: ", "unique"),
            fld("addr", "addr"),
            lit(" failed to authenticate as '"),
            fld("account", "any"),
            lit("'", "last"),
        ),
    ),
    Rule(
        " failed to authenticate as '",
        re.compile(r"Host (?P<addr>[0-9a-fA-F:.]+) failed to authenticate as '(?P<account>.*)'"),
        {"": (K.AUTH_FAILED, False)},
    ),
    Rule(
        " tried to authenticate with nonexistent user '",
        re.compile(
            r"manager\.c: (?P<addr>[0-9a-fA-F:.]+) tried to authenticate with nonexistent "
            r"user '(?P<account>.*)'"
        ),
        {"": (K.UNKNOWN_ACCOUNT, True)},
        fast=(
            lit("manager.c: ", "unique"),
            fld("addr", "addr"),
            lit(" tried to authenticate with nonexistent user '"),
            fld("account", "any"),
            lit("'", "last"),
        ),
    ),
    # IAX2 MD5: a spoofer's answer fails the same way, so this proves nothing.
    Rule(
        " failed MD5 authentication for '",
        re.compile(
            r"Host (?P<addr>[0-9a-fA-F:.]+) failed MD5 authentication for '(?P<account>[^']*)'"
        ),
        {"": (K.AUTH_FAILED, False)},
        fast=(
            lit("Host ", "unique"),
            fld("addr", "addr"),
            lit(" failed MD5 authentication for '"),
            fld("account", "noquote0"),
            lit("'"),
        ),
    ),
    Rule(
        "No registration for peer '",
        re.compile(
            r"No registration for peer '(?P<account>.*)' \(from (?P<addr>[0-9a-fA-F:.]+)\)$"
        ),
        {"": (K.UNKNOWN_ACCOUNT, False)},
        fast=(
            lit("No registration for peer '", "unique"),
            fld("account", "any"),
            lit("' (from ", "last"),
            fld("addr", "addr"),
            lit(")"),
            fld("", "empty"),
            end(),
        ),
    ),
    Rule(
        "hacking attempt detected '",
        re.compile(r"chan_sip\.c: hacking attempt detected '" + _HOSTPORT + "'"),
        _ONE,
        fast=(
            lit("chan_sip.c: hacking attempt detected '", "unique"),
            fld("hostport", "hostport"),
            lit("'"),
        ),
    ),
    Rule(
        "Rejecting unknown SIP connection from ",
        re.compile(r'"Rejecting unknown SIP connection from ' + _HOSTPORT + '"$'),
        _ONE,
        fast=(
            lit('"Rejecting unknown SIP connection from ', "unique"),
            fld("hostport", "hostport"),
            lit('"'),
            fld("", "empty"),
            end(),
        ),
    ),
)

FORMAT = LogFormat(
    "asterisk",
    RULES,
    sniff=re.compile(
        r"(?m)^(?:\[[^\]]+\] |\S+ +\d+ [\d:]+ \S+ asterisk\[\d+\]: )?"
        r"(?:NOTICE|WARNING|SECURITY|VERBOSE|ERROR|DEBUG) ?\[\d+\]"
    ),
)
