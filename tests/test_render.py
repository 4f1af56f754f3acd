from __future__ import annotations

from sipdeflect.render import escape, escape_line, redact, redact_bytes, wire_text


def test_control_characters_are_escaped() -> None:
    assert escape("a\x1b[31mred\x07\r") == "a\\x1b[31mred\\x07\\x0d"
    assert escape("tab\tnew\nline") == "tab\tnew\nline"


def test_authorization_is_redacted_but_scheme_kept() -> None:
    msg = (
        'REGISTER sip:x SIP/2.0\r\nAuthorization: Digest username="100",response="abc"\r\n'
        'proxy-authorization:Digest username="1",response="x"\r\nTo: <sip:x>\r\n'
    )
    out = redact(msg)
    assert 'response="abc"' not in out
    assert 'response="x"' not in out
    assert "Authorization: Digest <redacted>" in out
    assert "To: <sip:x>" in out


def test_wire_text_never_raises_on_bytes() -> None:
    assert wire_text(b"\xff\xfe\x00OPTIONS") == "\ufffd\ufffd\\x00OPTIONS"


def test_redaction_without_a_scheme_keeps_nothing() -> None:
    for msg in (
        'Authorization: username="100",response="abc"\r\n',
        "Authorization:secret-token\r\n",
        'Proxy-Authorization:  x="y"\r\n',
    ):
        out = redact(msg)
        assert "<redacted>" in out
        for secret in ("username", "response", "abc", "secret-token", 'x="y"'):
            assert secret not in out, out
    raw = b'Authorization: Digest username="100",response="abc"\r\nTo: <sip:x>\r\n'
    assert redact_bytes(raw) == b"Authorization: Digest <redacted>\r\nTo: <sip:x>\r\n"


def test_escape_line_escapes_newlines_and_bidi() -> None:
    assert escape_line("a\nb\tc\u202ed") == "a\\x0ab\\x09c\\u202ed"
    assert escape("a\nb\u2028") == "a\nb\\u2028"
