"""The package as a sysadmin installs it: `uv build` makes a wheel and an sdist with the
standard backend (setuptools), the wheel goes into places outside the checkout (a `uv tool
install` and a plain venv), and the installed `sipdeflect` runs with no checkout on its
path: --version, the decoy against the real svcrack, logscan. Built once with a C
compiler (the accelerators load) and once with no compiler on PATH (the build warns, the
pure-Python package installs and gives the same answers)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.detect.test_fail2ban_corpus import CORPUS, needs_corpus

ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv") or "uv"
PYTHON = shutil.which("python3") or "python3"  # the machine's, as a user's install uses
SVCRACK = Path(sys.executable).with_name("sipvicious_svcrack")

pytestmark = pytest.mark.skipif(
    shutil.which("uv") is None or shutil.which("python3") is None,
    reason="needs uv and python3 on PATH (./dev setup)",
)


@dataclass(frozen=True)
class Install:
    sipdeflect: Path  # the installed command
    python: Path  # the interpreter it runs under
    wheel: Path
    build_log: str


def _run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0, f"{argv}: {res.stdout[-2000:]}{res.stderr[-2000:]}"
    return res.stdout + res.stderr


def _env(**extra: str) -> dict[str, str]:
    # Nothing of the checkout's environment leaks into the install under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.pop("SIPDEFLECT_NO_C", None)
    return {**env, **extra}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Constraints pinning the installs to uv.lock (no dev tools), for both builds."""
    out = tmp_path_factory.mktemp("dist")
    _run(
        [UV, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-q", "-o",
         str(out / "constraints.txt")],
        cwd=ROOT,
    )  # fmt: skip
    return out


def _build(out: Path, env: dict[str, str]) -> tuple[Path, str]:
    out.mkdir(parents=True, exist_ok=True)
    log = _run(
        [UV, "build", "--no-cache", "--python", PYTHON, "--out-dir", str(out), str(ROOT)],
        cwd=out,
        env=env,
    )
    (wheel,) = out.glob("sipdeflect-*.whl")
    assert list(out.glob("sipdeflect-*.tar.gz")), "no sdist"
    return wheel, log


@pytest.fixture(scope="module")
def with_c(dist: Path) -> Install:
    """`uv tool install` of the wheel built with gcc, as the README says."""
    out = dist / "with-c"
    wheel, log = _build(out, _env())
    tools, bindir = out / "tools", out / "bin"
    _run(
        [UV, "tool", "install", "-q", "--python", PYTHON, "-c", str(dist / "constraints.txt"),
         str(wheel)],
        cwd=out,
        env=_env(UV_TOOL_DIR=str(tools), UV_TOOL_BIN_DIR=str(bindir)),
    )  # fmt: skip
    (python,) = tools.glob("sipdeflect/bin/python")
    return Install(bindir / "sipdeflect", python, wheel, log)


@pytest.fixture(scope="module")
def without_c(dist: Path) -> Install:
    """A wheel built with no compiler on PATH, pip-installed into a fresh venv."""
    out = dist / "without-c"
    nocc = out / "path"
    nocc.mkdir(parents=True)
    env = _env(PATH=str(nocc))  # no gcc, cc or anything else
    env.pop("CC", None)
    wheel, log = _build(out, env)
    venv = out / "venv"
    _run([UV, "venv", "-q", "--python", PYTHON, str(venv)], cwd=out, env=_env())
    _run(
        [UV, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-c",
         str(dist / "constraints.txt"), str(wheel)],
        cwd=out,
        env=_env(),
    )  # fmt: skip
    return Install(venv / "bin" / "sipdeflect", venv / "bin" / "python", wheel, log)


def _version(inst: Install) -> str:
    return _run([str(inst.sipdeflect), "--version"], cwd=inst.wheel.parent, env=_env())


def test_the_wheel_holds_the_package_and_its_data_not_the_c_sources(with_c: Install) -> None:
    names = zipfile.ZipFile(with_c.wheel).namelist()
    for needed in (
        "sipdeflect/py.typed",
        "sipdeflect/detect/fingerprints.toml",
        "sipdeflect/lab/data/register-auth.xml",
        "sipdeflect/decoy/_cfast.pyi",
        "sipdeflect/data/sipdeflect.service",
    ):
        assert needed in names
    built = [n for n in names if n.endswith(".so")]
    assert sorted(Path(n).name.split(".")[0] for n in built) == ["_cfast", "_clog"]
    assert not [n for n in names if n.endswith(".c")]
    assert not [n for n in names if n.startswith("tests/")]


def test_installed_with_a_compiler_the_accelerators_load(with_c: Install) -> None:
    out = _version(with_c)
    assert out.startswith("sipdeflect 0.1.0\n"), out
    assert "accelerators: decoy C, log scanner C" in out
    where = _run(
        [str(with_c.python), "-c", "import sipdeflect; print(sipdeflect.__file__)"],
        cwd=with_c.wheel.parent,
        env=_env(),
    )
    assert not where.strip().startswith(str(ROOT)), where  # the install, not the checkout


def test_the_install_carries_its_unit_and_a_config_that_checks(
    with_c: Install, tmp_path: Path
) -> None:
    """What the README's "Install on a PBX" does with no checkout: the unit and the example
    configuration come from the installed package."""
    unit = _run([str(with_c.sipdeflect), "config", "unit"], cwd=tmp_path, env=_env())
    assert unit == (ROOT / "etc" / "sipdeflect.service").read_text()
    assert (
        "ExecStart=/usr/local/bin/sipdeflect run --config /etc/sipdeflect/sipdeflect.toml" in unit
    )
    conf = tmp_path / "sipdeflect.toml"
    conf.write_text(_run([str(with_c.sipdeflect), "config", "example"], cwd=tmp_path, env=_env()))
    ok = _run([str(with_c.sipdeflect), "config", "check", str(conf)], cwd=tmp_path, env=_env())
    assert ok.strip() == f"{conf}: ok"


def test_without_a_compiler_the_build_warns_and_python_runs(without_c: Install) -> None:
    assert re.search(
        r"building extension \"sipdeflect\.decoy\._cfast\" failed", without_c.build_log
    )
    assert not [n for n in zipfile.ZipFile(without_c.wheel).namelist() if n.endswith(".so")]
    out = _version(without_c)
    assert "accelerators: decoy python: not built, log scanner python: not built" in out


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.skipif(not SVCRACK.exists(), reason="needs sipvicious in the dev environment")
@pytest.mark.parametrize("which", ["with_c", "without_c"])
def test_the_installed_decoy_makes_svcrack_quit(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    inst: Install = request.getfixturevalue(which)
    port = _free_udp_port()
    decoy = subprocess.Popen(
        [str(inst.sipdeflect), "decoy", "--no-tcp", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert decoy.stdout is not None
        first = decoy.stdout.readline()  # printed once the socket is bound
        assert "decoy listening on 127.0.0.1" in first, first
        words = tmp_path / "words.txt"
        words.write_text("".join(f"{n}\n" for n in range(1000, 2000)))
        crack = subprocess.run(
            [str(SVCRACK), "-u", "100", "-d", str(words), "-p", str(port), "127.0.0.1"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        said = crack.stdout + crack.stderr
        assert crack.returncode == 0, said
        assert "User not found" in said
        assert "found nothing" in said
    finally:
        decoy.send_signal(signal.SIGINT)
        rest, _ = decoy.communicate(timeout=20)
    assert decoy.returncode == 0, rest
    assert re.search(r"messages\s+│\s+1\s+│", rest), rest  # svcrack quit after one request
    assert re.search(r"sources that stopped\s+│\s+1\s+│", rest), rest


@needs_corpus
@pytest.mark.parametrize("which", ["with_c", "without_c"])
def test_the_installed_logscan_reads_what_the_checkout_reads(
    which: str, request: pytest.FixtureRequest
) -> None:
    inst: Install = request.getfixturevalue(which)
    assert CORPUS is not None
    log = CORPUS / "asterisk"
    argv = ["logscan", "--json", str(log)]
    got = _run([str(inst.sipdeflect), *argv], cwd=inst.wheel.parent, env=_env())
    want = _run([str(Path(sys.executable).with_name("sipdeflect")), *argv], cwd=ROOT)
    assert got.count("\n") > 10
    assert got == want
