"""[border] in the config, and the speaker's start-up failures that need no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipdeflect.border.announcer import Announcer, Batch, policy_of
from sipdeflect.border.exabgp import BorderError
from sipdeflect.config import check_text, example

GOOD = """
[border]
enabled = true
peer = "192.0.2.2"
peer_as = 64513
local_address = "192.0.2.1"
local_as = 64512
"""


def test_off_by_default_and_in_the_example() -> None:
    cfg, errors = check_text("")
    assert cfg is not None
    assert not errors
    assert cfg.border.enabled is False
    assert "[border]" in example()
    assert 'communities = ["65535:666"]' in example()


def test_enabled_needs_a_session() -> None:
    cfg, errors = check_text("[border]\nenabled = true\n")
    assert cfg is None
    assert any("enabled needs peer" in e for e in errors), errors


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('communities = ["65535-666"]', "border.communities"),
        ('router_id = "router.example"', "border.router_id"),
        ('evidence = ["rumour"]', "border.evidence"),
        ("max_prefixes = 0", "border.max_prefixes"),
        ('next_hop = "nowhere"', "border.next_hop"),
    ],
)
def test_bad_values_name_their_field(line: str, field: str) -> None:
    cfg, errors = check_text(GOOD + line + "\n")
    assert cfg is None
    assert any(field in e for e in errors), errors


def test_policy_from_config() -> None:
    cfg, _ = check_text(GOOD + '[allow]\naddresses = ["198.51.100.0/24"]\n')
    assert cfg is not None
    import ipaddress

    p = policy_of(cfg, [ipaddress.ip_address("192.0.2.1")])
    assert p.versions == frozenset({4})
    assert p.max_prefixes == 100
    assert str(p.allow[0]) == "198.51.100.0/24"
    assert str(p.own[0]) == "192.0.2.1/32"


def test_no_speaker_installed_is_one_line(tmp_path: Path) -> None:
    cfg, _ = check_text(
        GOOD + f'speaker = "/nonexistent/exabgp"\nworkdir = "{tmp_path / "border"}"\n'
    )
    assert cfg is not None
    with pytest.raises(BorderError) as err:
        Announcer(cfg).start()
    assert "\n" not in str(err.value)
    assert "no BGP speaker" in str(err.value)


def test_a_speaker_that_stops_reading_never_blocks_the_sender(tmp_path: Path) -> None:
    """A stand-in for ExaBGP that runs but never reads its commands (the real one would
    open a BGP session, which outside a namespace lab we must not). send() gives up after
    WRITE_WAIT instead of blocking the thread that also applies the host's firewall, and
    the next tick rebuilds the speaker with everything in force."""
    stuck = tmp_path / "stuck-speaker"
    stuck.write_text("#!/bin/sh\nexec sleep 60\n")
    stuck.chmod(0o755)
    cfg, _ = check_text(GOOD + f'speaker = "{stuck}"\nworkdir = "{tmp_path / "border"}"\n')
    assert cfg is not None
    announcer = Announcer(cfg)
    announcer.start()
    try:
        lines = tuple(f"announce route 203.0.113.{i % 250}/32 next-hop self" for i in range(4000))
        announcer.send(Batch(lines))  # ~200 KB: more than a pipe holds
        assert announcer.errors == 1
        assert "read no commands" in announcer.last_error
        assert announcer.broken
        batch = announcer.tick(0.0, list)
        assert batch.restart
        assert not announcer.broken
        assert announcer.tick(1.0, list) == Batch(())  # no restart storm
    finally:
        announcer.close()
    assert not announcer.process.alive()
