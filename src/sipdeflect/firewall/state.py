# Remembered settings: `firewall setup` writes the backend name, SIP ports, decoy port and
# table name to one small JSON file that the other commands read. A file (rather than
# reading the live table back) works the same for every backend, pf included, and lets
# `block` fail early with "run setup first" instead of guessing ports.
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sipdeflect.errors import UsageError
from sipdeflect.firewall.model import FirewallSettings

DEFAULT_STATE_DIR = Path("/var/lib/sipdeflect")
FILE_NAME = "firewall.json"


def state_dir(override: Path | None = None) -> Path:
    if override is not None:
        return override
    env = os.environ.get("SIPDEFLECT_STATE_DIR")
    return Path(env) if env else DEFAULT_STATE_DIR


@dataclass(frozen=True, slots=True)
class FirewallState:
    backend: str
    settings: FirewallSettings
    netns: str | None = None

    def to_json(self) -> str:
        s = self.settings
        return json.dumps(
            {
                "backend": self.backend,
                "sip_ports": list(s.sip_ports),
                "decoy_port": s.decoy_port,
                "table": s.table,
                "netns": self.netns,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> FirewallState:
        d = json.loads(text)
        settings = FirewallSettings(
            sip_ports=tuple(int(p) for p in d["sip_ports"]),
            decoy_port=int(d["decoy_port"]),
            table=str(d["table"]),
        )
        return cls(backend=str(d["backend"]), settings=settings, netns=d.get("netns"))


def load(directory: Path) -> FirewallState | None:
    path = directory / FILE_NAME
    try:
        return FirewallState.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is unreadable ({exc}); run `sipdeflect firewall setup`") from None


def save(directory: Path, st: FirewallState) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (FILE_NAME + ".tmp")
    tmp.write_text(st.to_json() + "\n")
    tmp.replace(directory / FILE_NAME)


def forget(directory: Path) -> None:
    (directory / FILE_NAME).unlink(missing_ok=True)
