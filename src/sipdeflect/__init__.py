"""sipdeflect: detect SIP scanners, deflect them to a decoy that makes them quit, then block."""

from __future__ import annotations

__version__ = "0.1.0"
