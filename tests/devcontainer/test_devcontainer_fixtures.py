"""devcontainer.json as the reference implementation (devcontainers/cli) reads it.

One table, `CASES`: each row is a configuration mirroring a fixture of the reference's test
suite (`src/test/configs/<name>`, `src/test/container-features/configs/<name>`) or a line of the
spec, made with `git gpuspace add` on the real engine, and its outcome:

- applied: the container is made, and `check` reads what `docker inspect` (or the container)
  must show;
- named: made, and the notice names what is not supported (or what only trust allows);
- refused: one line naming the problem, exit 2, and nothing made (no worktree, branch or
  container).

The parser's own rules (substitution, mounts, ports, build stages, feature options) are
tested without the engine at the end of the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import TEST_IMAGE, container_env
from git_gpuspace.devcontainer import parser as devcontainer, features
from git_gpuspace.errors import UsageError
from helpers import parse

IMAGE = TEST_IMAGE


@dataclass
class Case:
    name: str
    mirrors: str  # the reference fixture or spec section this row stands for
    files: dict[str, str]  # relative to the repository root; "{registry}" is the test registry
    outcome: str  # applied | named | refused
    check: Callable | None = None  # applied: check(container, worktree, result)
    says: tuple[str, ...] = ()  # named/applied: in the notices; refused: in the error
    flags: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def sh(container, command: str) -> str:
    result = container.exec_run(["sh", "-c", command])
    assert result.exit_code == 0, result.output
    return result.output.decode().strip()


def mounts_by_target(container) -> dict[str, dict]:
    return {mount["Target"]: mount for mount in container.attrs["HostConfig"].get("Mounts") or []}


def feature_files(folder: str, metadata: dict, install: str) -> dict[str, str]:
    return {f"{folder}/devcontainer-feature.json": json.dumps(metadata),
            f"{folder}/install.sh": f"#!/bin/sh\nset -e\nmkdir -p /usr/local\n{install}\n"}


# --- checks of the applied rows -------------------------------------------------------------

def check_image(container, worktree, result):
    assert container_env(container)["TEST_CE"] == "TEST_VALUE3"
    # postCreateCommand ran, in the container, with ${containerEnv:TEST_CE} from the container
    assert sh(container, "cat /tmp/postCreateCommand.txt") == "Val: TEST_VALUE3 TEST_VALUE3"
    assert sh(container, "cat /tmp/remoteEnv.txt") == f"ENV {container_env(container)['PATH']}"
    assert "TEST" not in container_env(container)  # the commands', not the container's


def check_target(container, worktree, result):
    assert sh(container, "cat /test-marker") == "||test-content||18"  # the target stage, not the last
    image = container.client.images.get(container.attrs["Config"]["Image"])
    assert image.labels.get("test_build_options") == "success"  # build.options --label
    assert sh(container, "ls /tmp/postCreateCommand.testmarker /tmp/postStartCommand.testmarker "
                         "/tmp/postAttachCommand.testmarker")  # as the reference's `up` runs it


def check_legacy_build(container, worktree, result):
    assert sh(container, "cat /marker.txt") == "from the context"
    assert container.attrs["Config"]["Image"].startswith("gpuspace-build/devcontainer:")


def check_parallel(container, worktree, result):
    assert sh(container, "ls /tmp | grep -c testmarker") == "4"


def check_mounts(container, worktree, result):
    mounts = mounts_by_target(container)
    anonymous = mounts["/home/test_devcontainer_config"]
    assert anonymous["Type"] == "volume" and anonymous.get("Source", "") in ("", None)
    named = {m["Destination"]: m for m in container.attrs["Mounts"]}["/home/test_devcontainer_config"]
    assert named["Type"] == "volume" and named["Name"] not in ("", "undefined")
    history = mounts["/commandhistory"]  # no type: a volume, as Docker and the spec default
    assert history["Type"] == "volume" and history["Source"] == "gpuspace-test-bashhistory"
    assert mounts["/scratch"]["Type"] == "tmpfs"
    assert sh(container, "grep ' /scratch ' /proc/mounts").split()[2] == "tmpfs"


def check_metadata_features(container, worktree, result):
    assert sh(container, "ls /localFeatureA /localFeatureB")  # both install.sh ran
    host = container.attrs["HostConfig"]
    assert host["Privileged"] is False  # localFeatureB asks for it: trust covers the file, not the feature


def check_local_features(container, worktree, result):
    assert sh(container, "cat /usr/local/greeting") == "Hello there!!!!"  # given options, and one not declared
    assert sh(container, "cat /usr/local/favorite") == "gold blue"  # given, and a declared default
    assert sh(container, "cat /usr/local/order") == "A B"  # B installsAfter A, though written first
    env = container_env(container)
    assert env["PATH"].startswith("/opt/featureB/bin:")  # its containerEnv, ${PATH} expanded in the image


def check_variables(container, worktree, result):
    env = container_env(container)
    assert env["LOCAL"] == str(worktree) and env["BASENAME"] == worktree.name
    assert env["CWF"] == "/workspace" and env["CWFB"] == "workspace"
    config = worktree / ".devcontainer" / "devcontainer.json"
    assert env["ID"] == reference_devcontainer_id({"devcontainer.local_folder": str(worktree),
                                                   "devcontainer.config_file": str(config)})
    assert env["DEFAULTED"] == "default"  # ${localEnv:X:default:a:b}: the reference takes args[1] only
    assert env["ALIAS"] == "from the host"  # ${env:VAR} is ${localEnv:VAR}
    assert env["UNKNOWN"] == "[$${severity}] [$${walltime:%Y-%m-%d}]"  # unknown variables stay as written
    assert env["FLAG"] == "true" and env["COUNT"] == "1"  # JSON values as JSON, not Python's True
    assert env["FROM_RUNARGS"] == "/workspace/runargs"  # runArgs are substituted too
    assert sh(container, "cat /tmp/cwf") == "/workspace"  # and lifecycle commands


def check_image_variable(container, worktree, result):
    assert container.attrs["Config"]["Image"] == IMAGE


def check_workspace(container, worktree, result):
    folder = f"/workspaces/{worktree.name}"
    assert {m["Destination"]: m["Source"] for m in container.attrs["Mounts"]}[folder] == str(worktree)
    assert container.attrs["Config"]["WorkingDir"] == f"{folder}/src"
    assert sh(container, "pwd") == f"{folder}/src"
    assert sh(container, f"cat {folder}/.git").startswith("gitdir: ")  # git's link, where the worktree is
    assert "/workspace" not in {m["Destination"] for m in container.attrs["Mounts"]}


def check_users(container, worktree, result):
    if os.getuid() == 0:
        assert container.attrs["Config"]["User"] == "nobody"
        assert sh(container, "id -un") == "nobody"
        assert sh(container, "cat /tmp/who") == "root"  # remoteUser runs the lifecycle commands
    else:  # the uid mapping runs everything as the invoking user, as updateRemoteUserUID would
        assert container.attrs["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"


def check_override_command(container, worktree, result):
    assert container.attrs["Config"]["Cmd"] == ["sleep", "1000"]
    assert container.attrs["State"]["Running"]


def check_host_fields(container, worktree, result):
    host = container.attrs["HostConfig"]
    assert host["Init"] is True and host["Privileged"] is True
    assert host["CapAdd"] == ["SYS_PTRACE"] and "seccomp=unconfined" in host["SecurityOpt"]


def check_host_fields_untrusted(container, worktree, result):
    host = container.attrs["HostConfig"]
    assert host["Init"] is True and host["Privileged"] is False
    assert not host.get("CapAdd") and "seccomp=unconfined" not in (host.get("SecurityOpt") or [])


def check_ports(container, worktree, result):
    published = container.attrs["HostConfig"]["PortBindings"]
    assert set(published) == {"8080/tcp", "8888/tcp"}  # one per container port; 5432 is the db's
    labels = container.labels["gpuspace.ports"]
    assert "jupyter=8888:" in labels and "port-8888" not in labels and labels.count("=8080:") == 1


def check_oci_feature(container, worktree, result):
    assert sh(container, "cat /usr/local/hello") == "howdy"


def check_data_dir_kept(container, worktree, result):
    assert mounts_by_target(container)["/data"]["Type"] == "bind"  # the binding's own data dir


def check_named_only(container, worktree, result):
    assert container.attrs["State"]["Running"]


def check_initialized(container, worktree, result):
    """Trusted, initializeCommand ran on the host, in the worktree (the reference's marker file)."""
    assert (worktree / "initializeCommand.1.testMarker").is_file()


# --- the table ----------------------------------------------------------------------------

DEVCONTAINER = ".devcontainer/devcontainer.json"
TARGET_DOCKERFILE = f"""FROM {IMAGE} AS false-start
RUN echo false-start > /test-marker
FROM {IMAGE} AS desired-image
ARG VARIANT
RUN echo "||test-content||$VARIANT" > /test-marker
FROM desired-image AS false-finish
RUN echo false-finish > /test-marker
"""

CASES = [
    Case("image", "configs/image", {DEVCONTAINER: json.dumps({
        "image": IMAGE,
        "postCreateCommand": 'echo "Val: $TEST_CE ${containerEnv:TEST_CE}" > /tmp/postCreateCommand.txt',
        "runArgs": ["-e", "TEST_CE=TEST_VALUE3"],
        "postStartCommand": "echo $TEST $CONTAINER_PATH > /tmp/remoteEnv.txt",  # remoteEnv, seen by commands
        "remoteEnv": {"TEST": "ENV", "CONTAINER_PATH": "${containerEnv:PATH}"}})},
        "applied", check_image, flags=("--trust",)),
    Case("dockerfile-with-target", "configs/dockerfile-with-target", {
        ".devcontainer/Dockerfile": TARGET_DOCKERFILE,
        DEVCONTAINER: json.dumps({
            "build": {"dockerfile": "Dockerfile", "target": "desired-image", "args": {"VARIANT": "18"},
                      "options": ["--label", "test_build_options=success"], "cacheFrom": IMAGE},
            "postCreateCommand": "touch /tmp/postCreateCommand.testmarker",
            "postStartCommand": "touch /tmp/postStartCommand.testmarker",
            "postAttachCommand": "touch /tmp/postAttachCommand.testmarker"})},
        "applied", check_target, flags=("--trust",)),
    Case("legacy-dockerFile", "configs/dockerfile-without-features (the schema's older dockerFile/context form)", {
        ".devcontainer/Dockerfile": f"FROM {IMAGE}\nCOPY marker.txt /marker.txt\n",
        "marker.txt": "from the context\n",
        DEVCONTAINER: json.dumps({"dockerFile": "Dockerfile", "context": ".."})},
        "applied", check_legacy_build),
    Case("parallel-commands", "configs/dockerfile-with-parallel-commands", {DEVCONTAINER: json.dumps({
        "image": IMAGE,
        "postCreateCommand": {"post-create-command-1": "touch /tmp/postCreateCommand1.testmarker",
                              "post-create-command-2": ["touch", "/tmp/postCreateCommand2.testmarker"]},
        "postStartCommand": {"post-start-command-1": "touch /tmp/postStartCommand1.testmarker",
                             "post-start-command-2": "touch /tmp/postStartCommand2.testmarker"}})},
        "applied", check_parallel, flags=("--trust",)),
    Case("mounts", "configs/image-with-mounts; the cli repo's own bash-history mount", {DEVCONTAINER: json.dumps({
        "image": IMAGE,
        "mounts": [{"target": "/home/test_devcontainer_config", "type": "volume"},
                   "source=gpuspace-test-bashhistory,target=/commandhistory",
                   "type=tmpfs,target=/scratch"]})},
        "applied", check_mounts),
    Case("image-metadata", "configs/image-metadata (local features with metadata)", {
        **feature_files(".devcontainer/localFeatureA", {
            "id": "localFeatureA", "version": "1.0.0", "init": True,
            "customizations": {"vscode": {"extensions": ["extensionA"]}},
            "updateContentCommand": ["one", "two"]}, "touch /localFeatureA"),
        **feature_files(".devcontainer/localFeatureB", {"id": "localFeatureB", "version": "1.0.0", "privileged": True},
                        "touch /localFeatureB"),
        DEVCONTAINER: json.dumps({"image": IMAGE, "features": {"./localFeatureA": "latest", "./localFeatureB": "latest"}})},
        "applied", check_metadata_features,
        says=("feature ./localFeatureA: customizations",
              "the image's devcontainer.metadata asks for updateContentCommand: not run",  # untrusted
              "feature ./localFeatureB: privileged (ask for it in devcontainer.json itself)")),
    Case("local-features", "container-features/configs/dockerfile-with-v2-local-features-config-inside-dev-container-folder", {
        ".devcontainer/Dockerfile": f"FROM {IMAGE}\n",
        **feature_files(".devcontainer/localFeatureA", {
            "id": "localFeatureA", "options": {"greeting": {"type": "string", "default": "hey"}}},
            'echo "$GREETING$PUNCTUATION" > /usr/local/greeting\necho -n "A " >> /usr/local/order'),
        **feature_files(".devcontainer/localFeatureB", {
            "id": "localFeatureB", "installsAfter": ["localFeatureA"],
            "containerEnv": {"PATH": "/opt/featureB/bin:${PATH}"},
            "options": {"favorite": {"type": "string", "default": "red"}, "color": {"type": "string", "default": "blue"}}},
            'echo "$FAVORITE $COLOR" > /usr/local/favorite\necho -n "B" >> /usr/local/order'),
        DEVCONTAINER: json.dumps({"build": {"dockerfile": "Dockerfile"}, "features": {
            "./localFeatureB": {"favorite": "gold"},
            "./localFeatureA": {"greeting": "Hello there", "punctuation": "!!!!"}}})},
        "applied", check_local_features),
    Case("variables", "spec: variables in devcontainer.json (the full list); configs/image-containerEnv-issue", {
        DEVCONTAINER: json.dumps({
            "image": IMAGE,
            "containerEnv": {"LOCAL": "${localWorkspaceFolder}", "BASENAME": "${localWorkspaceFolderBasename}",
                             "CWF": "${containerWorkspaceFolder}", "CWFB": "${containerWorkspaceFolderBasename}",
                             "ID": "${devcontainerId}", "DEFAULTED": "${localEnv:GPUSPACE_UNSET_VARIABLE:default:a:b}",
                             "ALIAS": "${env:GPUSPACE_FIXTURE_VALUE}",
                             "UNKNOWN": "[$${severity}] [$${walltime:%Y-%m-%d}]", "FLAG": True, "COUNT": 1},
            "runArgs": ["-e", "FROM_RUNARGS=${containerWorkspaceFolder}/runargs"],
            "postCreateCommand": "echo ${containerWorkspaceFolder} > /tmp/cwf"})},
        "applied", check_variables, flags=("--trust",), env={"GPUSPACE_FIXTURE_VALUE": "from the host"}),
    Case("image-variable", "issue: image is substituted like every string", {
        DEVCONTAINER: json.dumps({"image": IMAGE.split(":")[0] + ":${localEnv:GPUSPACE_UNSET_TAG:" + IMAGE.split(":")[1] + "}"})},
        "applied", check_image_variable, says=("made without: ${localEnv:GPUSPACE_UNSET_TAG:",)),
    Case("workspace", "spec: workspaceMount / workspaceFolder (the reference's default shape)", {
        "src/train.py": "print('hi')\n",
        DEVCONTAINER: json.dumps({
            "image": IMAGE,
            "workspaceMount": "source=${localWorkspaceFolder},target=/workspaces/${localWorkspaceFolderBasename},type=bind",
            "workspaceFolder": "/workspaces/${localWorkspaceFolderBasename}/src"})},
        "applied", check_workspace),
    Case("users", "configs/updateUID (remoteUser) and spec containerUser", {DEVCONTAINER: json.dumps({
        "image": IMAGE, "containerUser": "nobody", "remoteUser": "root", "postCreateCommand": "id -un > /tmp/who"})},
        "applied", check_users, flags=("--trust",)),
    Case("override-command", "spec: overrideCommand false", {
        ".devcontainer/Dockerfile": f'FROM {IMAGE}\nCMD ["sleep", "1000"]\n',
        DEVCONTAINER: json.dumps({"build": {"dockerfile": "Dockerfile"}, "overrideCommand": False})},
        "applied", check_override_command),
    Case("host-fields-trusted", "spec: init, privileged, capAdd, securityOpt (trusted)", {DEVCONTAINER: json.dumps({
        "image": IMAGE, "init": True, "privileged": True, "capAdd": ["SYS_PTRACE"], "securityOpt": ["seccomp=unconfined"]})},
        "applied", check_host_fields, flags=("--trust", "--no-start")),
    Case("host-fields-untrusted", "spec: the same, not trusted", {DEVCONTAINER: json.dumps({
        "image": IMAGE, "init": True, "privileged": True, "capAdd": ["SYS_PTRACE"], "securityOpt": ["seccomp=unconfined"]})},
        "named", check_host_fields_untrusted,
        says=("made without: privileged, capAdd SYS_PTRACE, securityOpt seccomp=unconfined",)),
    Case("ports", "spec: forwardPorts [3000, \"db:5432\"]; issue: one entry per container port", {
        DEVCONTAINER: json.dumps({"image": IMAGE, "forwardPorts": [8080, "localhost:8080", "db:5432", 8888]})},
        "applied", check_ports, says=("forwardPorts db:5432 (a port of another service)",), flags=("--jupyter",)),
    Case("oci-feature", "container-features/configs/dockerfile-with-v2-oci-features (a local registry)", {
        DEVCONTAINER: json.dumps({"image": IMAGE, "features": {"{registry}/features/hello:1": {"greeting": "howdy"}}})},
        "applied", check_oci_feature),
    Case("initialize-command", "configs/image-with-parallel-initialize-command", {DEVCONTAINER: json.dumps({
        "image": IMAGE, "initializeCommand": {"touch-test1": "touch ${localWorkspaceFolder}/initializeCommand.1.testMarker"},
        "customizations": {"vscode": {}}, "hostRequirements": {"cpus": 8, "memory": "32gb"},
        "features": {"http://example.com/feature.tgz": {}}})},
        "named", check_initialized,
        says=("customizations", "hostRequirements.cpus",
              "hostRequirements.memory", "feature http://example.com/feature.tgz"), flags=("--trust",)),
    Case("compose", "configs/compose-image-without-features-minimal, untrusted (trusted: test_devcontainer_compose.py)", {
        ".devcontainer/docker-compose.yml": "services:\n  app:\n    image: ubuntu:latest\n    command: sleep infinity\n",
        DEVCONTAINER: json.dumps({"dockerComposeFile": "docker-compose.yml", "service": "app",
                                  "workspaceFolder": "/workspace", "postCreateCommand": "echo hi"})},
        "refused", says=("a Compose-based configuration (dockerComposeFile, service) runs the services",
                         "used only when trusted; nothing was made")),
    Case("legacy-feature-id", "configs/image-with-local-feature (no ./)", {
        ".devcontainer/myfeature/devcontainer-feature.json": "",
        DEVCONTAINER: json.dumps({"image": IMAGE, "features": {"myfeature": {}}})},
        "refused", says=("feature 'myfeature' names neither a folder nor a registry", '"./myfeature"')),
    Case("relative-bind", "issue: a bind mount's source must be absolute", {
        DEVCONTAINER: json.dumps({"image": IMAGE, "mounts": ["type=bind,source=data,target=/data2"]})},
        "refused", says=("the source must be an absolute path",)),
    Case("unreachable-feature", "spec: features from a registry that cannot be reached", {
        DEVCONTAINER: json.dumps({"image": IMAGE, "features": {"localhost:1/features/missing:1": {}}})},
        "refused", says=("cannot fetch feature localhost:1/features/missing:1",)),
    Case("mount-over-data", "git-gpuspace's own mounts (an exported devcontainer.json names the data dir so)", {
        DEVCONTAINER: json.dumps({"image": IMAGE, "mounts": ["type=volume,source=x,target=/data"]})},
        "named", check_data_dir_kept, says=("mount type=volume,source=x,target=/data (git-gpuspace mounts its own /data)",)),
    Case("override-command-and-jupyter", "spec: overrideCommand false with a service", {
        DEVCONTAINER: json.dumps({"image": IMAGE, "overrideCommand": False})},
        "refused", says=("overrideCommand to false", "jupyter cannot be started"), flags=("--jupyter",)),
    Case("bad-image-reference", "issue: a reference the engine refuses, after substitution", {
        DEVCONTAINER: json.dumps({"image": "ubuntu:${localEnv:GPUSPACE_UNSET_TAG:bad tag}"})},
        "refused", says=("is not a valid image reference",)),
]


def reference_devcontainer_id(labels: dict[str, str]) -> str:
    """The reference's formula, written out again here (sha256 of the sorted labels' JSON, base 32)."""
    text = json.dumps({key: labels[key] for key in sorted(labels)}, separators=(",", ":"), ensure_ascii=False)
    number, digits = int(hashlib.sha256(text.encode()).hexdigest(), 16), ""
    while number:
        number, digit = divmod(number, 32)
        digits = "0123456789abcdefghijklmnopqrstuv"[digit] + digits
    return digits.rjust(52, "0")


@pytest.fixture
def hello_registry(feature_registry):
    """conftest's registry serving one feature, `<host>/features/hello:1`, with an option whose
    value install.sh writes. Yields its host:port."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, text in (("devcontainer-feature.json", json.dumps({"id": "hello", "version": "1.0.0", "options": {
                "greeting": {"type": "string", "default": "hey"}}})),
                           ("install.sh", '#!/bin/sh\nmkdir -p /usr/local\necho "$GREETING" > /usr/local/hello\n')):
            data = text.encode()
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    feature_registry.serve("features/hello", "1", [archive.getvalue()])
    yield feature_registry.host


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fixture(case: Case, repo, tmp_path, monkeypatch, docker_client, request):
    registry = request.getfixturevalue("hello_registry") if case.name == "oci-feature" else ""
    repo.commit({name: text.replace("{registry}", registry) for name, text in case.files.items()},
                f"devcontainer: {case.name}")
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    worktree = tmp_path / "wts" / case.name
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", case.name, str(worktree), "--gpus", "none", *case.flags)
    if case.outcome == "refused":
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("git-gpuspace: error:")]
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        for text in case.says:
            assert text in result.stderr, result.stderr
        assert repo.snapshot(tmp_path / "wts") == before and not worktree.exists()
        assert case.name not in repo.branches() and not repo.containers()
        return
    assert result.returncode == 0, result.stderr
    notices = " ".join(line for line in result.stderr.splitlines() if "devcontainer.json" in line)
    for text in case.says:
        assert text in notices, result.stderr
    if case.outcome == "named":
        assert case.says and notices
    [container] = repo.containers()
    container.reload()
    case.check(container, worktree, result)
    if "--trust" not in case.flags:
        assert not (worktree / "initializeCommand.1.testMarker").exists()  # nothing ran on the host
    if case.name == "mounts":
        repo.ok("remove", "--force", case.name)
        docker_client.volumes.get("gpuspace-test-bashhistory").remove()


def test_the_table_has_each_outcome():
    outcomes = [case.outcome for case in CASES]
    assert {outcome: outcomes.count(outcome) for outcome in ("applied", "named", "refused")} == {
        "applied": 15, "named": 3, "refused": 6}


def test_post_start_runs_after_every_start_and_post_create_once(repo, tmp_path):
    repo.commit({DEVCONTAINER: json.dumps({
        "image": IMAGE, "onCreateCommand": "echo onCreate >> /tmp/order", "updateContentCommand": "echo update >> /tmp/order",
        "postCreateCommand": "echo postCreate >> /tmp/order", "postStartCommand": "echo postStart >> /tmp/order",
        "postAttachCommand": "echo postAttach >> /tmp/order"})},
                "lifecycle")
    repo.ok("add", "-b", "life", str(tmp_path / "life"), "--gpus", "none", "--trust")
    [container] = repo.containers()
    first = ["onCreate", "update", "postCreate", "postStart", "postAttach"]
    assert sh(container, "cat /tmp/order").split() == first
    repo.ok("restart", "life")
    assert sh(container, "cat /tmp/order").split() == [*first, "postStart", "postAttach"]


def test_a_changed_base_image_is_built_again(repo, tmp_path, docker_client):
    """The build's tag hashes the base image's id: the same Dockerfile on a new base is a new build."""
    base = f"gpuspace-test-base:{os.getpid()}"
    docker_client.images.get(IMAGE).tag(base)
    repo.commit({".devcontainer/Dockerfile": f"FROM {base}\nRUN cat /base-marker 2>/dev/null > /seen || true\n",
                 DEVCONTAINER: json.dumps({"build": {"dockerfile": "Dockerfile"}})}, "build")
    first = repo.ok("add", "-b", "one", str(tmp_path / "one"), "--gpus", "none")
    assert "Building" in first.stderr
    again = repo.ok("add", "-b", "two", str(tmp_path / "two"), "--gpus", "none")
    assert "Building" not in again.stderr  # nothing changed: reused
    changed = docker_client.containers.run(IMAGE, ["sh", "-c", "echo new > /base-marker"], detach=True)
    changed.wait()
    changed.commit(*base.split(":"))
    changed.remove()
    third = repo.ok("add", "-b", "three", str(tmp_path / "three"), "--gpus", "none")
    assert "Building" in third.stderr, third.stderr
    container = next(c for c in repo.containers() if c.labels["gpuspace.branch"] == "three")
    assert sh(container, "cat /seen") == "new"
    for branch in ("one", "two", "three"):
        repo.ok("remove", "--force", branch)
    docker_client.images.remove(base, force=True)


def test_one_build_serves_every_worktree_of_the_commit(repo, tmp_path, docker_client):
    """A context that is the whole worktree holds its `.git` file, which differs per worktree: it
    is git's, not the build's, so worktrees `a` and `b` of one commit share one image."""
    unique = f"LABEL unique=build-{time.time_ns()}\n"  # a build of its own, not one an earlier test left
    repo.commit({".devcontainer/Dockerfile": f"FROM {IMAGE}\n{unique}COPY marker.txt /marker.txt\n", "marker.txt": "m\n",
                 DEVCONTAINER: json.dumps({"build": {"dockerfile": "Dockerfile", "context": ".."}})}, "build")
    first = repo.ok("add", "-b", "a", str(tmp_path / "a"), "--gpus", "none")
    second = repo.ok("add", "-b", "b", str(tmp_path / "b"), "--gpus", "none")
    assert "Building" in first.stderr and "Building" not in second.stderr, second.stderr
    images = {c.attrs["Config"]["Image"] for c in repo.containers()}
    assert len(images) == 1, images
    for branch in ("a", "b"):
        repo.ok("remove", "--force", branch)
    docker_client.images.remove(images.pop(), force=True)


# --- the parser, without the engine -----------------------------------------------------------

def test_substitution_follows_the_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("SET_TO_EMPTY", "")
    monkeypatch.delenv("NOT_SET", raising=False)
    config = parse(tmp_path, {"containerEnv": {
        "A": "bar${localEnv:NOT_SET:default:a:b:c}bar", "B": "${localEnv:SET_TO_EMPTY:default}", "C": "${localEnv:NOT_SET}",
        "D": "${localEnv:NOT_SET:}", "E": "${unknown} ${containerEnv:PATH}", "F": "${localEnv:NOT_SET:${x}}"}})
    assert config.env["A"] == "bardefaultbar"
    assert config.env["B"] == "" and config.env["C"] == "" and config.env["D"] == ""
    assert config.env["E"] == "${unknown} ${containerEnv:PATH}"  # containerEnv: once the container exists
    assert config.env["F"] == "${x}"  # lazy: the first } ends the variable (default "${x"), as in the reference
    with pytest.raises(UsageError, match="names no environment variable"):
        parse(tmp_path, {"containerEnv": {"X": "${localEnv}"}})


def test_devcontainer_id_matches_the_reference_values():
    assert reference_devcontainer_id({"a": "b"}) == "1mqafr5h2iu6dhh3k1m4vtnuhml2uiec4s7bntt1v0f25ao63i1n"
    path, folder = Path("/home/u/proj/.devcontainer/devcontainer.json"), Path("/home/u/proj")
    assert devcontainer.devcontainer_id(path, folder) == "14ak8ob72e8kj9tspe40d7s4kp04qkoe2serr1g7b3oea7nffegl"


def test_container_substitute_reads_the_container_env():
    command = {"x": "echo ${containerEnv:HOME} ${containerEnv:NOPE:fallback} ${localWorkspaceFolder}"}
    assert devcontainer.container_substitute(command, {"HOME": "/root"}) == {"x": "echo /root fallback ${localWorkspaceFolder}"}


def test_mounts_default_to_volumes_and_keep_the_last_per_target(tmp_path):
    config = parse(tmp_path, {"mounts": [
        "source=history,target=/h", {"type": "volume", "target": "/anon"}, "type=tmpfs,target=/t",
        "type=bind,source=${localWorkspaceFolder}/data,target=/d,readonly", "source=second,target=/h"]},
        files={"data/x": ""})
    assert config.mounts == ["volume::/anon", "tmpfs::/t", f"{tmp_path / 'wt' / 'data'}:/d:ro", "volume:second:/h"]
    with pytest.raises(UsageError, match="is not a volume name"):
        parse(tmp_path, {"mounts": ["source=../etc,target=/x"]})


def test_ports_are_one_per_container_port(tmp_path):
    config = parse(tmp_path, {"forwardPorts": [8080, "localhost:8080", "127.0.0.1:9000", "db:5432"]})
    assert [(port.name, port.container_port) for port in config.ports] == [("port-8080", 8080), ("port-9000", 9000)]
    assert config.unsupported == ["forwardPorts db:5432 (a port of another service)"]


def test_base_images_of_a_multi_stage_dockerfile():
    text = "ARG VARIANT=18\nARG BASE\nFROM --platform=linux/amd64 node:${VARIANT} AS build\nFROM build AS test\n" \
           "FROM scratch\nFROM $BASE\n"
    assert devcontainer.base_images(text, {"BASE": "python:3.11"}) == ["node:18", "python:3.11"]
    assert devcontainer.base_images(text, {"VARIANT": "20"})[0] == "node:20"


def test_feature_options_become_environment_as_in_the_reference(tmp_path):
    feature = features.Feature("./f", tmp_path, {"jupyter-lab": True, "1abc": "x"},
                               {"options": {"version": {"default": "latest"}, "color": {"default": "blue"}}})
    assert feature.environment() == {"VERSION": "latest", "COLOR": "blue", "JUPYTER_LAB": "true", "_ABC": "x"}
    assert features.Feature("./f", tmp_path, "3.11", {"options": {"version": {"default": "latest"}}}).environment() \
        == {"VERSION": "3.11"}
    assert features.Feature("./f", tmp_path, "3.11", {"options": {}}).environment() == {}  # no version option


def test_untrusted_file_skips_what_needs_trust_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET", "s3cret")
    config = parse(tmp_path, {"containerEnv": {"T": "${localEnv:SECRET}"}, "postStartCommand": "x",
                              "capAdd": ["NET_ADMIN"], "build": {"dockerfile": "Dockerfile", "options": ["--network=host"]}},
                   trust=False, files={".devcontainer/Dockerfile": "FROM x\n"})
    assert config.env["T"] == "" and not config.lifecycle and not config.host_options
    assert config.skipped == ["${localEnv:SECRET}", "build.options --network host", "postStartCommand",
                              "capAdd NET_ADMIN"]


def test_an_existing_volume_with_driver_options_needs_trust(repo, tmp_path, docker_client):
    """A volume made as `-o bind,device=<dir>` is a host directory: an untrusted file naming it
    is refused, nothing made; trusted, it is mounted."""
    host_dir = tmp_path / "host-secrets"
    host_dir.mkdir()
    (host_dir / "key").write_text("secret")
    name = f"gpuspace-test-disguised-{os.getpid()}"
    docker_client.volumes.create(name, driver_opts={"type": "none", "o": "bind", "device": str(host_dir)})
    try:
        repo.commit({DEVCONTAINER: json.dumps({"image": IMAGE, "mounts": [f"source={name},target=/v"]})}, "a volume")
        refused = repo.gs("add", "-b", "v1", str(tmp_path / "v1"), "--gpus", "none")
        assert refused.returncode == 2 and f"volume '{name}'" in refused.stderr and "driver options" in refused.stderr
        assert not (tmp_path / "v1").exists() and not repo.containers()
        repo.ok("add", "-b", "v2", str(tmp_path / "v2"), "--gpus", "none", "--trust")
        [container] = repo.containers()
        assert sh(container, "cat /v/key") == "secret"
        repo.ok("remove", "--force", "v2")
    finally:
        docker_client.volumes.get(name).remove(force=True)


def test_the_derived_image_tag_hashes_every_input(tmp_path):
    folder = tmp_path / "feature"
    folder.mkdir()
    (folder / "install.sh").write_text("echo one\n")
    feature = features.Feature("./feature", folder, {"a": "1"}, {})
    tag = features.DerivedImage("base", "sha256:1", "", [feature]).tag()
    assert features.DerivedImage("base", "sha256:1", "", [feature]).tag() == tag
    assert features.DerivedImage("base", "sha256:2", "", [feature]).tag() != tag  # the base image changed
    assert features.DerivedImage("base", "sha256:1", "", [features.Feature("./feature", folder, {"a": "2"}, {})]).tag() != tag
    assert features.DerivedImage("base", "sha256:1", "", [feature], remote_user="me").tag() != tag
    (folder / "install.sh").write_text("echo two\n")
    assert features.DerivedImage("base", "sha256:1", "", [feature]).tag() != tag  # a file of the feature changed


def test_build_fields_are_read(tmp_path):
    config = parse(tmp_path, {"build": {"dockerfile": "Dockerfile", "target": "gpu", "cacheFrom": ["a:1", "b:2"],
                                        "options": ["--build-arg", "X=1", "--add-host=db:10.0.0.2", "--pull", "--squash"]}},
                   files={".devcontainer/Dockerfile": "FROM x\n"})
    assert config.build.target == "gpu" and config.build.cache_from == ["a:1", "b:2"]
    assert config.build.args == {"X": "1"}
    assert config.build.options == {"extra_hosts": {"db": "10.0.0.2"}, "pull": True}
    assert config.unsupported == ["build.options --squash"]


def test_image_flag_replaces_the_files_image_build_and_features_and_says_so(repo, tmp_path):
    repo.commit({".devcontainer/Dockerfile": f"FROM {IMAGE}\nRUN false\n",
                 DEVCONTAINER: json.dumps({"build": {"dockerfile": "Dockerfile"}, "features": {"./nowhere": {}}}),
                 ".devcontainer/nowhere/devcontainer-feature.json": "{}", ".devcontainer/nowhere/install.sh": "exit 1\n"},
                "build and feature")
    result = repo.ok("add", "-b", "flag", str(tmp_path / "flag"), "--gpus", "none", "--image", IMAGE)
    assert f"--image {IMAGE} replaces the devcontainer.json's build, features" in result.stderr
    assert "Building" not in result.stderr
    [container] = repo.containers()
    assert container.attrs["Config"]["Image"] == IMAGE


@pytest.mark.parametrize("document, message", [
    ({"mounts": "source=x,target=/y"}, "'mounts' must be a list"),
    ({"hostRequirements": "gpu"}, "'hostRequirements' must be an object"),
    ({"forwardPorts": 8080}, "'forwardPorts' must be a list"),
    ({"features": ["./f"]}, "'features' must be an object"),
    ({"overrideCommand": "no"}, "'overrideCommand' must be true or false"),
    ({"capAdd": "SYS_ADMIN"}, "'capAdd' must be a list of strings"),
    ({"postCreateCommand": {"a": 1}}, "'postCreateCommand' must be a string, a list of strings, or an object"),
    ({"workspaceFolder": "relative/dir"}, "workspaceFolder 'relative/dir' must be an absolute path"),
    ({"containerEnv": {"X": [1]}}, "the value of 'X' must be a string, number or boolean"),
])
def test_a_field_of_the_wrong_type_is_one_clear_error(tmp_path, document, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse(tmp_path, document)


def test_a_volume_another_project_made_is_not_mounted_by_an_untrusted_file(repo, tmp_path, docker_client):
    """A plain volume of someone else's may hold their data: refused, nothing made; a volume
    this repository made (labelled for it) is its own to mount again."""
    theirs, ours = f"gpuspace-test-theirs-{os.getpid()}", f"gpuspace-test-ours-{os.getpid()}"
    docker_client.volumes.create(theirs)
    try:
        repo.commit({DEVCONTAINER: json.dumps({"image": IMAGE, "mounts": [f"source={theirs},target=/v"]})}, "their volume")
        refused = repo.gs("add", "-b", "t1", str(tmp_path / "t1"), "--gpus", "none")
        assert refused.returncode == 2 and "an existing volume this repository did not make" in refused.stderr
        assert not (tmp_path / "t1").exists() and not repo.containers()
        repo.commit({DEVCONTAINER: json.dumps({"image": IMAGE, "mounts": [f"source={ours},target=/v"]})}, "our volume")
        repo.ok("add", "-b", "o1", str(tmp_path / "o1"), "--gpus", "none")
        assert docker_client.volumes.get(ours).attrs["Labels"]["gpuspace.repo"] == str(repo.common_dir)
        repo.ok("add", "-b", "o2", str(tmp_path / "o2"), "--gpus", "none")  # made by this repository: mounted again
        for branch in ("o1", "o2"):
            repo.ok("remove", "--force", branch)
    finally:
        for name in (theirs, ours):
            try:
                docker_client.volumes.get(name).remove(force=True)
            except Exception:  # noqa: BLE001 - not made
                pass


def test_a_container_made_without_starting_runs_its_create_commands_at_its_first_start(repo, tmp_path):
    repo.commit({DEVCONTAINER: json.dumps({
        "image": IMAGE, "onCreateCommand": "echo onCreate >> /tmp/order", "postStartCommand": "echo postStart >> /tmp/order"})},
                "lifecycle")
    repo.ok("add", "-b", "later", str(tmp_path / "later"), "--gpus", "none", "--trust", "--no-start")
    repo.ok("start", "later")
    [container] = repo.containers()
    assert sh(container, "cat /tmp/order").split() == ["onCreate", "postStart"]


# --- image metadata, remoteEnv, the environment probe, failing commands, initializeCommand ----------

@pytest.fixture(scope="module")
def metadata_image(docker_client):
    """A stand-in for an mcr.microsoft.com/devcontainers image: a `vscode` user with a home of its
    own, a profile script (as nvm and conda install one), and the label those images carry."""
    metadata = [{"remoteUser": "vscode", "containerEnv": {"FROM_IMAGE_ENV": "image"},
                 "remoteEnv": {"FROM_IMAGE_REMOTE": "image"},
                 "postCreateCommand": "echo image-postCreate >> /tmp/order"}]
    dockerfile = (f"FROM {IMAGE}\n"
                  "RUN echo 'vscode:x:1000:1000::/home/vscode:/usr/local/bin/vshell' >> /etc/passwd && "
                  "mkdir -p /usr/local/bin && printf '#!/bin/sh\\nexport VIA_SHELL=yes\\nexec /bin/sh \"$@\"\\n' "
                  "> /usr/local/bin/vshell && chmod +x /usr/local/bin/vshell && "
                  "echo 'vscode:x:1000:' >> /etc/group && mkdir -p /home/vscode && "
                  "echo kept > /home/vscode/from-image && chown -R 1000:1000 /home/vscode\n"
                  "RUN mkdir -p /etc/profile.d && echo 'export NVM_DIR=/opt/nvm' > /etc/profile.d/nvm.sh && "
                  "printf 'for f in /etc/profile.d/*.sh; do . \"$f\"; done\\n' > /etc/profile\n"
                  f"LABEL devcontainer.metadata='{json.dumps(metadata)}'\n")
    tag = f"gpuspace-test-metadata:{os.getpid()}"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    yield tag
    docker_client.images.remove(tag, force=True)


def test_the_image_metadata_gives_the_user_env_and_commands_before_the_files(repo, tmp_path, metadata_image):
    """The reference's e2e "Hello there, vscode!!!!": remoteUser from the image's label."""
    repo.commit({DEVCONTAINER: json.dumps({"image": metadata_image,
                                           "postCreateCommand": "echo file-postCreate $(whoami) >> /tmp/order"})},
                "metadata")
    repo.ok("add", "-b", "meta", str(tmp_path / "meta"), "--gpus", "none", "--trust")
    [container] = repo.containers()
    assert sh(container, "cat /tmp/order").splitlines() == ["image-postCreate", "file-postCreate vscode"]
    assert container_env(container)["FROM_IMAGE_ENV"] == "image"
    assert repo.ok("exec", "meta", "--", "whoami").stdout.strip() == "vscode"
    assert repo.ok("exec", "meta", "--", "sh", "-c", "echo $HOME $FROM_IMAGE_REMOTE $VIA_SHELL").stdout.split() == [
        "/home/vscode", "image", "yes"]  # VIA_SHELL: the probe ran vscode's own shell, as its passwd entry names it
    assert repo.ok("exec", "meta", "--", "cat", "/home/vscode/from-image").stdout.strip() == "kept"


def test_an_untrusted_file_gets_the_images_user_but_not_its_commands(repo, tmp_path, metadata_image):
    repo.commit({DEVCONTAINER: json.dumps({"image": metadata_image})}, "metadata, untrusted")
    result = repo.ok("add", "-b", "meta", str(tmp_path / "meta"), "--gpus", "none")
    assert "the image's devcontainer.metadata asks for postCreateCommand: not run" in result.stderr
    [container] = repo.containers()
    assert sh(container, "cat /tmp/order 2>/dev/null || echo none") == "none"
    assert repo.ok("exec", "meta", "--", "whoami").stdout.strip() == "vscode"


def test_remote_env_and_the_login_shell_s_environment_reach_commands(repo, tmp_path, metadata_image):
    repo.commit({DEVCONTAINER: json.dumps({
        "image": metadata_image, "remoteEnv": {"PATH": "${containerEnv:PATH}:/opt/extra/bin", "GREETING": "hi"},
        "postCreateCommand": "echo $GREETING $NVM_DIR $PATH > /tmp/seen"})}, "remoteEnv")
    repo.ok("add", "-b", "renv", str(tmp_path / "renv"), "--gpus", "none", "--trust")
    [container] = repo.containers()
    image_path = container_env(container)["PATH"]
    assert sh(container, "cat /tmp/seen").split() == ["hi", "/opt/nvm", f"{image_path}:/opt/extra/bin"]
    seen = repo.ok("exec", "renv", "--", "sh", "-c", "echo $GREETING $NVM_DIR $PATH").stdout.split()
    assert seen == ["hi", "/opt/nvm", f"{image_path}:/opt/extra/bin"]
    assert "NVM_DIR" not in container_env(container)  # the probe's, for commands; not the container's own


def test_user_env_probe_none_leaves_the_profile_out(repo, tmp_path, metadata_image):
    repo.commit({DEVCONTAINER: json.dumps({"image": metadata_image, "userEnvProbe": "none"})}, "no probe")
    repo.ok("add", "-b", "noprobe", str(tmp_path / "noprobe"), "--gpus", "none")
    assert repo.ok("exec", "noprobe", "--", "sh", "-c", "echo x${NVM_DIR}x").stdout.strip() == "xx"


def test_a_feature_s_lifecycle_commands_run_before_the_file_s_and_are_in_the_label(repo, tmp_path, docker_client):
    repo.commit({**feature_files(".devcontainer/hello", {"id": "hello", "version": "1.0.0",
                                                         "postCreateCommand": "echo feature >> /tmp/order",
                                                         "postStartCommand": "echo feature-start >> /tmp/order"},
                                 "true"),
                 DEVCONTAINER: json.dumps({"image": IMAGE, "features": {"./hello": {}},
                                           "postCreateCommand": "echo file >> /tmp/order"})}, "feature hooks")
    repo.ok("add", "-b", "fh", str(tmp_path / "fh"), "--gpus", "none", "--trust")
    [container] = repo.containers()
    assert sh(container, "cat /tmp/order").split() == ["feature", "file", "feature-start"]
    label = json.loads(docker_client.images.get(container.attrs["Config"]["Image"]).labels["devcontainer.metadata"])
    assert label == [{"id": "./hello", "postCreateCommand": "echo feature >> /tmp/order",
                      "postStartCommand": "echo feature-start >> /tmp/order"}]


@pytest.mark.parametrize("verb", ["add", "start"])
def test_a_failing_lifecycle_command_exits_non_zero_and_keeps_the_container(repo, tmp_path, verb):
    commands = ({"postCreateCommand": "exit 3", "postStartCommand": "echo never > /tmp/after"} if verb == "add"
                else {"postStartCommand": "[ -e /tmp/started ] && exit 4; touch /tmp/started"})
    repo.commit({DEVCONTAINER: json.dumps({"image": IMAGE, **commands})}, "failing")
    result = repo.gs("add", "-b", "fail", str(tmp_path / "fail"), "--gpus", "none", "--trust")
    if verb == "start":
        assert result.returncode == 0, result.stderr
        repo.ok("stop", "fail")
        result = repo.gs("start", "fail")
    key, code = ("postCreateCommand", 3) if verb == "add" else ("postStartCommand", 4)
    assert result.returncode == 1, result.stderr
    assert f"git-gpuspace: error: {key} exited with {code}; the commands after it were not run" in result.stderr
    [container] = repo.containers()
    container.reload()
    assert container.status == "running" and (tmp_path / "fail").is_dir()
    if verb == "add":
        assert sh(container, "cat /tmp/after 2>/dev/null || echo none") == "none"


def test_initialize_command_runs_on_the_host_in_the_worktree_only_when_trusted(repo, tmp_path):
    repo.commit({DEVCONTAINER: json.dumps({"image": IMAGE,
                                           "initializeCommand": "pwd > initialized.txt; id -u >> initialized.txt"})},
                "initialize")
    untrusted = repo.ok("add", "-b", "plain", str(tmp_path / "plain"), "--gpus", "none")
    assert "made without: initializeCommand (it runs on the host)" in untrusted.stderr
    assert not (tmp_path / "plain" / "initialized.txt").exists()
    repo.ok("add", "-b", "init", str(tmp_path / "init"), "--gpus", "none", "--trust")
    assert (tmp_path / "init" / "initialized.txt").read_text().split() == [str(tmp_path / "init"), str(os.getuid())]


def test_a_failing_initialize_command_makes_nothing(repo, tmp_path):
    repo.commit({DEVCONTAINER: json.dumps({"image": IMAGE, "initializeCommand": ["sh", "-c", "exit 7"]})}, "fails")
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "nope", str(tmp_path / "wts" / "nope"), "--gpus", "none", "--trust")
    assert result.returncode == 1 and "initializeCommand exited with 7; nothing was made" in result.stderr
    assert "Traceback" not in result.stderr
    assert repo.snapshot(tmp_path / "wts") == before and "nope" not in repo.branches()


def test_a_non_root_container_user_gets_its_own_home(repo, tmp_path, metadata_image):
    """`docker run -u vscode` gives /home/vscode: so does containerUser, with what the image put there."""
    repo.commit({DEVCONTAINER: json.dumps({"image": metadata_image, "containerUser": "vscode"})}, "containerUser")
    repo.ok("add", "-b", "cu", str(tmp_path / "cu"), "--gpus", "none")
    [container] = repo.containers()
    assert sh(container, "whoami; echo $HOME; touch ~/x && cat ~/from-image").split() == ["vscode", "/home/vscode", "kept"]
    assert repo.ok("exec", "cu", "--", "sh", "-c", "touch ~/y && echo $HOME").stdout.strip() == "/home/vscode"


def test_as_a_user_other_than_root_the_image_s_account_gets_your_uid(metadata_image, docker_client, tmp_path):
    """The reference's updateRemoteUserUID: run as `vscode`, given your uid, with its home and what
    the image put there; what it writes in the worktree is yours."""
    from conftest import Repo, _remove_containers
    from users import make_user, user_dir

    other = make_user("gpuspace-other", docker=True)
    home = user_dir(other, tmp_path)
    script = (f"git init -q -b main r && cd r && mkdir .devcontainer && "
              f"echo '{json.dumps({'image': metadata_image})}' > .devcontainer/devcontainer.json && "
              f"git add . && git commit -q -m dc")
    assert other.run("sh", "-c", script, cwd=home).returncode == 0
    repo = Repo(home / "r", docker_client)
    made_containers = []
    try:
        made = other.gpuspace("add", "-b", "mine", str(home / "wts" / "mine"), "--gpus", "none", cwd=repo.path)
        assert made.returncode == 0, made.stderr
        [container] = made_containers = repo.containers()
        assert container.attrs["Config"]["User"] == "vscode"
        seen = other.gpuspace("exec", str(home / "wts" / "mine"), "--", "sh", "-c",
                              "id -un; id -u; echo $HOME; cat ~/from-image; touch ~/x /workspace/written",
                              cwd=repo.path)
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout.split() == ["vscode", str(other.uid), "/home/vscode", "kept"]
        assert (home / "wts" / "mine" / "written").stat().st_uid == other.uid
        image = container.attrs["Config"]["Image"]
        assert image.startswith("gpuspace-build/uid:")
        again = other.gpuspace("add", "-b", "again", str(home / "wts" / "again"), "--gpus", "none", cwd=repo.path)
        assert again.returncode == 0 and "Building" not in again.stderr, again.stderr  # built once
    finally:
        _remove_containers(docker_client, repo)
        for image in {c.attrs["Config"]["Image"] for c in made_containers}:
            docker_client.images.remove(image, force=True)
