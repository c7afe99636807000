"""No host read of what a container or a repository can write may hang. A FIFO blocks open()
until someone writes to it: at a worktree's `.gitignore` it hangs every `git status` there, at
a tracked file it hangs whatever hashes that file. git-gpuspace runs git with a time-out that
names the path (GPUSPACE_GIT_TIMEOUT, seconds), and reads such files itself only when they are
regular files; either way the command ends with one line naming the path."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

GIT_TIMEOUT_S = 2
BOUND_S = 30  # a hang is a test failure, not a stuck suite


@pytest.fixture
def fifos():
    """FIFOs a test makes; afterwards each is replaced by an empty file, and whatever still
    waits in open() on it (git left behind by a command that hung) is let go."""
    made: list[Path] = []
    yield made
    for fifo in made:
        release(fifo)


def release(fifo: Path) -> None:
    try:
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer: every open() waiting on it returns
    except OSError:
        return
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            spare = fifo.with_name(fifo.name + ".released")
            spare.write_bytes(b"")
            os.replace(spare, fifo)
    finally:
        os.close(fd)  # the last writer gone: their reads end


def attempt(repo, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess | None:
    """`git gpuspace ARGS`; None when it hung (killed after BOUND_S seconds)."""
    try:
        result = subprocess.run(["git-gpuspace", *args], cwd=cwd or repo.path, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=BOUND_S,
                                env={**os.environ, "GPUSPACE_GIT_TIMEOUT": str(GIT_TIMEOUT_S)})
    except subprocess.TimeoutExpired:
        return None
    assert "Traceback" not in result.stderr, result.stderr
    return result


def bounded(repo, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`git gpuspace ARGS`, which must end within BOUND_S seconds and show no traceback."""
    result = attempt(repo, *args, cwd=cwd)
    if result is None:
        pytest.fail(f"`git gpuspace {' '.join(args)}` hung (killed after {BOUND_S} s)")
    return result


def within(seconds: float, call):
    """`call()`'s result, or its exception; the test fails if it has not returned in time (the
    thread is let go when the fixture releases the FIFO it waits on)."""
    import threading

    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"hung (no answer in {seconds} s)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def names(result: subprocess.CompletedProcess, path: Path) -> bool:
    """One line of stderr names `path` (the error or warning; a hint may follow it)."""
    return any(str(path) in line for line in result.stderr.splitlines() if not line.startswith("hint:"))


def no_command_hangs(repo, worktree: Path) -> None:
    """status, verify, remove, run and prune each end in bounded time over a worktree where a
    FIFO stands where git reads a file; those that read there say so in one line, naming it."""
    started = time.monotonic()
    steps = {
        "status": attempt(repo, "status"),  # the worktree is clean: git walks it for untracked files
        "verify": attempt(repo, "verify", "--", "true", cwd=worktree),
        "remove": attempt(repo, "remove", str(worktree)),
    }
    kept = worktree.exists() and len(repo.containers()) == 1  # a refused remove did nothing
    make_dirty(worktree)
    steps["run"] = attempt(repo, "run", "--gpus", "none", "--", "true", cwd=worktree)  # a snapshot of the changes
    steps["prune"] = attempt(repo, "prune")
    steps["remove --force"] = attempt(repo, "remove", "--force", str(worktree))  # looks at no file in it
    hung = [name for name, result in steps.items() if result is None]
    assert hung == [], f"hung (killed after {BOUND_S} s): {', '.join(hung)}"
    assert time.monotonic() - started < 2 * BOUND_S  # each waited a time-out or two at most

    status = steps["status"]
    assert status.returncode == 0, status.stderr  # the other worktrees are still shown
    assert names(status, worktree) and str(repo.path) in status.stdout, status.stderr
    for name in ("verify", "remove", "run"):
        assert steps[name].returncode != 0 and names(steps[name], worktree), (name, steps[name].stderr)
    assert kept
    assert repo.git("for-each-ref", "refs/gpuspace/runs/").stdout == ""  # no run was queued
    assert steps["prune"].returncode == 0, steps["prune"].stderr
    assert steps["remove --force"].returncode == 0, steps["remove --force"].stderr
    assert not worktree.exists() and repo.containers() == []


def make_dirty(worktree: Path) -> None:
    """A change of the same size: git must read the file (and its attributes) to see it."""
    path = worktree / "file0.txt"
    path.write_text(path.read_text().replace("0", "X"))


def test_fifo_a_container_makes_at_gitignore_hangs_no_command(repo, tmp_path, fifos):
    worktree = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(worktree), "--gpus", "none")
    [container] = repo.containers()
    made = container.exec_run(["mkfifo", "/workspace/.gitignore"], workdir="/workspace")
    assert made.exit_code == 0, made.output
    fifos.append(worktree / ".gitignore")
    assert stat.S_ISFIFO(os.lstat(worktree / ".gitignore").st_mode)
    no_command_hangs(repo, worktree)


@pytest.mark.parametrize("where", ["src/.gitignore", ".gitattributes"])
def test_fifo_where_git_reads_a_file_hangs_no_command(repo, tmp_path, fifos, where):
    worktree = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(worktree), "--gpus", "none")
    os.mkfifo(worktree / where)
    fifos.append(worktree / where)
    no_command_hangs(repo, worktree)


def test_run_refuses_a_fifo_where_a_tracked_file_was(repo, tmp_path, fifos):
    """git sees the type change without reading the file; the snapshot would read it."""
    worktree = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(worktree), "--gpus", "none")
    [container] = repo.containers()
    made = container.exec_run(["sh", "-c", "rm file1.txt && mkfifo file1.txt"], workdir="/workspace")
    assert made.exit_code == 0, made.output
    fifos.append(worktree / "file1.txt")
    run = bounded(repo, "run", "--gpus", "none", "--", "true", cwd=worktree)
    assert run.returncode != 0, run.stderr
    assert f"'{worktree / 'file1.txt'}' is a FIFO, not a regular file" in run.stderr
    assert repo.git("for-each-ref", "refs/gpuspace/runs/").stdout == ""
    status = bounded(repo, "status", "--json")
    assert status.returncode == 0, status.stderr


def test_fifos_a_run_leaves_in_its_data_dir_are_refused_not_read(repo, fifos):
    """The run's command replaces its log and writes metrics.json as FIFOs: its metrics are
    none, and `logs` refuses the log in one line (read with no writer, it would show nothing)."""
    ran = bounded(repo, "run", "--gpus", "none", "--commit", "HEAD", "--", "sh", "-c",
                  "echo loss=0.5; until [ -e /data/logs/run.log ]; do sleep 0.05; done;"  # tee makes it, meanwhile
                  " rm /data/logs/run.log && mkfifo /data/logs/run.log /data/metrics.json")
    assert ran.returncode == 0, ran.stderr
    [record] = json.loads(bounded(repo, "runs", "--json").stdout)
    log = Path(record["data_dir"]) / "logs" / "run.log"
    fifos += [log, Path(record["data_dir"]) / "metrics.json"]
    assert stat.S_ISFIFO(os.lstat(log).st_mode)
    assert record["state"] == "succeeded" and record["metrics"] == {}
    shown = bounded(repo, "logs", record["id"])
    assert shown.returncode != 0 and f"'{log}' is a FIFO, not a regular file" in shown.stderr, shown.stderr


def test_git_time_out_kills_git_and_names_the_path(plain_repo, fifos, monkeypatch):
    """In process: the error is one line with the path and the command; no git is left behind
    blocked in open()."""
    from git_gpuspace.git import worktrees
    from git_gpuspace.errors import WorktreeError

    os.mkfifo(plain_repo.path / ".gitignore")
    fifos.append(plain_repo.path / ".gitignore")
    monkeypatch.setenv("GPUSPACE_GIT_TIMEOUT", "1")
    started = time.monotonic()
    with pytest.raises(WorktreeError) as raised:
        within(BOUND_S, lambda: worktrees.git("status", "--porcelain", cwd=plain_repo.path, in_worktree=True))
    assert time.monotonic() - started < 10
    assert str(raised.value) == f"`git status` in '{plain_repo.path}' did not finish in 1 s"
    assert f"find '{plain_repo.path}' -type p" in raised.value.hint
    assert not _processes_in(plain_repo.path), "git was left running"
    with pytest.raises(WorktreeError):
        within(BOUND_S, lambda: worktrees.is_dirty(plain_repo.path))
    assert within(BOUND_S, lambda: worktrees.dirty_of([plain_repo.path])) == {plain_repo.path: None}  # status goes on


def _processes_in(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(path):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_own_reads_refuse_fifos_devices_sockets_and_symlinks(tmp_path):
    from git_gpuspace import untrusted_files
    from git_gpuspace.errors import NotARegularFile

    (tmp_path / "file").write_bytes(b"data")
    assert untrusted_files.read_bytes(tmp_path / "file") == b"data"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "socket"))
    try:
        for path, kind in ((tmp_path / "fifo", "a FIFO"), (Path("/dev/zero"), "a device"),
                           (tmp_path / "link", "a symlink"), (tmp_path / "socket", "a socket")):
            with pytest.raises(NotARegularFile) as raised:
                untrusted_files.read_bytes(path)
            assert str(raised.value) == f"'{path}' is {kind}, not a regular file: refusing to read it"
        assert untrusted_files.read_bytes(tmp_path / "link", follow_symlinks=True) == b"data"
        with pytest.raises(NotARegularFile):
            untrusted_files.require_regular(tmp_path / "fifo")
        untrusted_files.require_regular(tmp_path / "file", tmp_path / "absent")
    finally:
        server.close()


def test_hooks_that_are_fifos_are_not_read(plain_repo, fifos):
    from git_gpuspace.git import hooks

    hook = plain_repo.common_dir / "hooks" / "post-commit"
    os.mkfifo(hook)
    fifos.append(hook)
    assert within(BOUND_S, lambda: hooks.is_ours(hook)) is False


def test_git_gpuspace_runs_git_only_through_the_timed_runner():
    """Every git the host starts goes through git_cli.git (so gets its time-out); `git
    --version` in doctor reads no repository."""
    import re

    started_git = re.compile(r"""(?:run|Popen|call|check_output|check_call)\(\s*\[\s*["']git["']""")
    package = Path(__file__).resolve().parents[2] / "git_gpuspace"
    offenders = [f"{source.relative_to(package)}: {line.strip()}" for source in sorted(package.rglob("*.py"))
                 if source.name != "git_cli.py" for line in source.read_text().splitlines()
                 if started_git.search(line) and "--version" not in line]
    assert offenders == [], offenders
