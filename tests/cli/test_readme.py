"""The README's quickstart, run as written (with the local test image for the PyTorch one)."""

from __future__ import annotations

import json
import re
import subprocess

from conftest import ROOT, TEST_IMAGE
from helpers import git

README_IMAGE = "pytorch/pytorch:2.7.0-cuda12.6-cudnn9-runtime"


def quickstart() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quickstart"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_runs(tmp_path, docker_client):
    lines = quickstart()
    assert lines[0] == "cd my-ml-repo"
    project = tmp_path / "my-ml-repo"
    project.mkdir()
    git("init", "-q", "-b", "main", cwd=project)
    (project / "train.py").write_text("print('train')\n")
    git("add", ".", cwd=project)
    git("commit", "-q", "-m", "first", cwd=project)
    script = "set -ex\n" + "\n".join(line.replace(README_IMAGE, TEST_IMAGE) for line in lines)
    try:
        result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "running" in result.stdout and "lab?token=" in result.stdout
        assert "GPU 0: Fake H200" in result.stdout  # exec
        assert "pass" in result.stdout  # check
        left = json.loads(subprocess.run(["git-gpuspace", "status", "--json"], cwd=project, capture_output=True,
                                         text=True, check=True).stdout)
        assert [r["state"] for r in left] == ["none"]  # only main is left, unbound
    finally:
        for container in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": f"gpuspace.repo={project / '.git'}"}):
            container.remove(force=True)
