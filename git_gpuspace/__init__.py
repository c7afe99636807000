"""git-gpuspace: one git worktree, one container, its own GPUs."""

__version__ = "0.1.0"
