"""Exact behaviour of the devcontainer.json parser, Dev Container Features and the settings layers.

As tests/workspace/test_state.py and its neighbours do for the other pure modules: every message a user reads is
pinned in full, and every boundary and branch, so that scripts/mutation's changes to
devcontainer.py, features.py and settings.py fail a test. Engine-free and fast: the parser is
called directly (as the parser section of tests/devcontainer/test_devcontainer_fixtures.py does), a feature
registry is conftest's in-process one (feature_registry), and the GPU inventory is conftest's
stand-in nvidia-smi.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from git_gpuspace import devcontainer, features, folders, gpus, settings, trust
from git_gpuspace.errors import StateError, UsageError
from git_gpuspace.model import Binding, GpuRequest, Limits, PortMap, PortRequest
from git_gpuspace.worktrees import RepoInfo, Worktree

# ---------------------------------------------------------------- devcontainer.load: helpers


def where(tmp_path: Path) -> Path:
    """The devcontainer.json that `parse` writes."""
    return tmp_path / "wt" / ".devcontainer" / "devcontainer.json"


def parse(tmp_path: Path, document: dict | str | bytes, trust: bool = True, files: dict[str, str] | None = None,
          fetch=None, repo_root: Path | None = None) -> devcontainer.Devcontainer:
    worktree = tmp_path / "wt"
    (worktree / ".devcontainer").mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (worktree / name).parent.mkdir(parents=True, exist_ok=True)
        (worktree / name).write_text(text)
    path = where(tmp_path)
    if isinstance(document, bytes):
        content = document
    else:
        content = (document if isinstance(document, str) else json.dumps(document)).encode()
    path.write_bytes(content)
    return devcontainer.load(path, content, worktree, repo_root or worktree, trust, fetch)


def refusal(tmp_path: Path, document, **kwargs) -> UsageError:
    with pytest.raises(UsageError) as refused:
        parse(tmp_path, document, **kwargs)
    return refused.value


def says(tmp_path: Path, document, message: str, **kwargs) -> UsageError:
    """The refusal's one line is exactly `{path}: message`."""
    error = refusal(tmp_path, document, **kwargs)
    assert str(error) == f"{where(tmp_path)}: {message}"
    return error


DOCKERFILE = {".devcontainer/Dockerfile": "FROM base\n"}

# ---------------------------------------------------------------- load: the document


def test_bytes_that_are_not_utf8_are_named_with_the_codecs_reason(tmp_path):
    error = refusal(tmp_path, b"\xff{}")
    assert str(error) == (f"cannot read {where(tmp_path)}: 'utf-8' codec can't decode byte 0xff in position 0: "
                          f"invalid start byte")


def test_json_that_does_not_parse_quotes_the_parsers_reason(tmp_path):
    error = refusal(tmp_path, "{")
    assert str(error) == f"{where(tmp_path)} is not valid JSON with comments: <string>:1 Unexpected end of input at column 2"
    assert error.hint is None


def test_json_with_comments_is_read(tmp_path):
    config = parse(tmp_path, '// a comment\n{"image": "x", /* here */ "containerEnv": {"A": "1",},}')
    assert config.image == "x" and config.env == {"A": "1"}


@pytest.mark.parametrize("document", ["[]", '"image"', "1"])
def test_the_top_level_must_be_an_object(tmp_path, document):
    says(tmp_path, document, "the top level must be an object")


def test_an_untrusted_compose_configuration_is_refused_with_what_to_do(tmp_path):
    error = says(tmp_path, {"dockerComposeFile": "compose.yml", "service": "app"},
                 "a Compose-based configuration (dockerComposeFile, service) runs the services its Compose files "
                 "describe, as they describe them, so it is used only when trusted; nothing was made", trust=False)
    assert error.hint == (f"review {where(tmp_path).parent} and the Compose files it names, then pass --trust "
                          f"(or run `git gpuspace trust {tmp_path / 'wt'}`)")


def test_an_empty_file_gives_the_defaults(tmp_path):
    config = parse(tmp_path, {})
    assert config.path == where(tmp_path) and config.worktree == tmp_path / "wt" and config.trusted is True
    assert config.image is None and config.build is None and config.features == []
    assert config.env == {} and config.ports == [] and config.mounts == [] and config.lifecycle == {}
    assert config.override_command is True and config.workspace is None and config.workdir is None
    assert config.container_user is None and config.remote_user is None and config.gpu is None
    assert config.layer == {} and config.host_options == {} and config.unsupported == [] and config.skipped == []
    assert config.notices() == []
    assert parse(tmp_path, {}, trust=False).trusted is False


def test_null_lists_and_objects_count_as_empty(tmp_path):
    config = parse(tmp_path, {"containerEnv": None, "forwardPorts": None, "mounts": None, "runArgs": None,
                              "features": None, "hostRequirements": None, "capAdd": None, "securityOpt": None})
    assert config.env == {} and config.ports == [] and config.mounts == [] and config.features == []
    assert config.unsupported == [] and config.host_options == {}


def test_unknown_keys_are_named_sorted(tmp_path):
    config = parse(tmp_path, {"zeta": 1, "image": "x", "alpha": 2, "$schema": "s", "waitFor": "postCreateCommand"})
    assert config.unsupported == ["alpha", "zeta"]
    assert config.notices() == ["devcontainer.json: not supported, ignored: alpha, zeta"]


def test_post_attach_command_is_taken_with_the_others(tmp_path):
    config = parse(tmp_path, {"postAttachCommand": "echo", "zzz": 1})
    assert config.unsupported == ["zzz"] and config.lifecycle == {"postAttachCommand": "echo"}


def test_initialize_command_is_taken_only_from_a_trusted_file(tmp_path):
    """It runs on the host: only what the user trusts; untrusted it is named among what needs trust."""
    trusted = parse(tmp_path, {"postAttachCommand": "a", "initializeCommand": ["b", "c"]})
    assert trusted.initialize_command == ["b", "c"] and trusted.unsupported == []
    untrusted = parse(tmp_path, {"initializeCommand": "b"}, trust=False)
    assert untrusted.initialize_command is None and untrusted.skipped == ["initializeCommand (it runs on the host)"]
    says(tmp_path, {"initializeCommand": 5}, "'initializeCommand' must be a string, a list of strings, or an object of those")


# ---------------------------------------------------------------- load: image, env, users, overrideCommand


@pytest.mark.parametrize("value", ["", "  ", 5, None, ["x"]])
def test_an_image_must_be_a_non_empty_string(tmp_path, value):
    says(tmp_path, {"image": value}, "'image' must be a non-empty string")


def test_variables_are_substituted_in_the_image(tmp_path):
    assert parse(tmp_path, {"image": "repo/${localWorkspaceFolderBasename}:1"}).image == "repo/wt:1"


def test_container_env_must_be_an_object(tmp_path):
    says(tmp_path, {"containerEnv": ["A=1"]}, "'containerEnv' must be an object")


def test_container_env_values_are_written_as_the_reference_writes_them(tmp_path):
    config = parse(tmp_path, {"containerEnv": {"S": "text", "T": True, "F": False, "N": None, "I": 1, "R": 1.5}})
    assert config.env == {"S": "text", "T": "true", "F": "false", "N": "null", "I": "1", "R": "1.5"}


@pytest.mark.parametrize("value", [["x"], {"a": 1}])
def test_a_container_env_value_that_is_no_scalar_is_refused(tmp_path, value):
    says(tmp_path, {"containerEnv": {"K": value}}, "the value of 'K' must be a string, number or boolean")


@pytest.mark.parametrize("value", [True, False])
def test_override_command_is_a_boolean(tmp_path, value):
    assert parse(tmp_path, {"overrideCommand": value}).override_command is value


@pytest.mark.parametrize("value", ["false", 0, None])
def test_override_command_that_is_no_boolean_is_refused(tmp_path, value):
    says(tmp_path, {"overrideCommand": value}, "'overrideCommand' must be true or false")


def test_users_are_read(tmp_path):
    config = parse(tmp_path, {"containerUser": "root", "remoteUser": "${localWorkspaceFolderBasename}"})
    assert config.container_user == "root" and config.remote_user == "wt"


@pytest.mark.parametrize("key", ["containerUser", "remoteUser"])
def test_an_empty_user_is_refused(tmp_path, key):
    says(tmp_path, {key: " "}, f"'{key}' must be a non-empty string")


# ---------------------------------------------------------------- load: lifecycle commands


def test_a_trusted_file_keeps_its_commands_in_the_order_they_run(tmp_path):
    document = {"postStartCommand": "d", "postCreateCommand": ["c", "x"], "updateContentCommand": {"a": "b", "c": ["d"]},
                "onCreateCommand": "a"}
    config = parse(tmp_path, document)
    assert list(config.lifecycle.items()) == [("onCreateCommand", "a"), ("updateContentCommand", {"a": "b", "c": ["d"]}),
                                              ("postCreateCommand", ["c", "x"]), ("postStartCommand", "d")]
    assert config.skipped == []


def test_an_untrusted_file_skips_its_commands_and_says_how_to_trust_it(tmp_path):
    config = parse(tmp_path, {"postStartCommand": "d", "onCreateCommand": "a"}, trust=False)
    assert config.lifecycle == {}
    assert config.skipped == ["onCreateCommand", "postStartCommand"]
    assert config.notices() == [
        f"devcontainer.json is not trusted, so it was made without: onCreateCommand, postStartCommand; to allow them, "
        f"review it and run `git gpuspace trust {tmp_path / 'wt'}`, then recreate the container "
        f"(`git gpuspace remove --keep-worktree` and `bind`)"]


def test_notices_name_the_unsupported_first_then_the_skipped(tmp_path):
    notices = parse(tmp_path, {"postStartCommand": "d", "other": 1}, trust=False).notices()
    assert len(notices) == 2
    assert notices[0] == "devcontainer.json: not supported, ignored: other"
    assert notices[1].startswith("devcontainer.json is not trusted, so it was made without: postStartCommand; ")


@pytest.mark.parametrize("command", [5, [], ["a", 1], {"a": 5}, {"a": []}, None, True])
def test_a_command_of_another_shape_is_refused(tmp_path, command):
    says(tmp_path, {"postCreateCommand": command},
         "'postCreateCommand' must be a string, a list of strings, or an object of those")


def test_a_command_of_another_shape_is_refused_untrusted_too(tmp_path):
    says(tmp_path, {"onCreateCommand": [1]}, "'onCreateCommand' must be a string, a list of strings, or an object of "
         "those", trust=False)


# ---------------------------------------------------------------- substitution


def test_workspace_variables_follow_the_workspace(tmp_path):
    env = {"F": "${containerWorkspaceFolder}", "B": "${containerWorkspaceFolderBasename}", "L": "${localWorkspaceFolder}",
           "LB": "${localWorkspaceFolderBasename}", "ID": "${devcontainerId}"}
    config = parse(tmp_path, {"containerEnv": env})
    assert config.env == {"F": "/workspace", "B": "workspace", "L": str(tmp_path / "wt"), "LB": "wt",
                          "ID": devcontainer.devcontainer_id(where(tmp_path), tmp_path / "wt")}
    config = parse(tmp_path, {"containerEnv": env, "workspaceFolder": "/src/${localWorkspaceFolderBasename}"})
    assert (config.env["F"], config.env["B"]) == ("/src/wt", "wt")
    mount = "type=bind,source=${localWorkspaceFolder},target=/mnt/code"
    config = parse(tmp_path, {"containerEnv": env, "workspaceMount": mount})
    assert (config.env["F"], config.env["B"]) == ("/mnt/code", "code")
    config = parse(tmp_path, {"containerEnv": env, "workspaceMount": mount, "workspaceFolder": "/mnt/code/sub"})
    assert (config.env["F"], config.env["B"]) == ("/mnt/code/sub", "sub")


def test_variables_are_substituted_in_lists_and_objects_but_not_in_keys(tmp_path):
    config = parse(tmp_path, {"postCreateCommand": {"${localWorkspaceFolderBasename}": ["${localWorkspaceFolderBasename}", "x"]},
                              "overrideCommand": False})
    assert config.lifecycle == {"postCreateCommand": {"${localWorkspaceFolderBasename}": ["wt", "x"]}}
    assert config.override_command is False


@pytest.mark.parametrize("name", ["localEnv", "env"])
def test_a_trusted_file_reads_the_hosts_environment(tmp_path, monkeypatch, name):
    monkeypatch.setenv("GS_SET", "value")
    monkeypatch.delenv("GS_UNSET", raising=False)
    config = parse(tmp_path, {"containerEnv": {"A": f"${{{name}:GS_SET}}", "B": f"${{{name}:GS_UNSET:dflt}}",
                                               "C": f"${{{name}:GS_SET:dflt}}", "D": f"${{{name}:GS_UNSET}}"}})
    assert config.env == {"A": "value", "B": "dflt", "C": "value", "D": ""}
    assert config.skipped == []


@pytest.mark.parametrize("name", ["localEnv", "env"])
def test_an_untrusted_file_gets_the_default_and_names_each_variable_once(tmp_path, monkeypatch, name):
    monkeypatch.setenv("GS_SET", "value")
    config = parse(tmp_path, {"containerEnv": {"A": f"${{{name}:GS_SET}}", "B": f"${{{name}:GS_SET:dflt}}",
                                               "C": f"${{{name}:GS_SET}}"}}, trust=False)
    assert config.env == {"A": "", "B": "dflt", "C": ""}
    assert config.skipped == [f"${{{name}:GS_SET}}", f"${{{name}:GS_SET:dflt}}"]


@pytest.mark.parametrize("text", ["${localEnv}", "${localEnv:}", "${env}", "${env::x}"])
def test_an_environment_variable_needs_a_name(tmp_path, text):
    says(tmp_path, {"image": text}, f"'{text}' names no environment variable")


def test_an_environment_variable_needs_a_name_untrusted_too(tmp_path):
    says(tmp_path, {"image": "${localEnv}"}, "'${localEnv}' names no environment variable", trust=False)


def test_unknown_and_container_variables_are_left_as_written(tmp_path):
    config = parse(tmp_path, {"containerEnv": {"A": "${nope} ${containerEnv:PATH} ${containerWorkspaceFolder:x}"}})
    assert config.env["A"] == "${nope} ${containerEnv:PATH} /workspace"


def test_substitution_of_other_values_keeps_them():
    substitute = devcontainer.Substitution(devcontainer.Devcontainer(path=Path("/r/d.json")), Path("/r/wt"), True)
    assert substitute(5) == 5 and substitute(None) is None and substitute(True) is True
    assert substitute({"k": ["${localWorkspaceFolderBasename}", 1]}) == {"k": ["wt", 1]}
    assert substitute.variables == {"localWorkspaceFolder": "/r/wt", "localWorkspaceFolderBasename": "wt",
                                    "devcontainerId": devcontainer.devcontainer_id(Path("/r/d.json"), Path("/r/wt"))}
    substitute.set_container_folder("/a/b")
    assert substitute.variables["containerWorkspaceFolder"] == "/a/b"
    assert substitute.variables["containerWorkspaceFolderBasename"] == "b"


def test_devcontainer_id_is_the_references_value():
    path, folder = Path("/home/u/proj/.devcontainer/devcontainer.json"), Path("/home/u/proj")
    assert devcontainer.devcontainer_id(path, folder) == "14ak8ob72e8kj9tspe40d7s4kp04qkoe2serr1g7b3oea7nffegl"


def test_devcontainer_id_is_52_base32_digits():
    value = devcontainer.devcontainer_id(Path("/p/.devcontainer/devcontainer.json"), Path("/p"))
    labels = {"devcontainer.config_file": "/p/.devcontainer/devcontainer.json", "devcontainer.local_folder": "/p"}
    number = int(hashlib.sha256(json.dumps(labels, separators=(",", ":")).encode()).hexdigest(), 16)
    assert len(value) == 52 and int(value, 32) == number
    # not ASCII-escaped, as the reference's JSON.stringify
    accented = devcontainer.devcontainer_id(Path("/ü/d.json"), Path("/ü"))
    text = '{"devcontainer.config_file":"/ü/d.json","devcontainer.local_folder":"/ü"}'
    assert int(accented, 32) == int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16)


def test_a_small_id_is_padded_with_zeros(monkeypatch):
    class Small:
        def hexdigest(self):
            return "0" * 63 + "21"  # 33 = 1 * 32 + 1

    monkeypatch.setattr(hashlib, "sha256", lambda data: Small())
    assert devcontainer.devcontainer_id(Path("/p/d.json"), Path("/p")) == "0" * 50 + "11"


def test_container_substitute_reads_the_containers_environment():
    env = {"HOME": "/root", "EMPTY": ""}
    assert devcontainer.container_substitute("${containerEnv:HOME}/x", env) == "/root/x"
    assert devcontainer.container_substitute("${containerEnv:NOPE:fall}", env) == "fall"
    assert devcontainer.container_substitute("[${containerEnv:NOPE}]", env) == "[]"
    assert devcontainer.container_substitute("${containerEnv:EMPTY:fall}", env) == ""
    assert devcontainer.container_substitute("${containerEnv} ${other:HOME} ${x}", env) == "${containerEnv} ${other:HOME} ${x}"
    assert devcontainer.container_substitute(["${containerEnv:HOME}", {"k": "${containerEnv:HOME}"}, 3, None], env) \
        == ["/root", {"k": "/root"}, 3, None]


# ---------------------------------------------------------------- workspaceFolder, workspaceMount


def test_workspace_folder_is_where_commands_start_and_the_worktree_is_mounted(tmp_path):
    config = parse(tmp_path, {"workspaceFolder": "/src"})
    assert (config.workspace, config.workdir) == ("/src", "/src")


@pytest.mark.parametrize("value", ["", 5])
def test_a_workspace_folder_must_be_a_string(tmp_path, value):
    says(tmp_path, {"workspaceFolder": value}, "'workspaceFolder' must be a non-empty string")


@pytest.mark.parametrize("value", ["src", "/", "//", "/a/../b", "/.."])
def test_a_workspace_folder_must_be_an_absolute_path_other_than_the_root(tmp_path, value):
    says(tmp_path, {"workspaceFolder": value}, f"workspaceFolder {value!r} must be an absolute path in the container, not /")


def test_a_workspace_folder_may_have_dots_in_names(tmp_path):
    assert parse(tmp_path, {"workspaceFolder": "/a/..b/c."}).workdir == "/a/..b/c."


@pytest.mark.parametrize("folder", ["/X", "/XaX"])
def test_a_workspace_folder_is_any_absolute_path_but_the_root(tmp_path, folder):
    assert parse(tmp_path, {"workspaceFolder": folder}).workdir == folder


def test_a_workspace_mount_target_loses_only_trailing_slashes(tmp_path):
    config = parse(tmp_path, {"workspaceMount": "type=bind,source=${localWorkspaceFolder},target=/codeX//"})
    assert config.workspace == "/codeX"


@pytest.mark.parametrize("mount", [
    "type=bind,source=${localWorkspaceFolder},target=/code/",
    "type=bind,src=${localWorkspaceFolder}/,destination=/code",
    "type=bind,source=${localWorkspaceFolder},dst=/code",
    {"type": "bind", "source": "${localWorkspaceFolder}", "target": "/code"},
])
def test_workspace_mount_of_the_worktree_moves_it(tmp_path, mount):
    config = parse(tmp_path, {"workspaceMount": mount})
    assert (config.workspace, config.workdir) == ("/code", None)
    assert config.unsupported == []


def test_workspace_mount_and_folder_together(tmp_path):
    config = parse(tmp_path, {"workspaceMount": "type=bind,source=${localWorkspaceFolder},target=/code",
                              "workspaceFolder": "/code/sub"})
    assert (config.workspace, config.workdir) == ("/code", "/code/sub")


@pytest.mark.parametrize("mount", [
    "source=${localWorkspaceFolder},target=/code",  # a volume
    "type=volume,source=${localWorkspaceFolder},target=/code",
    "type=bind,target=/code",
    "type=bind,source=${localWorkspaceFolder}/sub,target=/code",
])
def test_a_workspace_mount_of_anything_else_is_named_and_left(tmp_path, mount):
    (tmp_path / "wt" / "sub").mkdir(parents=True)
    config = parse(tmp_path, {"workspaceMount": mount})
    shown = mount.replace("${localWorkspaceFolder}", str(tmp_path / "wt"))
    assert config.unsupported == [f"workspaceMount {shown} (only the worktree itself can be mounted)"]
    assert (config.workspace, config.workdir) == (None, None)


def test_a_workspace_mount_left_takes_the_workspace_folder_with_it(tmp_path):
    config = parse(tmp_path, {"workspaceMount": {"type": "bind", "source": "/elsewhere", "target": "/code"},
                              "workspaceFolder": "/code"})
    assert config.unsupported == ["workspaceMount type=bind,source=/elsewhere,target=/code (only the worktree itself "
                                  "can be mounted), so workspaceFolder too"]
    assert (config.workspace, config.workdir) == (None, None)


@pytest.mark.parametrize("target", ["", "code", "/"])
def test_a_workspace_mount_target_must_be_an_absolute_path(tmp_path, target):
    says(tmp_path, {"workspaceMount": f"type=bind,source=${{localWorkspaceFolder}},target={target}"},
         f"workspaceMount target {target!r} must be an absolute path in the container, not /")


def test_a_workspace_mount_of_another_kind_is_refused(tmp_path):
    says(tmp_path, {"workspaceMount": 5}, "mounts entry 5 is neither a string nor an object")


def test_a_workspace_folder_is_checked_before_the_workspace_mount(tmp_path):
    says(tmp_path, {"workspaceMount": 5, "workspaceFolder": "rel"},
         "workspaceFolder 'rel' must be an absolute path in the container, not /")


# ---------------------------------------------------------------- build


def test_build_defaults_to_the_dockerfile_beside_the_file_and_its_folder(tmp_path):
    config = parse(tmp_path, {"build": {}}, files=DOCKERFILE)
    folder = tmp_path / "wt" / ".devcontainer"
    assert config.build == devcontainer.Build(folder / "Dockerfile", folder, {}, None, [], {})
    assert config.unsupported == []


def test_build_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("GS_ARG", "from-host")
    config = parse(tmp_path, {"build": {"dockerfile": "../docker/Dockerfile.gpu", "context": "..", "target": "gpu",
                                        "args": {"A": "${localEnv:GS_ARG}", "B": 2, "C": None}, "cacheFrom": "c:1",
                                        "extra": 1, "zz": 2}},
                   files={"docker/Dockerfile.gpu": "FROM x\n"})
    build = config.build
    assert build.dockerfile == tmp_path / "wt" / "docker" / "Dockerfile.gpu" and build.context == tmp_path / "wt"
    assert build.args == {"A": "from-host", "B": "2", "C": "null"} and build.target == "gpu"
    assert build.cache_from == ["c:1"] and build.options == {}
    assert config.unsupported == ["build.extra", "build.zz"]


def test_the_old_top_level_dockerfile_and_context(tmp_path):
    config = parse(tmp_path, {"dockerFile": "Dockerfile", "context": ".."}, files=DOCKERFILE)
    assert config.build.dockerfile == tmp_path / "wt" / ".devcontainer" / "Dockerfile"
    assert config.build.context == tmp_path / "wt" and config.unsupported == []
    config = parse(tmp_path, {"dockerFile": "Dockerfile"}, files=DOCKERFILE)
    assert config.build.context == tmp_path / "wt" / ".devcontainer"


def test_build_dockerfile_wins_over_the_old_field(tmp_path):
    config = parse(tmp_path, {"build": {"dockerfile": "Other"}, "dockerFile": "Dockerfile"},
                   files={".devcontainer/Other": "FROM y\n"})
    assert config.build.dockerfile.name == "Other" and config.build.context == tmp_path / "wt" / ".devcontainer"


def test_the_old_dockerfile_field_keeps_the_build_objects_other_fields(tmp_path):
    config = parse(tmp_path, {"build": {"target": "t", "context": ".."}, "dockerFile": "Dockerfile"}, files=DOCKERFILE)
    assert config.build.target == "t" and config.build.context == tmp_path / "wt"


def test_a_context_without_dockerfile_is_named(tmp_path):
    config = parse(tmp_path, {"build": {"dockerfile": "Dockerfile"}, "context": ".."}, files=DOCKERFILE)
    assert config.unsupported == ["context (without dockerFile)"]
    assert config.build.context == tmp_path / "wt" / ".devcontainer"


@pytest.mark.parametrize("build", ["Dockerfile", ["Dockerfile"]])
def test_build_must_be_an_object(tmp_path, build):
    says(tmp_path, {"build": build}, "'build' must be an object")


@pytest.mark.parametrize("key", ["dockerfile", "context", "target"])
def test_build_strings_must_be_non_empty(tmp_path, key):
    says(tmp_path, {"build": {key: ""}}, f"'build.{key}' must be a non-empty string", files=DOCKERFILE)


def test_a_dockerfile_outside_the_repository_is_refused(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    base = tmp_path / "wt" / ".devcontainer"
    says(tmp_path, {"build": {"dockerfile": "../../Dockerfile"}},
         f"build.dockerfile {base / '../../Dockerfile'} is outside the repository")


def test_a_context_outside_the_repository_is_refused(tmp_path):
    says(tmp_path, {"build": {"context": "../.."}}, f"build.context {tmp_path} is outside the repository",
         files=DOCKERFILE)


def test_a_build_may_take_from_the_repository_beyond_the_worktree(tmp_path):
    """A linked worktree's Dockerfile and context may be in the repository's main worktree, or its own."""
    worktree, repo = tmp_path / "wt", tmp_path / "repo"
    (repo / "docker").mkdir(parents=True)
    (repo / "docker" / "Dockerfile").write_text("FROM x\n")
    (worktree / ".devcontainer").mkdir(parents=True)
    (worktree / ".devcontainer" / "Dockerfile").write_text("FROM y\n")
    path = worktree / ".devcontainer" / "devcontainer.json"
    document = {"build": {"dockerfile": f"{repo}/docker/Dockerfile", "context": str(repo)}}
    build = devcontainer.load(path, json.dumps(document).encode(), worktree, repo, True).build
    assert (build.dockerfile, build.context) == (repo / "docker" / "Dockerfile", repo)
    build = devcontainer.load(path, b'{"build": {}}', worktree, repo, True).build
    assert (build.dockerfile, build.context) == (worktree / ".devcontainer" / "Dockerfile", worktree / ".devcontainer")


def test_a_missing_dockerfile_is_named(tmp_path):
    says(tmp_path, {"build": {"dockerfile": "Nope"}},
         f"build.dockerfile {tmp_path / 'wt' / '.devcontainer' / 'Nope'} does not exist")


def test_build_args_must_be_an_object(tmp_path):
    says(tmp_path, {"build": {"args": ["A=1"]}}, "'build.args' must be an object", files=DOCKERFILE)


def test_a_build_arg_that_is_no_scalar_is_refused(tmp_path):
    says(tmp_path, {"build": {"args": {"A": [1]}}}, "the value of 'A' must be a string, number or boolean",
         files=DOCKERFILE)


@pytest.mark.parametrize("value", [5, [1], ["a", 2]])
def test_cache_from_must_be_strings(tmp_path, value):
    says(tmp_path, {"build": {"cacheFrom": value}}, "'build.cacheFrom' must be a string or a list of strings",
         files=DOCKERFILE)


@pytest.mark.parametrize("value", [5, "--pull", [1]])
def test_build_options_must_be_a_list_of_strings(tmp_path, value):
    says(tmp_path, {"build": {"options": value}}, "'build.options' must be a list of strings", files=DOCKERFILE)


def build_options(tmp_path, options, trust=True):
    config = parse(tmp_path, {"build": {"options": options}}, trust=trust, files=DOCKERFILE)
    return config.build, config


def test_build_options_become_docker_sdk_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("GS_FROM_HOST", "h")
    build, config = build_options(tmp_path, [
        "--build-arg A=1", "--build-arg=B=x=y", "--build-arg", "GS_FROM_HOST", "--label", "l1=v", "--label=l2",
        "--add-host", "db:10.0.0.2", "--add-host=cache", "--platform", "linux/arm64", "--network=bridge",
        "--target", "t", "--pull", "--no-cache"])
    assert build.args == {"A": "1", "B": "x=y", "GS_FROM_HOST": "h"}
    assert build.target == "t"
    assert build.options == {"labels": {"l1": "v", "l2": ""}, "extra_hosts": {"db": "10.0.0.2", "cache": ""},
                             "platform": "linux/arm64", "network_mode": "bridge", "pull": True, "nocache": True}
    assert config.unsupported == [] and config.skipped == []


def test_a_trusted_build_arg_from_the_host_that_is_unset_is_empty(tmp_path, monkeypatch):
    monkeypatch.delenv("GS_UNSET", raising=False)
    build, _ = build_options(tmp_path, ["--build-arg", "GS_UNSET"])
    assert build.args == {"GS_UNSET": ""}


def test_an_untrusted_build_arg_from_the_host_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("GS_FROM_HOST", "h")
    build, _ = build_options(tmp_path, ["--build-arg", "GS_FROM_HOST", "--build-arg", "A=1"], trust=False)
    assert build.args == {"GS_FROM_HOST": "", "A": "1"}


def test_the_hosts_network_for_build_steps_needs_trust(tmp_path):
    build, config = build_options(tmp_path, ["--network", "host"], trust=False)
    assert build.options == {} and config.skipped == ["build.options --network host"]
    build, config = build_options(tmp_path, ["--network", "host"])
    assert build.options == {"network_mode": "host"} and config.skipped == []


def test_build_options_we_cannot_apply_are_named_with_their_value(tmp_path):
    build, config = build_options(tmp_path, ["--squash", "--pull=always", "-q=1", "--label=", "--shm-size 1g", "--label"])
    assert build.options == {}
    assert config.unsupported == ["build.options --squash", "build.options --pull always", "build.options -q=1",
                                  "build.options --label ", "build.options --shm-size", "build.options 1g",
                                  "build.options --label"]


def test_a_value_option_takes_the_next_word_even_when_it_looks_like_a_flag(tmp_path):
    build, config = build_options(tmp_path, ["--label", "--pull"])
    assert build.options == {"labels": {"--pull": ""}} and config.unsupported == []


def test_build_options_are_split_as_a_shell_would(tmp_path):
    build, _ = build_options(tmp_path, ["--label 'a=b c' --target=x"])
    assert build.options == {"labels": {"a": "b c"}} and build.target == "x"


def test_build_options_target_overrides_build_target(tmp_path):
    config = parse(tmp_path, {"build": {"target": "a", "options": ["--target", "b"]}}, files=DOCKERFILE)
    assert config.build.target == "b"


# ---------------------------------------------------------------- Build: base images and tag


def test_base_images_of_a_dockerfile():
    text = ("# syntax=docker/dockerfile:1\n\nARG A=one\nARG B=\"two\"\nARG C='three'\nARG D\nARG\n"
            "FROM --platform=$P ${A}:${B} as Builder\n"
            "ARG LATE=late\n"
            "FROM builder\nFROM ${C}/x:$D AS other\nFROM scratch\nFROM ${UNSET:-fallback}:1\nFROM $LATE\n"
            "FROM one:two\nFROM --platform=x\nFROM \\\n  ${D:-dd}\n")
    assert devcontainer.base_images(text, {"D": "dee"}) == ["one:two", "three/x:dee", "fallback:1", "", "dee"]


def test_base_images_strip_only_quotes_from_a_default():
    assert devcontainer.base_images("ARG A=Xim'g'X\nARG B=\"'b'\"\nFROM ${A}:${B}\n", {}) == ["Xim'g'X:b"]


def test_base_images_an_arg_given_wins_over_its_default():
    assert devcontainer.base_images("ARG A=one\nFROM ${A}\n", {"A": "given"}) == ["given"]
    assert devcontainer.base_images("ARG A=one\nFROM ${A:-d}\n", {"A": ""}) == ["d"]


def test_base_images_of_a_build_read_its_dockerfile(tmp_path):
    (tmp_path / "Dockerfile").write_bytes(b"ARG V=1\nFROM img:${V}\n# \xff\n")
    build = devcontainer.Build(tmp_path / "Dockerfile", tmp_path, {"V": "2"})
    assert build.base_images() == ["img:2"]


def make_build(tmp_path, **changes) -> devcontainer.Build:
    context = tmp_path / "context"
    if not context.exists():
        context.mkdir()
        (context / "Dockerfile").write_text("FROM x\n")
        (context / "sub").mkdir()
        (context / "sub" / "file").write_text("one")
    fields = dict(dockerfile=context / "Dockerfile", context=context, args={"A": "1", "B": "2"}, target=None,
                  cache_from=[], options={})
    fields.update(changes)
    return devcontainer.Build(**fields)


def test_a_build_tag_is_content_addressed(tmp_path):
    tag = make_build(tmp_path).tag({"x": "sha256:1"})
    assert tag.startswith("gpuspace-build/devcontainer:") and len(tag.split(":")[1]) == 16
    assert make_build(tmp_path, args={"B": "2", "A": "1"}).tag({"x": "sha256:1"}) == tag
    changed = [make_build(tmp_path, args={"A": "1"}).tag({"x": "sha256:1"}),
               make_build(tmp_path, target="t").tag({"x": "sha256:1"}),
               make_build(tmp_path, cache_from=["c"]).tag({"x": "sha256:1"}),
               make_build(tmp_path, options={"pull": True}).tag({"x": "sha256:1"}),
               make_build(tmp_path).tag({"x": "sha256:2"}),
               make_build(tmp_path).tag({})]
    assert len({tag, *changed}) == 7


def test_a_build_tag_follows_the_context_files_but_not_git(tmp_path):
    build = make_build(tmp_path)
    tag = build.tag({})
    context = tmp_path / "context"
    (context / ".git").mkdir()
    (context / ".git" / "HEAD").write_text("x")
    assert build.tag({}) == tag
    (context / "sub" / "file").write_text("two")
    second = build.tag({})
    assert second != tag
    (context / "sub" / "file").rename(context / "sub" / "renamed")
    assert build.tag({}) not in (tag, second)
    (context / "Dockerfile").write_text("FROM y\n")
    assert len({tag, second, build.tag({})}) == 3


def list_in_reverse(monkeypatch) -> None:
    """os.walk lists every folder's entries in the reverse order from now on."""
    walk = os.walk

    def reversed_walk(top):
        for root, dirs, files in walk(top):
            dirs.reverse()
            files.reverse()
            yield root, dirs, files

    monkeypatch.setattr(os, "walk", reversed_walk)


def test_a_build_tag_does_not_depend_on_the_order_the_file_system_lists(tmp_path, monkeypatch):
    build = make_build(tmp_path)
    context = tmp_path / "context"
    for name in ("b", "a", "c"):
        (context / name).mkdir()
        (context / name / "z").write_text(name)
        (context / name / "y").write_text(name)
    tag = build.tag({})
    list_in_reverse(monkeypatch)
    assert build.tag({}) == tag


def test_content_of_a_file_is_its_sha256(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * ((1 << 20) + 5))
    assert folders.content_of(tmp_path / "f") == hashlib.sha256(b"x" * ((1 << 20) + 5)).digest()


def test_content_of_a_link_is_its_target_text(tmp_path):
    (tmp_path / "link").symlink_to("/nowhere/at/all")
    assert folders.content_of(tmp_path / "link") == b"link\0/nowhere/at/all"


def test_content_of_a_fifo_is_its_kind_and_a_missing_file_unreadable(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    assert folders.content_of(tmp_path / "fifo") == f"special {stat.S_IFIFO}".encode()
    assert folders.content_of(tmp_path / "missing") == b"unreadable"


def test_content_of_a_file_that_cannot_be_opened_is_unreadable(tmp_path, monkeypatch):
    """Refused at open (mode 0 for a user; the call itself refused, so that root sees it too)."""
    (tmp_path / "f").write_text("x")
    (tmp_path / "f").chmod(0)
    real_open = os.open

    def refused(path, flags, *args, **kwargs):
        if str(path) == str(tmp_path / "f"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refused)
    assert folders.content_of(tmp_path / "f") == b"unreadable"


def test_content_of_a_file_swapped_for_a_link_after_the_check_is_not_followed(tmp_path, monkeypatch):
    """O_NOFOLLOW: a symlink put in place between lstat and open is not read through."""
    (tmp_path / "secret").write_text("s")
    (tmp_path / "f").symlink_to(tmp_path / "secret")
    regular = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 1, 0, 0, 0))
    monkeypatch.setattr(Path, "lstat", lambda self: regular)
    assert folders.content_of(tmp_path / "f") == b"unreadable"


def test_content_of_a_fifo_swapped_in_after_the_check_does_not_block(tmp_path, monkeypatch):
    """O_NONBLOCK: a FIFO put in place between lstat and open opens at once and reads empty."""
    os.mkfifo(tmp_path / "fifo")
    regular = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 1, 0, 0, 0))
    monkeypatch.setattr(Path, "lstat", lambda self: regular)
    assert folders.content_of(tmp_path / "fifo") == hashlib.sha256(b"").digest()


# ---------------------------------------------------------------- forwardPorts


def test_forwarded_ports_are_one_per_container_port(tmp_path):
    config = parse(tmp_path, {"forwardPorts": [1, 65535, "65535", "1", "8080", "localhost:8080", "127.0.0.1:9000", "0.0.0.0:9001",
                                               "::1:9002", 9002, "db:5432", "other-host.x:1"]})
    assert config.ports == [PortRequest(f"port-{port}", port, None, "forwarded") for port in (1, 65535, 8080, 9000, 9001, 9002)]
    assert config.unsupported == ["forwardPorts db:5432 (a port of another service)",
                                  "forwardPorts other-host.x:1 (a port of another service)"]


@pytest.mark.parametrize("entry", [0, 65536, -1, True, 1.5, "0", "65536", "123456", "x", "a b:80", ":80", "80:", None])
def test_a_forwarded_port_that_is_no_port_is_refused(tmp_path, entry):
    says(tmp_path, {"forwardPorts": [entry]}, f"forwardPorts entry {entry!r} is not a port")


@pytest.mark.parametrize("entries", [8080, "8080", {"a": 1}])
def test_forward_ports_must_be_a_list(tmp_path, entries):
    says(tmp_path, {"forwardPorts": entries}, "'forwardPorts' must be a list")


# ---------------------------------------------------------------- mounts


def test_mounts_of_each_kind_and_spelling(tmp_path):
    worktree = tmp_path / "wt"
    config = parse(tmp_path, {"mounts": [
        "source=history,target=/h",
        "src=other_1.x,dst=/o,ro",
        "type=volume,target=/anon,readonly=false",
        "type=tmpfs,source=ignored,destination=/t,ro=1",
        "type=bind,source=${localWorkspaceFolder}/data/,target=/d,readonly=YES",
        {"type": "bind", "src": "${localWorkspaceFolder}", "target": "/w2", "readonly": True},
        {"source": "v", "target": "/v", "readonly": False, "consistency": "cached"},
        ",source=x,,target=/x,",
        "source=y,target=/y,ro=no",
    ]}, files={"data/x": ""})
    assert config.mounts == ["volume:history:/h", "volume:other_1.x:/o:ro", "volume::/anon", "tmpfs::/t:ro",
                             f"{worktree / 'data'}:/d:ro", f"{worktree}:/w2:ro", "volume:v:/v", "volume:x:/x",
                             "volume:y:/y"]
    assert config.unsupported == []


def test_a_mount_value_may_hold_an_equals_sign(tmp_path):
    config = parse(tmp_path, {"mounts": ["source=v,target=/v,consistency=a=b"]})
    assert config.mounts == ["volume:v:/v"] and config.unsupported == []


def test_a_bare_mount_key_is_true(tmp_path):
    says(tmp_path, {"mounts": ["source=v,target"]}, "mount target of source=v,target 'true' must be an absolute path in "
         "the container, not /")


def test_a_volume_name_may_have_capitals(tmp_path):
    assert parse(tmp_path, {"mounts": ["source=My.Vol-1,target=/v"]}).mounts == ["volume:My.Vol-1:/v"]


def test_the_last_mount_per_target_wins(tmp_path):
    config = parse(tmp_path, {"mounts": ["source=a,target=/a", "source=b,target=/b", "type=tmpfs,target=/a"]})
    assert config.mounts == ["volume:b:/b", "tmpfs::/a"]


def test_mounts_of_another_kind_or_with_unknown_keys_are_named(tmp_path):
    config = parse(tmp_path, {"mounts": ["type=npipe,source=x,target=/x", "source=v,target=/v,bind-propagation=shared,z=1",
                                         {"type": "cluster", "target": "/c"}]})
    assert config.mounts == []
    assert config.unsupported == ["mount type=npipe,source=x,target=/x",
                                  "mount source=v,target=/v,bind-propagation=shared,z=1 (bind-propagation, z)",
                                  "mount type=cluster,target=/c"]


@pytest.mark.parametrize("target", ["/workspace", "/data", "/cache", "/cache/pip"])
def test_a_mount_where_git_gpuspace_mounts_its_own_is_named(tmp_path, target):
    config = parse(tmp_path, {"mounts": [f"source=v,target={target}"]})
    assert config.mounts == []
    assert config.unsupported == [f"mount source=v,target={target} (git-gpuspace mounts its own {target})"]


def test_the_workspace_reserved_is_the_one_moved_to(tmp_path):
    config = parse(tmp_path, {"workspaceFolder": "/src", "mounts": ["source=v,target=/src", "source=w,target=/workspace",
                                                                   "source=c,target=/cachex"]})
    assert config.mounts == ["volume:w:/workspace", "volume:c:/cachex"]
    assert config.unsupported == ["mount source=v,target=/src (git-gpuspace mounts its own /src)"]


@pytest.mark.parametrize("document", [
    {"mounts": ["source=v,target=/data/"]}, {"mounts": ["source=v,target=/workspace/"]},
    {"workspaceFolder": "/src/", "mounts": ["source=v,target=/src"]}, {"mounts": ["source=v,target=/x", "source=w,target=/x/"]}])
def test_a_mount_target_with_a_trailing_slash_is_the_same_target(tmp_path, document):
    config = parse(tmp_path, document)
    assert len(config.mounts) + len(config.unsupported) == 1 and config.mounts in ([], ["volume:w:/x"])


def test_a_mount_needs_a_target(tmp_path):
    says(tmp_path, {"mounts": ["source=v"]}, "mounts entry 'source=v' needs a target")
    says(tmp_path, {"mounts": [{"source": "v", "target": ""}]}, "mounts entry 'source=v,target=' needs a target")


@pytest.mark.parametrize("target", ["rel", "/", "/a/../b"])
def test_a_mount_target_must_be_an_absolute_path(tmp_path, target):
    says(tmp_path, {"mounts": [f"source=v,target={target}"]},
         f"mount target of source=v,target={target} {target!r} must be an absolute path in the container, not /")


@pytest.mark.parametrize("mount", ["source=a:b,target=/x", "type=tmpfs,target=/x:y"])
def test_a_colon_in_a_mount_path_is_refused(tmp_path, mount):
    says(tmp_path, {"mounts": [mount]}, f"mounts entry {mount!r}: ':' in a mount path is not supported")


def test_a_bind_source_must_be_absolute(tmp_path):
    error = says(tmp_path, {"mounts": ["type=bind,source=data,target=/d"]},
                 "bind mount 'type=bind,source=data,target=/d': the source must be an absolute path")
    assert error.hint == "write it as ${localWorkspaceFolder}/..., or leave out type=bind for a named volume"
    says(tmp_path, {"mounts": ["type=bind,target=/d"]},
         "bind mount 'type=bind,target=/d': the source must be an absolute path")


@pytest.mark.parametrize("name", ["-v", ".v", "a/b", "a b", "../etc"])
def test_a_volume_source_must_be_a_volume_name(tmp_path, name):
    says(tmp_path, {"mounts": [{"source": name, "target": "/x"}]},
         f"volume mount 'source={name},target=/x': {name!r} is not a volume name")


def test_a_tmpfs_source_is_not_checked(tmp_path):
    assert parse(tmp_path, {"mounts": ["type=tmpfs,source=/not a name,target=/t"]}).mounts == ["tmpfs::/t"]


@pytest.mark.parametrize("value", ["source=v,target=/v", {"source": "v", "target": "/v"}])
def test_mounts_must_be_a_list(tmp_path, value):
    says(tmp_path, {"mounts": value}, "'mounts' must be a list")


def test_a_mount_that_is_neither_string_nor_object_is_refused(tmp_path):
    says(tmp_path, {"mounts": [["source=x"]]}, "mounts entry ['source=x'] is neither a string nor an object")


def test_an_untrusted_bind_outside_the_repository_is_skipped(tmp_path):
    (tmp_path / "outside").mkdir()
    config = parse(tmp_path, {"mounts": [f"type=bind,source={tmp_path / 'outside'},target=/o",
                                         "type=bind,source=${localWorkspaceFolder}/in,target=/i"]},
                   trust=False, files={"in/x": ""})
    assert config.mounts == [f"{tmp_path / 'wt' / 'in'}:/i"]
    assert config.skipped == [f"mount of {tmp_path / 'outside'}"]


def test_a_trusted_bind_outside_the_repository_is_mounted_resolved(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "outside")
    config = parse(tmp_path, {"mounts": [f"type=bind,source={tmp_path / 'link'},target=/o"]})
    assert config.mounts == [f"{tmp_path / 'outside'}:/o"] and config.skipped == []


def test_an_untrusted_bind_of_the_docker_socket_is_skipped_even_inside_the_repository(tmp_path):
    worktree = tmp_path / "wt"
    (worktree / ".devcontainer").mkdir(parents=True)
    path = worktree / ".devcontainer" / "devcontainer.json"
    content = json.dumps({"mounts": ["type=bind,source=/run/docker.sock,target=/s",
                                     "type=bind,source=/run/docker.sock.x,target=/t"]}).encode()
    config = devcontainer.load(path, content, worktree, Path("/"), False)
    assert config.skipped == ["mount of /run/docker.sock"]
    assert config.mounts == ["/run/docker.sock.x:/t"]


def test_a_bind_into_the_repository_from_another_worktree_is_inside(tmp_path):
    """Inside: below the repository's root or the worktree; a root itself holds a `.git`, which
    no untrusted mount may expose."""
    repo, worktree = tmp_path / "repo", tmp_path / "wt"
    (repo / "shared").mkdir(parents=True)
    (worktree / ".devcontainer").mkdir(parents=True)
    path = worktree / ".devcontainer" / "devcontainer.json"
    content = json.dumps({"mounts": [f"type=bind,source={repo},target=/r", f"type=bind,source={repo}/shared,target=/s",
                                     f"type=bind,source={worktree},target=/w", f"type=bind,source={tmp_path},target=/t",
                                     f"type=bind,source={repo}x,target=/x"]}).encode()
    config = devcontainer.load(path, content, worktree, repo, False)
    assert config.mounts == [f"{repo}/shared:/s"]
    assert config.skipped == [f"mount of {repo}", f"mount of {worktree}", f"mount of {tmp_path}", f"mount of {repo}x"]


def test_inside_compares_resolved_roots(tmp_path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert folders.inside(tmp_path / "real" / "sub", tmp_path / "link")
    assert folders.inside(tmp_path / "real", tmp_path / "other", tmp_path / "link")
    assert not folders.inside(tmp_path / "realx", tmp_path / "link")
    assert not folders.inside(tmp_path, tmp_path / "link")


# ---------------------------------------------------------------- privileged, capAdd, securityOpt, init


def test_host_fields_of_a_trusted_file_become_host_options(tmp_path):
    config = parse(tmp_path, {"privileged": True, "capAdd": ["SYS_PTRACE", "NET_ADMIN", "SYS_PTRACE"],
                              "securityOpt": ["seccomp=unconfined"], "init": True})
    assert config.host_options == {"privileged": True, "cap_add": ["SYS_PTRACE", "NET_ADMIN"],
                                   "security_opt": ["seccomp=unconfined"]}
    assert config.unsupported == [] and config.skipped == []


def test_host_fields_of_an_untrusted_file_are_skipped_each_once(tmp_path):
    config = parse(tmp_path, {"privileged": True, "capAdd": ["SYS_PTRACE", "SYS_PTRACE"],
                              "securityOpt": ["seccomp=unconfined"]}, trust=False)
    assert config.host_options == {}
    assert config.skipped == ["privileged", "capAdd SYS_PTRACE", "securityOpt seccomp=unconfined"]


def test_privileged_false_asks_for_nothing(tmp_path):
    config = parse(tmp_path, {"privileged": False, "capAdd": [], "init": True}, trust=False)
    assert config.host_options == {} and config.skipped == [] and config.unsupported == []


@pytest.mark.parametrize("value", ["true", 1, None])
def test_privileged_must_be_a_boolean(tmp_path, value):
    says(tmp_path, {"privileged": value}, "'privileged' must be true or false")


@pytest.mark.parametrize("key", ["capAdd", "securityOpt"])
@pytest.mark.parametrize("value", ["NET_ADMIN", [""], [1], {"a": 1}])
def test_capabilities_and_security_options_must_be_lists_of_strings(tmp_path, key, value):
    says(tmp_path, {key: value}, f"'{key}' must be a list of strings")


def test_init_false_is_applied(tmp_path):
    config = parse(tmp_path, {"init": False})
    assert config.container_options == {"init": False} and config.unsupported == []
    assert parse(tmp_path, {"init": True}).container_options == {}  # our default


@pytest.mark.parametrize("value", ["false", 0, None])
def test_init_must_be_a_boolean(tmp_path, value):
    says(tmp_path, {"init": value}, "'init' must be true or false")


# ---------------------------------------------------------------- hostRequirements


@pytest.mark.parametrize("gpu,read", [(True, True), (False, False), ("optional", "optional"), (2, 2),
                                      ({"cores": 1}, True), (None, None)])
def test_host_requirements_gpu_is_read(tmp_path, gpu, read):
    config = parse(tmp_path, {"hostRequirements": {"gpu": gpu}})
    assert config.gpu == read and type(config.gpu) is type(read) and config.unsupported == []


def test_other_host_requirements_are_named(tmp_path):
    config = parse(tmp_path, {"hostRequirements": {"cpus": 2, "gpu": True, "memory": "8gb"}})
    assert config.unsupported == ["hostRequirements.cpus", "hostRequirements.memory"] and config.gpu is True


@pytest.mark.parametrize("value", ["gpu", ["gpu"], True])
def test_host_requirements_must_be_an_object(tmp_path, value):
    says(tmp_path, {"hostRequirements": value}, "'hostRequirements' must be an object")


@pytest.mark.parametrize("gpu,configured,inventory,from_flag,spec", [
    (None, "2", 4, False, "2"),
    (True, "2", 4, True, "2"),
    (False, "2", 4, True, "2"),
    ("optional", "2", 4, False, "2"),
    ("optional", "2", 0, False, "none"),
    (True, "2", 0, False, "2"),
    (True, "none", 4, False, "1"),
    (True, "0", 4, False, "1"),
    (3, "1", 0, False, "3"),
    (0, "1", 4, False, "0"),
    (False, "1", 4, False, "none"),
])
def test_gpu_spec_from_host_requirements(gpu, configured, inventory, from_flag, spec):
    assert devcontainer.gpu_spec(gpu, configured, inventory, from_flag) == spec


@pytest.mark.parametrize("gpu", ["yes", -1, 1.5, ["1"]])
def test_a_bad_gpu_requirement_is_refused(gpu):
    with pytest.raises(UsageError) as refused:
        devcontainer.gpu_spec(gpu, "1", 4, False)
    assert str(refused.value) == f"hostRequirements.gpu must be true, false, \"optional\" or a count, not {gpu!r}"


# ---------------------------------------------------------------- runArgs


def run_args(tmp_path, args, trust=True):
    return parse(tmp_path, {"runArgs": args}, trust=trust)


def test_run_args_that_set_limits_and_environment(tmp_path):
    config = run_args(tmp_path, ["--shm-size", "2g", "--memory=4g", "-m 5g", "--cpus", "3", "-e", "A=1", "--env=B=x=y",
                                 "--env", "C=", "--init"])
    assert config.layer == {"shm_size": "2g", "memory": "5g", "cpus": "3"}
    assert config.env == {"A": "1", "B": "x=y", "C": ""}
    assert config.unsupported == [] and config.skipped == []


def test_run_args_env_overrides_container_env(tmp_path):
    config = parse(tmp_path, {"containerEnv": {"A": "file"}, "runArgs": ["-e", "A=run"]})
    assert config.env == {"A": "run"}


def test_run_args_gpus_never_override_the_allocation(tmp_path):
    config = run_args(tmp_path, ["--gpus", "all", "--gpus=device=1"])
    assert config.unsupported == ["runArgs --gpus all (GPUs come from the exclusive allocation)",
                                  "runArgs --gpus device=1 (GPUs come from the exclusive allocation)"]


def test_run_args_we_do_not_take_are_named(tmp_path):
    config = run_args(tmp_path, ["--rm", "--name", "x", "--init=maybe", "-e", "NOVALUE", "--memory", "-e A=1",
                                 "--cap-add", "--ipc", "--volume"])
    assert config.unsupported == ["runArgs --rm", "runArgs --name x", "runArgs --init maybe", "runArgs -e NOVALUE",
                                  "runArgs --memory", "runArgs -e A=1", "runArgs --cap-add", "runArgs --ipc",
                                  "runArgs --volume"]
    assert config.env == {} and config.layer == {}


def test_a_switch_does_not_take_the_next_word(tmp_path):
    config = run_args(tmp_path, ["--privileged", "value", "--init", "other"])
    assert config.host_options == {"privileged": True}
    assert config.unsupported == ["runArgs value", "runArgs other"]


def test_run_args_with_spaces_are_split_as_a_shell_would(tmp_path):
    config = run_args(tmp_path, ["--cap-add 'SYS ADMIN'", "--network=host"])
    assert config.host_options == {"cap_add": ["SYS ADMIN"], "network_mode": "host"}


def test_trusted_run_args_become_host_options_and_mounts(tmp_path):
    config = run_args(tmp_path, ["--privileged", "--cap-add", "SYS_PTRACE", "--cap-add=SYS_PTRACE", "--net", "none",
                                 "--ipc=host", "--pid", "host", "--device", "/dev/fuse", "--device=/dev/kvm",
                                 "--security-opt", "seccomp=unconfined", "-v", "/src:/dst:ro", "--volume=vol:/v",
                                 "-v", "/a:/b:rw", "-v", "/c:/d:ro"])
    assert config.host_options == {"privileged": True, "cap_add": ["SYS_PTRACE"], "network_mode": "none",
                                   "ipc_mode": "host", "pid_mode": "host", "devices": ["/dev/fuse", "/dev/kvm"],
                                   "security_opt": ["seccomp=unconfined"]}
    assert config.mounts == ["/src:/dst:ro", "volume:vol:/v", "/a:/b", "/c:/d:ro"]
    assert config.unsupported == [] and config.skipped == []


def test_untrusted_run_args_that_widen_access_are_skipped(tmp_path):
    config = run_args(tmp_path, ["--privileged", "--privileged", "--cap-add", "X", "--network=host", "-v", "/:/host",
                                 "-v", "/:/host"], trust=False)
    assert config.host_options == {} and config.mounts == []
    assert config.skipped == ["runArgs --privileged", "runArgs --cap-add X", "runArgs --network host",
                              "runArgs -v /:/host", "runArgs -v /:/host"]


@pytest.mark.parametrize("args", ["--privileged", [1], ["--cpus", None]])
def test_run_args_must_be_a_list_of_strings(tmp_path, args):
    says(tmp_path, {"runArgs": args}, "'runArgs' must be a list of strings")


# ---------------------------------------------------------------- features in the file


def feature_folder(root: Path, name: str, metadata: dict | str = "{}", install: str = "echo hi\n") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "devcontainer-feature.json").write_text(metadata if isinstance(metadata, str) else json.dumps(metadata))
    (folder / "install.sh").write_text(install)
    return folder


def test_features_of_the_file_are_resolved_in_install_order(tmp_path):
    base = tmp_path / "wt" / ".devcontainer"
    feature_folder(base, "one", {"id": "one"})
    feature_folder(base, "two", {"id": "two"})
    fetched = []

    def fetch(reference):
        fetched.append(reference)
        return feature_folder(tmp_path / "cache", "remote", {"id": "remote"})

    config = parse(tmp_path, {"features": {"./two": {"a": 1}, "ghcr.io/x/remote:1": "3", "./one": True,
                                           "https://example.com/f.tgz": {}}}, fetch=fetch)
    assert [(f.key, f.folder, f.options) for f in config.features] == [  # one round: sorted as the reference sorts
        ("./one", base / "one", {}), ("./two", base / "two", {"a": 1}),
        ("ghcr.io/x/remote:1", tmp_path / "cache" / "remote", "3")]
    assert fetched == ["ghcr.io/x/remote:1"]
    assert config.unsupported == ["feature https://example.com/f.tgz (only a local folder or an OCI reference)"]


def test_a_feature_of_another_kind_is_named_and_the_next_ones_taken(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "one")
    config = parse(tmp_path, {"features": {"https://example.com/a.tgz": {}, "./one": {}, "https://example.com/b.tgz": {}}})
    assert [f.key for f in config.features] == ["./one"]
    assert config.unsupported == ["feature https://example.com/a.tgz (only a local folder or an OCI reference)",
                                  "feature https://example.com/b.tgz (only a local folder or an OCI reference)"]


def test_a_feature_refused_names_the_file(tmp_path):
    says(tmp_path, {"features": {"pytorch": {}}}, "feature 'pytorch' names neither a folder nor a registry: a feature in a "
         "folder is written \"./pytorch\"")


def test_a_feature_in_a_worktree_of_the_repository_is_inside(tmp_path):
    """Inside the worktree, though the repository's root is elsewhere (a linked worktree)."""
    worktree, repo = tmp_path / "wt", tmp_path / "repo"
    repo.mkdir()
    folder = feature_folder(worktree / ".devcontainer", "f")
    path = worktree / ".devcontainer" / "devcontainer.json"
    config = devcontainer.load(path, b'{"features": {"./f": {}}}', worktree, repo, True)
    assert [f.folder for f in config.features] == [folder]


def test_a_features_bad_mount_names_the_file(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", {"mounts": ["source=v"]})
    says(tmp_path, {"features": {"./f": {}}}, "mounts entry 'source=v' needs a target")


@pytest.mark.parametrize("value", [["./f"], "./f"])
def test_features_must_be_an_object(tmp_path, value):
    says(tmp_path, {"features": value}, "'features' must be an object (feature id -> options)")


def test_what_a_feature_contributes_is_named_or_follows_the_untrusted_rules(tmp_path):
    """Trust covers the devcontainer.json's bytes, not a feature's folder: a feature's own host
    options are named, never applied, and its mounts are taken as an untrusted file's."""
    base = tmp_path / "wt" / ".devcontainer"
    feature_folder(base, "f", {"id": "f", "privileged": True, "capAdd": ["SYS_PTRACE"], "securityOpt": ["a=b"],
                               "init": False, "entrypoint": "/e", "customizations": {}, "postStartCommand": "x",
                               "containerEnv": {"A": "1"}, "name": "F",
                               "mounts": ["source=fv,target=/fv", {"type": "bind", "source": "/etc", "target": "/e"}]})
    config = parse(tmp_path, {"features": {"./f": {}}}, trust=False)
    named = ["feature ./f: entrypoint", "feature ./f: customizations",  # its lifecycle commands are the image's
             "feature ./f: privileged (ask for it in devcontainer.json itself)",
             "feature ./f: capAdd (ask for it in devcontainer.json itself)",
             "feature ./f: securityOpt (ask for it in devcontainer.json itself)"]  # its init false: no matter
    for trusted in (False, True):
        config = parse(tmp_path, {"features": {"./f": {}}}, trust=trusted)
        assert config.unsupported == named and config.skipped == ["mount of /etc"]
        assert config.mounts == ["volume:fv:/fv"] and config.env == {} and config.host_options == {}


def test_a_feature_contributes_only_host_fields_it_has(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", {"id": "f"})
    config = parse(tmp_path, {"features": {"./f": {}}, "init": False})
    assert config.unsupported == [] and config.container_options == {"init": False}


def test_a_feature_that_asks_for_init_gets_it_whatever_the_file_says(tmp_path):
    """The reference's merge: an init process when any entry (image, feature, file) asks for one."""
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", {"id": "f", "init": True})
    assert parse(tmp_path, {"features": {"./f": {}}, "init": False}).container_options == {"init": True}
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", {"id": "f", "init": False})
    assert parse(tmp_path, {"features": {"./f": {}}}).container_options == {}


def test_a_features_mounts_of_the_wrong_type_are_one_error(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", {"mounts": "source=v,target=/v"})
    says(tmp_path, {"features": {"./f": {}}}, "feature ./f: 'mounts' in devcontainer-feature.json must be a list")


# ---------------------------------------------------------------- locate and read


def test_locate_prefers_the_folder_then_the_file_at_the_root(tmp_path):
    assert devcontainer.locate(tmp_path, None) is None
    (tmp_path / ".devcontainer.json").write_text("{}")
    assert devcontainer.locate(tmp_path, None) == tmp_path / ".devcontainer.json"
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer" / "devcontainer.json").mkdir()  # not a file
    assert devcontainer.locate(tmp_path, None) == tmp_path / ".devcontainer.json"
    (tmp_path / ".devcontainer" / "devcontainer.json").rmdir()
    (tmp_path / ".devcontainer" / "devcontainer.json").write_text("{}")
    assert devcontainer.locate(tmp_path, None) == tmp_path / ".devcontainer" / "devcontainer.json"
    assert devcontainer.locate(tmp_path, "") == tmp_path / ".devcontainer" / "devcontainer.json"


def test_locate_a_named_configuration(tmp_path):
    for name in ("gpu", "cpu"):
        (tmp_path / ".devcontainer" / name).mkdir(parents=True)
        (tmp_path / ".devcontainer" / name / "devcontainer.json").write_text("{}")
    assert devcontainer.locate(tmp_path, "gpu") == tmp_path / ".devcontainer" / "gpu" / "devcontainer.json"
    with pytest.raises(UsageError) as refused:
        devcontainer.locate(tmp_path, "tpu")
    assert str(refused.value) == f"no devcontainer 'tpu' in {tmp_path / '.devcontainer'}"
    assert refused.value.hint == "choose one of: cpu, gpu"


def test_locate_a_named_configuration_where_there_is_none(tmp_path):
    with pytest.raises(UsageError) as refused:
        devcontainer.locate(tmp_path, "gpu")
    assert str(refused.value) == f"no devcontainer 'gpu' in {tmp_path / '.devcontainer'}"
    assert refused.value.hint is None


def test_read_gives_the_bytes_up_to_the_limit(tmp_path):
    path = tmp_path / "devcontainer.json"
    path.write_bytes(b" " * devcontainer.MAX_BYTES)
    assert devcontainer.read(path, tmp_path, tmp_path) == b" " * devcontainer.MAX_BYTES
    assert devcontainer.read(path, tmp_path / "elsewhere", tmp_path) == b" " * devcontainer.MAX_BYTES
    assert devcontainer.read(path, tmp_path, tmp_path / "elsewhere") == b" " * devcontainer.MAX_BYTES


def test_read_refuses_a_huge_file(tmp_path):
    path = tmp_path / "devcontainer.json"
    path.write_bytes(b" " * (devcontainer.MAX_BYTES + 1))
    with pytest.raises(UsageError) as refused:
        devcontainer.read(path, tmp_path, tmp_path)
    assert str(refused.value) == f"{path} is larger than 1 MiB; refused"
    assert refused.value.hint == "a devcontainer.json is a few KiB: check what the repository put there"


def test_read_refuses_a_link_out_of_the_repository(tmp_path):
    (tmp_path / "outside.json").write_text("{}")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "devcontainer.json").symlink_to(tmp_path / "outside.json")
    with pytest.raises(UsageError) as refused:
        devcontainer.read(tmp_path / "repo" / "devcontainer.json", tmp_path / "repo", tmp_path / "repo")
    assert str(refused.value) == f"{tmp_path / 'repo' / 'devcontainer.json'} leads outside the repository (a symlink?)"


def test_read_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "devcontainer.json")
    with pytest.raises(UsageError) as refused:
        devcontainer.read(tmp_path / "devcontainer.json", tmp_path, tmp_path)
    assert str(refused.value) == f"{tmp_path / 'devcontainer.json'} is not a regular file"


def test_read_names_why_a_file_cannot_be_read(tmp_path):
    (tmp_path / "devcontainer.json").mkdir()
    with pytest.raises(UsageError) as refused:
        devcontainer.read(tmp_path / "devcontainer.json", tmp_path, tmp_path)
    assert str(refused.value) == f"cannot read {tmp_path / 'devcontainer.json'}: Is a directory"


def test_read_names_an_error_without_strerror(tmp_path, monkeypatch):
    (tmp_path / "devcontainer.json").write_text("{}")

    def failing(*args, **kwargs):
        raise OSError("odd failure")

    monkeypatch.setattr("builtins.open", failing)
    with pytest.raises(UsageError) as refused:
        devcontainer.read(tmp_path / "devcontainer.json", tmp_path, tmp_path)
    assert str(refused.value) == f"cannot read {tmp_path / 'devcontainer.json'}: odd failure"


# ---------------------------------------------------------------- features: Feature


@pytest.mark.parametrize("key,id_", [("./my-feature", "my-feature"), ("../up/feat", "feat"),
                                     ("ghcr.io/devcontainers/features/python:1", "python"),
                                     ("ghcr.io/x/node", "node"), (f"ghcr.io/x/y@sha256:{'a' * 64}", "y"),
                                     ("localhost:5000/features/hello:1", "hello")])
def test_a_features_id_is_its_last_path_part_without_tag(tmp_path, key, id_):
    assert features.Feature(key, tmp_path).id == id_


def test_feature_options_become_the_install_scripts_environment(tmp_path):
    metadata = {"options": {"version": {"default": "latest"}, "ppa-x.y": {"default": True}, "no-default": {"type": "string"},
                            "nul": {"default": None}, "odd": "not an object", "2fast": {"default": 2}}}
    feature = features.Feature("./f", tmp_path, {"version": "3.11", "extra": False}, metadata)
    assert feature.environment() == {"VERSION": "3.11", "PPA_X_Y": "true", "NUL": "null", "_FAST": "2", "EXTRA": "false"}


def test_a_version_string_is_the_version_option(tmp_path):
    metadata = {"options": {"version": {"default": "latest"}, "other": {"default": "o"}}}
    assert features.Feature("./f", tmp_path, "3.11", metadata).environment() == {"VERSION": "3.11", "OTHER": "o"}
    assert features.Feature("./f", tmp_path, "3.11", {"options": {"other": {"default": "o"}}}).environment() == {"OTHER": "o"}
    assert features.Feature("./f", tmp_path, "3.11", {}).environment() == {}
    assert features.Feature("./f", tmp_path, {}, {"options": None}).environment() == {}


@pytest.mark.parametrize("name,safe", [("a-b.c", "A_B_C"), ("1abc", "_ABC"), ("__x", "_X"), ("_1x", "_X"), ("x_1", "X_1"),
                                       ("12", "_"), ("é", "É")])
def test_option_names_become_shell_names_as_in_the_reference(tmp_path, name, safe):
    assert list(features.Feature("./f", tmp_path, {name: "v"}, {}).environment()) == [safe]


def test_a_features_container_env_is_text(tmp_path):
    feature = features.Feature("./f", tmp_path, {}, {"containerEnv": {"A": 1, "B": True, "C": None, "D": "x"}})
    assert feature.container_env() == {"A": "1", "B": "true", "C": "null", "D": "x"}
    assert features.Feature("./f", tmp_path, {}, {"containerEnv": ["A=1"]}).container_env() == {}
    assert features.Feature("./f", tmp_path, {}, {}).container_env() == {}


# ---------------------------------------------------------------- features: resolve


def resolve(tmp_path, key, options=None, fetch=None):
    base = tmp_path / "wt" / ".devcontainer"
    base.mkdir(parents=True, exist_ok=True)
    return features.resolve(base / "devcontainer.json", key, options, base, tmp_path / "wt", tmp_path / "wt", fetch)


def resolve_refusal(tmp_path, key, options=None, fetch=None) -> UsageError:
    with pytest.raises(UsageError) as refused:
        resolve(tmp_path, key, options, fetch)
    return refused.value


def test_a_local_feature_is_its_folder_and_metadata(tmp_path):
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f", '// comment\n{"id": "f", "options": {},}')
    feature = resolve(tmp_path, "./f", {"a": 1})
    assert (feature.key, feature.folder, feature.options, feature.metadata) == ("./f", folder, {"a": 1}, {"id": "f", "options": {}})
    feature_folder(tmp_path / "wt" / ".devcontainer" / "deep", "up")
    assert resolve(tmp_path, "./deep/up").folder == tmp_path / "wt" / ".devcontainer" / "deep" / "up"


@pytest.mark.parametrize("options,kept", [(None, {}), (True, {}), (False, {}), ("1.2", "1.2"), ({"a": "b"}, {"a": "b"})])
def test_feature_options_may_be_empty_a_version_or_an_object(tmp_path, options, kept):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    feature = resolve(tmp_path, "./f", options)
    assert feature.options == kept and type(feature.options) is type(kept)


def test_feature_options_are_a_copy(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    options = {"a": "b"}
    resolve(tmp_path, "./f", options).options["c"] = "d"
    assert options == {"a": "b"}


@pytest.mark.parametrize("options", [1, ["a"], 1.5])
def test_feature_options_of_another_kind_are_refused(tmp_path, options):
    error = resolve_refusal(tmp_path, "./f", options)
    assert str(error) == f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: the options of feature ./f must be an object"


def test_a_feature_outside_the_repository_is_refused(tmp_path):
    feature_folder(tmp_path, "outside")
    error = resolve_refusal(tmp_path, "../../outside")
    assert str(error) == f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature ../../outside is outside the repository"


def test_a_feature_in_the_repository_beyond_the_worktrees_devcontainer_folder_is_refused(tmp_path):
    """The reference's rule: a local feature is under the worktree's .devcontainer/."""
    worktree, repo = tmp_path / "wt", tmp_path / "repo"
    feature_folder(repo, "f")
    (worktree / ".devcontainer").mkdir(parents=True)
    path = worktree / ".devcontainer" / "devcontainer.json"
    with pytest.raises(UsageError) as refused:
        devcontainer.load(path, b'{"features": {"../../repo/f": {}}}', worktree, repo, True)
    assert str(refused.value) == (f"{path}: feature ../../repo/f: Local file path parse error. Resolved path must be a "
                                  f"child of the .devcontainer/ folder.  Parsed: {repo / 'f'}")


def test_a_short_id_of_the_old_format_is_refused(tmp_path):
    error = resolve_refusal(tmp_path, "pytorch")
    assert str(error) == (f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature 'pytorch' names neither a "
                          f"folder nor a registry: a feature in a folder is written \"./pytorch\"")
    assert error.hint == "the short ids of the old feature format are not supported"
    error = resolve_refusal(tmp_path, "python")  # one the reference maps to its published form
    assert str(error) == (f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: Could not resolve Feature "
                          f"'python': the short ids of the old feature format are not supported")
    assert error.hint == 'its current form is "ghcr.io/devcontainers/features/python:1"'


@pytest.mark.parametrize("key", ["ghcr.io/devcontainers/features/python:1", "ghcr.io/x/node", "localhost:5000/f/hello:1.0",
                                 "localhost:5000/f/hello",
                                 f"ghcr.io/x/y@sha256:{'0' * 64}", "a.b-c/d_e/f.g-h:v_1.2-3"])
def test_a_registry_reference_is_fetched(tmp_path, key):
    fetched = []

    def fetch(reference):
        fetched.append(reference)
        return feature_folder(tmp_path / "cache", "x")

    assert resolve(tmp_path, key, fetch=fetch).folder == tmp_path / "cache" / "x"
    assert fetched == [key]


@pytest.mark.parametrize("key", ["https://example.com/f.tgz", "GHCR.io/x/y:1", "ghcr.io/x/y:", "ghcr.io/x/y:a:b",
                                 "ghcr.io/x/y@sha256:abc", "ghcr.io:port/x/y", "ghcr.io/x/Y"])
def test_a_reference_of_another_kind_is_not_supported(tmp_path, key):
    assert resolve(tmp_path, key, fetch=lambda reference: pytest.fail("fetched")) is None


def test_without_a_fetcher_a_reference_is_pulled_from_its_registry(tmp_path, monkeypatch):
    pulled = []

    def fetch_oci(reference):
        pulled.append(reference)
        return feature_folder(tmp_path / "cache", "x")

    monkeypatch.setattr(features, "fetch_oci", fetch_oci)
    assert resolve(tmp_path, "ghcr.io/x/y:1").folder == tmp_path / "cache" / "x"
    assert pulled == ["ghcr.io/x/y:1"]


@pytest.mark.parametrize("missing", ["devcontainer-feature.json", "install.sh"])
def test_a_feature_without_its_files_is_refused(tmp_path, missing):
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    (folder / missing).unlink()
    (folder / missing).mkdir()  # not a file either
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature ./f has no {missing}"
    assert error.hint == f"a feature is a folder with devcontainer-feature.json and install.sh (looked in {folder})"


def test_a_feature_whose_metadata_does_not_parse_is_refused(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", "{")
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == (f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature ./f: "
                          f"devcontainer-feature.json is not valid JSON: <string>:1 Unexpected end of input at column 2")


def test_a_feature_whose_metadata_is_not_utf8_is_refused(tmp_path):
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    (folder / "devcontainer-feature.json").write_bytes(b"\xff")
    error = resolve_refusal(tmp_path, "./f")
    assert str(error).startswith(f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature ./f: "
                                 f"devcontainer-feature.json is not valid JSON: ")


def test_a_features_metadata_must_be_an_object(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", "[]")
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == (f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature ./f: "
                          f"devcontainer-feature.json must be an object")


# ---------------------------------------------------------------- features: order, derived image


def derived(tmp_path, **changes) -> features.DerivedImage:
    folder = tmp_path / "feature"
    if not folder.exists():
        feature_folder(tmp_path, "feature", {"id": "feature"})
        (folder / "sub").mkdir()
        (folder / "sub" / "data").write_text("one")
    fields = dict(base="img:1", base_id="sha256:1", base_user="", features=[features.Feature("./feature", folder, {"a": "1"}, {})])
    fields.update(changes)
    return features.DerivedImage(**fields)


def test_a_derived_image_tag_hashes_every_input(tmp_path):
    tag = derived(tmp_path).tag()
    assert tag.startswith("gpuspace-build/features:") and len(tag.split(":")[1]) == 16
    assert derived(tmp_path).tag() == tag
    folder = tmp_path / "feature"
    variants = [derived(tmp_path, base="img:2"), derived(tmp_path, base_id="sha256:2"), derived(tmp_path, base_user="u"),
                derived(tmp_path, container_user="u"), derived(tmp_path, remote_user="u"),
                derived(tmp_path, features=[features.Feature("./other", folder, {"a": "1"}, {})]),
                derived(tmp_path, features=[features.Feature("./feature", folder, {"a": "2"}, {})]),
                derived(tmp_path, features=[])]
    tags = {variant.tag() for variant in variants}
    assert len(tags) == len(variants) and tag not in tags


def test_a_derived_image_tag_follows_the_features_files(tmp_path):
    image = derived(tmp_path)
    tags = [image.tag()]
    folder = tmp_path / "feature"
    (folder / "sub" / "data").write_text("two")
    tags.append(image.tag())
    (folder / "sub" / "data").rename(folder / "sub" / "renamed")
    tags.append(image.tag())
    (folder / "install.sh").write_text("echo changed\n")
    tags.append(image.tag())
    assert len(set(tags)) == 4


def test_a_derived_image_tag_does_not_depend_on_the_listing_order(tmp_path, monkeypatch):
    image = derived(tmp_path)
    for name in ("b", "a", "c"):
        (tmp_path / "feature" / name).mkdir()
        (tmp_path / "feature" / name / "z").write_text(name)
        (tmp_path / "feature" / name / "y").write_text(name)
    tag = image.tag()
    list_in_reverse(monkeypatch)
    assert image.tag() == tag


def test_the_derived_dockerfile_installs_each_feature_as_root_then_restores_the_user(tmp_path):
    one = features.Feature("./one", tmp_path, {"ver": "1 2"}, {"containerEnv": {"PATH": "/opt/x:${PATH}", "Q": 'a"b\\c\nd'}})
    two = features.Feature("./two", tmp_path, {}, {})
    image = features.DerivedImage("img:1", "sha256:1", "dev", [one, two], container_user="me", remote_user="o'brien")
    homes = ("export _CONTAINER_USER_HOME=$(awk -F: -v u=me '$1==u{print $6}' /etc/passwd) "
             "_REMOTE_USER_HOME=$(awk -F: -v u='o'\"'\"'brien' '$1==u{print $6}' /etc/passwd)")
    assert image.dockerfile() == (
        "FROM img:1\n"
        "USER root\n"
        'ENV PATH="/opt/x:${PATH}"\n'
        'ENV Q="a\\"b\\\\c\\nd"\n'
        "COPY 0/ /tmp/gpuspace-features/0/\n"
        f"RUN cd /tmp/gpuspace-features/0 && chmod +x install.sh && {homes} && env _CONTAINER_USER=me "
        "_REMOTE_USER='o'\"'\"'brien' VER='1 2' ./install.sh && rm -rf /tmp/gpuspace-features/0\n"
        "COPY 1/ /tmp/gpuspace-features/1/\n"
        f"RUN cd /tmp/gpuspace-features/1 && chmod +x install.sh && {homes} && env _CONTAINER_USER=me "
        "_REMOTE_USER='o'\"'\"'brien' ./install.sh && rm -rf /tmp/gpuspace-features/1\n"
        "USER dev\n")


@pytest.mark.parametrize("base_user,container_user,remote_user,users", [
    ("", None, None, ("root", "root")),
    ("dev", None, None, ("dev", "dev")),
    ("dev", "c", None, ("c", "c")),
    ("", None, "r", ("root", "r")),
])
def test_the_derived_dockerfile_users_default_to_the_images_then_root(tmp_path, base_user, container_user, remote_user, users):
    image = features.DerivedImage("img", "id", base_user, [features.Feature("./f", tmp_path, {"o": "v"}, {})],
                                  container_user=container_user, remote_user=remote_user)
    lines = image.dockerfile().splitlines()
    assert f"env _CONTAINER_USER={users[0]} _REMOTE_USER={users[1]} O=v ./install.sh" in lines[3]
    assert f"-v u={users[0]} '$1==u{{print $6}}'" in lines[3] and f"-v u={users[1]} '$1==u{{print $6}}'" in lines[3]
    assert (lines[-1] == f"USER {base_user}") == bool(base_user)  # no USER line when the image had none


def test_a_feature_option_may_override_the_user_variables(tmp_path):
    image = features.DerivedImage("img", "id", "", [features.Feature("./f", tmp_path, {"_remote_user": "x"}, {})])
    assert "env _CONTAINER_USER=root _REMOTE_USER=x ./install.sh" in image.dockerfile()


def test_the_derived_image_context_holds_each_feature_numbered_and_the_dockerfile(tmp_path):
    one = feature_folder(tmp_path, "one")
    (one / "link").symlink_to("/etc/passwd")
    two = feature_folder(tmp_path, "two", install="echo two\n")
    image = features.DerivedImage("img", "id", "", [features.Feature("./one", one), features.Feature("./two", two)])
    context = image.context()
    try:
        assert sorted(p.name for p in context.iterdir()) == ["0", "1", "Dockerfile"]
        assert (context / "Dockerfile").read_text() == image.dockerfile()
        assert (context / "1" / "install.sh").read_text() == "echo two\n"
        assert os.readlink(context / "0" / "link") == "/etc/passwd"
        assert context.name.startswith("gpuspace-features-")
    finally:
        shutil.rmtree(context)


# ---------------------------------------------------------------- features: a registry


def tar_of(entries: dict[str, str | None]) -> bytes:
    """A tar of files (text) and symlinks (None: a link to /etc/passwd)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, text in entries.items():
            info = tarfile.TarInfo(name)
            if text is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                data = text.encode()
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
    return archive.getvalue()


FEATURE_TAR = {"./devcontainer-feature.json": '{"id": "hello"}', "./install.sh": "#!/bin/sh\necho hello\n"}


def cache_of(target: str) -> Path:
    return Path(os.environ["XDG_CACHE_HOME"]) / "git-gpuspace" / "features" / hashlib.sha256(target.encode()).hexdigest()[:16]


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_a_feature_is_fetched_into_the_users_cache(feature_registry, no_proxy, tmp_path, monkeypatch):
    """Only into the cache: not the current directory, not TMPDIR (the unpacked folder is renamed into place)."""
    host, serve = feature_registry.host, feature_registry.serve
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    serve("features/hello", "1", [tar_of(FEATURE_TAR)])
    folder = features.fetch_oci(f"{host}/features/hello:1")
    assert folder == cache_of(f"{host}/features/hello:1")
    assert sorted(p.name for p in folder.iterdir()) == ["devcontainer-feature.json", "install.sh"]
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no download or unpack dir left
    (folder / "stale").write_text("from an older fetch")
    assert sorted(p.name for p in features.fetch_oci(f"{host}/features/hello:1").iterdir()) == [
        "devcontainer-feature.json", "install.sh"]
    assert list(tmp_path.iterdir()) == []


def test_a_reference_without_a_tag_is_fetched_as_latest(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/hello", "latest", [tar_of(FEATURE_TAR)])
    assert features.fetch_oci(f"{host}/features/hello") == cache_of(f"{host}/features/hello:latest")


def test_a_feature_in_the_file_is_resolved_from_its_registry(tmp_path, feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/hello", "1", [tar_of(FEATURE_TAR)])
    config = parse(tmp_path, {"features": {f"{host}/features/hello:1": {}}})
    [feature] = config.features
    assert feature.folder == cache_of(f"{host}/features/hello:1") and feature.metadata == {"id": "hello"}


def test_a_cached_feature_is_read_without_the_network(feature_registry, no_proxy, monkeypatch):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/hello", "1", [tar_of(FEATURE_TAR)])
    assert features.cached_oci(f"{host}/features/hello:1") == cache_of(f"{host}/features/hello:1")  # fetched now
    assert (cache_of(f"{host}/features/hello:1") / "install.sh").is_file()
    monkeypatch.setattr(features, "fetch_oci", lambda reference: pytest.fail("fetched again"))
    assert features.cached_oci(f"{host}/features/hello:1") == cache_of(f"{host}/features/hello:1")


def fetch_refusal(reference: str, clean: bool = True) -> UsageError:
    with pytest.raises(UsageError) as refused:
        features.fetch_oci(reference)
    assert refused.value.hint == ("check the reference and that the registry is reachable; a feature in a folder of the "
                                  "repository (\"./my-feature\") needs no registry")
    if clean:
        assert [p.name for p in cache_of("x").parent.iterdir()] == []  # nothing left behind
    return refused.value


def test_a_feature_of_two_layers_is_refused(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/two", "1", [tar_of(FEATURE_TAR), tar_of({"./other": "x"})])
    assert str(fetch_refusal(f"{host}/features/two:1")) == f"cannot fetch feature {host}/features/two:1: expected one layer, found 2"


def test_a_feature_whose_archive_links_out_is_refused(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/evil", "1", [tar_of({**FEATURE_TAR, "./escape/../../../x": "x"})])
    message = str(fetch_refusal(f"{host}/features/evil:1", clean=False))
    assert message.startswith(f"cannot fetch feature {host}/features/evil:1: ") and "outside the destination" in message
    assert not cache_of(f"{host}/features/evil:1").exists()


def test_a_feature_whose_archive_has_an_absolute_link_is_refused(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/link", "1", [tar_of({**FEATURE_TAR, "./passwd": None})])
    message = str(fetch_refusal(f"{host}/features/link:1", clean=False))
    assert message == f"cannot fetch feature {host}/features/link:1: './passwd' is a link to an absolute path"
    assert not cache_of(f"{host}/features/link:1").exists()


def test_a_refused_archive_leaves_nothing_in_the_cache(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/evil", "1", [tar_of({**FEATURE_TAR, "./escape/../../../x": "x"})])
    fetch_refusal(f"{host}/features/evil:1")


def test_an_unreachable_registry_is_named_at_once(no_proxy):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = str(fetch_refusal(f"127.0.0.1:{port}/features/hello:1"))
    assert message == f"cannot fetch feature 127.0.0.1:{port}/features/hello:1: cannot reach 127.0.0.1:{port}: Connection refused"


def test_a_feature_that_fails_after_an_older_fetch_keeps_the_old_one(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/hello", "1", [tar_of(FEATURE_TAR)])
    folder = features.fetch_oci(f"{host}/features/hello:1")
    serve("features/hello", "1", [tar_of(FEATURE_TAR), tar_of(FEATURE_TAR | {"./x": "y"})])
    with pytest.raises(UsageError):
        features.fetch_oci(f"{host}/features/hello:1")
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
    assert (folder / "install.sh").is_file()


@pytest.fixture
def connections(monkeypatch, no_proxy):
    """Where _reachable connects, and with what timeout; every connection refused."""
    made = []

    def create_connection(address, timeout):
        made.append((address, timeout))
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return made


@pytest.mark.parametrize("registry_,insecure,address", [
    ("ghcr.io", False, ("ghcr.io", 443)), ("localhost", True, ("localhost", 80)), ("host:5000", False, ("host", 5000)),
    ("[::1]:5000", True, ("::1", 5000)), ("[::1]", True, ("::1", 80)), ("XREGX", False, ("XREGX", 443))])
def test_a_registry_is_tried_on_its_port_for_ten_seconds(connections, registry_, insecure, address):
    with pytest.raises(ConnectionError) as refused:
        features._reachable(registry_, insecure)
    assert str(refused.value) == f"cannot reach {registry_}: Connection refused"
    assert connections == [(address, 10)]


def test_an_error_without_strerror_is_named_as_it_is(monkeypatch, no_proxy):
    def create_connection(address, timeout):
        raise OSError("no route")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    with pytest.raises(ConnectionError, match="^cannot reach ghcr.io: no route$"):
        features._reachable("ghcr.io", False)


def test_a_reachable_registry_is_let_through(monkeypatch, no_proxy):
    closed = []

    class Connection:
        def close(self):
            closed.append(True)

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: Connection())
    assert features._reachable("ghcr.io", False) is None and closed == [True]


@pytest.mark.parametrize("insecure", [True, False])
def test_through_a_proxy_the_library_decides(connections, monkeypatch, insecure):
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    monkeypatch.setenv("no_proxy", "internal.example")
    assert features._reachable("ghcr.io", insecure) is None and connections == []
    with pytest.raises(ConnectionError):  # no proxy for this one
        features._reachable("registry.internal.example:5000", insecure)
    assert connections == [(("registry.internal.example", 5000), 10)]


def test_a_local_registry_is_fetched_over_plain_http(monkeypatch, no_proxy):
    seen = []

    def reachable(registry_, insecure):
        seen.append((registry_, insecure))
        raise ConnectionError("stop")

    monkeypatch.setattr(features, "_reachable", reachable)
    for reference in ("localhost:5000/a/b:1", "127.0.0.1/a/b:1", "localhost/a/b", "ghcr.io/a/b:1", "localhostx/a/b:1",
                      "ghcr.io:443/a/b:1"):
        with pytest.raises(UsageError, match="^cannot fetch feature .*: stop$"):
            features.fetch_oci(reference)
    assert seen == [("localhost:5000", True), ("127.0.0.1", True), ("localhost", True), ("ghcr.io", False),
                    ("localhostx", False), ("ghcr.io:443", False)]


@pytest.mark.parametrize("error,reason", [
    (ValueError("a  b\n c "), "a b c"), (ValueError(""), "ValueError"), (KeyError(), "KeyError"),
    (ValueError("x" * 400), "x" * 300)])
def test_a_fetch_failure_is_one_short_line(error, reason):
    assert features._reason(error) == reason


# ---------------------------------------------------------------- settings.settings_from


def user_defaults(text: str) -> None:
    (Path(os.environ["XDG_CONFIG_HOME"]) / "git-gpuspace" / "config.toml").write_text(f"[defaults]\n{text}")


def default_settings(**changes) -> settings.Settings:
    fields = dict(image="user:img", gpu_spec="1", request=GpuRequest(count=1), limits=Limits(shm_bytes=8 << 30),
                  data_root=str(config_data_root()))
    fields.update(changes)
    return settings.Settings(**fields)


def config_data_root() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "git-gpuspace" / "workspaces"


def settings_refusal(*args, **kwargs) -> UsageError:
    with pytest.raises(UsageError) as refused:
        settings.settings_from(*args, **kwargs)
    return refused.value


@pytest.fixture
def user_image():
    user_defaults('image = "user:img"\n')


def test_settings_of_the_built_in_and_user_layers(user_image):
    assert settings.settings_from({}, {}, False) == default_settings()
    assert settings.settings_from({}, {}, True) == default_settings(share=True)


def test_settings_of_every_layer(user_image):
    repo = {"gpus": "2", "memory": "1g", "cpus": "1", "shm_size": "1g", "publish_address": " 0.0.0.0 ", "data_root": "/d",
            "tensorboard": "6007"}
    flags = {"image": " flag:1 ", "gpus": None, "ssh_keys": ["k1", "k2"], "ports": ["web=80:8080", "api=81"], "ssh": True}
    assert settings.settings_from(repo, flags, False) == settings.Settings(
        image="flag:1", gpu_spec="2", request=GpuRequest(count=2),
        limits=Limits(memory_bytes=1 << 30, cpus=1.0, shm_bytes=1 << 30),
        ports=(PortRequest("ssh", 22), PortRequest("tensorboard", 6006, 6007), PortRequest("web", 80, 8080),
               PortRequest("api", 81)),
        address="0.0.0.0", data_root="/d", ssh_keys=("k1", "k2"))


def test_empty_settings_are_left_out(user_image):
    repo = {"memory": "", "cpus": "", "shm_size": "", "publish_address": "", "data_root": ""}
    assert settings.settings_from(repo, {}, False) == default_settings(limits=Limits(), data_root=None)


@pytest.mark.parametrize("image", ["", "  "])
def test_an_empty_image_is_refused(image):
    error = settings_refusal({}, {"image": image}, False)
    assert str(error) == "the image name is empty" and error.hint == "pass --image NAME[:TAG]"


@pytest.mark.parametrize("key,value,message", [
    ("memory", "1k", "--memory '1k' is too small (at least 6m)"),
    ("memory", "x", "invalid --memory 'x'"),
    ("shm_size", "x", "invalid --shm-size 'x'"),
    ("cpus", "x", "invalid --cpus 'x'"),
    ("publish_address", "x", "invalid --publish-address 'x'"),
])
def test_settings_are_validated_by_what_they_are(key, value, message):
    assert str(settings_refusal({key: value}, {}, False)) == message


def test_a_memory_limit_above_the_minimum_is_taken():
    assert settings.settings_from({"memory": "6m"}, {}, False).limits.memory_bytes == 6 << 20


@pytest.mark.parametrize("value,host", [(True, None), ("true", None), ("YES", None), ("8890", 8890), (" 1 ", 1),
                                        ("65535", 65535), (8890, 8890)])
def test_a_service_is_on_with_or_without_a_host_port(user_image, value, host):
    assert settings.settings_from({}, {"jupyter": value}, False).ports == (PortRequest("jupyter", 8888, host),)


@pytest.mark.parametrize("value", [False, "false", "No", "0", "", None])
def test_a_service_is_off(user_image, value):
    assert settings.settings_from({"jupyter": True}, {"jupyter": value}, False).ports == (
        () if value is not None else (PortRequest("jupyter", 8888),))


@pytest.mark.parametrize("value", ["abc", "0", "65536", "-1", "1.5", "on"])
def test_a_service_port_that_is_no_host_port_is_named(value):
    if value == "0":
        value = "00"  # "0" means off
    error = settings_refusal({}, {"ssh": value}, False)
    assert str(error) == f"--ssh {value}: not a host port (1-65535)"
    assert error.hint == "write --ssh or --ssh=PORT"


def test_services_come_in_their_order(user_image):
    ports = settings.settings_from({}, {"tensorboard": True, "ssh": True, "jupyter": True}, False).ports
    assert ports == (PortRequest("jupyter", 8888), PortRequest("ssh", 22), PortRequest("tensorboard", 6006))


def test_a_port_name_given_twice_is_refused(user_image):
    error = settings_refusal({}, {"jupyter": True, "ports": ["a=1", "jupyter=2"]}, False)
    assert str(error) == "port name 'jupyter' is given twice"
    assert str(settings_refusal({}, {"ports": ["a=1", "b=2", "b=3"]}, False)) == "port name 'b' is given twice"


def test_a_host_port_asked_for_twice_is_refused(user_image):
    assert str(settings_refusal({}, {"jupyter": "5000", "ports": ["a=1:5000"]}, False)) == "the same host port is asked for twice"
    assert settings.settings_from({}, {"ports": ["a=1", "b=1", "c=2:5000"]}, False).ports == (
        PortRequest("a", 1), PortRequest("b", 1), PortRequest("c", 2, 5000))


def dev_config(tmp_path, document, trust=True, files=None):
    return parse(tmp_path, document, trust=trust, files=files)


def test_a_devcontainer_layer_gives_its_settings(tmp_path, user_image):
    dev = dev_config(tmp_path, {
        "image": "dev:img", "runArgs": ["--memory", "2g", "--cpus", "1.5", "--shm-size", "1g", "--cap-add", "X"],
        "containerEnv": {"A": "1"}, "mounts": ["source=v,target=/v"], "postCreateCommand": "make",
        "forwardPorts": [9000], "overrideCommand": True, "workspaceFolder": "/src", "containerUser": "c",
        "remoteUser": "r", "hostRequirements": {"gpu": True}})
    assert settings.settings_from({"memory": "1g", "cpus": "1", "shm_size": "2g"}, {"cpus": "2"}, False, dev) == settings.Settings(
        image="dev:img", gpu_spec="1", request=GpuRequest(count=1),
        limits=Limits(memory_bytes=2 << 30, cpus=2.0, shm_bytes=1 << 30), ports=(PortRequest("port-9000", 9000, None, "forwarded"),),
        data_root=str(config_data_root()), env={"A": "1"}, mounts=("volume:v:/v",), lifecycle={"postCreateCommand": "make"},
        host_options={"cap_add": ["X"]}, trusted=True, trusted_mounts=("volume:v:/v",), workspace="/src", workdir="/src",
        container_user="c", remote_user="r")


def test_the_settings_do_not_share_the_devcontainers_objects(tmp_path, user_image):
    dev = dev_config(tmp_path, {"containerEnv": {"A": "1"}, "postCreateCommand": "x", "capAdd": ["X"]})
    made = settings.settings_from({}, {}, False, dev)
    made.env["B"] = "2"
    made.lifecycle["postStartCommand"] = "y"
    made.host_options["privileged"] = True
    assert dev.env == {"A": "1"} and dev.lifecycle == {"postCreateCommand": "x"} and dev.host_options == {"cap_add": ["X"]}


def test_an_untrusted_devcontainer_is_not_trusted_in_the_settings(tmp_path, user_image):
    assert settings.settings_from({}, {}, False, dev_config(tmp_path, {}, trust=False)).trusted is False
    made = settings.settings_from({}, {}, False, dev_config(tmp_path, {"overrideCommand": False}))
    assert made.trusted is True and made.override_command is False


def test_a_built_image_with_features_comes_from_the_devcontainer(tmp_path, user_image):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    dev = dev_config(tmp_path, {"build": {}, "features": {"./f": {}}}, files=DOCKERFILE)
    made = settings.settings_from({}, {}, False, dev)
    assert made.build == dev.build and made.build is not None
    assert made.features == tuple(dev.features) and len(made.features) == 1 and made.image == "user:img"


def test_an_image_flag_replaces_the_devcontainers_image_build_and_features(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    dev = dev_config(tmp_path, {"image": "dev:img", "build": {}, "features": {"./f": {}}}, files=DOCKERFILE)
    made = settings.settings_from({}, {"image": "flag:img"}, False, dev)
    assert (made.image, made.build, made.features) == ("flag:img", None, ())


@pytest.mark.parametrize("gpu,repo,flags,spec", [
    (True, {"gpus": "none"}, {}, "1"),
    (True, {"gpus": "none"}, {"gpus": "none"}, "none"),
    (False, {"gpus": "2"}, {}, "none"),
    (3, {}, {}, "3"),
    ("optional", {"gpus": "2"}, {}, "2"),
])
def test_the_devcontainers_gpu_requirement_yields_to_the_flag(tmp_path, gpu, repo, flags, spec):
    made = settings.settings_from(repo, flags, False, dev_config(tmp_path, {"hostRequirements": {"gpu": gpu}}))
    assert made.gpu_spec == spec


def test_the_gpus_are_probed_only_for_an_optional_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus, "inventory", lambda: pytest.fail("probed"))
    assert settings.settings_from({}, {}, False, dev_config(tmp_path, {"hostRequirements": {"gpu": 2}})).gpu_spec == "2"


def test_an_optional_gpu_on_a_host_without_gpus_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "0")
    made = settings.settings_from({"gpus": "2"}, {}, False, dev_config(tmp_path, {"hostRequirements": {"gpu": "optional"}}))
    assert (made.gpu_spec, made.request) == ("none", GpuRequest())


def test_a_service_cannot_start_where_the_images_command_runs(tmp_path):
    dev = dev_config(tmp_path, {"overrideCommand": False})
    error = settings_refusal({}, {"jupyter": True, "ssh": "2222"}, False, dev)
    assert str(error) == ("devcontainer.json sets overrideCommand to false, so the image's own command runs and "
                          "jupyter, ssh cannot be started with it")
    assert error.hint == "drop --jupyter/--ssh/--tensorboard, or start the service from the image's command"


def test_a_forwarded_port_a_service_publishes_is_the_services(tmp_path, user_image):
    dev = dev_config(tmp_path, {"forwardPorts": [8888, 9000, 22]})
    made = settings.settings_from({}, {"jupyter": True, "ports": ["web=80"]}, False, dev)
    assert made.ports == (PortRequest("port-9000", 9000, None, "forwarded"), PortRequest("port-22", 22, None, "forwarded"),
                          PortRequest("jupyter", 8888), PortRequest("web", 80))


def test_ports_cannot_be_published_on_the_hosts_network(tmp_path):
    dev = dev_config(tmp_path, {"runArgs": ["--network=host"], "forwardPorts": [9000]})
    error = settings_refusal({}, {"ssh": True}, False, dev)
    assert str(error) == ("ports (port-9000, ssh) cannot be published with runArgs --network host: the container uses "
                          "the host's ports directly")
    assert error.hint == "drop one of them from devcontainer.json (or the --jupyter/--ssh/--port flags)"
    assert settings.settings_from({}, {}, False, dev_config(tmp_path, {"runArgs": ["--network=host"]})).ports == ()
    assert settings.settings_from({}, {}, False, dev_config(tmp_path, {"runArgs": ["--network=bridge"], "forwardPorts": [1]})
                                  ).ports == (PortRequest("port-1", 1, None, "forwarded"),)


# ---------------------------------------------------------------- settings.settings_of


def test_a_bindings_settings_are_what_the_state_file_says():
    binding = Binding(path="/w/a", container="c", image="img", gpus=["GPU-1", "GPU-2"], gpu_request="2",
                      limits=Limits(memory_bytes=1 << 30), share=True,
                      ports=[PortMap("jupyter", 8888, 18888, "0.0.0.0"), PortMap("web", 80, 0, "0.0.0.0")],
                      data_dir="/data/c", env={"A": "1"}, mounts=["volume:v:/v"], host_options={"cap_add": ["X"]},
                      devcontainer=".devcontainer/devcontainer.json", workspace="/src", workdir="/src/sub",
                      container_user="c", remote_user="r", override_command=False)
    assert settings.settings_of(binding) == settings.Settings(
        image="img", gpu_spec="2", request=GpuRequest(count=2), limits=Limits(memory_bytes=1 << 30), share=True,
        ports=(PortRequest("jupyter", 8888, 18888), PortRequest("web", 80, None)), address="0.0.0.0",
        data_dir="/data/c", env={"A": "1"}, mounts=("volume:v:/v",), host_options={"cap_add": ["X"]},
        devcontainer=".devcontainer/devcontainer.json", override_command=False, workspace="/src", workdir="/src/sub",
        container_user="c", remote_user="r")


def test_a_bindings_address_is_its_first_ports():
    binding = Binding(path="/w/a", container="c", image="img", ports=[PortMap("ssh", 22, 2222, "::1")])
    assert settings.settings_of(binding).address == "::1"
    binding.ports.append(PortMap("web", 80, 8080, "0.0.0.0"))
    assert settings.settings_of(binding).address == "::1"


def test_a_bindings_gpus_without_a_request_are_its_own_ids():
    made = settings.settings_of(Binding(path="/w/a", container="c", image="img", gpus=["GPU-1", "GPU-2"]))
    assert (made.gpu_spec, made.request) == ("GPU-1,GPU-2", GpuRequest(ids=("GPU-1", "GPU-2")))
    made = settings.settings_of(Binding(path="/w/a", container="c", image="img"))
    assert (made.gpu_spec, made.request, made.address, made.ports) == ("none", GpuRequest(), "127.0.0.1", ())


def test_a_bindings_settings_do_not_share_its_objects():
    binding = Binding(path="/w/a", container="c", image="img", env={"A": "1"}, host_options={"cap_add": ["X"]})
    made = settings.settings_of(binding)
    made.env["B"] = "2"
    made.host_options["privileged"] = True
    assert binding.env == {"A": "1"} and binding.host_options == {"cap_add": ["X"]}


# ---------------------------------------------------------------- settings.checked_settings


@pytest.fixture
def checkout(tmp_path):
    """A repository (main worktree `repo`, git dir `repo/.git`) and a linked worktree `wt`."""
    repo, worktree = tmp_path / "repo", tmp_path / "wt"
    (repo / ".git").mkdir(parents=True)
    (worktree / ".devcontainer").mkdir(parents=True)
    info = RepoInfo(common_dir=repo / ".git", main_path=repo)
    return info, Worktree(path=worktree, branch="b", head=None)


def covered(info: RepoInfo, worktree: Worktree, path: Path) -> trust.Coverage:
    """What trusting the file at `path` covers, as it is now."""
    return trust.coverage(path, path.read_bytes(), worktree.path, info.anchor)


def write_devcontainer(worktree: Worktree, document: dict, trusted: bool, info: RepoInfo,
                       name: str = ".devcontainer/devcontainer.json") -> Path:
    path = worktree.path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    if trusted:
        trust.grant(info.common_dir, covered(info, worktree, path))
    return path


def checked(checkout, tmp_path, **fields) -> settings.Settings:
    info, worktree = checkout
    binding = Binding(path=str(worktree.path), container="gpuspace-r-wt-1", image="img", **fields)
    return settings.checked_settings(info, tmp_path / "state.toml", 3, binding, worktree)


def checked_refusal(checkout, tmp_path, **fields) -> StateError:
    with pytest.raises(StateError) as refused:
        checked(checkout, tmp_path, **fields)
    assert refused.value.hint == ("the state file asks for more than you allowed: fix the entry, or trust the "
                                  "devcontainer.json that asks for it")
    return refused.value


def test_a_binding_that_asks_for_nothing_is_taken_as_it_is(checkout, tmp_path):
    made = checked(checkout, tmp_path, env={"A": "1"})
    assert made == settings.Settings(image="img", gpu_spec="none", request=GpuRequest(), limits=Limits(), env={"A": "1"})


def test_host_options_no_trusted_file_asks_for_are_refused(checkout, tmp_path):
    info, worktree = checkout
    error = checked_refusal(checkout, tmp_path, host_options={"cap_add": ["X"]})
    assert str(error) == (f"{tmp_path / 'state.toml'}: bindings[3].host_options.cap_add = ['X'] is not asked for by a "
                          f"trusted devcontainer.json; nothing was done")
    write_devcontainer(worktree, {"capAdd": ["X"]}, False, info)
    checked_refusal(checkout, tmp_path, host_options={"cap_add": ["X"]})


def test_host_options_a_trusted_file_asks_for_are_taken(checkout, tmp_path):
    info, worktree = checkout
    write_devcontainer(worktree, {"capAdd": ["X"], "privileged": True}, True, info)
    made = checked(checkout, tmp_path, host_options={"cap_add": ["X"], "privileged": True})
    assert made.host_options == {"cap_add": ["X"], "privileged": True} and made.trusted is True
    error = checked_refusal(checkout, tmp_path, host_options={"privileged": True, "cap_add": ["X", "Y"]})
    assert str(error).startswith(f"{tmp_path / 'state.toml'}: bindings[3].host_options.cap_add = ['X', 'Y'] is not ")


def test_the_trusted_file_is_the_one_the_binding_names(checkout, tmp_path):
    info, worktree = checkout
    write_devcontainer(worktree, {"capAdd": ["X"]}, True, info, name=".devcontainer/gpu/devcontainer.json")
    write_devcontainer(worktree, {"capAdd": ["Y"]}, True, info)
    made = checked(checkout, tmp_path, host_options={"cap_add": ["X"]}, devcontainer=".devcontainer/gpu/devcontainer.json")
    assert made.host_options == {"cap_add": ["X"]}
    checked_refusal(checkout, tmp_path, host_options={"cap_add": ["X"]})  # the default file asks for Y
    checked_refusal(checkout, tmp_path, host_options={"cap_add": ["X"]}, devcontainer=".devcontainer/none.json")


def test_bind_mounts_are_resolved_now_and_others_kept(checkout, tmp_path):
    info, worktree = checkout
    (worktree.path / "data").mkdir()
    (worktree.path / "link").symlink_to(worktree.path / "data")
    (info.main_path / "shared").mkdir()
    made = checked(checkout, tmp_path, mounts=[f"{worktree.path}/link:/d:ro", "volume:v:/v", "tmpfs::/t",
                                               f"{info.main_path}/shared:/s"])
    assert made.mounts == (f"{worktree.path}/data:/d:ro", "volume:v:/v", "tmpfs::/t", f"{info.main_path}/shared:/s")
    assert made.trusted is False


def test_a_bind_mount_out_of_the_repository_needs_a_trusted_file_that_asks_for_it(checkout, tmp_path):
    info, worktree = checkout
    (tmp_path / "outside").mkdir()
    (worktree.path / "escape").symlink_to(tmp_path / "outside")
    error = checked_refusal(checkout, tmp_path, mounts=[f"{worktree.path}/escape:/e"])
    assert str(error) == (f"{tmp_path / 'state.toml'}: bindings[3].mounts: {worktree.path}/escape resolves to "
                          f"{tmp_path / 'outside'}, outside the repository or into its git dir, and no trusted "
                          f"devcontainer.json asks for it; nothing was done")
    write_devcontainer(worktree, {"mounts": [f"type=bind,source={tmp_path / 'outside'},target=/e"]}, True, info)
    checked_refusal(checkout, tmp_path, mounts=[f"{worktree.path}/escape:/e"])  # the file asks for another source
    made = checked(checkout, tmp_path, mounts=[f"{tmp_path / 'outside'}:/e"])
    assert made.mounts == (f"{tmp_path / 'outside'}:/e",) and made.trusted is True


def test_a_trusted_file_makes_a_binding_with_mounts_trusted(checkout, tmp_path):
    info, worktree = checkout
    write_devcontainer(worktree, {}, True, info)
    assert checked(checkout, tmp_path, mounts=["volume:v:/v"]).trusted is True
    assert checked(checkout, tmp_path, env={"A": "1"}).trusted is False


def test_the_data_dir_must_be_one_git_gpuspace_made(checkout, tmp_path):
    with pytest.raises(StateError) as refused:
        checked(checkout, tmp_path, data_dir="relative/dir")
    assert str(refused.value) == (f"{tmp_path / 'state.toml'}: bindings[3].data_dir 'relative/dir' is not a plain "
                                  f"absolute path; nothing was done")
    data_dir = str(config_data_root() / "gpuspace-r-wt-1")
    assert checked(checkout, tmp_path, data_dir=data_dir).data_dir == data_dir


def test_a_trusted_file_is_read_with_its_features_from_the_cache(checkout, tmp_path, monkeypatch):
    info, worktree = checkout
    feature_folder(cache_of("ghcr.io/x/f:1").parent, cache_of("ghcr.io/x/f:1").name, {"capAdd": ["F"]})
    write_devcontainer(worktree, {"features": {"ghcr.io/x/f:1": {}}, "capAdd": ["X"]}, True, info)
    monkeypatch.setattr(features, "fetch_oci", lambda reference: pytest.fail("fetched"))
    assert checked(checkout, tmp_path, host_options={"cap_add": ["X"]}).host_options == {"cap_add": ["X"]}
    with pytest.raises(StateError, match="cap_add"):  # the feature's own capAdd is never granted
        checked(checkout, tmp_path, host_options={"cap_add": ["X", "F"]})


def test_a_trusted_file_with_a_build_and_a_feature_is_read_against_the_repository(checkout, tmp_path):
    info, worktree = checkout
    feature_folder(worktree.path / ".devcontainer", "f", {"capAdd": ["F"]})
    (info.main_path / "Dockerfile").write_text("FROM x\n")
    write_devcontainer(worktree, {"build": {"dockerfile": str(info.main_path / "Dockerfile")}, "capAdd": ["X"],
                                  "features": {"./f": {}}}, True, info)
    made = checked(checkout, tmp_path, host_options={"cap_add": ["X"]})
    assert made.host_options == {"cap_add": ["X"]} and made.trusted is True


def test_trusted_devcontainer_is_none_without_a_trusted_file(checkout):
    info, worktree = checkout
    binding = Binding(path=str(worktree.path), container="c", image="img")
    assert settings.trusted_devcontainer(info, binding, worktree) is None
    write_devcontainer(worktree, {"capAdd": ["X"]}, False, info)
    assert settings.trusted_devcontainer(info, binding, worktree) is None
    trust.grant(info.common_dir, covered(info, worktree, worktree.path / ".devcontainer/devcontainer.json"))
    found = settings.trusted_devcontainer(info, binding, worktree)
    assert found.host_options == {"cap_add": ["X"]} and found.trusted is True


def test_trusted_devcontainer_checks_the_file_is_inside_the_repository(checkout, tmp_path):
    info, worktree = checkout
    (tmp_path / "outside.json").write_text("{}")
    (worktree.path / ".devcontainer.json").symlink_to(tmp_path / "outside.json")
    (worktree.path / ".devcontainer").rmdir()
    binding = Binding(path=str(worktree.path), container="c", image="img")
    with pytest.raises(UsageError, match="leads outside the repository"):
        settings.trusted_devcontainer(info, binding, worktree)


def test_trusted_devcontainer_of_a_file_in_the_main_worktree(checkout, tmp_path):
    """The repository's anchor counts as inside: the binding's worktree may be the main one."""
    info, _ = checkout
    main = Worktree(path=info.main_path, branch="main", head=None, is_main=True)
    write_devcontainer(main, {"capAdd": ["X"]}, True, info)
    binding = Binding(path=str(info.main_path), container="c", image="img")
    assert settings.trusted_devcontainer(info, binding, main).host_options == {"cap_add": ["X"]}


# ---------------------------------------------------------------- settings.settings_for_worktree


def for_worktree(checkout, flags=None, share=False, **kwargs) -> settings.Settings:
    info, worktree = checkout
    return settings.settings_for_worktree(info, {}, flags or {}, share, worktree, **kwargs)


def test_a_worktree_without_devcontainer_gets_the_layers(checkout, capsys, user_image):
    (checkout[1].path / ".devcontainer").rmdir()
    assert for_worktree(checkout, {"gpus": "2"}) == default_settings(gpu_spec="2", request=GpuRequest(count=2))
    assert capsys.readouterr().err == ""


def test_named_configurations_only_are_not_chosen_for_the_user(checkout, capsys, user_image):
    info, worktree = checkout
    for name in ("gpu", "cpu"):
        write_devcontainer(worktree, {"image": name}, False, info, name=f".devcontainer/{name}/devcontainer.json")
    assert for_worktree(checkout) == default_settings()
    assert capsys.readouterr().err == ("git-gpuspace: .devcontainer has configurations cpu, gpu and no default one; "
                                       "none was used (--devcontainer cpu chooses one)\n")
    assert for_worktree(checkout, notices=False) == default_settings()
    assert capsys.readouterr().err == ""
    made = for_worktree(checkout, devcontainer_name="gpu", notices=False)
    assert (made.image, made.devcontainer) == ("gpu", ".devcontainer/gpu/devcontainer.json")


def test_an_untrusted_devcontainer_is_used_as_far_as_is_safe_and_says_so(checkout, capsys):
    info, worktree = checkout
    write_devcontainer(worktree, {"image": "dev", "postCreateCommand": "x", "bogus": 1}, False, info)
    made = for_worktree(checkout)
    assert (made.image, made.lifecycle, made.trusted, made.devcontainer, made.share) == (
        "dev", {}, False, ".devcontainer/devcontainer.json", False)
    assert capsys.readouterr().err == (
        "git-gpuspace: devcontainer.json: not supported, ignored: bogus\n"
        f"git-gpuspace: devcontainer.json is not trusted, so it was made without: postCreateCommand; to allow them, "
        f"review it and run `git gpuspace trust {worktree.path}`, then recreate the container "
        f"(`git gpuspace remove --keep-worktree` and `bind`)\n")
    for_worktree(checkout, notices=False)
    assert capsys.readouterr().err == ""


def test_trusting_a_devcontainer_records_it(checkout, capsys):
    info, worktree = checkout
    path = write_devcontainer(worktree, {"image": "dev", "postCreateCommand": "x"}, False, info)
    made = for_worktree(checkout, trust_it=True, share=True)
    assert made.trusted is True and made.lifecycle == {"postCreateCommand": "x"} and made.share is True
    assert [(r.repo, r.sha256, r.path, r.covers) for r in trust.records()] == [
        (str(info.common_dir), covered(info, worktree, path).sha256, str(path), ".devcontainer/ (1 file)")]
    assert covered(info, worktree, path).sha256 != hashlib.sha256(path.read_bytes()).hexdigest()  # not the file alone
    assert trust.is_trusted(info.common_dir, covered(info, worktree, path)) and capsys.readouterr().err == ""
    assert for_worktree(checkout).trusted is True  # recorded


def test_an_image_flag_names_what_it_replaces(checkout, capsys):
    info, worktree = checkout
    feature_folder(worktree.path / ".devcontainer", "f")
    (worktree.path / ".devcontainer" / "Dockerfile").write_text("FROM x\n")
    write_devcontainer(worktree, {"image": "dev", "build": {}, "features": {"./f": {}}}, True, info)
    made = for_worktree(checkout, {"image": "flag"})
    assert (made.image, made.build, made.features) == ("flag", None, ())
    assert capsys.readouterr().err == "git-gpuspace: --image flag replaces the devcontainer.json's image, build, features\n"
    for_worktree(checkout, {"image": "flag"}, notices=False)
    assert capsys.readouterr().err == ""
    write_devcontainer(worktree, {"image": "dev"}, True, info)
    for_worktree(checkout, {"image": "flag"})
    assert capsys.readouterr().err == "git-gpuspace: --image flag replaces the devcontainer.json's image\n"
    write_devcontainer(worktree, {}, True, info)
    assert for_worktree(checkout, {"image": "flag"}).image == "flag"
    assert capsys.readouterr().err == ""


def test_a_bind_mount_of_the_git_dir_in_the_state_file_needs_a_trusted_file_that_asks_for_it(checkout, tmp_path):
    """Inside the repository but exposing its git dir (or a root holding a `.git`): refused too."""
    info, worktree = checkout
    for source in (info.common_dir, worktree.path, info.main_path, info.common_dir / "hooks"):
        error = checked_refusal(checkout, tmp_path, mounts=[f"{source}:/g"])
        assert "outside the repository or into its git dir" in str(error)


def test_a_layer_of_another_type_is_refused_and_never_unpacked(feature_registry, no_proxy, tmp_path):
    """A gzipped image layer is what the library would unpack itself, through links: refused
    before anything is written."""
    import gzip

    host, serve = feature_registry.host, feature_registry.serve
    serve("features/gz", "1", [gzip.compress(tar_of(FEATURE_TAR))], media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    message = str(fetch_refusal(f"{host}/features/gz:1"))
    assert "its layer is not a Dev Container Feature" in message
    assert not cache_of(f"{host}/features/gz:1").exists()


@pytest.mark.parametrize("network", ["container:db", "my-project_default"])
def test_an_untrusted_build_joins_no_other_network(tmp_path, network):
    config = parse(tmp_path, {"build": {"dockerfile": "Dockerfile", "options": [f"--network={network}"]}}, trust=False,
                   files={".devcontainer/Dockerfile": "FROM x\n"})
    assert "network_mode" not in config.build.options and config.skipped == [f"build.options --network {network}"]
    config = parse(tmp_path, {"build": {"dockerfile": "Dockerfile", "options": ["--network=none"]}}, trust=False,
                   files={".devcontainer/Dockerfile": "FROM x\n"})
    assert config.build.options == {"network_mode": "none"}


def test_a_features_container_env_names_are_variable_names(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", {"containerEnv": {"A B\nRUN echo pwned": "x"}})
    says(tmp_path, {"features": {"./f": {}}}, "feature ./f: containerEnv in devcontainer-feature.json must map "
                                             "variable names (letters, digits, _) to values")


def test_a_features_metadata_is_not_read_through_a_link(tmp_path):
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f", {"id": "f"})
    (tmp_path / "elsewhere.json").write_text("{}")
    (folder / "devcontainer-feature.json").unlink()
    (folder / "devcontainer-feature.json").symlink_to(tmp_path / "elsewhere.json")
    error = refusal(tmp_path, {"features": {"./f": {}}})
    assert "feature ./f: cannot read devcontainer-feature.json" in str(error)


def test_a_workspace_folder_under_the_references_default_mounts_its_root(tmp_path):
    config = parse(tmp_path, {"workspaceFolder": "/workspaces/wt/src"})
    assert (config.workspace, config.workdir) == ("/workspaces/wt", "/workspaces/wt/src")
    config = parse(tmp_path, {"workspaceFolder": "/code/"})
    assert (config.workspace, config.workdir) == ("/code", "/code")


@pytest.mark.parametrize("folder", ["/data", "/cache/pip", "/home/gpuspace"])
def test_the_worktree_is_not_mounted_over_our_own_mounts(tmp_path, folder):
    error = refusal(tmp_path, {"workspaceFolder": folder})
    assert f"the worktree cannot be mounted at {folder}" in str(error)


def test_a_volume_flag_with_one_field_is_one_error(tmp_path):
    says(tmp_path, {"runArgs": ["-v", "/data"]}, "runArgs -v /data: write -v SOURCE:TARGET[:ro]")


def test_an_untrusted_bind_of_the_git_dir_or_a_root_is_skipped(tmp_path):
    worktree = tmp_path / "wt"
    (worktree / ".devcontainer").mkdir(parents=True)
    (worktree / ".git").write_text("gitdir: /elsewhere\n")
    (worktree / "sub").mkdir()
    config = parse(tmp_path, {"mounts": ["type=bind,source=${localWorkspaceFolder}/.git,target=/g",
                                         "type=bind,source=${localWorkspaceFolder},target=/w",
                                         "type=bind,source=${localWorkspaceFolder}/sub,target=/s"]}, trust=False)
    assert config.mounts == [f"{worktree}/sub:/s"]
    assert config.skipped == [f"mount of {worktree}/.git", f"mount of {worktree}"]


# ---------------------------------------------------------------- the boundary's later rules, exactly


def test_a_workspace_over_our_own_mounts_says_what_to_choose(tmp_path):
    error = says(tmp_path, {"workspaceFolder": "/data"},
                 "the worktree cannot be mounted at /data: git-gpuspace mounts /data itself")
    assert error.hint == "choose another workspaceFolder / workspaceMount target"


@pytest.mark.parametrize("network", ["default", "bridge", "none"])
def test_an_untrusted_build_may_use_the_engines_own_build_networks(tmp_path, network):
    config = parse(tmp_path, {"build": {"dockerfile": "Dockerfile", "options": [f"--network={network}"]}}, trust=False,
                   files={".devcontainer/Dockerfile": "FROM x\n"})
    assert config.build.options == {"network_mode": network} and config.skipped == []


def test_an_untrusted_bind_inside_a_worktree_outside_the_repositorys_root_is_mounted(tmp_path):
    """A linked worktree lies beside the main one: inside means below either."""
    (tmp_path / "repo").mkdir()
    (tmp_path / "wt" / "data").mkdir(parents=True)
    config = parse(tmp_path, {"mounts": ["type=bind,source=${localWorkspaceFolder}/data,target=/d"]}, trust=False,
                   repo_root=tmp_path / "repo")
    assert config.mounts == [f"{tmp_path / 'wt' / 'data'}:/d"] and config.skipped == []


def test_a_features_options_declaration_must_be_an_object(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", {"options": ["version"]})
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == (f"{where(tmp_path)}: feature ./f: options in devcontainer-feature.json must be an object")


def test_a_features_metadata_through_a_link_is_refused_with_the_systems_reason(tmp_path):
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    (tmp_path / "elsewhere.json").write_text("{}")
    (folder / "devcontainer-feature.json").unlink()
    (folder / "devcontainer-feature.json").symlink_to(tmp_path / "elsewhere.json")
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == (f"{where(tmp_path)}: feature ./f: cannot read devcontainer-feature.json: "
                          f"Too many levels of symbolic links")


def test_a_features_metadata_swapped_for_a_fifo_after_the_check_is_refused_at_once(tmp_path, monkeypatch):
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    (folder / "devcontainer-feature.json").unlink()
    os.mkfifo(folder / "devcontainer-feature.json")
    monkeypatch.setattr(Path, "is_file", lambda self: True)
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == f"{where(tmp_path)}: feature ./f: cannot read devcontainer-feature.json: not a regular file"


def test_a_features_metadata_of_up_to_one_mib_is_read_whole(tmp_path):
    limit = features.MAX_METADATA_BYTES
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f", '{"id": "f"' + " " * (limit - 11) + "}")
    assert (folder / "devcontainer-feature.json").stat().st_size == limit
    assert resolve(tmp_path, "./f").metadata == {"id": "f"}
    (folder / "devcontainer-feature.json").write_text('{"id": "f"' + " " * (limit - 10) + "}")
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == f"{where(tmp_path)}: feature ./f: cannot read devcontainer-feature.json: larger than 1 MiB"


def test_a_huge_features_metadata_is_refused_after_reading_one_mib(tmp_path):
    """A terabyte (sparse) is refused as any file over the limit: only the limit is read."""
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    os.truncate(folder / "devcontainer-feature.json", 1 << 40)
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == f"{where(tmp_path)}: feature ./f: cannot read devcontainer-feature.json: larger than 1 MiB"


def test_a_layer_that_does_not_match_its_digest_is_refused(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    claimed = "sha256:" + hashlib.sha256(b"another layer").hexdigest()
    serve("features/forged", "1", [tar_of(FEATURE_TAR)], digest=claimed)
    message = str(fetch_refusal(f"{host}/features/forged:1"))
    assert message == f"cannot fetch feature {host}/features/forged:1: the layer does not match its digest"
    assert not cache_of(f"{host}/features/forged:1").exists()


@pytest.mark.parametrize("digest", [12, "sha256:short", "sha512:" + "0" * 128])
def test_a_layer_without_a_sha256_digest_is_refused(feature_registry, no_proxy, digest):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/odd", "1", [tar_of(FEATURE_TAR)], digest=digest)
    assert str(fetch_refusal(f"{host}/features/odd:1")) == (
        f"cannot fetch feature {host}/features/odd:1: its layer is not a Dev Container Feature "
        f"({features.LAYER_TYPE} with a sha256 digest)")


def test_a_python_that_cannot_unpack_safely_fetches_nothing(feature_registry, no_proxy, monkeypatch):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/hello", "1", [tar_of(FEATURE_TAR)])
    monkeypatch.delattr(tarfile, "data_filter")
    assert str(fetch_refusal(f"{host}/features/hello:1")) == (
        f"cannot fetch feature {host}/features/hello:1: this Python cannot unpack an archive safely "
        f"(3.10.12, 3.11.4 or later needed)")
    assert not cache_of(f"{host}/features/hello:1").exists()


def test_a_reference_with_a_digest_gets_no_tag(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    digest = "sha256:" + "a" * 64
    serve("features/hello", digest, [tar_of(FEATURE_TAR)])
    assert features.fetch_oci(f"{host}/features/hello@{digest}") == cache_of(f"{host}/features/hello@{digest}")


def test_an_untrusted_devcontainers_mounts_are_not_trusted_mounts(tmp_path, user_image):
    made = settings.settings_from({}, {}, False, dev_config(tmp_path, {"mounts": ["source=v,target=/v"]}, trust=False))
    assert made.mounts == ("volume:v:/v",) and made.trusted_mounts == ()


def test_the_trusted_mounts_of_a_binding_are_those_its_trusted_file_asks_for(checkout, tmp_path):
    info, worktree = checkout
    write_devcontainer(worktree, {"mounts": ["source=v,target=/v"]}, True, info)
    made = checked(checkout, tmp_path, mounts=["volume:v:/v", "volume:w:/w"])
    assert made.mounts == ("volume:v:/v", "volume:w:/w") and made.trusted_mounts == ("volume:v:/v",)


@pytest.fixture
def hooks_checkout(tmp_path):
    """A repository made by git whose core.hooksPath is `.githooks` (in each worktree, as git
    reads a relative one), and a linked worktree `wt` with that folder."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "core.hooksPath", ".githooks"], check=True)
    (tmp_path / "wt" / ".githooks").mkdir(parents=True)
    return RepoInfo(common_dir=(repo / ".git").resolve(), main_path=repo), Worktree(path=tmp_path / "wt", branch="b", head=None)


def test_the_protected_paths_hold_the_hooks_folder_git_reads(hooks_checkout):
    info, worktree = hooks_checkout
    assert settings.protected_paths(info, worktree) == (
        info.common_dir, worktree.path / ".git", info.main_path / ".git", worktree.path / ".githooks")


def test_an_untrusted_bind_of_the_hooks_folder_is_skipped(hooks_checkout, capsys):
    info, worktree = hooks_checkout
    write_devcontainer(worktree, {"image": "dev", "mounts": ["type=bind,source=${localWorkspaceFolder}/.githooks,target=/h"]},
                       False, info)
    assert for_worktree(hooks_checkout).mounts == ()
    assert f"made without: mount of {worktree.path / '.githooks'};" in capsys.readouterr().err


def test_a_trusted_files_feature_may_not_mount_the_hooks_folder(hooks_checkout):
    """Trust covers the file's bytes; a feature's mounts follow the untrusted rules."""
    info, worktree = hooks_checkout
    feature_folder(worktree.path / ".devcontainer", "f", {"mounts": [
        {"type": "bind", "source": str(worktree.path / ".githooks"), "target": "/h"}]})
    write_devcontainer(worktree, {"image": "dev", "features": {"./f": {}}}, True, info)
    binding = Binding(path=str(worktree.path), container="gpuspace-r-wt-1", image="dev")
    dev = settings.trusted_devcontainer(info, binding, worktree)
    assert dev.mounts == [] and dev.skipped == [f"mount of {worktree.path / '.githooks'}"]
