"""Who a container runs as: the invoking user's uid and gid, so that what it writes in the
worktree stays theirs (root: the image's own user)."""

from __future__ import annotations

import os

HOME_IN_CONTAINER = "/home/gpuspace"  # a writable HOME for a uid the image has no account for


def identity() -> tuple[str | None, dict[str, str], dict[str, str] | None]:
    """Run as the invoking user so files in the worktree stay theirs.

    Images have no account for an arbitrary uid, so such a user gets a writable HOME. As root,
    the container's user (and each command's, remoteUser) gets the HOME its account in the image
    names, as `docker run -u node` gives /home/node: the engine sets it where the env does not.
    """
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        return None, {}, None
    return (
        f"{uid}:{gid}",
        {"HOME": HOME_IN_CONTAINER, "USER": os.environ.get("USER", "gpuspace")},
        {HOME_IN_CONTAINER: f"uid={uid},gid={gid},mode=0700,exec"},
    )
