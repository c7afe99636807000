"""devcontainer.json's runArgs a GPU user needs (--ulimit, --add-host, --label, --hostname,
--env-file, --platform), `init: false`, `appPort`, `forwardPorts` with `portsAttributes`, and
`workspaceFolder`, made with `git gpuspace add` on the real engine and read back with
`docker inspect` and `status` (issue #29, item 8).
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from conftest import OTHER_ARCH, TEST_IMAGE, container_env
from docker.types import Ulimit
from git_gpuspace.engine.containers import _ulimit
from git_gpuspace.errors import UsageError
from git_gpuspace.model import PortMap
from helpers import parse
from test_devcontainer_fixtures import sh

DEVCONTAINER = ".devcontainer/devcontainer.json"
# NCCL asks for memlock=-1; an engine without CAP_SYS_RESOURCE (this test machine's: its hard
# limit is 8 MiB) cannot raise it, so the engine tests stay under it and the parser's test takes -1
NCCL_RUN_ARGS = ["--ulimit", "memlock=4194304", "--ulimit=stack=67108864", "--add-host", "db:10.0.0.2",
                 "--label", "team=vision", "--hostname", "trainer"]


def made(repo, tmp_path, name: str, document: dict, *flags: str, files: dict[str, str] | None = None):
    """`add -b NAME` with `document` as the repository's devcontainer.json: (container, worktree, result)."""
    wanted = {DEVCONTAINER: json.dumps(document), **(files or {})}
    if any(not (repo.path / path).is_file() or (repo.path / path).read_text() != text for path, text in wanted.items()):
        repo.commit(wanted, f"devcontainer: {name}")
    worktree = tmp_path / "wts" / name
    result = repo.gs("add", "-b", name, str(worktree), "--gpus", "none", *flags)
    assert result.returncode == 0, result.stderr
    [container] = [c for c in repo.containers() if c.labels.get("gpuspace.worktree") == str(worktree)]
    container.reload()
    return container, worktree, result


def refused(repo, tmp_path, name: str, document: dict, *flags: str) -> str:
    """`add` refuses in one line and makes nothing: the error line."""
    repo.commit({DEVCONTAINER: json.dumps(document)}, f"devcontainer: {name}")
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", name, str(tmp_path / "wts" / name), "--gpus", "none", *flags)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("git-gpuspace: error:")]
    assert repo.snapshot(tmp_path / "wts") == before and name not in repo.branches() and not repo.containers()
    return line


def engine_platform(docker_client) -> str:
    machine = docker_client.info()["Architecture"]
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def test_runargs_for_nccl_and_init_false_reach_the_container_untrusted(repo, tmp_path, docker_client):
    container, worktree, result = made(repo, tmp_path, "nccl", {
        "image": TEST_IMAGE, "init": False,
        "runArgs": [*NCCL_RUN_ARGS, "--platform", engine_platform(docker_client)]})
    assert "runArgs" not in result.stderr  # nothing named: none of them needs trust
    host, config = container.attrs["HostConfig"], container.attrs["Config"]
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]} == {
        "memlock": (4194304, 4194304), "stack": (67108864, 67108864)}
    assert host["ExtraHosts"] == ["db:10.0.0.2"] and config["Hostname"] == "trainer"
    assert config["Labels"]["team"] == "vision" and config["Labels"]["gpuspace.worktree"] == str(worktree)
    assert host["Init"] is False
    # in the container: the limits, the name, the host entry; our entrypoint is PID 1 and idles
    assert sh(container, "ulimit -l") == "4096" and sh(container, "ulimit -s") == str(67108864 // 1024)
    assert sh(container, "hostname") == "trainer" and "10.0.0.2" in sh(container, "grep db /etc/hosts")
    assert sh(container, "tr '\\0' ' ' < /proc/1/cmdline").startswith("sh -c")
    started = time.monotonic()
    repo.ok("stop", "nccl")  # PID 1 takes SIGTERM: no grace period waited out
    assert time.monotonic() - started < 8
    assert 'init = false' in repo.state_text() and "memlock=4194304:4194304" in repo.state_text()


def test_a_container_made_again_keeps_them(repo, tmp_path):
    container, worktree, _ = made(repo, tmp_path, "again", {
        "image": TEST_IMAGE, "runArgs": NCCL_RUN_ARGS, "forwardPorts": [8080],
        "portsAttributes": {"8080": {"label": "Web"}}})
    port = container.attrs["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"]
    container.remove(force=True)  # lost: `start` makes it again from the binding the state file keeps
    repo.ok("start", str(worktree))
    [again] = repo.containers()
    assert again.id != container.id
    assert {u["Name"] for u in again.attrs["HostConfig"]["Ulimits"]} == {"memlock", "stack"}
    assert again.attrs["HostConfig"]["ExtraHosts"] == ["db:10.0.0.2"] and again.attrs["Config"]["Hostname"] == "trainer"
    assert again.labels["team"] == "vision" and again.attrs["HostConfig"]["Init"] is True
    assert again.attrs["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"] == port
    assert f"web=8080:{port}@127.0.0.1/forwarded" in again.labels["gpuspace.ports"]


@pytest.mark.parametrize("label", ["gpuspace.worktree=/somewhere/else", "gpuspace.gpus=GPU-1", "GPUSPACE.repo=x"])
def test_a_label_cannot_forge_ours(repo, tmp_path, label):
    line = refused(repo, tmp_path, "forged", {"image": TEST_IMAGE, "runArgs": ["--label", label]}, "--trust")
    assert "gpuspace.* labels are git-gpuspace's own" in line


def test_env_file_is_read_only_for_a_trusted_file(repo, tmp_path):
    files = {"config/train.env": "# NCCL settings\nNCCL_DEBUG=INFO\nSHARED=from the file\nNCCL_IB_DISABLE=1\n"}
    document = {"image": TEST_IMAGE, "containerEnv": {"SHARED": "from containerEnv"},
                "runArgs": ["--env-file", "config/train.env"]}
    container, _, result = made(repo, tmp_path, "untrusted", document, files=files)
    assert "made without: runArgs --env-file config/train.env" in result.stderr
    assert "NCCL_DEBUG" not in container_env(container)
    container, _, _ = made(repo, tmp_path, "trusted", document, "--trust", files=files)
    env = container_env(container)
    # relative to the worktree, where the reference runs `docker run`; containerEnv wins, as -e does
    assert env["NCCL_DEBUG"] == "INFO" and env["NCCL_IB_DISABLE"] == "1" and env["SHARED"] == "from containerEnv"


def test_a_missing_env_file_is_refused_before_anything_is_made(repo, tmp_path):
    line = refused(repo, tmp_path, "noenv", {"image": TEST_IMAGE, "runArgs": ["--env-file", "absent.env"]}, "--trust")
    assert "runArgs --env-file absent.env: cannot read" in line and "No such file" in line


def test_a_platform_the_image_is_not_for_is_one_line_and_nothing_made(repo, tmp_path, docker_client):
    other = "linux/arm64" if engine_platform(docker_client) != "linux/arm64" else "linux/amd64"
    line = refused(repo, tmp_path, "platform", {"image": TEST_IMAGE, "runArgs": ["--platform", other]})
    assert f"does not match the specified platform: wanted {other}" in line


def test_runargs_platform_pulls_the_image_for_that_platform(repo, tmp_path, docker_client, local_registry):
    """An image of several platforms (a manifest list) is pulled for runArgs' --platform, as
    `docker run --platform` pulls it, and the container runs that one."""
    other = OTHER_ARCH[engine_platform(docker_client).split("/")[1]]
    image = local_registry.replace(":v1", ":multi")
    container, _, _ = made(repo, tmp_path, "multi", {"image": image, "runArgs": ["--platform", f"linux/{other}"]})
    assert container.status == "running"
    assert docker_client.images.get(container.attrs["Image"]).attrs["Architecture"] == other
    repo.ok("remove", "--force", "multi")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_app_port_and_forwarded_ports_are_published_and_shown(repo, tmp_path):
    app, mapped = free_port(), free_port()
    container, worktree, _ = made(repo, tmp_path, "ports", {
        "image": TEST_IMAGE, "appPort": [app, f"{mapped}:5000"], "forwardPorts": [8080, 9090, 7070],
        "portsAttributes": {"8080": {"label": "Web App"}, "9000-9100": {"onAutoForward": "ignore"}}})
    bindings = {key: value[0] for key, value in container.attrs["HostConfig"]["PortBindings"].items()}
    assert set(bindings) == {f"{app}/tcp", "5000/tcp", "8080/tcp", "7070/tcp"}  # 9090: ignore
    assert all(binding["HostIp"] == "127.0.0.1" for binding in bindings.values())
    assert bindings[f"{app}/tcp"]["HostPort"] == str(app) and bindings["5000/tcp"]["HostPort"] == str(mapped)
    web = bindings["8080/tcp"]["HostPort"]  # a free host port, wherever it falls
    text = repo.ok("status").stdout
    assert f"web-app: 8080 -> 127.0.0.1:{web} (forwarded)" in text
    assert f"app-{app}: {app} -> 127.0.0.1:{app} (appPort)" in text
    assert f"app-5000: 5000 -> 127.0.0.1:{mapped} (appPort)" in text
    assert "down (" not in text  # an app's port that nothing listens on yet is not a service that is down
    [record] = [r for r in repo.status() if r["path"] == str(worktree)]
    assert {p["name"]: p["origin"] for p in record["ports"]} == {
        f"app-{app}": "app", "app-5000": "app", "web-app": "forwarded", "port-7070": "forwarded"}


def test_workspace_folder_alone_is_where_the_worktree_is_and_commands_start(repo, tmp_path):
    container, worktree, _ = made(repo, tmp_path, "folder", {"image": TEST_IMAGE, "workspaceFolder": "/src/app"})
    assert {m["Destination"]: m["Source"] for m in container.attrs["Mounts"]}["/src/app"] == str(worktree)
    assert container.attrs["Config"]["WorkingDir"] == "/src/app" and sh(container, "pwd") == "/src/app"
    assert sh(container, "cat /src/app/file0.txt") == "content 0"


# --- the parser's own rules, without the engine ----------------------------------------------

def test_runargs_parse_as_docker_reads_them(tmp_path):
    config = parse(tmp_path, {"runArgs": ["--ulimit memlock=-1", "--ulimit nofile=1024:2048", "--ulimit", "nofile=4096",
                                          "-l", "bare",
                                          "--add-host=gw=host-gateway", "-h", "box", "--init=false", "--init",
                                          "--ulimit", "rtprio=10"]}, trust=False)
    assert config.container_options == {"ulimits": ["memlock=-1:-1", "nofile=4096:4096"], "labels": {"bare": ""},
                                        "extra_hosts": ["gw:host-gateway"], "hostname": "box"}
    assert config.skipped == ["runArgs --ulimit rtprio=10"] and not config.host_options  # it outranks the host
    assert parse(tmp_path, {"runArgs": ["--ulimit", "rtprio=10"]}).host_options == {"ulimits": ["rtprio=10:10"]}
    assert _ulimit("memlock", "-1:-1") == Ulimit(name="memlock", soft=-1, hard=-1)  # as the engine takes it


@pytest.mark.parametrize("run_args, message", [
    (["--ulimit", "memlock"], "write --ulimit NAME=SOFT[:HARD]"),
    (["--ulimit", "bogus=1"], "write --ulimit NAME=SOFT[:HARD]"),
    (["--ulimit", "nofile=2048:1024"], "the soft limit is above the hard one"),
    (["--ulimit", "nofile=-1:1024"], "the soft limit is above the hard one"),
    (["--add-host", "db"], "write --add-host NAME:ADDRESS"),
    (["--add-host", "db:not-an-ip"], "write --add-host NAME:ADDRESS"),
    (["--hostname=-box"], "not a valid hostname"),
    (["--hostname", "a_b"], "not a valid hostname"),
    (["--platform", "linux/../amd64"], "write --platform OS[/ARCH[/VARIANT]]"),
    (["--label", "=x"], "write --label KEY=VALUE"),
])
def test_a_bad_value_is_one_clear_error(tmp_path, run_args, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse(tmp_path, {"runArgs": run_args}, trust=False)


def test_env_file_lines_as_docker_reads_them(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_HOST", "host value")
    monkeypatch.delenv("NOT_SET", raising=False)
    files = {"a.env": "\ufeffA=1\n  # comment\n\n  B= spaced \nFROM_HOST\nNOT_SET\nC=x=y\r\n", "b.env": "A=2\n"}
    config = parse(tmp_path, {"containerEnv": {"C": "mine"}, "runArgs": ["--env-file", "a.env", "--env-file=b.env"]},
                   files=files)
    assert config.env == {"A": "2", "B": " spaced ", "FROM_HOST": "host value", "C": "mine"}
    with pytest.raises(UsageError, match="line 1 of .* is not KEY=VALUE"):
        parse(tmp_path, {"runArgs": ["--env-file", "bad.env"]}, files={"bad.env": "MY VAR=1\n"})


def test_ports_fields_parse_as_the_reference_writes_them(tmp_path):
    config = parse(tmp_path, {"appPort": "127.0.0.1::3000", "forwardPorts": [3000, 8888, 6000, 6001],
                              "portsAttributes": {"6000": {"label": "Jupyter", "requireLocalPort": True},
                                                  "6000-6010": {"label": "range"}, "python": {"label": "x"}},
                              "otherPortsAttributes": {"onAutoForward": "ignore"}})
    assert [(p.name, p.container_port, p.host_port, p.origin) for p in config.ports] == [
        ("app-3000", 3000, None, "app"), ("port-8888", 8888, None, "forwarded"),
        ("port-6000", 6000, 6000, "forwarded"),  # a service's name is not a port's
        ("range", 6001, None, "forwarded")]
    assert not config.unsupported
    config = parse(tmp_path, {"appPort": ["0.0.0.0:3000:3000", "53/udp"]})
    assert [p.host_port for p in config.ports] == [3000] and config.unsupported == [
        "appPort 0.0.0.0:3000:3000 (address 0.0.0.0: published where every port is, on 127.0.0.1 unless "
        "publish_address says otherwise)", "appPort 53/udp (only TCP ports are published)"]
    with pytest.raises(UsageError, match="appPort entry 'web' is not a port"):
        parse(tmp_path, {"appPort": ["web"]})


def test_a_port_label_reads_back_with_or_without_its_origin():
    assert PortMap.from_label("port-8080=8080:49153@127.0.0.1") == PortMap("port-8080", 8080, 49153, "127.0.0.1")
    forwarded = PortMap("web", 8080, 49153, "::1", "forwarded")
    assert PortMap.from_label(forwarded.label()) == forwarded
    assert PortMap.from_label("web=8080:49153@127.0.0.1/elsewhere") is None


def test_runargs_platform_builds_the_image_for_that_platform(repo, tmp_path, docker_client):
    """`--platform linux/arm64` with a Dockerfile: the image is built for arm64 (as the reference
    passes it to `docker build`), not the host's, which the engine would refuse to run as arm64.
    FROM scratch with a COPY builds for any platform without an emulator."""
    unique = f"marker-{time.time_ns()}"
    container, _, _ = made(repo, tmp_path, "arm", {
        "build": {"dockerfile": "Dockerfile"}, "runArgs": ["--platform", "linux/arm64"]}, "--no-start",
        files={".devcontainer/Dockerfile": "FROM scratch\nCOPY marker /marker\n", ".devcontainer/marker": unique})
    image = docker_client.images.get(container.attrs["Config"]["Image"])
    assert image.attrs["Architecture"] == "arm64" and image.attrs["Os"] == "linux"
    repo.ok("remove", "--force", "arm")
    docker_client.images.remove(image.id, force=True)
