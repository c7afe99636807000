"""Runs: commit-pinned commands, each in its own worktree and container with its own GPUs,
dispatched from a queue that survives the dispatcher (see DESIGN.md section 6).

pin.py     the commit a run runs (a snapshot commit for uncommitted changes) and its ref
store.py   the queue and history: `.git/gpuspace-runs.toml`
grid.py    sweep parameters: axes, their cross product, placeholders in the command
dispatch.py  start queued runs on free GPUs, record what finished, from the engine's truth
results.py   metrics from a run's log
"""
