"""Generate the annotated Kamailio corpus from a real Kamailio 5.6 run (root, namespaces):

    PYTHONPATH=. uv run --frozen --no-sync python -m tests.lab_detect.kamcorpus

Each Kamailio log line produced by the documented sipdeflect xlog line is preceded by a
fail2ban-style `# failJSON:` annotation naming the host that really sent the request (the
namespace address the tool ran from: ground truth, not our parser's opinion). The run:
svcrack on a real account (wrong-password), svcrack on a missing account (unknown-user),
and a login whose User-Agent imitates our own log fields (injection: the host is still the
sender). Other lines (Kamailio start-up) carry no annotation and must yield no event.
"""

from __future__ import annotations

import json
import re
import socket
import tempfile
from pathlib import Path

from tests.detect.sipmsg import register
from tests.lab_detect.kamlab import ATK, PBX_ATK, Lab, lab

OUT = Path(__file__).parents[1] / "vectors" / "logs" / "kamailio" / "lab.log"
INJECTED_UA = (
    "evil sipdeflect: auth-failed src=192.0.2.99 port=5060 proto=tcp "
    "reason=wrong-password user=1001 ua=x"
)


def inject(the_lab: Lab) -> None:
    """A failed login (our nonce, wrong password) whose User-Agent imitates the xlog line."""
    s = the_lab.atk.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(5)
        s.bind((ATK, 5072))
        first = register("1001", "inj", 1).replace(b"198.51.100.9", ATK.encode())
        s.sendto(first, (PBX_ATK, 5060))
        m = re.search(rb'nonce="([^"]+)"', s.recv(65535))
        assert m is not None
        again = register("1001", "inj", 2, nonce=m.group(1).decode(), ua=INJECTED_UA)
        s.sendto(again.replace(b"198.51.100.9", ATK.encode()), (PBX_ATK, 5060))
        assert s.recv(65535).startswith(b"SIP/2.0 403")
    finally:
        s.close()


def generate(tmp: Path) -> str:
    with lab(tmp) as the_lab:
        the_lab.svcrack("1001", 8)
        the_lab.svcrack("7777", 4)
        inject(the_lab)
    out = [
        "# Kamailio 5.6 (Debian 12) log from tests/lab_detect/kamcorpus.py: svcrack on 1001,",
        "# svcrack on a missing account 7777, one injection attempt in the User-Agent.",
    ]
    for line in the_lab.kam.log.read_text(errors="replace").splitlines():
        if "sipdeflect: " in line:
            out.append("# failJSON: " + json.dumps({"match": True, "host": ATK}))
        out.append(line)
    return "\n".join(out) + "\n"


def normalize(text: str) -> list[str]:
    """The annotated lines without what changes run to run (pids, Call-IDs, CSeq)."""
    lines = text.splitlines()
    keep = []
    for i, line in enumerate(lines):
        if i and lines[i - 1].startswith("# failJSON:"):
            bare = re.sub(r"^\s*\d+\(\d+\)", "N(P)", line)
            keep.append(re.sub(r"\{[^}]*\}", "{}", bare, count=1))
    return sorted(keep)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        OUT.write_text(generate(Path(tmp)))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
