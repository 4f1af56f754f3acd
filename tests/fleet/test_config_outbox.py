"""[fleet] configuration (checked before any I/O; password and TLS into the DSN) and the
on-disk outbox (order, bound, keys unique across reopen, read position kept)."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from sipdeflect.config import Fleet, check_text
from sipdeflect.errors import ConfigError
from sipdeflect.fleet.link import conninfo
from sipdeflect.fleet.outbox import Outbox


def test_fleet_is_off_by_default_and_checked() -> None:
    cfg, errors = check_text("")
    assert cfg is not None
    assert cfg.fleet.enabled is False
    _, errors = check_text("[fleet]\nenabled = true\n")
    assert any("needs fleet.dsn" in e for e in errors), errors
    _, errors = check_text('[fleet]\ndsn = "host=db port"\n')
    assert any("fleet.dsn" in e and "libpq" in e for e in errors), errors
    _, errors = check_text('[fleet]\nnode = "bad name!"\n')
    assert any("fleet.node" in e for e in errors), errors
    _, errors = check_text('[fleet]\naccept = ["probe"]\n')
    assert any("fleet.accept" in e for e in errors), errors  # a probe is never accepted


def test_password_from_file_or_env_and_tls_keywords_pass_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\nignored\n")
    f = Fleet(
        dsn="postgresql://sdf@db.example.net/fleet",
        password_file=str(pw),
        tls={"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem"},
    )
    d = conninfo_to_dict(conninfo(f))
    assert (d["password"], d["sslmode"], d["sslrootcert"]) == (
        "s3cret",
        "verify-full",
        "/etc/ca.pem",
    )
    assert (d["host"], d["dbname"], d["user"]) == ("db.example.net", "fleet", "sdf")
    assert d["tcp_user_timeout"] == "10000"  # a silent partition ends the link in seconds
    mine = conninfo_to_dict(conninfo(Fleet(dsn="host=db tcp_user_timeout=3000")))
    assert mine["tcp_user_timeout"] == "3000"  # ...unless the DSN says otherwise
    monkeypatch.setenv("SDF_PW", "from-env")
    kv = conninfo(Fleet(dsn="host=db dbname=fleet", password_env="SDF_PW"))
    assert conninfo_to_dict(kv)["password"] == "from-env"
    with pytest.raises(ConfigError):
        conninfo(Fleet(dsn="host=db", password_env="SDF_NOT_SET_ANYWHERE"))
    with pytest.raises(ConfigError):
        conninfo(Fleet(dsn="host=db", password_file=str(tmp_path / "missing")))


def row(i: int) -> tuple[str, str, float | None, str, str, float]:
    return (f"203.0.113.{i}/32", "block", 100.0 + i, "attacker", "r", float(i))


def test_outbox_keeps_order_and_bound_and_unique_keys(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "f.db", max_queue=100)
    assert box.put([row(i) for i in range(150)]) == 50  # the oldest 50 go
    assert box.dropped == 50
    got = box.peek(1000)
    assert [p.target for p in got] == [f"203.0.113.{i}/32" for i in range(50, 150)]
    box.done(got[9].id)
    assert len(box) == 90
    box.read_seq = 42
    keys = {p.key for p in box.peek(1000)}
    box.close()
    again = Outbox(tmp_path / "f.db", max_queue=100)  # a restart: queue and position kept
    assert len(again) == 90
    assert again.read_seq == 42
    again.done(10_000)
    again.put([row(1)])
    assert again.peek(1)[0].key not in keys  # ids never reused (AUTOINCREMENT)
    other = Outbox(tmp_path / "other.db")
    other.put([row(1)])
    assert other.peek(1)[0].key != again.peek(1)[0].key  # another incarnation
