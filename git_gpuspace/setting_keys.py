"""Every setting's key, and the flags that set some of them: one table for `config`, the flags
of add, bind, init and run, and their help (no import beyond the standard library: the parser
is built from it before anything else loads)."""

from __future__ import annotations

# The settings `add`, `bind`, `init`, `run` and `sweep` also take as flags (--shm-size sets
# shm_size): each flag's metavar and help, in the order the help lists them.
FLAGS: dict[str, tuple[str, str]] = {
    "gpus": ("SPEC", "N (any N free), 0,2 or GPU-UUIDs, all, none (default: 1)"),
    "image": ("IMAGE", "container image (default: a PyTorch CUDA runtime image)"),
    "memory": ("SIZE", "memory limit, e.g. 32g"),
    "cpus": ("N", "CPU limit, e.g. 8 or 2.5"),
    "shm_size": ("SIZE", "/dev/shm size (default: 8g)"),
}
# Every setting `config` knows (FLAGS' among them), in the order `config list` shows them.
KEYS = ("image", "gpus", "memory", "cpus", "shm_size", "publish_address", "data_root", "jupyter", "ssh", "tensorboard",
        "backend", "slurm.partition", "slurm.account", "slurm.time", "slurm.qos", "slurm.extra", "slurm.workdir",
        "slurm.container", "runs.metrics", "preemptible",  # runs.metrics: the `runs` table's metric columns, NAME,...
        # tracking: `none` turns MLflow tracking off; tracking.uri: sqlite:///..., http(s)://... or none (default: the
        # repo's .git/gpuspace-mlflow.db); tracking.experiment (default: the repo's name)
        "tracking", "tracking.uri", "tracking.experiment")
