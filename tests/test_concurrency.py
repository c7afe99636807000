"""Concurrent adds on a small GPU pool stay exclusive, within one repo and across repos."""

from __future__ import annotations

import os
import subprocess

from conftest import fake_gpu_uuids


def _start_add(repo, branch, path):
    return subprocess.Popen(
        ["git-gpuspace", "add", "-b", branch, str(path), "--gpus", "1"],
        cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(processes):
    return [(p, *p.communicate(timeout=300)) for p in processes]


def test_concurrent_adds_in_one_repo(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    processes = [_start_add(repo, f"c{i}", tmp_path / "wts" / f"c{i}") for i in range(6)]
    results = _finish(processes)
    winners = [p for p, out, err in results if p.returncode == 0]
    losers = [(p, err) for p, out, err in results if p.returncode != 0]
    assert len(winners) == 2
    assert len(losers) == 4
    assert all(p.returncode == 1 and "0 free" in err and "Traceback" not in err for p, err in losers)

    held = [c.labels["gpuspace.gpus"] for c in repo.containers()]
    assert sorted(held) == sorted(fake_gpu_uuids())  # both GPUs, each once
    bound = [r for r in repo.status() if r["state"] == "running"]
    assert len(bound) == 2
    # refused adds left no worktree, branch or admin dir behind
    assert sorted(os.listdir(tmp_path / "wts")) == sorted(os.path.basename(r["path"]) for r in bound)
    assert repo.branches() == {"main", "feature/resnet50"} | {r["branch"] for r in bound}
    assert len(os.listdir(repo.common_dir / "worktrees")) == 2


def test_concurrent_adds_across_two_repos(repo, other_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    processes = []
    for i in range(3):
        processes.append(_start_add(repo, f"a{i}", tmp_path / "a" / f"a{i}"))
        processes.append(_start_add(other_repo, f"b{i}", tmp_path / "b" / f"b{i}"))
    results = _finish(processes)
    assert sum(p.returncode == 0 for p, _, _ in results) == 2
    held = [c.labels["gpuspace.gpus"] for c in repo.containers() + other_repo.containers()]
    assert sorted(held) == sorted(fake_gpu_uuids())
