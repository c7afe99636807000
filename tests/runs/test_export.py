"""`export`: each format checked by the tool that owns it: `docker-compose config` for Compose,
kubernetes-validate for Kubernetes, `sbatch --test-only` on the test cluster (scripts/slurm-up)
for Slurm, and our own devcontainer.json reader for devcontainer.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ENGINE_REQUIRED

SLURM_CONF = Path(os.environ.get("GPUSPACE_TEST_DIR", "/var/lib/gpuspace-test")) / "slurm" / "slurm.conf"


def tool(name: str) -> str:
    found = shutil.which(name) or (str(Path(os.sys.executable).parent / name)
                                   if (Path(os.sys.executable).parent / name).exists() else None)
    if found is None:
        message = f"{name} is not installed (scripts/test installs it)"
        if ENGINE_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def bound(repo, tmp_path):
    repo.git("remote", "add", "origin", "https://example.com/lab/project.git")
    repo.ok("add", "-b", "vit", str(tmp_path / "vit"), "--gpus", "2", "--memory", "4g", "--cpus", "2", "--jupyter",
            "--no-start")
    return repo


def test_compose_of_a_worktree_is_valid_and_reserves_its_gpus_by_id(bound, tmp_path):
    out = tmp_path / "compose.yaml"
    bound.ok("export", "vit", "--to", "compose", "-o", str(out))
    checked = subprocess.run([tool("docker-compose"), "-f", str(out), "config"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    [service] = json.loads(out.read_text())["services"].values()
    [record] = [r for r in bound.status() if r["branch"] == "vit"]
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == [g["uuid"] for g in record["gpus"]]
    assert service["ports"] == [f"127.0.0.1:{record['ports'][0]['host_port']}:8888"]
    assert f"{tmp_path / 'vit'}:/workspace" in service["volumes"]
    assert service["deploy"]["resources"]["limits"] == {"memory": str(4 << 30), "cpus": "2.0"}


def test_kubernetes_pod_and_indexed_job_are_valid(bound, tmp_path):
    pod = tmp_path / "pod.yaml"
    bound.ok("export", "vit", "--to", "k8s", "-o", str(pod))
    bound.ok("sweep", "lr", "-p", "lr=0.1,0.01,0.001", "--gpus", "1", "--max-parallel", "2", "--detach", "--",
             "sh", "-c", "echo lr={lr}")
    job = tmp_path / "job.yaml"
    bound.ok("export", "lr", "--to", "k8s", "-o", str(job))
    for manifest in (pod, job):
        checked = subprocess.run([tool("kubernetes-validate"), "--strict", str(manifest)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    spec = yaml.safe_load(job.read_text())["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 3 and spec["parallelism"] == 2
    main = spec["template"]["spec"]["containers"][0]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "JOB_COMPLETION_INDEX" in main["command"][2] and "lr=0.01" in main["command"][2]
    init = spec["template"]["spec"]["initContainers"][0]["command"][2]
    assert "https://example.com/lab/project.git" in init and "checkout --detach" in init
    assert yaml.safe_load(pod.read_text())["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_sbatch_script_passes_sbatch_test_only(bound, tmp_path):
    if not SLURM_CONF.exists():
        message = "no test Slurm cluster (scripts/slurm-up brings it up)"
        if ENGINE_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    bound.ok("sweep", "bs", "-p", "bs=8,16", "--gpus", "1", "--max-parallel", "1", "--detach", "--", "echo", "{bs}")
    script = tmp_path / "bs.sbatch"
    bound.ok("export", "bs", "--to", "slurm", "-o", str(script))
    text = script.read_text()
    assert "#SBATCH --gres=gpu:1" in text and "#SBATCH --array=0-1%1" in text and "SLURM_JOB_GPUS" in text
    checked = subprocess.run([tool("sbatch"), "--test-only", str(script)], capture_output=True, text=True,
                             env={**os.environ, "SLURM_CONF": str(SLURM_CONF)})
    assert checked.returncode == 0 and "to start at" in checked.stderr, checked.stderr


def test_devcontainer_json_is_read_back_by_our_reader(bound, tmp_path):
    from git_gpuspace.devcontainer import parser as devcontainer

    folder = tmp_path / "exported" / ".devcontainer"
    folder.mkdir(parents=True)
    bound.ok("export", "vit", "--to", "devcontainer", "-o", str(folder / "devcontainer.json"))
    config = json.loads((folder / "devcontainer.json").read_text())
    assert config["forwardPorts"] == [8888] and config["runArgs"][:1] == ["--gpus"]
    path, root = folder / "devcontainer.json", tmp_path / "exported"
    parsed = devcontainer.load(path, devcontainer.read(path, root, root), root, root, trust=True)
    assert parsed.image == config["image"] and parsed.layer.get("memory") == str(4 << 30)


def test_export_of_something_unknown_is_one_line(repo):
    result = repo.gs("export", "nothing-here", "--to", "compose")
    assert result.returncode == 2 and "is no run, sweep or worktree here" in result.stderr
    result = repo.gs("export", "main", "--to", "k8s")
    assert result.returncode == 2 and "clones the commit from a remote" in result.stderr
