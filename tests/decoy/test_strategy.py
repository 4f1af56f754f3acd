"""The strategy table: total, first-match, and the answer each scanner's request gets."""

from __future__ import annotations

import pytest

from sipdeflect.decoy import strategy as st
from sipdeflect.sip import Request, parse
from tests.decoy.helpers import request, sip


def req(data: bytes) -> Request:
    msg = parse(data)
    assert isinstance(msg, Request)
    return msg


def test_table_is_total_and_first_match_wins() -> None:
    compiled = st.compile_table(st.TABLE)
    assert len(compiled) == len(st.METHOD_CLASSES) * 8
    # ACK stays silent even when it looks like svcrack's probe (row order matters)
    assert compiled[("ACK", False, True, False)] is st.SILENT_ACK
    with pytest.raises(ValueError, match="no row matches"):
        st.compile_table(st.TABLE[:-1])  # without the catch-all for unknown methods


@pytest.mark.parametrize(
    ("vector", "challenged", "answer"),
    [
        ("register-sv-noauth", 0, st.SVCRACK_404),  # svcrack's fixed probe tag
        ("register-sv-auth", 0, st.ACCEPT),  # svcrack answering a challenge
        ("options-sv-noauth", 0, st.CHALLENGE),  # svwar -m OPTIONS / svmap
        ("invite-sv-noauth", 0, st.INVITE_CHALLENGE),  # svwar -m INVITE
        ("invite-sipp-noauth", 0, st.INVITE_CHALLENGE),
        ("ack-sv-noauth", 0, st.SILENT_ACK),
    ],
)
def test_captured_scanner_requests(vector: str, challenged: int, answer: st.Answer) -> None:
    assert st.decide(request(vector), challenged) is answer


def test_register_challenge_then_repeat_gets_200_and_other_aor_is_challenged() -> None:
    first = req(sip("REGISTER", user="2011"))
    assert st.decide(first, 0) is st.CHALLENGE
    key = st.aor_key(first.headers.index)
    assert st.decide(req(sip("REGISTER", user="2011")), key) is st.REPEAT_200
    assert st.decide(req(sip("REGISTER", user="2012")), key) is st.CHALLENGE


def test_generic_cracker_gets_200_for_any_credentials() -> None:
    auth = 'Authorization: Digest username="100", realm="asterisk", nonce="x", response="y"\r\n'
    assert st.decide(req(sip("REGISTER", extra=auth)), 0) is st.ACCEPT
    assert st.decide(req(sip("INVITE", extra="Proxy-" + auth)), 0) is st.INVITE_REFUSED


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("CANCEL", st.NO_TRANSACTION),
        ("BYE", st.NO_TRANSACTION),
        ("SUBSCRIBE", st.NOT_ALLOWED),
        ("MESSAGE", st.NOT_ALLOWED),
        ("FROBNICATE", st.NOT_IMPLEMENTED),
    ],
)
def test_other_methods_get_proper_errors(method: str, answer: st.Answer) -> None:
    assert st.decide(req(sip(method)), 0) is answer


def test_answer_headers_say_nothing_true() -> None:
    r = req(sip("REGISTER"))
    headers = dict(st.answer_headers(st.CHALLENGE, r.headers.index, st.Persona(), 120.0))
    assert set(headers) == {"WWW-Authenticate"}  # no Server header: svmap sees "unknown"
    assert 'realm="asterisk"' in headers["WWW-Authenticate"]
    assert dict(
        st.answer_headers(st.NOT_ALLOWED, r.headers.index, st.Persona(server="Fake/1"), 0.0)
    ) == {
        "Allow": st.ALLOW,
        "Server": "Fake/1",
    }
    assert dict(
        st.answer_headers(st.INVITE_CHALLENGE, r.headers.index, st.Persona(), 0.0)
    ).keys() == {"Proxy-Authenticate"}


def test_nonce_is_pure_and_changes_each_minute() -> None:
    r = req(sip("REGISTER"))
    assert st.nonce_for(r.headers.index, 60.0) == st.nonce_for(r.headers.index, 119.0)
    assert st.nonce_for(r.headers.index, 60.0) != st.nonce_for(r.headers.index, 120.0)


def test_the_hot_paths_decide_prepared_agrees_with_the_table_for_every_input() -> None:
    """decide_prepared inlines features_prepared: every method class, flag and remembered
    key (none, this AOR, another AOR, an INVITE challenge) gives the same answer."""
    for cls in st.METHOD_CLASSES:
        for auth in (False, True):
            for probe in (False, True):
                for challenged in (0, 77, 78, st.INVITE_CHALLENGED):
                    prepared = (cls, auth, probe, 77)
                    want = st._COMPILED[st.features_prepared(prepared, challenged)]
                    assert st.decide_prepared(prepared, challenged) is want
