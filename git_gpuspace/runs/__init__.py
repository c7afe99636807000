"""Runs: commit-pinned commands, each in its own worktree and container with its own GPUs,
dispatched from a queue that survives the dispatcher (see DESIGN.md section 6).

model.py     a run and a sweep: what was asked, where it stands, how it ended
store.py     the queue and history: `.git/gpuspace-runs.db` (SQLite)
submit.py    submission: runs reserved, their pinned worktrees and refs made, then queued
at_work.py   who is at work on the queue: its dispatcher, its submitters
wrapper.py   what runs around the command in its container: the exit file and the log
grid.py      sweep parameters: axes, their cross product, placeholders in the command
local.py     this machine's engine: start queued runs on free GPUs, record what finished
slurm.py     Slurm: the runs as jobs, and what a job runs on its node
backend.py   the interface of local and slurm, and the one place a backend is chosen
sbatch.py    a run's resources as Slurm options (the backend and the export)
progress.py  the live progress lines of a foreground dispatch
results.py   metrics from a run's log
schedule.py  the scheduling policy, pure: which queued run gets which GPUs, which run is preempted
host_queue.py the requests for GPUs every repository on this machine posts on the engine
search.py    `sweep --search`: trials asked of Optuna, told their results
tracking.py  every run in MLflow: the tracker that logs what runs record
"""
