"""scripts/devcontainer-reference, on a tiny checkout of three made-up fixtures (two made, one
refused), so the tool keeps working between runs against the real devcontainers/cli checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import ROOT, TEST_IMAGE


def test_the_tool_runs_a_fixture_and_names_a_refusal(tmp_path, docker_client):
    configs = tmp_path / "cli" / "src" / "test" / "configs"
    (configs / "works").mkdir(parents=True)
    (configs / "works" / ".devcontainer.json").write_text(json.dumps({"image": "ubuntu:latest"}))
    (configs / "refused" / ".devcontainer").mkdir(parents=True)
    (configs / "refused" / ".devcontainer" / "devcontainer.json").write_text(json.dumps(
        {"image": "ubuntu:latest", "mounts": ["type=bind,source=relative,target=/x"]}))
    (configs / "lockfile-skipped").mkdir()
    (configs / "lockfile-skipped" / ".devcontainer.json").write_text("{}")
    # the image's `vscode` (uid 1000) writes the workspace: it can when the host user is not root
    # (its uid becomes theirs), so as root the tool runs as a user of its own
    (configs / "vscode-writes").mkdir()
    (configs / "vscode-writes" / ".devcontainer.json").write_text(json.dumps(
        {"image": "mcr.microsoft.com/devcontainers/base:ubuntu", "postCreateCommand": "touch made-by-vscode"}))
    # the tool's user must reach its temp dir: not under pytest's tmp_path (in root's 0700 folder)
    scratch = Path(tempfile.mkdtemp(prefix="gpuspace-reference-test-"))
    scratch.chmod(0o755)
    try:
        tool = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "devcontainer-reference"), str(tmp_path / "cli")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "GPUSPACE_TEST_IMAGE": TEST_IMAGE, "TMPDIR": str(scratch)})
        stdout, stderr = tool.communicate(timeout=300)
        left_in_scratch = list(scratch.iterdir())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = subprocess.CompletedProcess(tool.args, tool.returncode, stdout, stderr)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "git and git-gpuspace run as gpuspace-reference (uid " if os.getuid() == 0 else "git and git-gpuspace run as yourself")
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.startswith("configs/"))
    assert rows == {"configs/refused": rows["configs/refused"], "configs/works": "same",
                    "configs/vscode-writes": "same"}, result.stdout
    assert rows["configs/refused"].startswith("refused: ") and "bind mount" in rows["configs/refused"]
    assert result.stdout.rstrip().endswith("2 same, 0 differ, 1 refused, 0 crashes (3 cases)")
    # nothing left: no stand-in image, no container of its repositories
    standins = {tag for image in docker_client.images.list(name="gpuspace-reference-standin/*") for tag in image.tags}
    assert not [tag for tag in standins if f":run-{tool.pid}-" in tag]  # its stand-ins (tagged with its pid)
    assert not left_in_scratch  # its temp dir (repositories, worktrees) is gone
    assert not [c for c in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": "gpuspace.repo"})
                if c.labels["gpuspace.repo"].startswith(str(scratch))]  # its repositories' containers
