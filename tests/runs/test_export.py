"""`export`: each format checked by the tool that owns it: `docker-compose config` for Compose,
kubernetes-validate for Kubernetes, `sbatch --test-only` on the test cluster (scripts/slurm-up)
for Slurm, and our own devcontainer.json reader for devcontainer.json. Engine-free, each document
is compared whole with what a Target of Tasks promises, and the shell an sbatch script or a Job
runs is run with `sh` to see the arguments and environment each run's command gets."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ENGINE_REQUIRED
from git_gpuspace.export import Target, Task, compose, devcontainer, gpus_value, kubernetes, sbatch

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


# ---------------------------------------------------------------- engine-free: each document whole, from a Target

USER = f"{os.getuid()}:{os.getgid()}"
GIB = 1 << 30


def binding(**changes) -> Target:
    """A bound worktree's container: two GPUs by id, Jupyter on loopback, limits, a cache."""
    fields = dict(name="gs-vit", image="lab/img:1", worktree="/w/vit", commit="c0ffee", env={"A": "1", "PRICE": "$5"},
                  data_dir="/d/vit", gpus=["GPU-a", "GPU-b"], ports=[("jupyter", 8888, 49001, "127.0.0.1")],
                  memory_bytes=4 * GIB, cpus=2.5, shm_bytes=GIB, caches=[("/c/hf", "/cache/hf")])
    return Target(**{**fields, **changes})


def sweep_tasks(commits=("c1", "c2", "c3")) -> list[Task]:
    """Three runs of sweep `lr`: each its worktree, commit, command, parameter and data dir;
    GPUSPACE_SWEEP and HF_HOME the same in all, DEBUG the same in two of them only."""
    tasks = []
    for index, (lr, commit) in enumerate(zip(["0.1", "0.01", "0.001"], commits)):
        env = {"GPUSPACE_RUN": f"lr-{index}", "GPUSPACE_SWEEP": "lr", "GPUSPACE_PARAM_LR": lr, "HF_HOME": "/cache/hf",
               "DEBUG": "1" if index else "0"}
        tasks.append(Task(f"/w/lr-{index}", commit, ["python", "train.py", "--lr", lr, "--note", "a b $x"], env,
                          f"/d/lr-{index}", f"lr-{index}"))
    return tasks


def manifest(text: str) -> tuple[list[str], dict]:
    """A Kubernetes manifest: its opening comment lines and its JSON document."""
    lines = text.split("\n")
    comments = [line for line in lines if line.startswith("#")]
    document = "\n".join(line for line in lines if not line.startswith("#"))
    assert text == "\n".join(comments) + "\n" + document
    return comments, json.loads(document)


def as_json(text: str) -> dict:
    """A JSON document written as the export writes it: indented by two, a final newline."""
    document = json.loads(text)
    assert text == json.dumps(document, indent=2) + "\n"
    return document


def test_a_target_of_commands_is_one_task_per_command_sharing_worktree_env_and_data_dir():
    env = {"K": "v"}
    target = Target(name="n", image="i", worktree="/w", commit="c", commands=[["a"], ["b", "c"]], env=env, data_dir="/d")
    assert target.tasks == [Task("/w", "c", ["a"], {"K": "v"}, "/d", "n"), Task("/w", "c", ["b", "c"], {"K": "v"}, "/d", "n")]
    assert target.sweep
    target.tasks[0].env["K"] = "changed"
    assert target.tasks[1].env == {"K": "v"} and env == {"K": "v"}
    idle = Target(name="n", image="i", worktree="/w", commit="c")
    assert idle.tasks == [Task("/w", "c", None, {}, None, "n")] and not idle.sweep
    given = [Task("/x", "y")]
    assert Target(name="n", image="i", tasks=given, commands=[["a"]]).tasks == given


def test_docker_gpus_value_is_a_quoted_device_list_or_a_count():
    assert gpus_value(["GPU-a", "GPU-b"], 0) == '"device=GPU-a,GPU-b"'
    assert gpus_value(["GPU-a"], 3) == "device=GPU-a"
    assert gpus_value([], 2) == "2"
    assert gpus_value([], 0) is None


def test_compose_of_a_binding_reserves_its_gpus_by_id_and_publishes_its_ports_on_loopback():
    document = as_json(compose(binding()))
    assert document == {"version": "3.8", "services": {"gs-vit": {
        "image": "lab/img:1",
        "working_dir": "/workspace",
        "init": True,
        "user": USER,
        "volumes": ["/w/vit:/workspace", "/d/vit:/data", "/c/hf:/cache/hf"],
        "environment": {"A": "1", "PRICE": "$$5"},
        "ports": ["127.0.0.1:49001:8888"],
        "shm_size": str(GIB),
        "deploy": {"resources": {
            "reservations": {"devices": [{"driver": "nvidia", "capabilities": ["gpu"], "device_ids": ["GPU-a", "GPU-b"]}]},
            "limits": {"memory": str(4 * GIB), "cpus": "2.5"}}},
    }}}


def test_compose_of_a_sweep_is_a_service_per_run_with_its_own_worktree_command_env_and_data_dir():
    tasks = sweep_tasks()
    document = as_json(compose(Target(name="lr", image="img", tasks=tasks, gpu_count=1)))

    def service(index: int) -> dict:
        task = tasks[index]
        return {"image": "img", "working_dir": "/workspace", "init": True, "user": USER,
                "volumes": [f"/w/lr-{index}:/workspace", f"/d/lr-{index}:/data"],
                "environment": dict(task.env),
                "command": ["python", "train.py", "--lr", task.env["GPUSPACE_PARAM_LR"], "--note", "a b $$x"],
                "deploy": {"resources": {"reservations": {"devices": [
                    {"driver": "nvidia", "capabilities": ["gpu"], "count": 1}]}}}}

    assert document == {"version": "3.8", "services": {"lr-0": service(0), "lr-1": service(1), "lr-2": service(2)}}


def test_compose_without_gpus_reserves_none_and_limits_only_what_is_set():
    cpus_only = Target(name="w", image="img", worktree="/w", commit="c", cpus=1.5)
    assert as_json(compose(cpus_only))["services"]["w"] == {
        "image": "img", "working_dir": "/workspace", "init": True, "user": USER, "volumes": ["/w:/workspace"],
        "environment": {}, "deploy": {"resources": {"limits": {"cpus": "1.5"}}}}
    memory_only = Target(name="w", image="img", worktree="/w", commit="c", memory_bytes=GIB, commands=[["true"]])
    assert as_json(compose(memory_only))["services"]["w"]["deploy"] == {"resources": {"limits": {"memory": str(GIB)}}}
    assert as_json(compose(memory_only))["services"]["w"]["command"] == ["true"]
    plain = as_json(compose(Target(name="w", image="img", worktree="/w", commit="c")))["services"]["w"]
    assert "deploy" not in plain and "command" not in plain and "ports" not in plain and "shm_size" not in plain


def test_devcontainer_of_a_binding_has_its_gpus_limits_mounts_ports_and_environment():
    document = as_json(devcontainer(binding(data_dir="/d/a,b")))
    assert document == {
        "name": "gs-vit",
        "image": "lab/img:1",
        "workspaceMount": "source=${localWorkspaceFolder},target=/workspace,type=bind",
        "workspaceFolder": "/workspace",
        "mounts": ['type=bind,"source=/d/a,b",target=/data', "type=bind,source=/c/hf,target=/cache/hf"],
        "runArgs": ["--gpus", '"device=GPU-a,GPU-b"', "--memory", str(4 * GIB), "--cpus", "2.5", "--shm-size", str(GIB)],
        "forwardPorts": [8888],
        "containerEnv": {"A": "1", "PRICE": "$5"},
    }


def test_devcontainer_of_a_run_asks_for_a_count_of_gpus_or_none():
    run = Target(name="run-1", image="img", worktree="/w", commit="c", commands=[["python", "x.py"]], gpu_count=2,
                 env={"GPUSPACE_RUN": "run-1"})
    assert as_json(devcontainer(run)) == {
        "name": "run-1", "image": "img",
        "workspaceMount": "source=${localWorkspaceFolder},target=/workspace,type=bind", "workspaceFolder": "/workspace",
        "mounts": [], "runArgs": ["--gpus", "2"], "forwardPorts": [], "containerEnv": {"GPUSPACE_RUN": "run-1"}}
    assert as_json(devcontainer(Target(name="w", image="img", worktree="/w", commit="c")))["runArgs"] == []
    with pytest.raises(ValueError):
        devcontainer(Target(name="lr", image="img", tasks=sweep_tasks()))


K8S_NOTE = "# /data is a PersistentVolumeClaim of yours: replace claimName CHANGE-ME below with its name"


def test_kubernetes_pod_of_a_binding_clones_its_commit_and_keeps_its_container_up():
    comments, document = manifest(kubernetes(binding(remote="https://example.com/lab/my project.git", caches=[])))
    assert comments == [K8S_NOTE, "# (`kubectl get pvc`); each run keeps its /data in a folder of its own there (gs-vit)."]
    assert document == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gs-vit"}, "spec": {
        "initContainers": [{
            "name": "checkout", "image": "alpine/git:2.45.2",
            "command": ["sh", "-c", "git clone --no-checkout 'https://example.com/lab/my project.git' /workspace && "
                                    "git -C /workspace checkout --detach c0ffee"],
            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]}],
        "containers": [{
            "name": "main", "image": "lab/img:1", "workingDir": "/workspace",
            "env": [{"name": "A", "value": "1"}, {"name": "PRICE", "value": "$$5"}],
            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"},
                             {"name": "data", "mountPath": "/data", "subPath": "gs-vit"},
                             {"name": "cache", "mountPath": "/cache"},
                             {"name": "shm", "mountPath": "/dev/shm"}],
            "resources": {"limits": {"nvidia.com/gpu": "2", "memory": str(4 * GIB), "cpu": "2.5"}},
            "command": ["sleep", "infinity"]}],
        "volumes": [{"name": "workspace", "emptyDir": {}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "CHANGE-ME"}},
                    {"name": "cache", "emptyDir": {}},
                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(GIB)}}],
        "restartPolicy": "Always"}}


def test_kubernetes_pod_of_a_run_runs_its_command_once_with_its_data_in_its_own_folder():
    task = Task("/w/run", "abc123", ["sh", "-c", "echo $HOME"], {"GPUSPACE_RUN": "Run_7"}, "/d/run", "Run_7")
    comments, document = manifest(kubernetes(Target(name="exp", image="img", tasks=[task], gpu_count=1)))
    assert comments[1] == "# (`kubectl get pvc`); each run keeps its /data in a folder of its own there (run-7)."
    spec = document["spec"]
    assert document["metadata"] == {"name": "exp"} and spec["restartPolicy"] == "Never"
    assert spec["initContainers"][0]["command"] == [
        "sh", "-c", "git clone --no-checkout '' /workspace && git -C /workspace checkout --detach abc123"]
    assert spec["containers"][0] == {
        "name": "main", "image": "img", "workingDir": "/workspace", "env": [{"name": "GPUSPACE_RUN", "value": "Run_7"}],
        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"},
                         {"name": "data", "mountPath": "/data", "subPath": "run-7"},
                         {"name": "cache", "mountPath": "/cache"}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
        "command": ["sh", "-c", "echo $$HOME"]}
    assert spec["volumes"] == [{"name": "workspace", "emptyDir": {}},
                               {"name": "data", "persistentVolumeClaim": {"claimName": "CHANGE-ME"}},
                               {"name": "cache", "emptyDir": {}}]
    unnamed = Task("/w/run", "abc123", ["true"])
    _, document = manifest(kubernetes(Target(name="exp", image="img", tasks=[unnamed], memory_bytes=GIB)))
    assert document["spec"]["containers"][0]["volumeMounts"][1] == {"name": "data", "mountPath": "/data", "subPath": "exp"}
    assert document["spec"]["containers"][0]["resources"] == {"limits": {"memory": str(GIB)}}
    _, document = manifest(kubernetes(Target(name="exp", image="img", tasks=[unnamed])))
    assert "resources" not in document["spec"]["containers"][0]


@pytest.mark.parametrize("name, expected", [("Team_Run.V2--", "team-run-v2"), ("-x-", "x"), ("__", "gpuspace"),
                                            ("a" * 62 + "_b", "a" * 62), ("b" * 70, "b" * 63)])
def test_kubernetes_names_are_lowercase_dns_labels(name, expected):
    _, document = manifest(kubernetes(Target(name=name, image="img", worktree="/w", commit="c")))
    assert document["metadata"]["name"] == expected
    assert document["spec"]["containers"][0]["volumeMounts"][1]["subPath"] == expected


def k8s_shell(text: str, index: int) -> subprocess.CompletedProcess:
    """Run a container's `sh -c` text as Kubernetes would for Job index `index` (`$$` is one `$`)."""
    return subprocess.run(["sh", "-c", text.replace("$$", "$")], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "JOB_COMPLETION_INDEX": str(index)})


def test_kubernetes_indexed_job_of_a_sweep_gives_each_index_its_run():
    tasks = sweep_tasks()
    comments, document = manifest(kubernetes(Target(name="LR", image="img", tasks=tasks, gpu_count=1, max_parallel=2,
                                                    remote="https://example.com/lab/project.git")))
    assert comments == [K8S_NOTE, "# (`kubectl get pvc`); each run keeps its /data in a folder of its own there (lr/<index>)."]
    template = document["spec"].pop("template")
    assert document == {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "lr"}, "spec": {
        "completionMode": "Indexed", "completions": 3, "parallelism": 2, "backoffLimitPerIndex": 0, "maxFailedIndexes": 3}}
    spec = template["spec"]
    [checkout], [main] = spec.pop("initContainers"), spec.pop("containers")
    assert spec == {"volumes": [{"name": "workspace", "emptyDir": {}},
                                {"name": "data", "persistentVolumeClaim": {"claimName": "CHANGE-ME"}},
                                {"name": "cache", "emptyDir": {}}],
                    "restartPolicy": "Never"}
    assert checkout["command"] == ["sh", "-c",
                                   'case "$${JOB_COMPLETION_INDEX:-}" in 0) commit=c1 ;; 1) commit=c2 ;; 2) commit=c3 ;; '
                                   '*) echo "no run for index $${JOB_COMPLETION_INDEX:-}" >&2; exit 2 ;; esac; '
                                   "git clone --no-checkout https://example.com/lab/project.git /workspace && "
                                   "git -C /workspace checkout --detach $$commit"]
    [sh, dash_c, script] = main.pop("command")
    assert main == {"name": "main", "image": "img", "workingDir": "/workspace",
                    "env": [{"name": "GPUSPACE_SWEEP", "value": "lr"}, {"name": "HF_HOME", "value": "/cache/hf"}],
                    "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"},
                                     {"name": "data", "mountPath": "/data", "subPathExpr": "lr/$(JOB_COMPLETION_INDEX)"},
                                     {"name": "cache", "mountPath": "/cache"}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    assert (sh, dash_c) == ("sh", "-c")
    assert script == (
        'case "$${JOB_COMPLETION_INDEX:-}" in'
        " 0) export DEBUG=0; export GPUSPACE_PARAM_LR=0.1; export GPUSPACE_RUN=lr-0; "
        "exec python train.py --lr 0.1 --note 'a b $$x' ;;"
        " 1) export DEBUG=1; export GPUSPACE_PARAM_LR=0.01; export GPUSPACE_RUN=lr-1; "
        "exec python train.py --lr 0.01 --note 'a b $$x' ;;"
        " 2) export DEBUG=1; export GPUSPACE_PARAM_LR=0.001; export GPUSPACE_RUN=lr-2; "
        "exec python train.py --lr 0.001 --note 'a b $$x' ;;"
        ' *) echo "no run for index $${JOB_COMPLETION_INDEX:-}" >&2; exit 2 ;; esac')
    # the checkout's case picks the index's commit; an index with no run stops with a reason
    picked = k8s_shell(checkout["command"][2].split("; git clone")[0] + "; echo $$commit", 1)
    assert picked.stdout == "c2\n"
    missing = k8s_shell(checkout["command"][2], 3)
    assert missing.returncode == 2 and missing.stderr == "no run for index 3\n"


def test_kubernetes_job_runs_each_command_with_its_arguments_and_environment_whole():
    command = ["sh", "-c", 'printf "%s\\n" "$GPUSPACE_RUN" "$GPUSPACE_PARAM_MSG" "$@"', "argv0",
               "a b", "it's", "$HOME", '"q"']
    tasks = [Task("/w", "c", command, {"GPUSPACE_RUN": f"r-{i}", "GPUSPACE_PARAM_MSG": f"x {i} $y"}) for i in range(2)]
    _, document = manifest(kubernetes(Target(name="s", image="img", tasks=tasks)))
    spec = document["spec"]
    assert spec["parallelism"] == 2 and spec["template"]["spec"]["initContainers"][0]["command"][2].endswith(
        "checkout --detach c")
    assert spec["template"]["spec"]["containers"][0]["env"] == []
    ran = k8s_shell(spec["template"]["spec"]["containers"][0]["command"][2], 1)
    assert ran.returncode == 0 and ran.stdout.split("\n") == ["r-1", "x 1 $y", "a b", "it's", "$HOME", '"q"', ""]


def test_kubernetes_job_index_without_a_command_keeps_its_container_up():
    tasks = [Task("/w", "c", ["true"]), Task("/w", "c")]
    _, document = manifest(kubernetes(Target(name="s", image="img", tasks=tasks)))
    assert document["spec"]["template"]["spec"]["containers"][0]["command"][2] == (
        'case "$${JOB_COMPLETION_INDEX:-}" in 0) exec true ;; 1) exec sleep infinity ;;'
        ' *) echo "no run for index $${JOB_COMPLETION_INDEX:-}" >&2; exit 2 ;; esac')


FAKE_DOCKER = '#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n'


def run_sbatch(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run an sbatch script as its job would, with a `docker` that prints its arguments, one a line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    return subprocess.run(["sh", str(path)], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}", **env})


def test_sbatch_script_of_a_run_is_its_options_then_one_docker_run():
    target = Target(name="run-1", image="lab/img:1", worktree="/w/a b", commit="c1", commands=[["python", "train.py"]],
                    env={"GPUSPACE_RUN": "run-1", "HF_HOME": "/cache/hf"}, data_dir="/d/run-1", gpu_count=2,
                    memory_bytes=4 * GIB, cpus=2.5, shm_bytes=GIB, caches=[("/c/hf", "/cache/hf"), ("/c/x y", "/cache/x")],
                    priority=5, slurm={"slurm.partition": "gpu"}, preemptible=True, grace=60, max_parallel=4)
    assert sbatch(target) == """#!/bin/sh
#SBATCH --job-name=run-1
#SBATCH --gres=gpu:2
#SBATCH --cpus-per-task=3
#SBATCH --mem=4096M
#SBATCH --partition=gpu
#SBATCH --nice=-5
#SBATCH --requeue
#SBATCH --signal=B:TERM@60
set -eu
image=lab/img:1
# Docker reads --gpus as CSV fields: a list of devices is one field, quoted
gpus=""
[ -z "${SLURM_JOB_GPUS:-}" ] || gpus="\\"device=$SLURM_JOB_GPUS\\""
mkdir -p /c/hf '/c/x y'
# a run: its data dir (made if missing), then its mounts, its own environment, the image, its command
task() {
  [ -z "$1" ] || mkdir -p "$1"
  shift
  exec docker run --rm --init --user "$(id -u):$(id -g)" ${gpus:+--gpus "$gpus"} -w /workspace \
--mount type=bind,source=/c/hf,target=/cache/hf --mount 'type=bind,source=/c/x y,target=/cache/x' \
--memory 4294967296 --cpus 2.5 --shm-size 1073741824 -e GPUSPACE_RUN=run-1 -e HF_HOME=/cache/hf "$@"
}
task /d/run-1 --mount 'type=bind,source=/w/a b,target=/workspace' --mount type=bind,source=/d/run-1,target=/data \
"$image" python train.py
"""


def test_sbatch_script_of_an_idle_worktree_without_limits_sleeps_in_it():
    target = Target(name="w", image="img", worktree="/w", commit="c", gpus=["GPU-a"])
    assert sbatch(target).split("\n")[1:3] == ["#SBATCH --job-name=w", "#SBATCH --gres=gpu:1"]
    assert sbatch(target).endswith("""
task() {
  [ -z "$1" ] || mkdir -p "$1"
  shift
  exec docker run --rm --init --user "$(id -u):$(id -g)" ${gpus:+--gpus "$gpus"} -w /workspace "$@"
}
task '' --mount type=bind,source=/w,target=/workspace "$image" sleep infinity
""")
    assert "mkdir -p /" not in sbatch(target) and "#SBATCH --array" not in sbatch(target)


def test_sbatch_job_runs_the_container_with_the_gpus_slurm_gave_it(tmp_path):
    data = tmp_path / "data dir"
    target = Target(name="run-1", image="img:1", worktree="/w", commit="c", commands=[["echo", "hi"]],
                    data_dir=str(data), caches=[(str(tmp_path / "cache" / "hf"), "/cache/hf")])
    ran = run_sbatch(sbatch(target), tmp_path, SLURM_JOB_GPUS="0,2")
    assert ran.returncode == 0, ran.stderr
    uid_gid = f"{os.getuid()}:{os.getgid()}"
    assert ran.stdout.split("\n") == [
        "run", "--rm", "--init", "--user", uid_gid, "--gpus", '"device=0,2"', "-w", "/workspace",
        "--mount", f"type=bind,source={tmp_path}/cache/hf,target=/cache/hf",
        "--mount", "type=bind,source=/w,target=/workspace", "--mount", f"type=bind,source={data},target=/data",
        "img:1", "echo", "hi", ""]
    assert data.is_dir() and (tmp_path / "cache" / "hf").is_dir()
    without = run_sbatch(sbatch(target), tmp_path)
    assert without.returncode == 0 and "--gpus" not in without.stdout.split("\n")


def test_sbatch_job_array_task_index_picks_the_run_with_its_arguments_environment_and_data_dir(tmp_path):
    tasks = [Task(f"/w/lr-{index}", f"c{index}", ["train", "--lr", lr, "--note", "a b", "it's \"$HOME\""],
                  {"GPUSPACE_RUN": f"lr-{index}", "GPUSPACE_SWEEP": "lr", "GPUSPACE_PARAM_LR": lr,
                   "DEBUG": "1" if index else "0"},
                  str(tmp_path / f"lr-{index}"), f"lr-{index}")
             for index, lr in enumerate(["0.1", "0.01", "0.001"])]
    script = sbatch(Target(name="lr", image="img", tasks=tasks, gpu_count=1, max_parallel=2))
    assert "\n#SBATCH --array=0-2%2\n" in script
    assert f'case "${{SLURM_ARRAY_TASK_ID:-}}" in\n0) task {tmp_path}/lr-0 ' in script
    ran = run_sbatch(script, tmp_path, SLURM_ARRAY_TASK_ID="1")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split("\n") == [
        "run", "--rm", "--init", "--user", f"{os.getuid()}:{os.getgid()}", "-w", "/workspace",
        "-e", "GPUSPACE_SWEEP=lr",
        "--mount", "type=bind,source=/w/lr-1,target=/workspace", "--mount", f"type=bind,source={tmp_path}/lr-1,target=/data",
        "-e", "DEBUG=1", "-e", "GPUSPACE_PARAM_LR=0.01", "-e", "GPUSPACE_RUN=lr-1",
        "img", "train", "--lr", "0.01", "--note", "a b", "it's \"$HOME\"", ""]
    assert (tmp_path / "lr-1").is_dir() and not (tmp_path / "lr-0").exists()
    missing = run_sbatch(script, tmp_path, SLURM_ARRAY_TASK_ID="3")
    assert missing.returncode == 2 and missing.stdout == "" and missing.stderr == "no run for index 3\n"
    assert script.endswith('\n*) echo "no run for index ${SLURM_ARRAY_TASK_ID:-}" >&2; exit 2 ;;\nesac\n')
    assert shlex.split(script.split("\n2) ")[1].split(" ;;")[0])[-6:] == [
        "train", "--lr", "0.001", "--note", "a b", "it's \"$HOME\""]
