"""What an untrusted devcontainer.json may take from the host is bounded: /dev/shm is memory and
is refused beyond the host's, as --memory is; more than one GPU is named before it is claimed."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TEST_IMAGE, fake_gpu_uuids
from helpers import commit_devcontainer, container_of

from git_gpuspace import settings
from git_gpuspace.devcontainer.parser import Devcontainer
from git_gpuspace.specs import format_size, host_memory


def beyond_host_memory() -> str:
    return f"{(host_memory() >> 30) * 2 + 1}g"


def errors_of(result) -> list[str]:
    """The refusal's lines: the error, and at most its hint (after git's own "Preparing worktree"
    line, which `add` prints before a refusal as `git worktree add` does)."""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("Preparing worktree (")]
    assert len(lines) <= 2 and all(line.startswith(("git-gpuspace: error: ", "hint: ")) for line in lines), result.stderr
    return lines


def test_a_huge_shm_size_from_an_untrusted_file_is_refused_and_a_sane_one_applied(repo, tmp_path):
    huge = beyond_host_memory()
    commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE, "runArgs": [f"--shm-size={huge}"],
                                          "postCreateCommand": "true"}))
    wts = tmp_path / "wts"
    before = repo.snapshot(wts)
    refused = repo.gs("add", "-b", "shm", str(wts / "shm"), "--gpus", "none")
    assert refused.returncode == 2
    error, hint = errors_of(refused)
    assert error == (f"git-gpuspace: error: devcontainer.json runArgs --shm-size {huge} is more than this host's memory "
                     f"({format_size(host_memory())})")
    assert "--shm-size SIZE" in hint
    assert repo.snapshot(wts) == before and "shm" not in repo.branches()

    # the flag wins over the file, and is bounded the same way
    flag = repo.gs("add", "-b", "flag", str(wts / "flag"), "--gpus", "none", "--shm-size", huge)
    assert flag.returncode == 2 and errors_of(flag)[0].startswith(f"git-gpuspace: error: --shm-size {huge} is more")
    assert repo.snapshot(wts) == before
    repo.ok("add", "-b", "over", str(wts / "over"), "--gpus", "none", "--shm-size", "512m")
    assert container_of(repo, "over").attrs["HostConfig"]["ShmSize"] == 512 << 20

    # a sane size from the untrusted file is applied
    commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE, "runArgs": ["--shm-size", "1g"]}))
    repo.ok("add", "-b", "sane", str(wts / "sane"), "--gpus", "none")
    assert container_of(repo, "sane").attrs["HostConfig"]["ShmSize"] == 1 << 30


def gpu_notices(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "hostRequirements.gpu" in line]


def test_more_than_one_gpu_asked_by_an_untrusted_file_is_named_before_it_is_claimed(repo, tmp_path, monkeypatch):
    commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE, "hostRequirements": {"gpu": 3}}))
    added = repo.ok("add", "-b", "three", str(tmp_path / "three"))
    [notice] = gpu_notices(added)
    assert notice == (f"git-gpuspace: devcontainer.json is not trusted and asks for 3 GPUs (hostRequirements.gpu), so "
                      f"3 will be claimed; pass --gpus N to claim fewer, or review the file and run "
                      f"`git gpuspace trust {tmp_path / 'three'}` to accept it")
    claimed = container_of(repo, "three").attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"]
    assert len(claimed) == 3 and set(claimed) <= set(fake_gpu_uuids())

    # named before the claim: a claim that cannot be made still comes after the notice
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    short = repo.gs("add", "-b", "short", str(tmp_path / "short"))
    assert short.returncode != 0 and len(gpu_notices(short)) == 1
    assert short.stderr.index("hostRequirements.gpu") < short.stderr.index("git-gpuspace: error: ")
    monkeypatch.setenv("FAKE_GPU_COUNT", "4")

    # --gpus overrides the file: nothing to name; a trusted file is the user's choice
    one = repo.ok("add", "-b", "one", str(tmp_path / "one"), "--gpus", "1")
    assert gpu_notices(one) == []
    assert len(container_of(repo, "one").attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"]) == 1
    repo.ok("remove", str(tmp_path / "three"))
    trusted = repo.ok("add", "-b", "trusted", str(tmp_path / "trusted"), "--trust")
    assert gpu_notices(trusted) == []


def test_only_an_untrusted_count_above_one_without_a_flag_is_named():
    def named(gpu, trusted=False, flags=None):
        return settings._asks_for_gpus(Devcontainer(path=Path("d.json"), gpu=gpu, trusted=trusted), flags or {})

    assert named(2) and named(8)
    assert not any([named(1), named(0), named(True), named("optional"), named(None), named(2, trusted=True),
                    named(2, flags={"gpus": "1"})])
