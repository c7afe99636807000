"""The ML workspace: ports, data, caches, exec/logs, check, doctor, config layers, context."""

from __future__ import annotations

import json
import os
import socket
import stat
import urllib.request

import pytest

from conftest import TEST_IMAGE, container_env, fake_gpu_uuids
from helpers import container_of

from git_gpuspace import services
from git_gpuspace.model import Binding, PortMap

NOWHERE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def by_branch(repo, branch):
    return next(r for r in repo.status() if r["branch"] == branch)


def fetch(address, port):
    with urllib.request.urlopen(f"http://{address}:{port}/", timeout=5) as response:
        return response.read().decode()


def refused(address, port):
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((address, port)) != 0


def wait_until_served(address, port, attempts=50):
    import time

    for _ in range(attempts):
        if not refused(address, port):
            return
        time.sleep(0.1)


def test_jupyter_behind_a_token_on_loopback_only(repo, tmp_path):
    repo.ok("add", "-b", "nb", str(tmp_path / "nb"), "--gpus", "none", "--jupyter")
    record = by_branch(repo, "nb")
    [port] = record["ports"]
    assert port["name"] == "jupyter" and port["container_port"] == 8888 and port["address"] == "127.0.0.1"
    assert 20000 <= port["host_port"] < 30000
    token_file = os.path.join(record["data_dir"], ".gpuspace", "jupyter-token")
    token = open(token_file).read().strip()
    assert len(token) >= 32
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(token_file)).st_mode) == 0o700
    assert record["urls"]["jupyter"] == f"http://127.0.0.1:{port['host_port']}/lab?token={token}"
    assert record["urls"]["jupyter"] in repo.ok("status").stdout

    wait_until_served("127.0.0.1", port["host_port"])
    assert f"token={token}" in fetch("127.0.0.1", port["host_port"])  # the server got the token
    assert refused("127.0.0.2", port["host_port"])  # published on 127.0.0.1 alone
    container = container_of(repo, "nb")
    assert token not in json.dumps(container.attrs)  # not in the engine's env, labels or command
    bindings = container.attrs["HostConfig"]["PortBindings"]
    assert bindings == {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port["host_port"])}]}


def test_publish_address_is_respected(repo, tmp_path):
    repo.ok("add", "-b", "nb", str(tmp_path / "nb"), "--gpus", "none", "--jupyter", "--publish-address", "127.0.0.2")
    host_port = by_branch(repo, "nb")["ports"][0]["host_port"]
    wait_until_served("127.0.0.2", host_port)
    assert "fake jupyter" in fetch("127.0.0.2", host_port)
    assert refused("127.0.0.1", host_port)


def test_ports_never_collide_and_taken_ports_are_refused(repo, tmp_path):
    repo.ok("add", "-b", "a", str(tmp_path / "a"), "--gpus", "none", "--port", "web=8000", "--tensorboard")
    repo.ok("add", "-b", "b", str(tmp_path / "b"), "--gpus", "none", "--port", "web=8000", "--no-start")
    a, b = by_branch(repo, "a")["ports"], by_branch(repo, "b")["ports"]
    hosts = [p["host_port"] for p in a + b]
    assert len(set(hosts)) == len(hosts) == 3
    assert {p["name"] for p in a} == {"web", "tensorboard"}

    with socket.socket() as listener:  # a host process holds a port
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        before = repo.snapshot(tmp_path / "wts")
        result = repo.gs("add", "-b", "c", str(tmp_path / "wts" / "c"), "--gpus", "none", "--port", f"web=8000:{busy}")
        assert result.returncode == 1 and f"host port {busy} (web) is already in use" in result.stderr
        assert repo.snapshot(tmp_path / "wts") == before

    # a port reserved by a binding whose container is not running (b) is refused too
    reserved = next(p["host_port"] for p in b)
    result = repo.gs("add", "-b", "d", str(tmp_path / "wts" / "d"), "--gpus", "none", "--port", f"x=80:{reserved}")
    assert result.returncode == 1 and "already in use" in result.stderr
    # and a port published by any container (a)
    published = next(p["host_port"] for p in a)
    result = repo.gs("add", "-b", "e", str(tmp_path / "wts" / "e"), "--gpus", "none", "--port", f"x=80:{published}")
    assert result.returncode == 1 and "already in use" in result.stderr


@pytest.mark.parametrize("bad", ["web", "web=0", "web=70000", "Web=80", "web=80:99999", "=80"])
def test_bad_port_specs(repo, tmp_path, bad):
    result = repo.gs("add", "-b", "x", str(tmp_path / "x"), "--gpus", "none", "--port", bad)
    assert result.returncode == 2 and "git-gpuspace: error:" in result.stderr
    assert not (tmp_path / "x").exists()


def test_ssh_takes_keys_only(repo, tmp_path, isolated_env):
    ssh = isolated_env / ".ssh"
    ssh.mkdir()
    (ssh / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyForTests test@host\n")
    refused_add = repo.gs("add", "-b", "nokey", str(tmp_path / "nokey"), "--gpus", "none", "--ssh",
                          "--ssh-key", str(tmp_path / "missing.pub"))
    assert refused_add.returncode == 2 and "cannot read SSH public key" in refused_add.stderr
    repo.ok("add", "-b", "s", str(tmp_path / "s"), "--gpus", "none", "--ssh")
    record = by_branch(repo, "s")
    keys = os.path.join(record["data_dir"], ".gpuspace", "authorized_keys")
    assert open(keys).read() == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyForTests test@host\n"
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    assert "ssh" not in record["urls"] and record["services_down"]["ssh"] == "sshd is not in this image"
    assert services.urls(Binding(path="p", container="c", image="i", ports=[
        PortMap("ssh", 22, record["ports"][0]["host_port"], "127.0.0.1")]))["ssh"].startswith("ssh -p ")
    command = " ".join(container_of(repo, "s").attrs["Config"]["Cmd"])
    assert "PasswordAuthentication=no" in command and "KbdInteractiveAuthentication=no" in command
    # the test image has no sshd: the container says so in its logs
    logs = repo.ok("logs", "s").stdout + repo.ok("logs", "s").stderr
    assert "sshd is not in this image" in logs


def test_data_survives_recreation_and_remove_unless_purged(repo, tmp_path):
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(wt), "--gpus", "1")
    data_dir = by_branch(repo, "exp")["data_dir"]
    assert not data_dir.startswith(str(wt))
    assert repo.ok("exec", "exp", "--", "sh", "-c", "echo epoch-3 > /data/checkpoints/model.pt").returncode == 0
    container_of(repo, "exp").remove(force=True)  # lost behind our back
    repo.ok("start", "exp")  # made again, same data
    assert repo.ok("exec", "exp", "--", "cat", "/data/checkpoints/model.pt").stdout == "epoch-3\n"
    repo.ok("remove", "--keep-worktree", "exp")
    repo.ok("bind", "exp", "--gpus", "1")
    assert repo.ok("exec", "exp", "--", "cat", "/data/checkpoints/model.pt").stdout == "epoch-3\n"
    repo.ok("remove", "--force", "--purge", "exp")
    assert not os.path.exists(data_dir)


def test_caches_are_shared_across_worktrees(repo, tmp_path):
    repo.ok("add", "-b", "a", str(tmp_path / "a"), "--gpus", "none")
    repo.ok("add", "-b", "b", str(tmp_path / "b"), "--gpus", "none")
    repo.ok("exec", "a", "--", "sh", "-c", "echo weights > $HF_HOME/model.bin")
    assert repo.ok("exec", "b", "--", "sh", "-c", "cat $HF_HOME/model.bin").stdout == "weights\n"
    env = container_env(container_of(repo, "b"))
    assert env["HF_HOME"] == "/cache/huggingface" and env["TORCH_HOME"] == "/cache/torch"
    assert env["PIP_CACHE_DIR"] == "/cache/pip"


def test_exec_passes_exit_codes_output_and_fresh_context(repo, tmp_path):
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(wt), "--gpus", "none")
    result = repo.gs("exec", str(wt), "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert result.returncode == 7 and result.stdout == "out\n" and result.stderr == "err\n"
    assert repo.gs("exec", "exp", "--", "no-such-command").returncode in (126, 127)
    assert repo.ok("exec", "exp", "--", "pwd").stdout == "/workspace\n"

    env = container_env(container_of(repo, "exp"))
    assert env["GPUSPACE_BRANCH"] == "exp" and env["GPUSPACE_WORKTREE"] == str(wt)
    assert env["GPUSPACE_COMMIT"] == repo.git("rev-parse", "HEAD").stdout.strip()
    repo.git("checkout", "-q", "-b", "exp-2", cwd=wt)
    (wt / "f").write_text("x")
    repo.git("add", "f", cwd=wt)
    repo.git("commit", "-q", "-m", "x", cwd=wt)
    shown = repo.ok("exec", "exp-2", "--", "sh", "-c", "echo $GPUSPACE_BRANCH $GPUSPACE_COMMIT").stdout.split()
    assert shown == ["exp-2", repo.git("rev-parse", "exp-2").stdout.strip()]


def test_stop_start_restart_and_exec_on_a_stopped_container(repo, tmp_path):
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "1")
    assert "GPUs stay reserved" in repo.ok("stop", "exp").stdout
    assert by_branch(repo, "exp")["state"] == "exited"
    result = repo.gs("exec", "exp", "--", "true")
    assert result.returncode == 1 and "is not running" in result.stderr and "git gpuspace start" in result.stderr
    refused_add = repo.gs("add", "-b", "other", str(tmp_path / "other"), "--gpus", "4")
    assert refused_add.returncode == 1  # a stopped binding still holds its GPU
    repo.ok("start", "exp")
    assert by_branch(repo, "exp")["state"] == "running"
    repo.ok("restart", "exp")
    assert by_branch(repo, "exp")["state"] == "running"


def test_check_passes_and_fails(repo, tmp_path):
    repo.ok("add", "-b", "g", str(tmp_path / "g"), "--gpus", "2")
    result = repo.ok("check", "g")
    assert "pass" in result.stdout and fake_gpu_uuids()[0] in result.stdout and "torch.cuda" in result.stdout

    container_of(repo, "g").exec_run(["sh", "-c", f"echo {fake_gpu_uuids()[3]} > /tmp/fake-visible-gpus"])
    failed = repo.gs("check", "g")
    assert failed.returncode == 1 and "FAIL" in failed.stdout and fake_gpu_uuids()[3] in failed.stdout

    repo.ok("add", "-b", "cpu", str(tmp_path / "cpu"), "--gpus", "none")
    assert "none, as bound" in repo.ok("check", "cpu").stdout


def test_health_probe_judges_torch_results():
    from git_gpuspace.health import judge

    assert judge({"torch": "2.7", "cuda_available": True, "device_count": 1}, 1) == []
    assert judge({"torch": "2.7", "cuda_available": False, "device_count": 0}, 1) == [
        "torch.cuda.is_available() is False", "torch sees 0 GPU(s), expected 1"]
    assert judge({"torch": None}, 1) == []


def test_doctor(repo):
    result = repo.gs("doctor")
    assert result.returncode == 0, result.stdout
    for check in ("git", "GPU inventory", "Docker engine", "default image", "NVIDIA runtime", "hooks"):
        assert check in result.stdout
    assert "the engine gives containers GPUs" in result.stdout
    assert "git gpuspace hooks install" in result.stdout
    down = repo.gs("doctor", env=NOWHERE)
    assert down.returncode == 1 and "cannot reach the Docker engine" in down.stdout


def test_config_layers_and_precedence(repo, tmp_path, docker_client):
    for tag in ("user", "repo", "flag", "devcontainer"):
        docker_client.images.get(TEST_IMAGE).tag("gpuspace-test", tag)
    repo.ok("config", "set", "--user", "image", "gpuspace-test:user")
    assert repo.ok("config", "get", "image").stdout.strip() == "gpuspace-test:user"
    repo.ok("add", "-b", "u", str(tmp_path / "u"), "--gpus", "none")
    repo.ok("config", "set", "image", "gpuspace-test:repo")  # the repo by default, as git config
    repo.ok("config", "set", "memory", "256m")
    listing = repo.ok("config", "list").stdout
    assert "image = gpuspace-test:repo  (repo)" in listing and "memory = 256m  (repo)" in listing
    repo.ok("add", "-b", "r", str(tmp_path / "r"), "--gpus", "none")
    repo.ok("add", "-b", "f", str(tmp_path / "f"), "--gpus", "none", "--image", "gpuspace-test:flag")
    images = {r["branch"]: r["image"] for r in repo.status() if r["image"]}
    assert images == {"u": "gpuspace-test:user", "r": "gpuspace-test:repo", "f": "gpuspace-test:flag"}
    assert container_of(repo, "r").attrs["HostConfig"]["Memory"] == 256 << 20

    bad = repo.gs("config", "set", "memory", "lots")
    assert bad.returncode == 2 and "invalid --memory" in bad.stderr
    assert repo.ok("config", "get", "memory").stdout.strip() == "256m"
    assert repo.gs("config", "get", "nonsense").returncode == 2
    repo.ok("config", "unset", "memory")
    assert repo.gs("config", "get", "--repo", "memory").returncode == 1
