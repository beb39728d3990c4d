"""Privileges: helper programs by absolute path (uinet_tap/programs.py) and dropping root for
good (uinet_tap/privileges.py). The drop is exercised in child processes, never in the test
process; `watch --user` and `inline --user` on real traffic are in test_watch.py and
test_inline.py."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from uinet_tap import programs
from uinet_tap.ports import disable_receive_offloads
from uinet_tap.privileges import PrivilegeError, resolve_identity
from uinet_tap.programs import SYSTEM_DIRS, MissingProgram, system_program

EXE = Path(sys.executable).parent / "uinet-tap"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (drops to nobody)")


def _nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user named nobody here")


# -- helper programs ---------------------------------------------------------------------


def test_a_helper_is_found_in_the_system_directories_whatever_path_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not any(os.access(os.path.join(d, "ethtool"), os.X_OK) for d in SYSTEM_DIRS):
        pytest.skip("ethtool is not installed")
    fake = tmp_path / "ethtool"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ.get('PATH', '')}")
    assert shutil.which("ethtool") == str(fake)  # the poisoned PATH would pick the fake
    path = system_program("ethtool")
    assert os.path.dirname(path) in SYSTEM_DIRS and os.path.isabs(path)


def test_a_missing_helper_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs, "SYSTEM_DIRS", (str(tmp_path),))
    with pytest.raises(MissingProgram) as exc:
        system_program("ethtool")
    assert str(exc.value) == f"ethtool is not installed (looked in {tmp_path})"
    # offloads stay on then, and the run says so (super-frames are cut by the tool anyway)
    assert disable_receive_offloads("ta") == (
        f"could not turn GRO/LRO off on ta: ethtool is not installed (looked in {tmp_path}); "
        "super-frames are resegmented"
    )


# -- who to become -----------------------------------------------------------------------


def test_identity_of_a_user_is_its_ids_and_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = _nobody()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    who = resolve_identity("nobody")
    assert (who.uid, who.gid) == (nobody.pw_uid, nobody.pw_gid)
    assert set(who.groups) == set(os.getgrouplist("nobody", nobody.pw_gid))


@pytest.mark.parametrize(
    "user,group,message",
    [
        ("no-such-user-here", None, "unknown user: no-such-user-here"),
        ("nobody", "no-such-group-here", "unknown group: no-such-group-here"),
        ("root", None, "--user root is root (uid 0): name an unprivileged user"),
        ("nobody", "root", "--user nobody would keep group 0 (root): use another --group"),
    ],
)
def test_identities_that_cannot_be_used(
    monkeypatch: pytest.MonkeyPatch, user: str, group: str | None, message: str
) -> None:
    _nobody()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(PrivilegeError) as exc:
        resolve_identity(user, group)
    assert str(exc.value) == message


def test_user_needs_the_tool_to_start_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PrivilegeError, match=r"needs the tool to start as root \(it runs as uid"):
        resolve_identity("nobody")


def test_group_without_user_is_one_error_line() -> None:
    for command in ("watch", "inline"):
        argv = [str(EXE), command, "no-such-if0", *(["no-such-if1"] if command == "inline"
                                                    else []), "--group", "nogroup"]  # fmt: skip
        r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert r.returncode == 2 and r.stderr == "error: --group needs --user\n", r.stderr


# -- the drop, in a child process ------------------------------------------------------------

# Imports first: after the drop the interpreter's own library may be out of the user's reach.
DROP_THEN_TRY = """
import os, subprocess, sys
from uinet_tap.privileges import drop_privileges, resolve_identity
drop_privileges(resolve_identity("nobody"))
try:
    os.setresuid(0, 0, 0)
    print("setresuid(0) worked")
except PermissionError:
    print("setresuid(0) refused")
print("set-user-ID program runs as uid",
      subprocess.run([sys.argv[1], "-u"], capture_output=True, text=True).stdout.strip())
"""


@needs_root
def test_after_the_drop_root_cannot_come_back_not_even_through_a_set_user_id_program() -> None:
    """A set-user-ID-root copy of `id` (which, run by nobody in the ordinary way, reports
    uid 0) reports nobody's uid after the drop: no-new-privileges holds, and the ids
    cannot be set back to root."""
    nobody = _nobody()
    setpriv, id_prog = shutil.which("setpriv"), shutil.which("id")
    if setpriv is None or id_prog is None:
        pytest.skip("needs setpriv and id")
    with tempfile.TemporaryDirectory(prefix="uinet-tap-suid-") as d:
        os.chmod(d, 0o755)
        suid_id = Path(d) / "id"
        shutil.copy(id_prog, suid_id)
        os.chown(suid_id, 0, 0)
        suid_id.chmod(0o4755)
        plain = subprocess.run(
            [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
             str(suid_id), "-u"], capture_output=True, text=True, cwd="/",
        )  # fmt: skip
        if plain.stdout.strip() != "0":
            pytest.skip(f"set-user-ID programs do not run as root here ({plain.stdout!r})")
        r = subprocess.run(
            [sys.executable, "-c", DROP_THEN_TRY, str(suid_id)],
            capture_output=True, text=True, cwd="/",
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "setresuid(0) refused",
        f"set-user-ID program runs as uid {nobody.pw_uid}",
    ], r.stdout
