# Scanner fingerprints as data (fingerprints.toml): parsed from text here, read by the
# caller. Matching is a lower-cased substring test over a small table, cached per
# User-Agent value because floods repeat the same one.
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from sipdeflect.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Fingerprints:
    user_agents: tuple[tuple[str, str], ...]  # (lower-case substring, scanner name)
    _cache: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)

    def match(self, user_agent: str) -> str | None:
        """The scanner's name when the User-Agent matches a signature."""
        got = self._cache.get(user_agent, "")
        if got != "":
            return got
        low = user_agent.lower()
        name = next((n for s, n in self.user_agents if s in low), None)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[user_agent] = name
        return name


def parse_fingerprints(text: str) -> Fingerprints:
    try:
        data = tomllib.loads(text)
        rows = [
            (str(ua).lower(), str(entry["name"]))
            for entry in data.get("scanner", [])
            for ua in entry["user_agent"]
        ]
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"fingerprints: {exc}") from None
    if any(not s for s, _ in rows):
        raise ConfigError("fingerprints: empty user_agent signature")
    return Fingerprints(tuple(rows))
