"""Config: defaults documented once, errors name field and line, durations and addresses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sipdeflect.config import Config, check_text, example, load
from sipdeflect.decisions import Level
from sipdeflect.duration import format_duration, parse_duration
from sipdeflect.errors import ConfigError, UsageError

ROOT = Path(__file__).parent.parent


def test_shipped_example_is_the_generated_defaults() -> None:
    assert (ROOT / "etc" / "sipdeflect.toml").read_text() == example()
    cfg, errors = check_text(example())
    assert errors == []
    assert cfg == Config()


def test_errors_name_field_and_line() -> None:
    text = (
        '[sip]\nports = [5060]\n\n[policy]\nact_at = "maybe"\nquiet_after = "soon"\n'
        '[allow]\naddresses = ["198.51.100.0/24", "not-an-ip"]\n[decoy]\nprot = 5\n'
    )
    cfg, errors = check_text(text, "f.toml")
    assert cfg is None
    assert any(e.startswith("f.toml:5: policy.act_at:") for e in errors), errors
    assert any(
        e.startswith("f.toml:6: policy.quiet_after:") and "not a duration" in e for e in errors
    ), errors
    assert any(e.startswith("f.toml:8: allow.addresses:") and "not-an-ip" in e for e in errors), (
        errors
    )
    assert any(e.startswith("f.toml:10: decoy.prot:") and "Extra inputs" in e for e in errors), (
        errors
    )


def test_toml_syntax_error_is_reported() -> None:
    cfg, errors = check_text("[sip\n", "x.toml")
    assert cfg is None
    assert errors[0].startswith("x.toml: TOML syntax:")


def test_policy_conversion() -> None:
    cfg, _ = check_text('[policy]\nact_at = "suspect"\nblock_base = "2h"\nquiet_after = 30\n')
    assert cfg is not None
    p = cfg.policy.to_policy()
    assert (p.act_at, p.block_base, p.quiet_after) == (Level.SUSPECT, 7200.0, 30.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("1h30m", 5400),
        ("7d", 604800),
        (2.5, 2.5),
        ("1w", 604800),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "5x", "1h30", "-5", -1, "h"])
def test_bad_durations(bad: str | float) -> None:
    with pytest.raises(UsageError):
        parse_duration(bad)


def test_format_duration() -> None:
    assert format_duration(3725) == "1h2m5s"
    assert format_duration(0) == "0s"


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.toml")


def test_cli_check(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(example())
    bad = tmp_path / "bad.toml"
    bad.write_text('[firewall]\nbackend = "ipfw"\n')
    run = [sys.executable, "-m", "sipdeflect", "config", "check"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True)
    assert ok.returncode == 0
    assert "ok" in ok.stdout
    res = subprocess.run([*run, "--json", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    out = json.loads(res.stdout)
    assert out["ok"] is False
    assert out["errors"][0].startswith(f"{bad}:2: firewall.backend:")
