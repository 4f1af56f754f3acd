"""The shipped Grafana dashboard queries only metrics the daemon exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from sipdeflect.metrics import Metrics

DASH = Path(__file__).parent.parent / "etc" / "grafana-dashboard.json"


def test_every_queried_metric_exists() -> None:
    m = Metrics()
    # Touch every labelled metric once so its samples appear in the exposition.
    m.messages.labels("decoy", "REGISTER").inc()
    m.events.labels("auth-failed").inc()
    m.decisions.labels("block", "engine").inc()
    m.active.labels("block").set(1)
    m.decoy_answers.labels("200").inc()
    exported = set(
        re.findall(
            r"^(sipdeflect_\w+?)(?:\{| )", generate_latest(m.registry).decode(), re.MULTILINE
        )
    )
    dash = json.loads(DASH.read_text())
    queried = {
        name
        for p in dash["panels"]
        for t in p["targets"]
        for name in re.findall(r"sipdeflect_\w+", t["expr"])
    }
    assert queried, "dashboard queries nothing"
    assert queried <= exported, queried - exported
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
