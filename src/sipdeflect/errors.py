# One exception root for the whole package (house rule 4). Each layer raises its own
# subclass; the CLI turns any SipDeflectError into a one-line message and exit code 2.
from __future__ import annotations


class SipDeflectError(Exception):
    """Root of every error sipdeflect raises on purpose."""


class SipParseError(SipDeflectError):
    """A datagram or stream is not a SIP message we accept.

    ``status`` is the response code a server would answer with (RFC 3261 21.4):
    400 malformed, 413 body too large, 505 version not supported, 513 message too large.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(SipDeflectError):
    """Configuration is invalid; the message names the field."""


class FirewallError(SipDeflectError):
    """A firewall backend could not apply a plan; nothing was half-applied."""


class UsageError(SipDeflectError):
    """The user asked for something that cannot be done (bad address, allowlisted target...)."""


class StoreError(SipDeflectError):
    """The state store cannot be used (e.g. written by a newer sipdeflect)."""
