"""`export` reproduces what it exports, proved by running what it writes on the test engine:
the devcontainer.json's runArgs and mounts with `docker run`, the Compose file with
`docker-compose up`, the sbatch script with `sbatch` on the test cluster, and the Kubernetes
Indexed Job's init and main containers with the manifest's commands, environment and volumes.
Each run must see its own worktree, its parameters (GPUSPACE_*), the shared caches (HF_HOME)
and a /data that outlives it, with two GPUs where it asks for two."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import TEST_IMAGE, slurm_cluster
from test_export import tool

# What each run's command prints and keeps: its environment, its worktree's marker, its GPUs.
PROBE = ("echo pid=$$ run=$GPUSPACE_RUN sweep=$GPUSPACE_SWEEP lr=$GPUSPACE_PARAM_LR hf=$HF_HOME "
         "gpus=$NVIDIA_VISIBLE_DEVICES which=$(cat /workspace/which 2>/dev/null); echo {lr} >> /data/out.txt")


def runs(repo, *args) -> list[dict]:
    return json.loads(repo.ok("runs", "--json", *args).stdout)


def sweep(repo, *flags: str) -> list[dict]:
    """A sweep of two runs that asks for two GPUs each, run here to its end; each run's worktree
    then gets a marker of its own (the export must mount that worktree, not another)."""
    repo.ok("sweep", "lr", "-p", "lr=0.1,0.2", "--gpus", "2", *flags, "--", "sh", "-c", PROBE)
    records = runs(repo, "--sweep", "lr")
    assert [r["state"] for r in records] == ["succeeded", "succeeded"], records
    for record in records:
        Path(record["worktree"], "which").write_text(record["id"] + "\n")
    return records


def probed(text: str, record: dict) -> str:
    [line] = [line for line in text.splitlines() if f"run={record['id']} " in line]
    assert re.search(r"\bpid=\d+ ", line), line  # the shell's own `$$`, not taken by the tool's interpolation
    return line


def expect(line: str, record: dict, gpus: str) -> None:
    lr = record["params"]["lr"]
    assert f"sweep=lr lr={lr} hf=/cache/huggingface gpus={gpus} which={record['id']}" in line, line


def test_devcontainer_runargs_start_a_container_with_its_two_gpus(repo, tmp_path):
    repo.ok("add", "-b", "pair", str(tmp_path / "pair"), "--gpus", "2", "--no-start")
    [record] = [r for r in repo.status() if r["branch"] == "pair"]
    out = tmp_path / "devcontainer.json"
    repo.ok("export", "pair", "--to", "devcontainer", "-o", str(out))
    config = json.loads(out.read_text())
    uuids = [gpu["uuid"] for gpu in record["gpus"]]
    # what a devcontainer CLI runs: the folder at /workspace, then mounts, environment and runArgs
    started = subprocess.run(
        ["docker", "run", "--rm", "--mount", f"type=bind,source={tmp_path / 'pair'},target=/workspace",
         *(word for mount in config["mounts"] for word in ("--mount", mount)),
         *(word for key, value in config["containerEnv"].items() for word in ("-e", f"{key}={value}")),
         *config["runArgs"], config["image"],
         "sh", "-c", "echo gpus=$NVIDIA_VISIBLE_DEVICES hf=$HF_HOME; touch /data/probe $HF_HOME/probe"],
        capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr  # unquoted, Docker reads GPU-b as a count: "invalid count"
    assert f"gpus={','.join(uuids)} hf=/cache/huggingface" in started.stdout
    assert config["runArgs"][:2] == ["--gpus", f'"device={",".join(uuids)}"']  # Docker's CSV quoting
    assert Path(record["data_dir"], "probe").exists()


def test_a_devcontainer_of_a_sweep_is_refused_in_one_line(repo):
    repo.ok("sweep", "lr", "-p", "lr=1,2", "--gpus", "none", "--", "true")
    result = repo.gs("export", "lr", "--to", "devcontainer")
    assert result.returncode == 2 and "is one container, and sweep 'lr' has 2 runs" in result.stderr
    assert "export lr-1 --to devcontainer" in result.stderr and "Traceback" not in result.stderr


def test_compose_up_runs_each_run_in_its_worktree_with_its_env_gpus_and_data(repo, tmp_path):
    records = sweep(repo)
    out = tmp_path / "compose.yaml"
    repo.ok("export", "lr", "--to", "compose", "-o", str(out))
    project = f"gpuspace-export-{secrets.token_hex(4)}"
    compose = [tool("docker-compose"), "-p", project, "-f", str(out)]
    try:
        up = subprocess.run([*compose, "up", "--no-color"], capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        logs = subprocess.run([*compose, "logs", "--no-color"], capture_output=True, text=True, timeout=60).stdout
    finally:
        subprocess.run([*compose, "down"], capture_output=True, timeout=120)
    for record in records:
        expect(probed(logs, record), record, "0,1")  # a count of two: the engine gives the first two
        # /data is the run's own data dir: what the run wrote there, then what the service wrote
        assert Path(record["data_dir"], "out.txt").read_text().split() == [record["params"]["lr"]] * 2


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    yield from slurm_cluster(monkeypatch, tmp_path)


def test_sbatch_array_task_runs_its_run_with_two_gpus_env_worktree_and_data(repo, tmp_path, cluster):
    records = sweep(repo)
    script = tmp_path / "lr.sbatch"
    repo.ok("export", "lr", "--to", "slurm", "-o", str(script))
    # --comment: the cluster fixture cancels this test's jobs by it, if any were left
    job = subprocess.run([tool("sbatch"), "--wait", f"--comment={tmp_path}", f"--output={tmp_path}/task-%a.out",
                          str(script)], capture_output=True, text=True, timeout=300)
    outputs = {path.name: path.read_text() for path in tmp_path.glob("task-*.out")}
    assert job.returncode == 0, job.stderr + json.dumps(outputs)
    for index, record in enumerate(records):
        # Slurm's GPUs by the node's numbering; both of them (`--gpus device=0,1` unquoted: Docker refuses)
        expect(probed(outputs[f"task-{index}.out"], record), record, "0,1")
        assert Path(record["data_dir"], "out.txt").read_text().split() == [record["params"]["lr"]] * 2


def kubelet(text: str) -> str:
    """What the kubelet makes of a command's or env value's `$$` (one `$`; `$(VAR)` is a reference)."""
    return text.replace("$$", "$")


@pytest.fixture
def origin(repo, tmp_path):
    """A bare repository as `origin`, with main pushed: the remote a Pod clones from."""
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    repo.git("remote", "add", "origin", str(bare))
    repo.git("push", "-q", "origin", "main")
    return bare


def test_kubernetes_job_of_a_dirty_sweep_warns_then_reproduces_each_run(repo, origin, tmp_path):
    (repo.path / "src" / "train.py").write_text("print('changed, not committed')\n")
    records = sweep(repo, "--gpus", "none")
    [commit] = {record["commit"] for record in records}
    manifest = tmp_path / "job.yaml"
    exported = repo.ok("export", "lr", "--to", "k8s", "-o", str(manifest))
    [warning] = [line for line in exported.stderr.splitlines() if line.startswith("warning:")]
    assert f"commit {commit[:12]} is not on origin" in warning
    push = warning.split(": ")[-1]
    assert push == f"git push origin {commit}:refs/heads/gpuspace/lr"
    checked = subprocess.run([tool("kubernetes-validate"), "--strict", str(manifest)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = manifest.read_text()
    assert text.startswith("# /data is a PersistentVolumeClaim of yours: replace claimName CHANGE-ME")
    spec = yaml.safe_load(text)["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "CHANGE-ME"}} in spec["volumes"]

    subprocess.run(shlex.split(push), cwd=repo.path, check=True, capture_output=True)  # as the warning says
    assert "warning:" not in repo.ok("export", "lr", "--to", "k8s").stderr  # now on origin

    [init], [main] = spec["initContainers"], spec["containers"]
    mounts = {mount["name"]: mount for mount in main["volumeMounts"]}
    claim = tmp_path / "claim"  # the PersistentVolumeClaim's stand-in
    # the init container's image (alpine/git) stands in as the test image, whose git is a lone
    # binary: the helper a clone runs is that binary's builtin
    helpers = tmp_path / "git-core"
    helpers.mkdir()
    (helpers / "git-upload-pack").write_text('#!/bin/sh\nexec git upload-pack "$@"\n')
    (helpers / "git-upload-pack").chmod(0o755)
    for index, record in enumerate(records):
        workspace, cache = tmp_path / f"workspace-{index}", tmp_path / f"cache-{index}"
        workspace.mkdir()
        cache.mkdir()
        data = claim / mounts["data"]["subPathExpr"].replace("$(JOB_COMPLETION_INDEX)", str(index))
        data.mkdir(parents=True)
        index_env = ["-e", f"JOB_COMPLETION_INDEX={index}"]  # what the Job controller sets
        cloned = subprocess.run(
            ["docker", "run", "--rm", *index_env, "-v", f"{workspace}:/workspace", "-v", f"{origin}:{origin}:ro",
             "-v", f"{helpers}:/usr/lib/git-core:ro", TEST_IMAGE, *map(kubelet, init["command"])],
            capture_output=True, text=True, timeout=120)
        assert cloned.returncode == 0, cloned.stderr
        env = [word for item in main["env"] for word in ("-e", f"{item['name']}={kubelet(item['value'])}")]
        ran = subprocess.run(
            ["docker", "run", "--rm", *env, *index_env, "-w", main["workingDir"],
             "-v", f"{workspace}:/workspace", "-v", f"{data}:{mounts['data']['mountPath']}",
             "-v", f"{cache}:{mounts['cache']['mountPath']}", main["image"], *map(kubelet, main["command"])],
            capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        line = probed(ran.stdout, record)
        assert f"sweep=lr lr={record['params']['lr']} hf=/cache/huggingface gpus= which=" in line, line
        assert (workspace / "src" / "train.py").read_text() == "print('changed, not committed')\n"
        assert (data / "out.txt").read_text().split() == [record["params"]["lr"]]


def docker_args(script: Path, tmp_path: Path, **slurm: str) -> list[str]:
    """The arguments the sbatch script hands `docker` (a stand-in that prints them), run as
    Slurm runs it, with `slurm` (SLURM_JOB_GPUS, SLURM_ARRAY_TASK_ID) its only Slurm variables."""
    stand_in = tmp_path / "stand-in"
    stand_in.mkdir(exist_ok=True)
    (stand_in / "docker").write_text("#!/bin/sh\nprintf '%s\\0' \"$@\"\n")
    (stand_in / "docker").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    ran = subprocess.run(["sh", str(script)], capture_output=True, timeout=60,
                         env={**env, **slurm, "PATH": f"{stand_in}{os.pathsep}{os.environ['PATH']}"})
    assert ran.returncode == 0, ran.stderr.decode()
    return ran.stdout.decode().split("\0")[:-1]


def gpus_asked(args: list[str]) -> list[str]:
    assert not [arg for arg in args if arg.startswith("--gpus") and arg != "--gpus"], args
    return [args[index + 1] for index, arg in enumerate(args) if arg == "--gpus"]


def test_sbatch_gives_the_container_the_jobs_gpus_only(repo, tmp_path):
    """The container gets the GPUs Slurm gave the job (SLURM_JOB_GPUS), none when it gave none: never all."""
    repo.ok("add", "-b", "pair", str(tmp_path / "pair"), "--gpus", "2", "--no-start")
    script = tmp_path / "pair.sbatch"
    repo.ok("export", "pair", "--to", "slurm", "-o", str(script))
    assert "device=$SLURM_JOB_GPUS" in script.read_text()
    assert gpus_asked(docker_args(script, tmp_path, SLURM_JOB_GPUS="2,3")) == ['"device=2,3"']
    assert gpus_asked(docker_args(script, tmp_path)) == []


def test_sbatch_hands_each_run_its_parameters_as_given(repo, tmp_path):
    """Values that need quoting (spaces, quotes, `$`, backquotes, `;`) reach each array task's
    command and environment as they were given."""
    values = ["two words", "it's \"quoted\"", "$HOME `id` $(id); a|b & *"]
    repo.ok("sweep", "msg", "-p", "msg=" + ",".join(values), "--gpus", "none", "--", "printf", "[%s]\\n", "{msg}")
    records = runs(repo, "--sweep", "msg")
    assert sorted(record["params"]["msg"] for record in records) == sorted(values)
    script = tmp_path / "msg.sbatch"
    repo.ok("export", "msg", "--to", "slurm", "-o", str(script))
    for index, record in enumerate(records):
        value = record["params"]["msg"]
        args = docker_args(script, tmp_path, SLURM_ARRAY_TASK_ID=str(index))
        assert args[-4:] == [TEST_IMAGE, "printf", "[%s]\\n", value], args
        assert f"GPUSPACE_PARAM_MSG={value}" in args, args
