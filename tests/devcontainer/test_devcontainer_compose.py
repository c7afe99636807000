"""Compose-based devcontainer.json (`dockerComposeFile`, `service`), on the real engine with
local images only, mirroring the reference's fixtures (devcontainers/cli src/test/configs/
compose-Dockerfile-alpine, compose-image-without-features-minimal, compose-image-without-features:
an app service and a database beside it).

Trusted, each worktree is a Compose project of its own: the bound service gets the worktree,
/data, our labels and the exclusive GPUs; the others run beside it, in that project only;
`remove` (and a `git worktree remove`) takes the whole project down. Untrusted: refused, nothing
made.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import docker.errors
import pytest

from conftest import TEST_IMAGE
from git_gpuspace.devcontainer import compose, parser as devcontainer
from git_gpuspace.engine.containers import container_name
from git_gpuspace.errors import UsageError

IMAGE = TEST_IMAGE
DEVCONTAINER = ".devcontainer/devcontainer.json"
PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"

# compose-Dockerfile-alpine's service built from a Dockerfile, and compose-image-without-features'
# database beside it (a local image standing in for mongo)
FILES = {
    ".devcontainer/Dockerfile": f"FROM {IMAGE}\nRUN echo built > /built-marker\n",
    ".devcontainer/docker-compose.yml": (
        "version: '3.8'\n"
        "services:\n"
        "  app:\n"
        "    build: .\n"
        "    command: sleep 1000000\n"
        "    volumes:\n"
        "      - ..:/workspace:cached\n"
        "    environment:\n"
        "      FROM_COMPOSE: app\n"
        "  db:\n"
        f"    image: {IMAGE}\n"
        "    init: true\n"
        "    command: sleep 1000000\n"
        "    volumes:\n"
        "      - dbdata:/var/db\n"
        "volumes:\n"
        "  dbdata: {}\n"),
    DEVCONTAINER: json.dumps({
        "dockerComposeFile": "docker-compose.yml", "service": "app", "workspaceFolder": "/workspace",
        "containerEnv": {"FROM_DEVCONTAINER": "yes"},
        "postCreateCommand": "touch /tmp/postCreateCommand.testmarker"}),
}


@pytest.fixture
def projects(docker_client):
    """Compose projects a test made: whatever of them is left goes after it (containers,
    networks, volumes), as a failing test may leave them."""
    made: list[str] = []
    yield made
    for project in made:
        for container in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": f"{PROJECT}={project}"}):
            container.remove(force=True, v=True)
        for network in docker_client.networks.list(filters={"label": f"{PROJECT}={project}"}):
            network.remove()
        for volume in docker_client.volumes.list(filters={"label": f"{PROJECT}={project}"}):
            volume.remove(force=True)
        for image in docker_client.images.list(name=f"{project}_app"):
            for tag in [tag for tag in image.tags if tag.split(":")[0] == f"{project}_app"]:
                try:  # our tag only: the same build may be another test's image too, in use
                    docker_client.images.remove(tag)
                except docker.errors.APIError as error:
                    if error.status_code != 409:
                        raise


def project_of(repo, worktree: Path, projects: list[str]) -> tuple[str, str]:
    """(container name, Compose project) of a worktree's binding."""
    [row] = [row for row in repo.status() if Path(row["path"]) == worktree]
    name = row["container"]
    projects.append(compose.project_name(name))
    return name, compose.project_name(name)


def services(docker_client, project: str) -> dict[str, object]:
    return {c.labels[SERVICE]: c for c in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": f"{PROJECT}={project}"})}


def sh(container, command: str) -> tuple[int, str]:
    result = container.exec_run(["sh", "-c", command])
    return result.exit_code, result.output.decode().strip()


def test_a_trusted_compose_worktree_is_its_own_project_with_the_worktree_data_and_gpus_on_the_bound_service(
        repo, tmp_path, docker_client, projects):
    repo.commit(FILES, "compose")
    worktree = tmp_path / "wts" / "one"
    repo.ok("add", "-b", "one", str(worktree), "--gpus", "1", "--trust")
    name, project = project_of(repo, worktree, projects)
    found = services(docker_client, project)
    assert set(found) == {"app", "db"} and all(c.status == "running" for c in found.values())
    [bound] = repo.containers()  # ours, by our labels: the bound service's container, of our name
    assert bound.name == name == found["app"].name and bound.labels[SERVICE] == "app"
    assert bound.labels["gpuspace.worktree"] == str(worktree) and "gpuspace.repo" not in found["db"].labels

    # the worktree where workspaceFolder says (ours replaces the file's `..:/workspace`), /data, the build
    assert sh(bound, "cat /workspace/file0.txt") == (0, "content 0")
    mounts = {m["Destination"]: m for m in bound.attrs["Mounts"]}
    assert mounts["/workspace"]["Source"] == str(worktree) and "/data" in mounts
    assert sh(bound, "cat /built-marker") == (0, "built")
    env = dict(item.split("=", 1) for item in bound.attrs["Config"]["Env"])
    assert env["FROM_COMPOSE"] == "app" and env["FROM_DEVCONTAINER"] == "yes" and env["GPUSPACE_WORKTREE"] == str(worktree)
    assert sh(bound, "ls /tmp/postCreateCommand.testmarker")[0] == 0  # lifecycle commands run in the bound service

    # the exclusive GPU on the bound service only
    [request] = bound.attrs["HostConfig"]["DeviceRequests"]
    assert request["DeviceIDs"] == [bound.labels["gpuspace.gpus"]] and "," not in bound.labels["gpuspace.gpus"]
    assert not found["db"].attrs["HostConfig"].get("DeviceRequests")

    # the database beside it, by its service name, in this project's network
    code, out = sh(bound, "ping -c 1 -W 2 db")
    assert code == 0, out

    # the override lives in our private state, never in the worktree
    assert not list(worktree.rglob("*override*"))

    repo.ok("remove", "--force", "one")
    assert services(docker_client, project) == {}
    assert not docker_client.networks.list(filters={"label": f"{PROJECT}={project}"})
    assert docker_client.volumes.list(filters={"label": f"{PROJECT}={project}"})  # named volumes are kept, as Compose keeps them


def test_two_worktrees_are_two_projects_whose_services_never_meet(repo, tmp_path, docker_client, projects):
    repo.commit(FILES, "compose")
    made = {}
    for branch in ("a", "b"):
        worktree = tmp_path / "wts" / branch
        repo.ok("add", "-b", branch, str(worktree), "--gpus", "none", "--trust")
        made[branch] = project_of(repo, worktree, projects)[1]
    assert made["a"] != made["b"]
    found = {branch: services(docker_client, project) for branch, project in made.items()}
    for branch, other in (("a", "b"), ("b", "a")):
        db = found[branch]["db"]
        [address] = [n["IPAddress"] for n in db.attrs["NetworkSettings"]["Networks"].values()]
        code, out = sh(found[branch]["app"], "ping -c 1 -W 2 db")
        assert code == 0 and f"({address})" in out, out  # its own database
        [theirs] = [n["IPAddress"] for n in found[other]["db"].attrs["NetworkSettings"]["Networks"].values()]
        if branch == "a":
            assert sh(found[branch]["app"], f"ping -c 1 -W 1 {theirs}")[0] != 0  # the other's is not reachable
    repo.ok("remove", "--force", "a")
    assert services(docker_client, made["a"]) == {} and set(services(docker_client, made["b"])) == {"app", "db"}
    repo.ok("remove", "--force", "b")
    assert services(docker_client, made["b"]) == {}


@pytest.mark.parametrize("name", ["custom-project-name", "${CUSTOM_NAME}"])
def test_a_compose_file_that_names_its_project_is_still_one_project_per_worktree(repo, tmp_path, docker_client,
                                                                                 projects, name):
    """compose-with-name and compose-with-name-using-env-var: Compose v2's top-level `name:`
    (which Compose 1.x refuses) gives way to the worktree's project, as `-p` wins over it; the
    files' relative paths (the build context, `..` mounted) stay relative to their own folder."""
    files = dict(FILES)
    files[".devcontainer/docker-compose.yml"] = FILES[".devcontainer/docker-compose.yml"].replace(
        "version: '3.8'\n", f"version: '3.8'\nname: {name}\n")
    repo.commit(files, "compose with a name")
    made = {}
    for branch in ("named-a", "named-b"):
        worktree = tmp_path / "wts" / branch
        repo.ok("add", "-b", branch, str(worktree), "--gpus", "none", "--trust")
        made[branch] = project_of(repo, worktree, projects)[1]
        app = services(docker_client, made[branch])["app"]
        assert sh(app, "cat /built-marker") == (0, "built")
        assert sh(app, "cat /workspace/.devcontainer/docker-compose.yml")[1].startswith("version")
    assert len(set(made.values())) == 2 and not docker_client.containers.list(ignore_removed=True,
        all=True, filters={"label": f"{PROJECT}=custom-project-name"})
    for branch, project in made.items():
        repo.ok("remove", "--force", branch)
        assert services(docker_client, project) == {}


# compose-image-with-features and compose-Dockerfile-with-features, with a local feature standing
# in for the registry's: its install, its containerEnv and its own lifecycle hook
FEATURE = {
    ".devcontainer/hello/devcontainer-feature.json": json.dumps({
        "id": "hello", "version": "1.0.0", "options": {"greeting": {"type": "string", "default": "hey"}},
        "containerEnv": {"HELLO_FROM": "feature"}, "postCreateCommand": "touch /tmp/feature-post-create"}),
    ".devcontainer/hello/install.sh": "#!/bin/sh\nset -e\necho \"$GREETING\" > /etc/greeting\n",
}


@pytest.mark.parametrize("service", ["built", "image"])
def test_features_beside_compose_files_are_installed_on_the_bound_services_image(repo, tmp_path, docker_client,
                                                                                projects, service):
    """As the reference does: the bound service runs its image (pulled, or built by Compose)
    with the features installed, their environment and lifecycle hooks with it; the services
    beside it keep theirs."""
    files = {**FILES, **FEATURE}
    if service == "image":
        files[".devcontainer/docker-compose.yml"] = FILES[".devcontainer/docker-compose.yml"].replace(
            "    build: .\n", f"    image: {IMAGE}\n", 1)
    document = json.loads(FILES[DEVCONTAINER])
    files[DEVCONTAINER] = json.dumps({**document, "features": {"./hello": {"greeting": "howdy"}}})
    repo.commit(files, "compose with a feature")
    worktree = tmp_path / "wts" / service
    repo.ok("add", "-b", service, str(worktree), "--gpus", "none", "--trust")
    _, project = project_of(repo, worktree, projects)
    found = services(docker_client, project)
    app, db = found["app"], found["db"]
    assert sh(app, "cat /etc/greeting") == (0, "howdy")
    assert sh(app, "cat /built-marker") == ((0, "built") if service == "built" else (1, "cat: can't open "
                                                                                     "'/built-marker': No such file or directory"))
    env = dict(item.split("=", 1) for item in app.attrs["Config"]["Env"])
    assert env["HELLO_FROM"] == "feature" and env["FROM_COMPOSE"] == "app" and env["FROM_DEVCONTAINER"] == "yes"
    assert sh(app, "ls /tmp/feature-post-create /tmp/postCreateCommand.testmarker")[0] == 0
    assert sh(db, "cat /etc/greeting")[0] != 0  # the feature is the bound service's only
    repo.ok("remove", "--force", service)
    assert services(docker_client, project) == {}


def test_git_worktree_remove_takes_the_project_down_though_its_compose_files_are_gone(
        repo, tmp_path, docker_client, projects):
    """The project is taken down from what was recorded when it was made, not from the
    worktree's files (gone with it)."""
    repo.commit(FILES, "compose")
    worktree = tmp_path / "wts" / "gone"
    repo.ok("add", "-b", "gone", str(worktree), "--gpus", "none", "--trust")
    _, project = project_of(repo, worktree, projects)
    repo.git("worktree", "remove", "--force", str(worktree))
    repo.ok("status")  # reconciles: the worktree is gone, so is its binding's container
    assert services(docker_client, project) == {}
    assert not docker_client.networks.list(filters={"label": f"{PROJECT}={project}"})


@pytest.mark.parametrize("action, others_after_stop", [("stopCompose", "exited"), ("none", "running")])
def test_start_starts_the_project_and_stop_follows_shutdown_action(repo, tmp_path, docker_client, projects, action,
                                                                   others_after_stop):
    files = dict(FILES)
    files[DEVCONTAINER] = json.dumps({"dockerComposeFile": "docker-compose.yml", "service": "app",
                                      "shutdownAction": action})
    repo.commit(files, "compose")
    worktree = tmp_path / "wts" / "later"
    repo.ok("add", "-b", "later", str(worktree), "--gpus", "none", "--trust", "--no-start")
    _, project = project_of(repo, worktree, projects)
    assert {name: c.status for name, c in services(docker_client, project).items()} == {"app": "created", "db": "created"}
    repo.ok("start", "later")
    assert {name: c.status for name, c in services(docker_client, project).items()} == {"app": "running", "db": "running"}
    repo.ok("stop", "later")
    assert {name: c.status for name, c in services(docker_client, project).items()} == {
        "app": "exited", "db": others_after_stop}
    repo.ok("remove", "--force", "later")
    assert services(docker_client, project) == {}


def test_an_untrusted_compose_configuration_is_refused_with_nothing_made(repo, tmp_path, docker_client):
    repo.commit(FILES, "compose")
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "nope", str(tmp_path / "wts" / "nope"), "--gpus", "none")
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("git-gpuspace: error:")]
    assert "a Compose-based configuration" in line and "only when trusted" in line and "nothing was made" in line
    assert repo.snapshot(tmp_path / "wts") == before and "nope" not in repo.branches()
    made_here = docker_client.containers.list(ignore_removed=True,
        all=True, filters={"label": f"com.docker.compose.project.working_dir={tmp_path / 'wts' / 'nope' / '.devcontainer'}"})
    assert made_here == []


def test_a_service_that_fails_to_start_takes_the_project_down_and_leaves_nothing(repo, tmp_path, docker_client,
                                                                                 projects):
    broken = dict(FILES)
    broken[".devcontainer/docker-compose.yml"] = FILES[".devcontainer/docker-compose.yml"].replace(
        "    init: true\n", "    init: true\n    user: no-such-user\n")
    repo.commit(broken, "a database that cannot start")
    before = repo.snapshot(tmp_path / "wts")
    worktree = tmp_path / "wts" / "broken"
    result = repo.gs("add", "-b", "broken", str(worktree), "--gpus", "1", "--trust")
    assert result.returncode != 0, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("git-gpuspace: error:")]
    assert "starting the Compose services failed: for db Cannot start service db: unable to find user no-such-user" in line
    assert repo.snapshot(tmp_path / "wts") == before and not worktree.exists()
    project = compose.project_name(container_name(repo.path.name, worktree, repo.common_dir))
    projects.append(project)
    assert services(docker_client, project) == {}
    assert not docker_client.networks.list(filters={"label": f"{PROJECT}={project}"})


def test_a_service_the_compose_files_do_not_have_is_refused_before_anything_is_made(repo, tmp_path, projects):
    files = dict(FILES)
    files[DEVCONTAINER] = json.dumps({"dockerComposeFile": ["docker-compose.yml"], "service": "web"})
    repo.commit(files, "no such service")
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "web", str(tmp_path / "wts" / "web"), "--gpus", "none", "--trust")
    assert result.returncode == 2 and "service 'web'" in result.stderr and "app, db" in result.stderr, result.stderr
    assert repo.snapshot(tmp_path / "wts") == before


# --- the parser, without the engine -----------------------------------------------------------

def parse(tmp_path: Path, document: dict, trust: bool = True, files: dict[str, str] | None = None):
    worktree = tmp_path / "wt"
    for name, text in {".devcontainer/docker-compose.yml": "services: {}\n", **(files or {})}.items():
        (worktree / name).parent.mkdir(parents=True, exist_ok=True)
        (worktree / name).write_text(text)
    path = worktree / DEVCONTAINER
    content = json.dumps(document).encode()
    path.write_bytes(content)
    return devcontainer.load(path, content, worktree, worktree, trust)


def test_compose_fields_are_read_as_the_reference_reads_them(tmp_path):
    config = parse(tmp_path, {"dockerComposeFile": ["docker-compose.yml", "../compose.extra.yml"], "service": "app",
                              "runServices": ["db"], "shutdownAction": "none", "workspaceFolder": "/src",
                              "image": "ignored", "runArgs": ["--cap-add", "SYS_ADMIN"]},
                   files={"compose.extra.yml": "services: {}\n"})
    wt = tmp_path / "wt"
    assert config.compose == compose.ComposeConfig((str(wt / ".devcontainer/docker-compose.yml"),
                                                    str(wt / "compose.extra.yml")), "app", ("db",), "none")
    assert config.image is None and config.workspace == config.workdir == "/src"
    assert config.override_command is False  # the reference's default for a Compose service: its own command
    assert config.unsupported == ["image (with dockerComposeFile: the service's image)",
                                  "runArgs (with dockerComposeFile: the service's options)"]
    root = parse(tmp_path, {"dockerComposeFile": "docker-compose.yml", "service": "app", "workspaceFolder": "/"})
    assert root.workdir == "/" and root.workspace is None  # compose-Dockerfile-alpine: commands start at /


@pytest.mark.parametrize("document, message", [
    ({"dockerComposeFile": [], "service": "app"}, "'dockerComposeFile' must be a path or a non-empty list"),
    ({"dockerComposeFile": "missing.yml", "service": "app"}, "dockerComposeFile missing.yml does not exist"),
    ({"dockerComposeFile": "../../outside.yml", "service": "app"}, "is outside the repository"),
    ({"dockerComposeFile": "docker-compose.yml"}, "needs 'service'"),
    ({"dockerComposeFile": "docker-compose.yml", "service": "app", "runServices": "db"}, "'runServices' must be a list"),
    ({"dockerComposeFile": "docker-compose.yml", "service": "app", "shutdownAction": "stopContainer"},
     "'shutdownAction' of a Compose-based configuration must be one of none, stopCompose"),
])
def test_a_wrong_compose_field_is_one_clear_error(tmp_path, document, message):
    (tmp_path / "outside.yml").write_text("services: {}\n")
    with pytest.raises(UsageError, match=re.escape(message)):
        parse(tmp_path, document)


def test_untrusted_it_is_refused_before_its_files_are_read(tmp_path):
    with pytest.raises(UsageError, match="used only when trusted; nothing was made") as refused:
        parse(tmp_path, {"dockerComposeFile": "missing.yml"}, trust=False)
    assert "--trust" in refused.value.hint


def test_the_project_name_is_the_container_name_as_compose_writes_project_names():
    assert compose.project_name("gpuspace-My.Repo-feat_x-0a1b2c3d") == "gpuspace-myrepo-feat_x-0a1b2c3d"


@pytest.mark.parametrize("stderr, line", [
    # docker-compose 1.29's own words, as it wrote them
    ("The Compose file './docker-compose.yml' is invalid because:\nUnsupported config option for services.a: 'foo'\n"
     "'name' does not match any of the regexes: '^x-'\n\nYou might be seeing this error because you're using the "
     "wrong Compose file version.\nFor more on the Compose file format versions, see https://docs.docker.com/\n",
     "The Compose file './docker-compose.yml' is invalid because: Unsupported config option for services.a: 'foo' "
     "'name' does not match any of the regexes: '^x-'"),
    ("yaml.constructor.ConstructorError: could not determine a constructor for the tag '!reset'\n"
     '  in "./docker-compose.yml", line 8, column 12\n',
     "yaml.constructor.ConstructorError: could not determine a constructor for the tag '!reset' "
     'in "./docker-compose.yml", line 8, column 12'),
    ("WARNING: The CUSTOM_NAME variable is not set. Defaulting to a blank string.\nCreating x_db_1 ... error\n\n"
     "ERROR: for x_db_1  Cannot start service db: unable to find user nobody2\n\n"
     "ERROR: for db  Cannot start service db: unable to find user nobody2\n",
     "for db Cannot start service db: unable to find user nobody2"),
])
def test_composes_error_is_the_line_that_says_what_is_wrong(stderr, line):
    assert compose._error_of(stderr) == line
