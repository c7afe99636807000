"""`runs clean` of many finished runs: their worktrees go from git at once (one listing, not one
per run), their files are moved aside and deleted by a process of their own; a clean killed
half way is finished by the next one, and git is left with nothing to prune."""

from __future__ import annotations

import datetime as dt
import json

from conftest import wait_for

from git_gpuspace.runs import store
from git_gpuspace.runs.model import Run

DELETING = ".gpuspace-deleting-"


def finished_runs(repo, count: int) -> list[str]:
    """Runs as `run` leaves them once finished: a detached worktree each, a ref each, the store."""
    head = repo.git("rev-parse", "HEAD").stdout.strip()
    where = repo.path.parent / "worktrees" / "runs"
    moment = dt.datetime.now(dt.timezone.utc)
    with store.locked(repo.common_dir) as runs:
        for _ in range(count):
            run_id = runs.next_id("run")
            repo.git("worktree", "add", "-q", "--detach", str(where / run_id), head)
            repo.git("update-ref", f"refs/gpuspace/runs/{run_id}", head)
            runs.runs.append(Run(id=run_id, command=["true"], commit=head, worktree=str(where / run_id),
                                 state="succeeded", exit_code=0, started=moment, finished=moment))
        runs.save()
        return [run.id for run in runs.runs]


def git_is_clean(repo) -> bool:
    listed = repo.git("worktree", "list", "--porcelain").stdout
    return (listed.count("worktree ") == 1 and repo.git("worktree", "prune", "-n", "-v").stdout.strip() == ""
            and repo.git("for-each-ref", "refs/gpuspace").stdout == "")


def nothing_left(repo) -> bool:
    where = repo.path.parent / "worktrees" / "runs"
    return not any(where.iterdir()) and not list(repo.common_dir.glob(DELETING + "*"))


def test_clean_removes_many_runs_as_git_would_and_their_files_go(plain_repo):
    keep = plain_repo.path.parent / "keep"
    plain_repo.git("worktree", "add", "-q", "-b", "keep", str(keep))
    ids = finished_runs(plain_repo, 12)
    # a run's container could rewrite its worktree's `.git` file: it names another worktree's admin dir
    planted = plain_repo.path.parent / "worktrees" / "runs" / ids[0] / ".git"
    planted.write_text(f"gitdir: {plain_repo.common_dir / 'worktrees' / 'keep'}\n")
    result = plain_repo.ok("runs", "clean")
    assert "Removed 12 finished runs" in result.stdout
    plain_repo.git("worktree", "remove", str(keep))  # git's again, and git removes it
    assert git_is_clean(plain_repo)
    assert [r["cleaned"] for r in json.loads(plain_repo.ok("runs", "--json").stdout)] == [True] * 12  # records stay
    assert wait_for(lambda: nothing_left(plain_repo), 30)
    assert plain_repo.git("status", "--porcelain").stdout == ""


def test_a_clean_killed_half_way_is_finished_by_the_next(plain_repo):
    finished_runs(plain_repo, 4)
    killed = plain_repo.gs("runs", "clean", env={"GPUSPACE_FAULT_POINT": "after-worktree-moved-aside",
                                                "GPUSPACE_FAULT_ACTION": "kill"})
    assert killed.returncode == -9
    assert plain_repo.git("worktree", "list", "--porcelain").stdout.count("worktree ") == 5  # all still git's
    assert len(store.load(plain_repo.common_dir).runs) == 4  # the store changes last
    assert "Removed 4 finished runs" in plain_repo.ok("runs", "clean").stdout
    assert git_is_clean(plain_repo)
    assert wait_for(lambda: nothing_left(plain_repo), 30)
