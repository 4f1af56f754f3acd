"""The C log scanner (detect/logs/_clog.c) against the Python path it stands in for:
LogFormat.scan_bytes(data) must equal LogFormat.scan(data.decode("utf-8", "replace"))
event for event and line for line, on the fail2ban and Kamailio corpora, on typical flood
lines (which it must read itself, not hand back), on shapes chosen to break a template and
on fuzzed lines; logscan's C JSON lines must equal the Python ones byte for byte; and all
of it runs again under ASan and UBSan. ./dev test sets SIPDEFLECT_REQUIRE_C: there the
scanner must be built."""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from sipdeflect.commands.logscan import _Lines
from sipdeflect.detect.events import Event, EventKind, address
from sipdeflect.detect.logs import FORMATS, Context, LogFormat
from sipdeflect.detect.logs.base import JSON_LINES, Rule, end, fld, lit, opt
from tests.detect.test_fail2ban_corpus import CORPUS
from tests.lab_detect.kamcorpus import OUT as KAMAILIO_CORPUS
from tests.sanitized import CLOG, run_sanitized

ROOT = Path(__file__).resolve().parents[2]
AST = FORMATS["asterisk"]
pytestmark = pytest.mark.skipif(
    not AST.accelerated and not os.environ.get("SIPDEFLECT_REQUIRE_C"),
    reason="the log scanner's C accelerator is not built (needs gcc, python3-dev)",
)


def test_the_scanner_is_built_where_required() -> None:
    assert AST.accelerated, "SIPDEFLECT_REQUIRE_C is set but _clog did not load"


def ctx(**kw: object) -> Context:
    return Context(**{"year": 2024, "default": datetime(2024, 5, 1, tzinfo=UTC), **kw})  # type: ignore[arg-type]


def same(fmt: LogFormat, data: bytes, first_line: int = 1, **kw: object) -> list[tuple[int, Event]]:
    """scan_bytes() of data, after checking it equals the Python path's scan()."""
    want = list(fmt.scan(data.decode("utf-8", "replace"), ctx(**kw), first_line))
    got = fmt.scan_bytes(data, ctx(**kw), first_line)
    assert got == want
    # equal values are not enough where a type could differ (a bool 1, a str subclass)
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert [type(x) for x in a] == [type(x) for x in b]
    return got


def deferred(fmt: LogFormat) -> int:
    assert fmt._scanner is not None
    return fmt._scanner.deferred


# Typical lines of each templated Asterisk rule (the benchmark's, and variants).
TYPICAL = [
    "[2024-05-01 10:00:01] NOTICE[1234] chan_sip.c: Registration from "
    "'<sip:100@203.0.113.1>' failed for '198.51.100.7:5062' - Wrong password",
    "[2024-05-01 10:00:01] NOTICE[1234] chan_sip.c: Registration from "
    "'\"100\"<sip:100@203.0.113.1>' failed for '198.51.100.8:5060' - No matching peer found",
    "[2024-05-01 10:00:02] NOTICE[1234] chan_sip.c: Registration from "
    "'<sips:alice@example.com;transport=tls>' failed for '[2001:db8::7]:5061' - "
    "Device does not match ACL.",
    "[2024-05-01 10:00:02] NOTICE[1234] chan_sip.c: Registration from '<sip:1@x>' failed "
    "for '2001:db8::8' - Something new",
    "[2024-05-01 10:00:03] NOTICE[99] res_pjsip/pjsip_distributor.c: Request 'REGISTER' "
    "from '<sip:200@203.0.113.1>' failed for '198.51.100.9:5060' (callid: abc-1) - "
    "Failed to authenticate",
    "[2024-05-01 10:00:03] NOTICE[99] res_pjsip/pjsip_distributor.c: Request 'INVITE' "
    "from '\"x\" <sip:201@203.0.113.1>' failed for '[2001:db8::9]:5060' (callid: "
    "a) - (b) - c) - No matching endpoint found",
    "[2024-05-01 10:00:04] NOTICE[99] res_pjsip/pjsip_distributor.c: Request from "
    "'<sip:202@203.0.113.1>' failed for '198.51.100.10' (callid: q) - Not match Endpoint ACL",
    "[2024-05-01 10:00:04] NOTICE[7][C-00000001] chan_sip.c: Call from '' "
    "(198.51.100.11:5070) to extension '0097250' rejected because extension not found in "
    "context 'default'.",
    "[2024-05-01 10:00:05] NOTICE[7][C-00000001] chan_sip.c: Call from 'Bob (x)' "
    "(TCP:198.51.100.12:5060) to extension '' rejected because extension not found in "
    "context 'from-ext'",
    "[2024-05-01 10:00:05] NOTICE[7] chan_sip.c: Call from '' (UDP:[2001:db8::c]:5060) to "
    "extension '9' rejected because extension not found in context 'public'.",
    '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="InvalidAccountID",'
    'EventTV="2024-05-01T10:00:00.000+0000",Severity="Error",Service="PJSIP",EventVersion="1",'
    'AccountID="300",SessionID="1",LocalAddress="IPV4/UDP/203.0.113.1/5060",'
    'RemoteAddress="IPV4/UDP/198.51.100.13/5060"',
    '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="ChallengeResponse'
    'Failed",EventTV="x",Service="SIP",AccountID="301",SessionID="0x1",LocalAddress="IPV4/'
    'TCP/203.0.113.1/5060",RemoteAddress="IPV4/TCP/198.51.100.14/5060",Challenge="a",'
    'ReceivedChallenge="a",ReceivedHash="b"',
    '[2024-05-01 10:00:07] SECURITY[1] res_security_log.c: SecurityEvent="FailedACL",'
    'Service="AMI",SessionID="1",RemoteAddress="IPV6/UDP/2001:db8::e/5060"',
    '[2024-05-01 10:00:07] SECURITY[1] res_security_log.c: SecurityEvent="ChallengeSent",'
    'AccountID="",RemoteAddress="IPV4/UDP/198.51.100.15/5060",Challenge="z"',
    *(
        '[2024-05-01 10:00:08] SECURITY[1] res_security_log.c: SecurityEvent="InvalidPassword",'
        + tail
        for tail in (
            # chan_sip: our nonce answered (credentialed), or another one (not)
            'EventTV="1373098165-824497",Severity="Error",Service="SIP",EventVersion="2",'
            'AccountID="972592891005",SessionID="0x88aab6c",LocalAddress="IPV4/UDP/92.28.73.180/'
            '5060",RemoteAddress="IPV4/UDP/198.51.100.16/5084",Challenge="41d26de5",'
            'ReceivedChallenge="41d26de5",ReceivedHash="7a6a3a2e95a05260aee612896e1b4a39"',
            'EventTV="x",Severity="Error",Service="SIP",EventVersion="2",AccountID="100",'
            'SessionID="0x1",LocalAddress="IPV4/UDP/192.0.2.1/5060",RemoteAddress="IPV4/UDP/'
            '198.51.100.17/5060",Challenge="41d26de5",ReceivedChallenge="41d26de6",'
            'ReceivedHash="7a"',
            # PJSIP-style nonces; TCP proves the address but not an unanswered challenge
            'Service="PJSIP",AccountID="101",SessionID="a-b",LocalAddress="IPV4/TCP/192.0.2.1/'
            '5060",RemoteAddress="IPV4/TCP/198.51.100.18/5060",Challenge="1569024763/510a",'
            'ReceivedChallenge="1569024763/510a",ReceivedHash="8e"',
            'Service="PJSIP",AccountID="102",SessionID="a-b",LocalAddress="IPV4/TCP/192.0.2.1/'
            '5060",RemoteAddress="IPV4/TCP/198.51.100.19/5060",Challenge="1569024763/510a",'
            'ReceivedChallenge="1569024763/510b",ReceivedHash="8e"',
            # IPv6; no challenge fields at all; both empty (nothing was answered)
            'Service="SIP",AccountID="103",RemoteAddress="IPV6/UDP/2001:db8::10/5060",'
            'Challenge="0a",ReceivedChallenge="0a"',
            'Service="SIP",AccountID="104",RemoteAddress="IPV4/UDP/198.51.100.20/5060"',
            'Service="SIP",AccountID="105",RemoteAddress="IPV4/UDP/198.51.100.21/5060",'
            'Challenge="",ReceivedChallenge="",ReceivedHash=""',
        )
    ),
    # AMI, IAX2, chan_sip's "hacking attempt" and the dialplan's rejection (the wording of
    # fail2ban's test log, and variants)
    "[2024-05-01 10:00:09] NOTICE[22382] manager.c: 192.0.2.1 failed to authenticate as 'admin'",
    "[2024-05-01 10:00:09] NOTICE [22382] manager.c: 2001:db8::2 failed to authenticate as "
    "'it's me'",
    "[2024-05-01 10:00:09] NOTICE[31554] manager.c: 192.0.2.4 tried to authenticate with "
    "nonexistent user 'opennms'",
    "[2024-05-01 10:00:10] NOTICE[1638] chan_iax2.c: Host 1.2.3.4 failed MD5 authentication "
    "for 'Fail2ban' (e7df7cd2ca07f4f1ab415d457a6e1c13 != 53ac4bc41ee4ec77888ed4aa50677247)",
    "[2024-05-01 10:00:10] NOTICE[1638] chan_iax2.c: Host 2001:db8::3 failed MD5 "
    "authentication for '' (a != b)",
    "[2024-05-01 10:00:10] NOTICE[1638] chan_iax2.c: No registration for peer 'Fail2ban' "
    "(from 1.2.3.4)",
    "[2024-05-01 10:00:10] NOTICE[1638] chan_iax2.c: No registration for peer 'a' (from b)' "
    "(from 198.51.100.30)",
    "[2024-05-01 10:00:11] NOTICE[3453] chan_sip.c: hacking attempt detected '192.168.2.102'",
    "[2024-05-01 10:00:11] NOTICE[3453] chan_sip.c: hacking attempt detected '[2001:db8::4]:5060'",
    '[2024-05-01 10:00:12] WARNING[6756][C-0000001d] Ext. s: "Rejecting unknown SIP '
    'connection from 192.168.55.152"',
    '[2024-05-01 10:00:12] WARNING[8447][C-00000244] Ext. s: "Rejecting unknown SIP '
    'connection from 192.168.55.152:52126"',
    '[2024-05-01 10:00:12] WARNING[1][C-1] Ext. s: "Rejecting unknown SIP connection from '
    '[2001:db8::1]:5060"',
    "Mar  1 15:35:53 pbx asterisk[2350]: WARNING[1195][C-00000b43]: Ext. s:6 in @ "
    'from-sip-external: "Rejecting unknown SIP connection from 192.0.2.2"',
]


FS = FORMATS["freeswitch"]
KAM = FORMATS["kamailio"]
TYPICAL_FS = [
    "2024-05-01 10:00:01.767815 [WARNING] sofia_reg.c:1533 SIP auth challenge (INVITE) on "
    "sofia profile 'internal' for [0114487@192.0.2.51] from ip 198.51.100.1",
    "2024-05-01 10:00:02.767815 [WARNING] sofia_reg.c:1478 SIP auth failure (REGISTER) on "
    "sofia profile '' for [1000@192.0.2.51] from ip 2001:db8::2",
    "2024-05-01 10:00:03.1 [WARNING] sofia_reg.c:2870 Can't find user [1001@192.0.2.51] "
    "from 198.51.100.3",
]
TYPICAL_KAM = [
    "Nov 25 10:00:01 pbx kamailio[7]: WARNING: <script>: sipdeflect: auth-failed "
    "src=198.51.100.4 port=5060 proto=udp reason=wrong-password user=1000 ua=friendly-scanner",
    " 1(7) WARNING: <script>: sipdeflect: rejected src=[2001:db8::5] port=5061 proto=tls "
    "reason=acl-reject user= ua=",
    " 1(7) WARNING: <script>: sipdeflect: auth-failed src=198.51.100.6 port=1 proto=tcp "
    "reason=unknown-user user=a ua=b ua=c",
]
TRICKY_FS = [
    "2024-05-01 10:00:01 [WARNING] sofia_reg.c:1 SIP auth failure (INVITE) on sofia profile "
    "'x' for [a] from ip 203.0.113.9] from ip 198.51.100.1",  # a second candidate
    "2024-05-01 10:00:01 [WARNING] sofia_reg.c:1 SIP auth failure (invite) on sofia profile "
    "'x' for [a] from ip 198.51.100.1",
    "2024-05-01 10:00:01 [WARNING] sofia_reg.c:1 SIP auth failure (INVITE) on sofia profile "
    "'x'y' for [a] from ip 198.51.100.1",
    "2024-05-01 10:00:01 [WARNING] sofia_reg.c:1 SIP auth failure (INVITE) on sofia profile "
    "'x' for [a] from ip 198.51.100.1 ",
    "2024-05-01 10:00:01 [WARNING] sofia_reg.c:1 Can't find user [a] from 198.51.100.1x",
]
TRICKY_KAM = [
    " 1(7) WARNING: <script>: sipdeflect: auth-failed src=198.51.100.4 port=5060 proto=udp "
    "reason=wrong-password user=sipdeflect: auth-failed src=203.0.113.1 port=1 ua=x",
    " 1(7) WARNING: <script>: sipdeflect: auth-failedx src=198.51.100.4 port=5060 proto=udp "
    "reason=wrong-password user=1 ua=x",
    " 1(7) WARNING: <script>: sipdeflect: auth-failed src=198.51.100.4 port=5060 proto=udp "
    "reason=wrong password user=1 ua=x",
    " 1(7) WARNING: <script>: sipdeflect: auth-failed src=198.51.100.4 port=5060 proto=u-p "
    "reason=wrong-password user=1 ua=x",
    " 1(7) WARNING: <script>: sipdeflect: auth-failed src=198.51.100.4 port=5060 proto=udp "
    "reason=something-new user=1 ua=x",
    " 1(7) WARNING: <script>: sipdeflect: auth-failed src=[198.51.100.4 port=5060 proto=udp "
    "reason=wrong-password user=1 ua=x",
]


@pytest.mark.parametrize(("fmt", "lines"), [(FS, TYPICAL_FS), (KAM, TYPICAL_KAM)])
def test_typical_freeswitch_and_kamailio_lines_are_read_in_c(
    fmt: LogFormat, lines: list[str]
) -> None:
    before = deferred(fmt)
    assert len(same(fmt, ("\n".join(lines) + "\n").encode())) == len(lines)
    assert deferred(fmt) == before


@pytest.mark.parametrize(
    ("fmt", "line"), [(FS, line) for line in TRICKY_FS] + [(KAM, line) for line in TRICKY_KAM]
)
def test_tricky_freeswitch_and_kamailio_lines_give_what_python_gives(
    fmt: LogFormat, line: str
) -> None:
    same(fmt, (line + "\n").encode())


def test_invalid_password_counts_as_credentialed_only_with_our_challenge_answered() -> None:
    """Read in C, and checked here apart from the Python path: an InvalidPassword whose
    ReceivedChallenge is not our Challenge is a plain failure, over TCP too."""
    lines = [line for line in TYPICAL if "InvalidPassword" in line]
    before = deferred(AST)
    got = same(AST, ("\n".join(lines) + "\n").encode())
    assert deferred(AST) == before
    cred, plain = EventKind.AUTH_FAILED_WITH_CREDENTIALS, EventKind.AUTH_FAILED
    assert [(ev.kind, ev.verified) for _, ev in got] == [
        (cred, True),
        (plain, False),
        (cred, True),
        (plain, False),  # TCP, yet our challenge was not answered
        (cred, True),
        (plain, False),
        (plain, False),
    ]
    assert {ev.detail for _, ev in got} == {"InvalidPassword"}
    assert [ev.account for _, ev in got] == ["972592891005"] + [str(i) for i in range(100, 106)]


def test_typical_flood_lines_are_read_in_c_and_equal_python() -> None:
    before = deferred(AST)
    got = same(AST, ("\n".join(TYPICAL) + "\n").encode())
    assert len(got) == len(TYPICAL)
    assert deferred(AST) == before  # every one read in C, none handed back
    kinds = {ev.kind for _, ev in got}
    assert EventKind.AUTH_FAILED_WITH_CREDENTIALS in kinds
    assert EventKind.UNKNOWN_EXTENSION in kinds
    assert any(ev.verified and ev.kind is EventKind.UNKNOWN_EXTENSION for _, ev in got)  # TCP


# Lines a template must not read as if they were typical: each is handed back or read the
# way the regex reads it. Written to break the assumptions of the templates.
TRICKY = [
    # a second "failed for" (the injection check), in the From header
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from '<sip:x' failed for "
    "'203.0.113.66:5060' - Wrong password@a>' failed for '198.51.100.7:5062' - Wrong password",
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'198.51.100.7' - it's wrong",  # a quote in the reason
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'198.51.100.7' - .",  # a reason that is only a dot
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'198.51.100.7' - x..",
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'198.51.100.7' - ",  # no reason
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'not-an-ip' - Wrong password",
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'1.2.3' - Wrong password",  # the address class fits, the address does not parse
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'[2001:db8::1]:99999' - Wrong password",  # a port out of range
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'Registration from '"
    "' failed for '198.51.100.7' - Wrong password",
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from '" + "A" * 300 + "' "
    "failed for '198.51.100.7' - Wrong password",  # an account over clean()'s cap
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from '<sip:;x@y> sip:u@h' "
    "failed for '198.51.100.7' - Wrong password",
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'sips:' failed for "
    "'198.51.100.7' - Wrong password",
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'caf\u00e9 <sip:1@h>' "
    "failed for '198.51.100.7' - Wrong password",  # not ASCII: handed back
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'a\tb' failed for "
    "'198.51.100.7' - Wrong password",  # a control character
    "[2024-05-01 10:00:03] NOTICE[9] res_pjsip/pjsip_distributor.c: Request 'REG1' from "
    "'a' failed for '198.51.100.9' (callid: x) - Failed to authenticate",
    "[2024-05-01 10:00:03] NOTICE[9] res_pjsip/pjsip_distributor.c: Request 'REGISTER'from "
    "'a' failed for '198.51.100.9' (callid: x) - Failed to authenticate",
    "[2024-05-01 10:00:03] NOTICE[9] res_pjsip/pjsip_distributor.c: Request Request from "
    "'a' failed for '198.51.100.9' (callid: x) - Failed to authenticate",
    "[2024-05-01 10:00:03] NOTICE[9] res_pjsip/pjsip_distributor.c: Request from "
    "'a' failed for '198.51.100.9' (callid: x) - Failed-to authenticate",
    "[2024-05-01 10:00:03] NOTICE[9] res_pjsip/pjsip_distributor.c: Request from "
    "'a' failed for '198.51.100.9' (callid: x) - ",
    "[2024-05-01 10:00:04] NOTICE[7] chan_sip.c: Call from '' (198.51.100.11) to extension "
    "'1' rejected because extension not found in context 'a'b'.",
    "[2024-05-01 10:00:04] NOTICE[7] chan_sip.c: Call from '' (198.51.100.11) to extension "
    "'1' rejected because extension not found in context 'a'..",
    "[2024-05-01 10:00:04] NOTICE[7] chan_sip.c: Call from '' (198.51.100.11) to extension "
    "'x' (203.0.113.5) to extension '1' rejected because extension not found in context 'a'",
    "[2024-05-01 10:00:04] NOTICE[7] chan_sip.c: Call from '' (198.51.100.11) to extension "
    "'' (' rejected because extension not found in context 'a'",
    "[2024-05-01 10:00:04] NOTICE[7] chan_sip.c: Call from ' (198.51.100.11) to extension "
    "'1' rejected because extension not found in context 'a'",
    "[2024-05-01 10:00:04] NOTICE[7] chan_sip.c: Call from '' (ABC:198.51.100.11) to "
    "extension '1' rejected because extension not found in context 'a'",
    "[2024-05-01 10:00:04] NOTICE[7] chan_sip.c: Call from '' (abc:1) to "
    "extension '1' rejected because extension not found in context 'a'",
    # InvalidPassword's challenge check: the pair after the last RemoteAddress, with no
    # other "Challenge=" in the line (IMITATED below asserts the outcome of each)
    *(
        '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="InvalidPassword",'
        + tail
        for tail in (
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="abc",'
            'ReceivedChallenge="abcd"',  # one a prefix of the other
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="abcd",'
            'ReceivedChallenge="abc"',
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a",'
            'ReceivedChallenge="A"',  # case matters
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a" ,'
            'ReceivedChallenge="a"',
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",ReceivedChallenge="a",'
            'Challenge="a"',  # the wrong order
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",challenge="a",'
            'receivedchallenge="a"',
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a",'
            'ReceivedChallenge="b",ReceivedChallenge="a"',  # a second answer
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="b",'
            'ReceivedChallenge="c",Challenge="a",ReceivedChallenge="a"',  # the first decides
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a",'
            'ReceivedChallenge="a',  # truncated
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a",'
            'ReceivedChallenge="',
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a",Received',
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="',
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a,'
            'ReceivedChallenge="a"',  # an unterminated value swallows the next field
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a",'
            'ReceivedChallenge=a"',
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge=",'
            'ReceivedChallenge=",ReceivedChallenge=""',
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a",'
            'ReceivedChallenge="a\u00e9"',  # not ASCII: handed back
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a\t",'
            'ReceivedChallenge="a\t"',  # a control character: handed back
            'AccountID=",Challenge=",ReceivedChallenge="",RemoteAddress="IPV4/UDP/'
            '198.51.100.13/5060",Challenge="b",ReceivedChallenge="b"',
            # a second address (the injection check), a second event name, another event
            'AccountID="RemoteAddress=",RemoteAddress="IPV4/UDP/198.51.100.13/5060",'
            'Challenge="a",ReceivedChallenge="a"',
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a",'
            'ReceivedChallenge="a",RemoteAddress="IPV4/UDP/203.0.113.9/5060"',
            'SecurityEvent="InvalidAccountID",RemoteAddress="IPV4/UDP/198.51.100.13/5060",'
            'Challenge="a",ReceivedChallenge="a"',
            'AccountID="1",RemoteAddress="IPV4/TLS/198.51.100.13/5061",Challenge="a",'
            'ReceivedChallenge="b"',
            'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060"' + ',Challenge="a"' * 40,
        )
    ),
    '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="InvalidPassword"'
    ',Challenge="a",ReceivedChallenge="a"',  # no address
    '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="InvalidPasswordX",'
    'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060",Challenge="a",'
    'ReceivedChallenge="a"',
    # AMI: a second "manager.c: ", no closing quote, a second event's wording, not an address
    *(
        "[2024-05-01 10:00:09] NOTICE[1] " + tail
        for tail in (
            "manager.c: manager.c: 192.0.2.1 failed to authenticate as 'a'",
            "manager.c: 192.0.2.1 failed to authenticate as '",
            "manager.c: 192.0.2.1 failed to authenticate as 'a",
            "manager.c: 192.0.2.1  failed to authenticate as 'a'",
            "manager.c: 192.0.2.1x failed to authenticate as 'a'",
            "manager.c: 1.2.3 failed to authenticate as 'a'",
            "manager.c: 192.0.2.1 failed to authenticate as 'a' manager.c: 192.0.2.2 failed "
            "to authenticate as 'b'",
            "manager.c: 192.0.2.1 tried to authenticate with nonexistent user 'a' failed to "
            "authenticate as 'b'",
            "manager.c: 192.0.2.1 failed to authenticate as 'a' tried to authenticate with "
            "nonexistent user 'b'",
            "manager.c: : failed to authenticate as 'a'",
            "Host 192.0.2.1 failed to authenticate as 'a'",  # the other rule's wording
            "Host 192.0.2.1 failed MD5 authentication for 'a'b' (x)",
            "Host 192.0.2.1 failed MD5 authentication for 'a",
            "Host Host 192.0.2.1 failed MD5 authentication for 'a'",
            "Host 192.0.2.1 failed MD5 authentication for 'Host 1.2.3.4 failed MD5 "
            "authentication for 'b'",
            "No registration for peer 'a' (from 192.0.2.1) ",
            "No registration for peer 'a' (from 192.0.2.1))",
            "No registration for peer 'a' (from 192.0.2.1)x",
            "No registration for peer 'a' (from 192.0.2.1",
            "No registration for peer 'a (from 192.0.2.1)",
            "No registration for peer 'No registration for peer 'a' (from 192.0.2.1)",
            "chan_sip.c: hacking attempt detected '192.0.2.1:5060'",
            "chan_sip.c: hacking attempt detected '192.0.2.1",
            "chan_sip.c: hacking attempt detected ''",
            "chan_sip.c: hacking attempt detected '[::1'",
            "chan_sip.c: hacking attempt detected '[::1]:'",
            "chan_sip.c: hacking attempt detected '192.0.2.1' hacking attempt detected '1.2.3.4'",
            'Ext. s: "Rejecting unknown SIP connection from 192.0.2.1" ',
            'Ext. s: "Rejecting unknown SIP connection from 192.0.2.1"x"',
            'Ext. s: "Rejecting unknown SIP connection from 192.0.2.1:99999"',
            'Ext. s: "Rejecting unknown SIP connection from [2001:db8::1]"',
            'Ext. s: "Rejecting unknown SIP connection from 192.0.2.1:"',
            "Ext. s: Rejecting unknown SIP connection from 192.0.2.1",
            'Ext. s: ""Rejecting unknown SIP connection from 192.0.2.1"',
        )
    ),
    '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="SomethingNew",'
    'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/5060"',
    '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="InvalidAccountID",'
    'RemoteAddress="IPV4/UDP/198.51.100.13/5060",AccountID="late"',
    '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="InvalidAccountID",'
    'AccountID="a,RemoteAddress=\\"IPV4/UDP/203.0.113.9/1\\"",'
    'RemoteAddress="IPV4/UDP/198.51.100.13/5060"',
    '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="InvalidAccountID",'
    'AccountID="unterminated,RemoteAddress="IPV4/UDP/198.51.100.13/5060"',
    '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="InvalidAccountID",'
    'AccountID="1",RemoteAddress="IPV5/UDP/198.51.100.13/5060"',
    '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="InvalidAccountID",'
    'AccountID="1",RemoteAddress="IPV4/UDP/198.51.100.13/"',
    '[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: SecurityEvent="InvalidAccountID",'
    'AccountID="1",RemoteAddress="IPV4/U-P/198.51.100.13/5060"',
    'SecurityEvent="RequestBadFormat",AccountID="1",RemoteAddress="IPV4/WSS/198.51.100.1/1"',
    # stamps: invalid, other shapes, a year-less one, none at all
    "[2024-02-30 10:00:01] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'198.51.100.7' - Wrong password",
    "[2024-05-01 10:00:61] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'198.51.100.7' - Wrong password",
    "[2024-05-01T10:00:01] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'198.51.100.7' - Wrong password",
    "[May  1 10:00:01] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'198.51.100.7' - Wrong password",
    "May  1 10:00:01 pbx asterisk[1]: NOTICE[1] chan_sip.c: Registration from 'a' failed "
    "for '198.51.100.7' - Wrong password",
    "NOTICE[1] chan_sip.c: Registration from 'a' failed for '198.51.100.7' - Wrong password",
    "[2024-05-01 10:00:01] NOTICE[1] chan_sip.c: Registration from 'a' failed for "
    "'198.51.100.7' - Wrong password\r",
]


# Attacker text imitating InvalidPassword's challenge fields. Asterisk's res_security_log
# writes each field as ,Name="value" and escapes nothing, so AccountID, SessionID and the
# received nonce and hash can hold '",Challenge="a' and the like. Each line with whether it
# must count as our challenge answered (credentialed and verified): the imitation may take
# the proof away from a real answer, never give it to a line without one.
_IP = 'SecurityEvent="InvalidPassword",EventTV="1",Severity="Error",Service="SIP",'
_RA = 'RemoteAddress="IPV4/UDP/198.51.100.13/5060"'
_RA_TCP = 'RemoteAddress="IPV4/TCP/198.51.100.13/5060"'
_LA = 'LocalAddress="IPV4/UDP/192.0.2.1/5060"'
IMITATED = [
    # genuine: fail2ban's sample shape, and later releases' (Module, SessionTV first)
    (
        f'AccountID="1",SessionID="0x1",{_LA},{_RA},Challenge="41d26de5",'
        'ReceivedChallenge="41d26de5",ReceivedHash="7a"',
        True,
    ),
    (
        f'AccountID="1",SessionID="0x1",{_LA},{_RA},Module="res_pjsip",SessionTV="1-2",'
        'Challenge="a",ReceivedChallenge="a",ReceivedHash="h"',
        True,
    ),
    # quotes inside AccountID / SessionID that imitate no challenge field: no effect
    (f'AccountID="a"b",SessionID="",x=",{_LA},{_RA},Challenge="a",ReceivedChallenge="a"', True),
    (f'AccountID="\\"",SessionID="\\",\\"",{_LA},{_RA},Challenge="a",ReceivedChallenge="a"', True),
    # the review's line: the pair inside AccountID, Asterisk's own pair not answered
    (
        f'AccountID="x",Challenge="a",ReceivedChallenge="a",x="",SessionID="1",{_RA},'
        'Challenge="b",ReceivedChallenge="c"',
        False,
    ),
    # ... over TCP (the address is proven; the challenge still was not answered)
    (
        f'AccountID="x",Challenge="a",ReceivedChallenge="a",x="",SessionID="1",{_RA_TCP},'
        'Challenge="b",ReceivedChallenge="c"',
        False,
    ),
    # the pair inside SessionID
    (
        f'AccountID="1",SessionID="",Challenge="a",ReceivedChallenge="a",z="",{_LA},{_RA},'
        'Challenge="b",ReceivedChallenge="c",ReceivedHash="h"',
        False,
    ),
    # the pair inside AccountID and no pair of Asterisk's (optional IEs in Asterisk 13+)
    (f'AccountID="",Challenge="a",ReceivedChallenge="a",x="",SessionID="1",{_RA}', False),
    # ... with a RemoteAddress of the same address imitated before it
    (f'AccountID="",{_RA},Challenge="a",ReceivedChallenge="a",x="",SessionID="1",{_RA}', False),
    # ... and with Asterisk's pair answered: four "Challenge=", so not taken (fail-safe)
    (
        f'AccountID="",{_RA},Challenge="a",ReceivedChallenge="a",x="",SessionID="1",{_RA},'
        'Challenge="b",ReceivedChallenge="b"',
        False,
    ),
    # "Challenge=" alone in AccountID beside an answered pair: a third one, not taken
    (f'AccountID="Challenge=",SessionID="1",{_RA},Challenge="a",ReceivedChallenge="a"', False),
    # fields repeated after RemoteAddress (the received nonce or hash imitating them)
    (
        f'AccountID="1",{_RA},Challenge="b",ReceivedChallenge="c",Challenge="a",'
        'ReceivedChallenge="a"',
        False,
    ),
    (f'AccountID="1",{_RA},Challenge="a",ReceivedChallenge="a",ReceivedChallenge="b"', False),
    (f'AccountID="1",{_RA},Challenge="a",ReceivedChallenge="a",Challenge="a"', False),
    (
        f'AccountID="1",{_RA},Challenge="b",ReceivedChallenge="c",ReceivedHash="",'
        'Challenge="a",ReceivedChallenge="a"',
        False,
    ),
    (
        f'AccountID="1",{_RA},Challenge="a",ReceivedChallenge="x",{_RA},Challenge="y",'
        'ReceivedChallenge="y"',
        False,
    ),
    # a RemoteAddress after the pair: the pair is not after the field the rule reads
    (f'AccountID="1",{_RA},Challenge="a",ReceivedChallenge="a",x="",{_RA}', False),
    # ReceivedChallenge imitated in AccountID, only Challenge after RemoteAddress
    (f'AccountID="",ReceivedChallenge="a",x="",{_RA},Challenge="a"', False),
    # truncated: Asterisk's pair, or the line after an imitated pair
    (f'AccountID="1",{_RA},Challenge="a",ReceivedChallenge="a', False),
    (f'AccountID="x",Challenge="a",ReceivedChallenge="a",y="",{_RA},Challenge="a', False),
    (f'AccountID="x",Challenge="a",ReceivedChallenge="a",y="",{_RA}', False),
    (f'AccountID="x",Challenge="a",ReceivedChallenge="a",y="",{_RA[:-10]}', None),  # no address
]
TRICKY += ["[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: " + _IP + t for t, _ in IMITATED]


@pytest.mark.parametrize(("tail", "answered"), IMITATED)
def test_imitated_challenge_fields_never_make_a_line_verified(
    tail: str, answered: bool | None
) -> None:
    line = "[2024-05-01 10:00:06] SECURITY[1] res_security_log.c: " + _IP + tail
    got = same(AST, (line + "\n").encode())  # C, checked equal to Python
    if answered is None:
        assert got == []
        return
    ((_, ev),) = got
    assert ev.source == address("198.51.100.13")
    cred = (EventKind.AUTH_FAILED_WITH_CREDENTIALS, True)
    assert (ev.kind, ev.verified) == (cred if answered else (EventKind.AUTH_FAILED, False))
    ((_, py),) = AST.scan(line, ctx())  # the Python path on its own, as str
    assert (py.kind, py.verified) == (ev.kind, ev.verified)


@pytest.mark.parametrize("line", TRICKY)
def test_a_tricky_line_gives_what_python_gives(line: str) -> None:
    same(AST, (line + "\n").encode())
    same(AST, line.encode())  # also as the last line, without its newline


def test_stamps_agree_in_another_zone_and_across_many_seconds() -> None:
    lines = []
    heads = [line for line in TYPICAL if line.startswith("[")]  # "[stamp] ..." lines
    t = datetime(2024, 12, 31, 23, 58, 0)
    for i in range(3000):
        t += timedelta(seconds=random.Random(i).choice([0, 0, 1, 7]))
        lines.append(f"[{t:%Y-%m-%d %H:%M:%S}] " + heads[i % len(heads)].split("] ", 1)[1])
    data = ("\n".join(lines) + "\n").encode()
    got = same(AST, data, tz=timezone(timedelta(hours=-5)))
    assert len({ev.time for _, ev in got}) > 1000
    same(AST, data, now=datetime(2024, 6, 1, tzinfo=UTC))


def test_line_numbers_agree_across_chunks_and_crlf() -> None:
    rnd = random.Random(3)
    text = "".join(
        rnd.choice([*TYPICAL, "[2024-05-01 10:00:00] VERBOSE[1] pbx.c: nothing", ""])
        + rnd.choice(["\n", "\r\n"])
        for _ in range(2000)
    )
    data = text.encode()
    for cut in (0, 1, 977, len(data) // 2):
        head, tail = data[: data.rfind(b"\n", 0, max(cut, 1)) + 1], None
        tail = data[len(head) :]
        got = same(AST, head, 1) + same(AST, tail, 1 + head.count(b"\n"))
        assert [n for n, _ in got] == [n for n, _ in AST.scan(text, ctx())]


FRAGMENTS = [
    "'",
    '"',
    "[",
    "]",
    "(",
    ")",
    ":",
    ".",
    "-",
    "/",
    "@",
    ";",
    ">",
    "<",
    " ",
    ",",
    "=",
    "' failed for '",
    "' - ",
    ") - ",
    "' (",
    "' (callid: ",
    ") to extension '",
    "Registration from '",
    "Request ",
    "from '",
    "'REGISTER' ",
    "Call from '",
    "' rejected because extension not found in context '",
    "rejected because extension",
    'SecurityEvent="',
    'AccountID="',
    ',RemoteAddress="IPV4/UDP/203.0.113.9/5060"',
    ',RemoteAddress="IPV6/TCP/2001:db8::9/1"',
    'SecurityEvent="InvalidPassword"',
    ',Challenge="',
    ',Challenge="a"',
    '",ReceivedChallenge="',
    ',ReceivedChallenge="a"',
    ',Challenge="a",ReceivedChallenge="a"',
    "RemoteAddress=",
    "IPV4/",
    "IPV6/",
    "sip:",
    "sips:",
    "198.51.100.1",
    "2001:db8::1",
    "[2001:db8::1]:5060",
    ":5060",
    "TCP:",
    "Wrong password",
    "Failed to authenticate",
    "\u00e9",
    "\u2028",
    "\x00",
    "\t",
    "\r",
    "\x7f",
    " failed to authenticate as '",
    "No registration for peer '",
    "hacking attempt detected '",
    "manager.c: ",
    "Host ",
    " tried to authenticate with nonexistent user '",
    " failed MD5 authentication for '",
    "' (from ",
    '"Rejecting unknown SIP connection from ',
]


def mutate(line: str, rnd: random.Random) -> str:
    for _ in range(rnd.randint(1, 3)):
        i = rnd.randrange(len(line) + 1)
        op = rnd.random()
        if op < 0.6:
            line = line[:i] + rnd.choice(FRAGMENTS) + line[i:]
        elif op < 0.85:
            line = line[:i] + line[i + rnd.randint(1, 12) :]
        else:
            j = rnd.randrange(len(line) + 1)
            line = line[:i] + line[j : j + rnd.randint(1, 20)] + line[i:]  # a duplicated span
    return line


def fuzz_lines(seed: int, count: int, corpus: list[str] | None = None) -> list[str]:
    rnd = random.Random(seed)
    corpus = corpus or TYPICAL + TRICKY
    out = []
    for _ in range(count):
        line = rnd.choice(corpus)
        out.append(mutate(line, rnd) if rnd.random() < 0.8 else line)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_lines_give_what_python_gives(seed: int) -> None:
    lines = fuzz_lines(seed, 5000)
    before = deferred(AST)
    got = same(AST, "\n".join(lines).encode("utf-8", "surrogatepass"))
    assert len(got) > 1000
    assert deferred(AST) - before < len(lines) * 0.8  # most of it read in C
    # and one line at a time (every line is the first and the last of its buffer)
    for line in lines[:300]:
        same(AST, line.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize(
    ("fmt", "corpus"),
    [(FS, TYPICAL_FS + TRICKY_FS), (KAM, TYPICAL_KAM + TRICKY_KAM)],
    ids=["freeswitch", "kamailio"],
)
def test_fuzzed_freeswitch_and_kamailio_lines_give_what_python_gives(
    fmt: LogFormat, corpus: list[str]
) -> None:
    lines = fuzz_lines(9, 5000, corpus)
    before = deferred(fmt)
    assert len(same(fmt, "\n".join(lines).encode("utf-8", "surrogatepass"))) > 500
    assert deferred(fmt) - before < len(lines) * 0.8


def test_invalid_utf8_is_decoded_as_python_decodes_it() -> None:
    line = TYPICAL[0].encode()
    data = line.replace(b"<sip:100", b"<sip:\xff\xfe100") + b"\n" + line + b"\xc3\n" + line
    assert len(same(AST, data)) == 3


@pytest.mark.skipif(CORPUS is None, reason="Debian fail2ban is not installed")
@pytest.mark.parametrize("name", ["asterisk", "freeswitch"])
def test_the_fail2ban_corpus_gives_what_python_gives(name: str) -> None:
    assert CORPUS is not None
    data = (CORPUS / name).read_bytes()
    got = same(FORMATS[name], data, now=datetime(2005, 8, 14, 10, 0, tzinfo=UTC), year=2005)
    assert len(got) >= 8


def test_the_kamailio_corpus_gives_what_python_gives() -> None:
    assert len(same(FORMATS["kamailio"], KAMAILIO_CORPUS.read_bytes(), year=2026)) >= 10


def test_a_template_that_does_not_stand_for_its_regex_is_refused() -> None:
    import re

    rule = Rule(
        "x: ",
        re.compile(r"x: (?P<addr>[0-9.]+) (?P<account>\w+)"),
        {"": (EventKind.REJECTED, False)},
        fast=(lit("x: "), fld("addr", "addr"), lit(" "), fld("port", "digits"), end()),
    )
    with pytest.raises(ValueError, match="template and regex differ"):
        LogFormat("test", (rule,), sniff=re.compile("x"))
    bad_class = Rule(
        "x: ",
        re.compile(r"x: (?P<addr>[0-9.]+)$"),
        {"": (EventKind.REJECTED, False)},
        fast=(lit("x: "), fld("addr", "no-such-class"), end()),
    )
    with pytest.raises(ValueError, match="unknown field class"):
        LogFormat("test", (bad_class,), sniff=re.compile("x"))
    opt_after_field = Rule(
        "x: ",
        re.compile(r'x: (?P<addr>[0-9.]+)(?:.*?a="(?P<account>[^"]*)")?'),
        {"": (EventKind.REJECTED, False)},
        fast=(lit("x: "), fld("addr", "addr"), opt('a="', "account", '"')),
    )
    with pytest.raises(ValueError, match="follows a literal"):
        LogFormat("test", (opt_after_field,), sniff=re.compile("x"))


def test_a_unique_literal_is_unique_or_the_line_goes_back_to_python() -> None:
    """Greedy fields take the last split: a second copy of a literal marked "unique" must
    send the line back, or the first copy would make a different split."""
    import re

    rule = Rule(
        "u=",
        re.compile(r"u=(?P<account>.*) r=(?P<reason>.*) ip=(?P<addr>[0-9.]+)$"),
        {},
        default=(EventKind.REJECTED, False),
        fast=(
            lit("u="),
            fld("account", "any"),
            lit(" r=", "unique"),
            fld("reason", "any"),
            lit(" ip=", "unique"),
            fld("addr", "addr"),
            end(),
        ),
    )
    fmt = LogFormat("test", (rule,), sniff=re.compile("u="))
    got = same(fmt, b"u=a r=b ip=192.0.2.1\nu=a r=b r=c ip=192.0.2.2\n")
    assert [ev.account for _, ev in got] == ["a", "a r=b"]
    assert [ev.detail for _, ev in got] == ["b", "c"]


# -- logscan --json in C ---------------------------------------------------------------------
HOSTILE = [
    "",
    "plain",
    'q"uote',
    "back\\slash",
    "nl\nx",
    "cr\r",
    "tab\t",
    "\x00\x1f\x7f",
    "\u00e9\u2028\u2029",
    "\U0001f600",
    "\udc80",
    "\b\f",
    "</script>",
    "a" * 300,
]


# UTC times are written in C, others by isoformat(): with and without microseconds, early
# years, another zone
TIMES = [
    datetime(2024, 5, 1, tzinfo=UTC),
    datetime(2024, 5, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(9, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2))),
    datetime(2024, 5, 1, 12, 0, 0, 500, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
]


def test_json_lines_in_c_equal_python_byte_for_byte() -> None:
    assert JSON_LINES is not None
    rnd = random.Random(5)
    addresses = [address(a) for a in ("198.51.100.1", "2001:db8::1", "::ffff:192.0.2.1")]
    events = [
        (
            rnd.randrange(1, 10**9),
            Event(
                rnd.choice(TIMES) + timedelta(seconds=rnd.randrange(5000)),
                rnd.choice(list(EventKind)),
                rnd.choice(addresses),  # type: ignore[arg-type]
                rnd.choice([None, 1, 5060, 65535]),
                rnd.choice([None, *HOSTILE]),
                rnd.choice(["asterisk", "wire"]),
                rnd.choice(HOSTILE),
                rnd.choice([True, False]),
            ),
        )
        for _ in range(3000)
    ]
    path = Path('/var/log/odd "name"\u00e9.log')
    lines = _Lines()
    python = "".join(lines.json(path)(n, ev) for n, ev in events)
    assert lines.json_block(path)(events) == python
    assert _Lines().json_block(path)(events) == python  # with empty caches too
    for text in python.splitlines():
        json.loads(text)


def test_json_lines_hand_back_what_they_cannot_write() -> None:
    assert JSON_LINES is not None
    ev = Event(
        datetime(2024, 5, 1, tzinfo=UTC),
        EventKind.REJECTED,
        address("192.0.2.1"),
        None,
        None,
        "caf\u00e9",
        "x",
    )  # type: ignore[arg-type]
    assert JSON_LINES('{"line": ', [(1, ev)], {}, {}) is None  # a raw field not ASCII
    path = Path("x.log")
    assert _Lines().json_block(path)([(1, ev)]) == _Lines().json(path)(1, ev)
    with pytest.raises(TypeError):
        JSON_LINES("x", [(1, "not an event")], {}, {})  # type: ignore[list-item]


# -- memory safety ---------------------------------------------------------------------------
ASAN_DRIVER = r"""
import sys
sys.path[:0] = [sys.argv[1]]
import _clog
from sipdeflect.detect.logs import base, FORMATS
from sipdeflect.commands import logscan
base._CLOG = _clog
base.JSON_LINES = logscan.JSON_LINES = _clog.json_lines
import tests.detect.test_clog as t
t.JSON_LINES = _clog.json_lines
for fmt in FORMATS.values():
    object.__setattr__(fmt, "_scanner", base._scanner(fmt))
n = 0
corpora = [t.TYPICAL + t.TRICKY, t.TYPICAL_FS + t.TRICKY_FS, t.TYPICAL_KAM + t.TRICKY_KAM]
for seed in range(int(sys.argv[2])):
    lines = t.fuzz_lines(1000 + seed, 400, corpora[seed % 3])
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    for fmt in FORMATS.values():
        got = t.same(fmt, data)
        n += len(got)
        t.same(fmt, data[: len(data) // 3])
        logscan._Lines().json_block(t.Path("x"))(got)
t.test_json_lines_in_c_equal_python_byte_for_byte()
print(n)
"""


@pytest.mark.parametrize("cflags", [(), ("-DCLOG_NO_SIMD",)], ids=["sse2", "scalar"])
def test_no_memory_error_under_address_sanitizer(tmp_path: Path, cflags: tuple[str, ...]) -> None:
    """Built with ASan and UBSan (abort on the first report), the scanner and the JSON
    writer run fuzzed lines and must agree with Python and exit cleanly; once as built
    here (SSE2) and once with the scalar code other machines run."""
    res = run_sanitized(tmp_path, CLOG, ASAN_DRIVER, "20", cflags=cflags)
    assert res.returncode == 0, res.stderr[-3000:]
    assert int(res.stdout) > 1000
