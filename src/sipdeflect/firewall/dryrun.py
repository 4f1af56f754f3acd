# Dry-run backend: prints each op of a plan as one line and changes nothing. Every plan
# can be previewed this way (house rule 6); `list` and `show` report an empty firewall.
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from sipdeflect.firewall.backend import Runner, register
from sipdeflect.firewall.model import FirewallSettings, Listed, SetName
from sipdeflect.firewall.plan import Plan


class DryRunBackend:
    name = "dry-run"

    def __init__(self, settings: FirewallSettings, out: TextIO | None = None) -> None:
        self.settings = settings
        self.out = out

    def apply(self, plan: Plan) -> None:
        out = self.out or sys.stdout
        for line in plan.describe():
            print(f"dry-run: {line}", file=out)

    def dropped(self) -> list[Listed]:
        """The block set's members with their counters (a full listing: cheap enough here)."""
        return self.list([SetName.BLOCK])

    def list(self, sets: Iterable[SetName] | None = None) -> list[Listed]:
        return []

    def show(self) -> str:
        return "(dry-run: nothing installed)"

    def installed(self) -> bool:
        return True


@register("dry-run")
def _make(settings: FirewallSettings, runner: Runner) -> DryRunBackend:
    return DryRunBackend(settings)
