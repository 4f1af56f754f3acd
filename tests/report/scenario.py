"""A store filled the way the daemon fills it: an engine-driven attack with traffic."""

from __future__ import annotations

from pathlib import Path

from sipdeflect.decisions import Level
from sipdeflect.engine import Engine, Policy, address
from sipdeflect.store.sqlite import SqliteStore

T0 = 1_764_000_000.0  # 2025-11-24 16:00 UTC


def attack_store(path: Path) -> SqliteStore:
    """Two attackers against a PBX with one customer, minute by minute for 40 minutes.

    203.0.113.66 behaves like svcrack: deflected after two minutes of failed logins, it
    tries the decoy for two minutes, gives up, and is blocked once quiet. 198.51.100.23 is
    a fire-and-forget flooder: it never stops, so it is blocked after max_deflect and its
    packets are dropped from then on.
    """
    store = SqliteStore(path, events_per_minute=1000)
    eng = Engine(Policy(quiet_after=60, max_deflect=300))
    # source: (start s, User-Agent, accounts, packets/min, gives up in the decoy)
    plans = {
        "203.0.113.66": (120, "friendly-scanner", ["100", "101", "1000"], 600, True),
        "198.51.100.23": (600, "sipcli/v1.8 <script>alert(1)</script>", ["admin"], 240, False),
    }
    deflected: dict[str, float] = {}
    blocked: set[str] = set()
    for minute in range(40):
        now = T0 + minute * 60
        rows = [("192.0.2.50", now, "pbx", 2, 900, 2)]  # a customer re-registering
        for src, (start, ua, accounts, rate, quits) in plans.items():
            if now < T0 + start:
                continue
            if src in blocked:
                if not quits:
                    rows.append((src, now, "dropped", rate, rate * 420, 0))
                continue
            if src not in deflected:
                rows.append((src, now, "pbx", rate, rate * 420, rate))
                for acc in accounts:
                    store.record_event(
                        now,
                        src,
                        "auth-failed",
                        f"user={acc}",
                        account=acc,
                        user_agent=ua,
                        port=5070,
                    )
                if now - (T0 + start) >= 120:
                    out = eng.signal(address(src), Level.ATTACKER, "failed auths", now)
                    store.commit(out, [eng.sources[address(src)]])
                    deflected[src] = now
            elif not quits or now - deflected[src] <= 120:
                decoy_rate = rate if not quits else rate // 4
                rows.append((src, now, "decoy", decoy_rate, decoy_rate * 400, decoy_rate))
                eng.decoy_seen(address(src), now)
                store.record_event(
                    now,
                    src,
                    "sip",
                    "REGISTER sip:192.0.2.10 SIP/2.0\r\n"
                    'Authorization: Digest username="100",response="x"\r\n',
                    user_agent=ua,
                    port=5070,
                )
        for d in eng.tick(now):
            store.commit([d], [eng.sources[d.target.network_address]])
            if d.action.value == "block":
                blocked.add(str(d.target.network_address))
        store.account(rows)
    return store
