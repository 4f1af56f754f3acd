# Package data read once at start-up (detect/ itself does no I/O).
from __future__ import annotations

from importlib import resources

from sipdeflect.detect.fingerprints import Fingerprints, parse_fingerprints


def default_fingerprints() -> Fingerprints:
    text = (resources.files("sipdeflect.detect") / "fingerprints.toml").read_text()
    return parse_fingerprints(text)
