"""Fast tests of the pure parts: specs, allocation, state parsing, inventory parsing, CLI."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from git_gpuspace import allocate, cli, gpus, state
from git_gpuspace.engine.containers import container_name
from git_gpuspace.errors import GpusUnavailable, StateError, UsageError
from git_gpuspace.model import Binding, Gpu, GpuRequest, Holder, Limits
from git_gpuspace.specs import format_size, parse_cpus, parse_gpus, parse_size

INVENTORY = [Gpu(index=i, uuid=f"GPU-{i}") for i in range(4)]


def holder(name: str, share: bool = False) -> Holder:
    return Holder(repo="/r/.git", worktree=f"/w/{name}", branch=name, container=f"c-{name}", share=share)


@pytest.mark.parametrize(
    "text,expected",
    [("512m", 512 << 20), ("16g", 16 << 30), ("16G", 16 << 30), ("8GiB", 8 << 30), ("1.5g", 3 << 29),
     ("1073741824", 1 << 30), ("2gb", 2 << 30), ("1t", 1 << 40)],
)
def test_parse_size(text, expected):
    assert parse_size(text, "--memory") == expected


@pytest.mark.parametrize("text", ["", "g", "12q", "-1g", "1.2.3g", "ten"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        parse_size(text, "--memory")


def test_format_size():
    assert format_size(8 << 30) == "8g"
    assert format_size(1536 << 20) == "1536m"
    assert format_size(123) == "123"


def test_parse_cpus():
    assert parse_cpus("1.5") == 1.5
    for bad in ("0", "-2", "x", str((os.cpu_count() or 1) + 1)):
        with pytest.raises(UsageError):
            parse_cpus(bad)


@pytest.mark.parametrize(
    "text,expected",
    [("2", GpuRequest(count=2)), ("all", GpuRequest(all=True)), ("none", GpuRequest()), ("0", GpuRequest()),
     ("0,2", GpuRequest(ids=("0", "2"))), ("1,", GpuRequest(ids=("1",))), ("device=3", GpuRequest(ids=("3",))),
     ("GPU-ab-12", GpuRequest(ids=("GPU-ab-12",)))],
)
def test_parse_gpus(text, expected):
    assert parse_gpus(text) == expected


@pytest.mark.parametrize("text", ["two", "0,0", "1;2", "-1", ","])
def test_parse_gpus_rejects(text):
    with pytest.raises(UsageError):
        parse_gpus(text)


def test_choose_prefers_free_gpus_in_index_order():
    leases = {"GPU-0": [holder("a")]}
    assert [g.index for g in allocate.choose(GpuRequest(count=2), INVENTORY, leases, share=False)] == [1, 2]


def test_choose_refuses_and_names_holders():
    leases = {f"GPU-{i}": [holder(f"w{i}")] for i in range(3)}
    with pytest.raises(GpusUnavailable) as refused:
        allocate.choose(GpuRequest(count=2), INVENTORY, leases, share=False)
    assert "1 free" in str(refused.value) and "GPU 0 is held by /w/w0 (w0)" in str(refused.value)


def test_choose_share_only_with_sharers():
    leases = {"GPU-0": [holder("a", share=True)], "GPU-1": [holder("b")]}
    assert allocate.choose(GpuRequest(ids=("0",)), INVENTORY, leases, share=True)[0].index == 0
    with pytest.raises(GpusUnavailable):
        allocate.choose(GpuRequest(ids=("1",)), INVENTORY, leases, share=True)
    with pytest.raises(GpusUnavailable):
        allocate.choose(GpuRequest(ids=("0",)), INVENTORY, leases, share=False)
    # counts take free GPUs before shared ones
    assert [g.index for g in allocate.choose(GpuRequest(count=2), INVENTORY, leases, share=True)] == [2, 3]


def test_choose_edge_cases():
    assert allocate.choose(GpuRequest(), [], {}, share=False) == []
    with pytest.raises(GpusUnavailable, match="no NVIDIA GPU found"):
        allocate.choose(GpuRequest(count=1), [], {}, share=False)
    with pytest.raises(GpusUnavailable, match="this host has 4"):
        allocate.choose(GpuRequest(count=5), INVENTORY, {}, share=False)
    with pytest.raises(UsageError, match="named twice"):
        allocate.choose(GpuRequest(ids=("1", "GPU-1")), INVENTORY, {}, share=False)
    assert len(allocate.choose(GpuRequest(all=True), INVENTORY, {}, share=False)) == 4


def test_state_round_trip(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml", defaults={"image": "img"})
    saved.bindings.append(
        Binding(path="/w/a", container=container_name("r", Path("/w/a"), tmp_path), image="img", branch="feature/a", gpus=["GPU-1"],
                limits=Limits(memory_bytes=1 << 30, cpus=2.5, shm_bytes=8 << 30), share=True,
                created=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    )
    saved.save()
    assert (saved.path.stat().st_mode & 0o777) == 0o600
    loaded = state.load(tmp_path)
    assert loaded.bindings == saved.bindings and loaded.defaults == {"image": "img"}
    assert not list(tmp_path.glob(".gpuspace.toml.*"))  # no temp file left


def test_state_missing_file_is_empty(tmp_path):
    assert state.load(tmp_path).bindings == []


def test_state_not_utf8(tmp_path):
    (tmp_path / "gpuspace.toml").write_bytes(b"schema = 1\n\xff\n")
    with pytest.raises(StateError, match="not UTF-8"):
        state.load(tmp_path)


def test_nvidia_smi_parsing():
    line = "1, GPU-abc, NVIDIA H200, 143771, [N/A], [Not Supported]"
    assert gpus._parse_smi_line(line) == Gpu(1, "GPU-abc", "NVIDIA H200", 143771, None, None)
    assert gpus._parse_smi_line("garbage") is None


def test_inventory_falls_back_to_nvidia_smi_then_none(monkeypatch, tmp_path):
    source, found = gpus.probe()
    assert source == "nvidia-smi" and len(found) == 4  # NVML has no driver here; the fake answers
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpus.probe() == ("none", [])


def test_internal_error_points_to_a_log(capsys):
    def broken(args):
        raise RuntimeError("boom")

    assert cli.run_guarded(broken, None) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "Traceback" not in err
    log = Path(err.split("details are in ")[1].strip())
    assert "RuntimeError: boom" in log.read_text()


def test_version_and_help_are_fast_and_import_nothing_heavy():
    code = "import sys; from git_gpuspace import cli; cli.build_parser(); print('docker' in sys.modules, 'dulwich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    version = subprocess.run(["git-gpuspace", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("git-gpuspace ")
    helped = subprocess.run(["git-gpuspace", "-h"], capture_output=True, text=True)
    for verb in ("add", "bind", "remove", "status", "gpus", "prune"):
        assert verb in helped.stdout


def test_pull_progress_lines_step_by_quarters():
    from git_gpuspace.engine.containers import _pull_line

    event = {"status": "Downloading", "id": "abc", "progressDetail": {"current": 60 << 20, "total": 100 << 20}}
    assert _pull_line(event) == "abc: Downloading 50% of 100 MiB"
    assert _pull_line({"status": "Downloading", "id": "abc", "progressDetail": {}}) == ""
    assert _pull_line({"status": "Pull complete", "id": "abc"}) == "abc: Pull complete"
    assert _pull_line({"status": "Digest: sha256:1"}) == "Digest: sha256:1"


def test_dirty_check_of_a_worktree_removed_meanwhile(tmp_path):
    from git_gpuspace.git.worktrees import is_dirty

    assert is_dirty(tmp_path / "gone") is None  # status racing a concurrent remove must not crash


def test_every_subpackage_is_packaged():
    """pyproject lists packages by hand: a new sub-package must be listed, or installs lack it."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(root).parts) for init in (root / "git_gpuspace").rglob("__init__.py")}
    assert found <= listed


def test_the_pyxis_job_script_runs_the_container_through_srun(tmp_path):
    """pyxis cannot run here: the generated script is what is checked."""
    import shlex

    from git_gpuspace.runs.slurm import _script
    from git_gpuspace.runs.store import Run
    from git_gpuspace.git.worktrees import RepoInfo

    info = RepoInfo(common_dir=tmp_path / ".git", main_path=tmp_path)
    runs = [Run(id=f"s-{i}", command=["python", "train.py", "--lr", lr], commit="c" * 40, worktree=f"/shared/wt/s-{i}")
            for i, lr in enumerate(["0.1", "0.01"], 1)]
    text = _script(info, runs, pyxis=True, image="nvcr.io/nvidia/pytorch:24.05-py3", data_dirs=["/shared/d1", "/shared/d2"])
    assert text.startswith("#!/bin/sh\n") and 'case "$SLURM_ARRAY_TASK_ID" in' in text
    first = next(line for line in text.splitlines() if line.strip().startswith("0)"))
    words = shlex.split(first.split(") ", 1)[1].split("&& exec ", 1)[1].rstrip(" ;"))
    assert words[:4] == ["srun", "--container-image=nvcr.io/nvidia/pytorch:24.05-py3",
                         "--container-mounts=/shared/wt/s-1:/workspace,/shared/d1:/data", "--container-workdir=/workspace"]
    assert words[-4:] == ["python", "train.py", "--lr", "0.1"]  # under the wrapper that keeps output and exit code
    assert "/shared/d2:/data" in text and "0.01" in text
    plain = _script(info, runs[:1])
    assert "_slurm-task s-1" in plain and "srun" not in plain


def test_git_in_a_directory_removed_meanwhile_is_a_git_failure_not_a_missing_git(tmp_path):
    """A worktree another command just removed: `status` must not say that git is missing."""
    from git_gpuspace.git import worktrees

    result = worktrees.git("status", "--porcelain", cwd=tmp_path / "gone", in_worktree=True)
    assert result.returncode == 128 and "cannot change to" in result.stderr
