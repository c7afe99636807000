"""A second, unprivileged local user for multi-user tests, made with `useradd` and driven with `setpriv`.

    other = make_user("gpuspace-other", docker=True)
    home = user_dir(other, tmp_path)              # a 0755 folder of theirs for their repos
    other.run("git", "init", "-q", "repo", cwd=home)
    other.gpuspace("gpus", cwd=home)

Users persist across tests (useradd is slow and the name is the same each time); use one name per
docker-group setting, since two tests asking for one name with different settings would race.
The environment is the user's own HOME/USER plus the tests' PATH (it carries the stand-in nvidia-smi)
and fake-GPU settings: nothing else of the test's (its XDG dirs, DOCKER_HOST) unless passed.
"""

from __future__ import annotations

import atexit
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import unavailable

PASSED_ON = ("FAKE_GPU_SEED", "FAKE_GPU_COUNT", "GPUSPACE_GPU_SOURCE",
             "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
             "PYTHONPATH")  # where the tests import the package from, when set: the same copy for both users


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path

    def environ(self, env: dict | None = None) -> dict[str, str]:
        base = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "PATH": os.environ["PATH"]}
        base.update({name: os.environ[name] for name in PASSED_ON if name in os.environ})
        return {**base, **(env or {})}

    def run(self, *argv: str, cwd: Path, env: dict | None = None, input: str | None = None,
            ) -> subprocess.CompletedProcess:
        """Run argv as this user (their groups too), capturing text output; never raises on exit status."""
        return subprocess.run(self._as_me(argv), cwd=cwd, env=self.environ(env), input=input, capture_output=True,
                              text=True)

    def popen(self, *argv: str, cwd: Path, env: dict | None = None, **options) -> subprocess.Popen:
        """Start argv as this user and return at once (a process that lives while the test acts)."""
        return subprocess.Popen(self._as_me(argv), cwd=cwd, env=self.environ(env), **options)

    def _as_me(self, argv: tuple[str, ...]) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *map(str, argv)]

    def gpuspace(self, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
        """`git gpuspace ARGS` as this user."""
        return self.run(sys.executable, "-m", "git_gpuspace.cli", *args, cwd=cwd, env=env)


def _require_root() -> None:
    missing = [tool for tool in ("useradd", "gpasswd", "setpriv") if shutil.which(tool) is None]
    if os.getuid() == 0 and not missing:
        return
    reason = f"a second local user needs root and {', '.join(missing) or 'useradd, gpasswd, setpriv'}"
    unavailable(reason)


def _retry(argv: list[str]) -> None:
    """The shadow tools refuse while another one holds /etc/passwd's lock (tests run side by side)."""
    for _ in range(50):
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def make_user(name: str, docker: bool) -> User:
    """The local user `name` (made if missing, with a home), in the docker group exactly when `docker`."""
    _require_root()
    try:
        pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], capture_output=True, text=True)
        if made.returncode != 0:
            try:
                pwd.getpwnam(name)  # made by a test running beside this one
            except KeyError:
                raise AssertionError(f"useradd {name} failed: {made.stderr.strip()}") from None
    if (name in grp.getgrnam("docker").gr_mem) != docker:
        _retry(["gpasswd", "-a" if docker else "-d", name, "docker"])
    assert (name in grp.getgrnam("docker").gr_mem) == docker
    entry = pwd.getpwnam(name)
    return User(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=Path(entry.pw_dir))


def user_dir(user: User, base: Path) -> Path:
    """A fresh 0755 folder owned by `user`, for their repos: under `base` when they can reach it, else
    (pytest's tmp_path sits in root's 0700 folder) under the system temp dir, removed when the tests end."""
    base = Path(base)
    reachable = base.is_dir() and all(part.stat().st_mode & 0o001 for part in (base.resolve(), *base.resolve().parents))
    path = Path(tempfile.mkdtemp(prefix=f"gpuspace-{user.name}-", dir=base if reachable else None))
    if not reachable:
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    path.chmod(0o755)
    os.chown(path, user.uid, user.gid)
    return path
