"""``--user``: give up root for good once the privileged set-up is done.

``watch`` and ``inline`` need root (or CAP_NET_RAW and CAP_NET_ADMIN) only to open their
capture handles and packet sockets and to turn receive offloads off. Everything after that,
plugin code and intercept handlers above all, reads traffic that anyone on the wire writes,
so it runs as an unprivileged user: supplementary groups, then the group, then the user are
set (real, effective and saved alike, so nothing can switch back), no-new-privileges is set
so no set-user-ID program or file capability can hand root back, and then the result is
checked rather than trusted.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
from dataclasses import dataclass

PR_SET_NO_NEW_PRIVS = 38  # linux/prctl.h
_CAP_SETS = ("CapPrm:", "CapEff:", "CapAmb:")


class PrivilegeError(Exception):
    """A one-line reason the tool cannot run as the user asked for."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who to become: a user, its group and supplementary groups."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve_identity(user: str, group: str | None = None) -> Identity:
    """The identity ``--user`` (and ``--group``, else the user's primary group) names; the
    tool must be root to become it, and it must not be root again."""
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"--user {user} needs the tool to start as root (it runs as uid {os.geteuid()}): "
            "it opens the interfaces as root, then drops to that user"
        )
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"unknown user: {user}") from None
    gid = pw.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"unknown group: {group}") from None
    if pw.pw_uid == 0:
        raise PrivilegeError(f"--user {user} is root (uid 0): name an unprivileged user")
    groups = tuple(sorted(set(os.getgrouplist(pw.pw_name, gid))))
    if gid == 0 or 0 in groups:
        # group 0 owns files root means to keep to itself (/etc/shadow on some systems)
        raise PrivilegeError(f"--user {user} would keep group 0 (root): use another --group")
    return Identity(pw.pw_name, pw.pw_uid, gid, groups)


def drop_privileges(who: Identity) -> None:
    """Become ``who`` for good, or raise PrivilegeError. Groups go first: once the user is
    set, setgroups and setgid are no longer allowed."""
    try:
        os.setgroups(list(who.groups))
        os.setresgid(who.gid, who.gid, who.gid)
        os.setresuid(who.uid, who.uid, who.uid)
        _no_new_privileges()
    except OSError as exc:
        raise PrivilegeError(f"cannot drop to user {who.name}: {exc.strerror or exc}") from None
    problem = _still_privileged(who)
    if problem:
        raise PrivilegeError(f"dropping to user {who.name} did not hold: {problem}")


def _no_new_privileges() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): execve can no longer grant privileges (set-user-ID bits
    and file capabilities are ignored), for this process and all it starts."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


def _still_privileged(who: Identity) -> str | None:
    """What is wrong with the identity now in force, or None."""
    if os.getresuid() != (who.uid,) * 3 or os.getresgid() != (who.gid,) * 3:
        return f"uids {os.getresuid()}, gids {os.getresgid()}"
    if set(os.getgroups()) != set(who.groups):
        return f"supplementary groups {os.getgroups()}"
    try:
        os.setresuid(0, 0, 0)
    except PermissionError:
        pass
    else:
        return "root could be taken back"
    try:
        with open("/proc/self/status") as f:
            caps = {line.split()[0]: int(line.split()[1], 16) for line in f
                    if line.startswith(_CAP_SETS)}  # fmt: skip
    except (OSError, ValueError, IndexError) as exc:
        return f"cannot read the capabilities left ({exc})"
    held = {name.rstrip(":"): value for name, value in caps.items() if value}
    if held or len(caps) != len(_CAP_SETS):
        return f"capabilities left: {held or caps}"
    return None
