"""Your uid for the image's own user, as the reference's `updateRemoteUserUID` gives it.

When you are not root, a container runs as your uid, so that what it writes in the worktree stays
yours. An image with an account of its own (`vscode`, `node`, `jovyan`) has that user's home
(`/home/vscode`, with what the image put there) and shell: run as a bare uid, the container has
neither. So the image is derived once more, with that account's uid and gid made yours and its
home chowned to them (`gpuspace-build/uid:<hash>`, reused while the image, user and ids are the
same), and the container runs as the account, by name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..engine.containers import Engine

# The reference's updateUID.Dockerfile, in POSIX sh: the account's ids become NEW_UID:NEW_GID
# unless another account has that uid (then nothing changes: the container runs as your uid, as
# when the image has no such account) or another group that gid (then its gid stays).
DOCKERFILE = r"""FROM {image}
USER root
RUN set -e; u={user}; new_uid={uid}; new_gid={gid}; \
    line=$(grep "^$u:" /etc/passwd); old_uid=$(echo "$line" | cut -d: -f3); old_gid=$(echo "$line" | cut -d: -f4); \
    home=$(echo "$line" | cut -d: -f6); \
    if [ "$old_uid" != "$new_uid" ] || [ "$old_gid" != "$new_gid" ]; then \
      other_group=$(awk -F: -v g="$new_gid" '$3==g{{print $1}}' /etc/group | head -n 1); \
      if [ -n "$other_group" ] && [ "$old_gid" != "$new_gid" ]; then new_gid=$old_gid; fi; \
      sed -i -e "s/^\($u:[^:]*:\)[^:]*:[^:]*/\1$new_uid:$new_gid/" /etc/passwd; \
      if [ "$old_gid" != "$new_gid" ]; then sed -i -e "s/^\([^:]*:[^:]*:\)$old_gid:/\1$new_gid:/" /etc/group; fi; \
      if [ -n "$home" ] && [ -d "$home" ]; then chown -R "$new_uid:$new_gid" "$home"; fi; \
    fi
USER {image_user}
"""
_ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]*\$?", re.IGNORECASE)


def uid_image(engine: Engine, image: str, user: str | None, platform: str | None = None) -> str | None:
    """The image to run `user` in by name: `image` itself when its account has this process's
    uid and gid already, else one derived with them (built when missing). None when there is
    nothing to do it for: you are root, no user or root is asked, the image has no such account,
    or another of its accounts has your uid (the container then runs as your bare uid).
    `platform`: the container's (runArgs --platform), which the derived image is built for."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0 or not user or not _ACCOUNT.fullmatch(user) or user == "root":
        return None
    accounts = _accounts(engine.image_file(image, "/etc/passwd"))
    found = accounts.get(user)
    if found is None or found[0] == 0:
        return None
    if found == (uid, gid):
        return image
    if any(ids[0] == uid for name, ids in accounts.items() if name != user):
        return None
    attrs = engine.image_attrs(image) or {}
    image_user = (attrs.get("Config") or {}).get("User") or "root"
    dockerfile = DOCKERFILE.format(image=image, user=user, uid=uid, gid=gid, image_user=image_user)
    tag = "gpuspace-build/uid:" + hashlib.sha256(f"{attrs.get('Id')}\0{dockerfile}".encode()).hexdigest()[:16]
    if not engine.has_image(tag):
        context = Path(tempfile.mkdtemp(prefix="gpuspace-uid-"))
        try:
            (context / "Dockerfile").write_text(dockerfile)
            engine.build(context, context / "Dockerfile", tag, {}, platform=platform,
                         what=f"{image} with {user} given uid {uid}")
        finally:
            shutil.rmtree(context, ignore_errors=True)
    return tag


def _accounts(passwd: bytes | None) -> dict[str, tuple[int, int]]:
    """Each account's (uid, gid) in an image's /etc/passwd."""
    found = {}
    for line in (passwd or b"").decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
            found.setdefault(fields[0], (int(fields[2]), int(fields[3])))
    return found
