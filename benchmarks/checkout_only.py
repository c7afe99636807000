"""One worktree materialization in a fresh interpreter, for `run.py`'s before/after figure.

    python benchmarks/checkout_only.py dulwich|checkout <repo> <new worktree path>

dulwich:  what `git gpuspace add` did before git_gpuspace/git/checkout.py: dulwich's linked
          worktree setup (which checks out the main HEAD), then `reset_index` of the commit.
checkout: what it does now, `git_gpuspace.git.worktrees.add` (detached at HEAD).
"""

import contextlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

mode, repo_path, target = sys.argv[1:4]
if mode == "dulwich":
    from dulwich.repo import Repo

    with contextlib.closing(Repo(repo_path)) as repo:
        head = repo.head()
        os.mkdir(target)
        linked = Repo._init_new_working_directory(target, repo, identifier=Path(target).name)
        with contextlib.closing(linked):
            Path(linked.controldir(), "HEAD").write_bytes(head + b"\n")
            linked.get_worktree().reset_index(config=linked.get_config_stack())
elif mode == "checkout":
    from git_gpuspace.git import worktrees

    info = worktrees.discover(Path(repo_path))
    worktrees.add(info, Path(target), worktrees.Checkout(commit=worktrees.head_commit(info)))
else:
    sys.exit(f"unknown mode {mode}")
