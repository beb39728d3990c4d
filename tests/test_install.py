"""`pip install .` where the C data plane cannot be built (the compiler fails): the install
succeeds, `--version` names the pure-Python path, a replay warns once and writes the same
records as the C path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CAPTURE = REPO / "captures" / "http-keepalive.pcap"
# Runs the CLI from the --target install: this venv's editable install maps uinet_tap.* to
# the checkout (which has the built extension), so its finder is taken out first.
RUN = """\
import sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if "editable" not in str(getattr(f, "__module__", "")).lower()]
from uinet_tap.cli import main
sys.argv[0] = "uinet-tap"
main()
"""


def test_install_without_a_compiler_runs_the_python_path(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc absent: the no-compiler case is this machine's own")
    src = tmp_path / "src"
    # A copy without build products, so nothing built in the checkout can leak in.
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "*.so", "__pycache__", "*.egg-info", "build", ".*cache*"))  # fmt: skip
    site = tmp_path / "site"
    env = {**os.environ, "CC": "/bin/false"}
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(src)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert not list(site.rglob("_fast*.so")), "the extension was built with a failing compiler"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", RUN, *args], cwd=tmp_path, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(site)}, timeout=120,
        )  # fmt: skip

    version = cli("--version")
    assert version.returncode == 0 and "data plane: pure Python" in version.stdout, version
    out = tmp_path / "flows.jsonl"
    replay = cli("replay", str(CAPTURE), "-q", "--flows", str(out))
    assert replay.returncode == 0, replay.stderr
    lines = replay.stderr.splitlines()
    assert len(lines) == 1 and "C data plane is not built" in lines[0], replay.stderr
    with_c = subprocess.run(
        [sys.executable, "-m", "uinet_tap", "replay", str(CAPTURE), "-q", "--flows", "-"],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert out.read_bytes() == with_c.stdout and with_c.stdout.count(b"\n") >= 1


def test_pipx_install_gives_the_command_without_the_test_tools(tmp_path: Path) -> None:
    """`pipx install .`, as the README says: its own environment, the C data plane where a
    compiler is, the same records as this checkout, and none of the test extra in it."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "*.so", "__pycache__", "*.egg-info", "build", ".*cache*"))  # fmt: skip
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin")}
    r = subprocess.run([sys.executable, "-m", "pipx", "install", str(src)], env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    exe = tmp_path / "bin" / "uinet-tap"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    plane = "C" if shutil.which("gcc") else "pure Python"
    assert f"data plane: {plane}" in version.stdout
    got = subprocess.run([str(exe), "replay", "-q", "--flows", "-", str(CAPTURE)],
                         capture_output=True, timeout=120, check=True)  # fmt: skip
    here = subprocess.run([sys.executable, "-m", "uinet_tap", "replay", "-q", "--flows", "-",
                           str(CAPTURE)], capture_output=True, timeout=120, check=True)  # fmt: skip
    assert got.stdout == here.stdout and got.stdout.count(b"\n") == 1
    venv_python = next((tmp_path / "pipx" / "venvs" / "uinet-tap" / "bin").glob("python"))
    for tool in ("pytest", "hypothesis", "mypy"):
        probe = subprocess.run([str(venv_python), "-c", f"import {tool}"], capture_output=True)
        assert probe.returncode != 0, f"{tool} is in the runtime install"
