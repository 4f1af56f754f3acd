# A real PBX for the lab: Kamailio from Debian as a registrar with digest authentication
# (pv_auth_check against passwords written into the generated config; challenges carry
# qop=auth, without which SIPVicious 0.3.8 sends malformed credentials), answering OPTIONS,
# 404 for calls, and logging every authentication failure with the documented sipdeflect
# xlog line. It runs in the foreground inside a namespace, logging to a file we read.
from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from sipdeflect.lab.netns import LabError, Netns

MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

# The line users add to their own Kamailio config (README, Kamailio section). Kamailio
# fills $si/$sp itself; attacker-controlled values ($fU, $ua) come last, after fixed fields.
XLOG_AUTH_FAILED = (
    'xlog("L_WARN", "sipdeflect: auth-failed src=$si port=$sp proto=$proto '
    'reason=$var(why) user=$fU ua=$ua\\n");'
)


# Bind nonces to the client's source address: otherwise an attacker can replay a nonce it
# obtained itself "from" a spoofed address and Kamailio logs a failed login for that
# address, the forged evidence sipdeflect must never act on.
NONCE_BINDING = """# bind each nonce to the client's source address (sipdeflect README)

modparam("auth", "auth_checks_register", 8)
modparam("auth", "auth_checks_no_dlg", 8)
"""


def config(
    listen: list[str], users: Mapping[str, str], realm: str = "lab", *, bind_nonce: bool = True
) -> str:
    """Kamailio 5.6 config text; ``listen`` are 'proto:addr:port' strings. ``bind_nonce``
    False gives Kamailio's default (replayable) nonces, only to show why it matters."""
    binding = NONCE_BINDING if bind_nonce else ""
    unguessable = secrets.token_hex(16)
    checks = "\n".join(
        f'        {"if" if i == 0 else "else if"} ($fU == "{u}") $var(pw) = "{pw}";'
        for i, (u, pw) in enumerate(users.items())
    )
    listens = "\n".join(f"listen={lst}" for lst in listen)
    return f"""#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
{listens}
mpath="{MODULES}"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("auth", "nonce_expire", 300)
{binding}modparam("usrloc", "db_mode", 0)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("ACK")) exit;
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    if (is_method("REGISTER")) {{
        $var(pw) = "";
{checks}
        $var(why) = "wrong-password";
        if ($var(pw) == "") {{
            # Unknown user: check against a password nobody knows, so the nonce is still
            # verified and only a sender that saw our challenge is logged.
            $var(pw) = "{unguessable}";
            $var(why) = "unknown-user";
        }}
        if (!pv_auth_check("{realm}", "$var(pw)", "0", "0")) {{
            # -2: a valid nonce of ours with a wrong password, so the sender saw our
            # challenge: the one failure a spoofer cannot produce.
            if ($rc == -2) {{
                {XLOG_AUTH_FAILED}
                sl_send_reply("403", "Forbidden");
                exit;
            }}
            auth_challenge("{realm}", "1");
            exit;
        }}
        if (!save("location")) sl_reply_error();
        exit;
    }}
    if (is_method("INVITE")) {{
        $var(why) = "unknown-extension";
        sl_send_reply("404", "Not Found");
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
    exit;
}}
"""


class Kamailio:
    """Kamailio running in a namespace; stop() kills it."""

    def __init__(
        self,
        ns: Netns,
        workdir: Path,
        listen: list[str],
        users: Mapping[str, str],
        *,
        bind_nonce: bool = True,
    ) -> None:

        self.ns = ns
        self.workdir = workdir
        self.cfg = workdir / "kamailio.cfg"
        self.log = workdir / "kamailio.log"
        self.cfg.write_text(config(listen, users, bind_nonce=bind_nonce))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Kamailio:
        check = self.ns.run(["kamailio", "-c", "-f", str(self.cfg)], check=False)
        if check.returncode != 0:
            raise LabError(f"kamailio config check failed: {check.stderr[-2000:]}")
        logf = self.log.open("wb")
        self.proc = self.ns.popen(
            [
                "kamailio",
                "-DD",
                "-E",
                "-m",
                "64",
                "-M",
                "8",
                "-f",
                str(self.cfg),
                "-P",
                str(self.workdir / "kamailio.pid"),
                "-Y",
                str(self.workdir),
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"kamailio exited: {self.log.read_text()[-2000:]}")
            if b"INFO: <core>" in self.log.read_bytes() or self._listening():
                return self
            time.sleep(0.1)
        raise LabError("kamailio did not start listening in time")

    def _listening(self) -> bool:
        out = self.ns.run(["ss", "-lun"], check=False).stdout
        return ":5060" in out

    def auth_failures(self) -> list[str]:
        return [
            ln
            for ln in self.log.read_text(errors="replace").splitlines()
            if "sipdeflect: auth-failed" in ln
        ]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)


def register_customer(
    ns: Netns, pbx: str, user: str, password: str, *, count: int = 3, rate: int = 10
) -> subprocess.CompletedProcess[str]:
    """A customer's phone in ``ns``: ``count`` sipp REGISTERs answering the digest challenge
    with the right password (lab/data/register-auth.xml). returncode 0: all got 200."""
    scenario = resources.files("sipdeflect.lab") / "data" / "register-auth.xml"
    return ns.run(
        [
            "sipp",
            "-sf",
            str(scenario),
            "-s",
            user,
            "-au",
            user,
            "-ap",
            password,
            "-m",
            str(count),
            "-r",
            str(rate),
            "-timeout",
            "20",
            "-timeout_error",
            "-nostdin",
            f"{pbx}:5060",
        ],
        check=False,
        timeout=60,
    )


def svcrack(ns: Netns, pbx: str, user: str, words: Path) -> subprocess.CompletedProcess[str]:
    """Real SIPVicious svcrack from ``ns`` against ``pbx``:5060 with a dictionary file."""
    tool = Path(sys.executable).parent / "sipvicious_svcrack"
    return ns.run(
        [str(tool), "-u", user, "-d", str(words), "-p", "5060", pbx],
        check=False,
        timeout=120,
        input_="",
    )
