"""devcontainer.py exactly: how a devcontainer.json is located, read and parsed, called directly
(no engine), every refusal's words and every boundary, trusted and untrusted.

Every message a user reads is pinned in full, and every boundary, so that scripts/mutation's
changes to the module fail a test. Engine-free and fast."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from git_gpuspace.devcontainer import parser as devcontainer
from git_gpuspace.devcontainer.compose import ComposeConfig
from git_gpuspace import folders
from git_gpuspace.errors import UsageError
from git_gpuspace.model import PortRequest

from helpers import DOCKERFILE, feature_folder, list_in_reverse, parse, refusal, says, where

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


def test_features_of_the_file_are_resolved_in_install_order(tmp_path):
    base = tmp_path / "wt" / ".devcontainer"
    feature_folder(base, "one", {"id": "one"})
    feature_folder(base, "two", {"id": "two"})
    fetched = []

    def fetch(reference):
        fetched.append(reference)
        return feature_folder(tmp_path / "cache", "remote", {"id": "remote"})

    config = parse(tmp_path, {"features": {"./two": {"a": 1}, "ghcr.io/x/remote:1": "3", "./one": True,
                                           "http://example.com/f.tgz": {}}}, fetch=fetch)
    assert [(f.key, f.folder, f.options) for f in config.features] == [  # one round: sorted as the reference sorts
        ("./one", base / "one", {}), ("./two", base / "two", {"a": 1}),
        ("ghcr.io/x/remote:1", tmp_path / "cache" / "remote", "3")]
    assert fetched == ["ghcr.io/x/remote:1"]
    assert config.unsupported == ["feature http://example.com/f.tgz (only a local folder, an OCI reference or an https:// tarball)"]


def test_a_feature_of_another_kind_is_named_and_the_next_ones_taken(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "one")
    config = parse(tmp_path, {"features": {"http://example.com/a.tgz": {}, "./one": {}, "ghcr.io/x/y:": {}}})
    assert [f.key for f in config.features] == ["./one"]
    assert config.unsupported == ["feature http://example.com/a.tgz (only a local folder, an OCI reference or an https:// tarball)",
                                  "feature ghcr.io/x/y: (only a local folder, an OCI reference or an https:// tarball)"]


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


# ---------------------------------------------------------------- a Compose-based file

COMPOSE = {".devcontainer/docker-compose.yml": "services: {}\n"}


def compose(tmp_path, document, **kwargs):
    return parse(tmp_path, {"dockerComposeFile": "docker-compose.yml", "service": "app", **document},
                 files=COMPOSE, **kwargs)


def test_a_compose_file_names_each_field_its_compose_files_own_and_takes_none_of_them(tmp_path):
    config = compose(tmp_path, {"image": "x", "build": {"dockerfile": "Dockerfile"}, "dockerFile": "Dockerfile",
                                "context": "..", "runArgs": ["--privileged"], "workspaceMount": "type=bind",
                                "zzz": 1})
    assert config.compose == ComposeConfig((str(tmp_path / "wt/.devcontainer/docker-compose.yml"),), "app", (),
                                           "stopCompose")
    assert config.unsupported == [
        "zzz",
        "image (with dockerComposeFile: the service's image)",
        "build (with dockerComposeFile: the service's build)",
        "dockerFile (with dockerComposeFile: the service's build)",
        "context (with dockerComposeFile: the service's build)",
        "runArgs (with dockerComposeFile: the service's options)",
        "workspaceMount (with dockerComposeFile: the service's volumes; the worktree is mounted at workspaceFolder)"]
    assert config.image is None and config.build is None and config.features == []
    assert config.host_options == {} and config.workspace is None and config.workdir is None
    assert config.override_command is False and config.skipped == []


def test_a_compose_files_features_are_installed_on_the_services_image_in_their_order(tmp_path):
    """As the reference does: features extend the bound service's image, whatever made it."""
    for name in ("a", "b"):
        feature_folder(tmp_path / "wt" / ".devcontainer", name, {"id": name})
    config = compose(tmp_path, {"features": {"./a": {}, "./b": {"x": "1"}}, "overrideFeatureInstallOrder": ["./b"]})
    assert [feature.key for feature in config.features] == ["./b", "./a"]
    assert config.unsupported == [] and config.compose is not None


def test_a_compose_file_without_fields_of_the_other_kinds_names_nothing(tmp_path):
    config = compose(tmp_path, {"runServices": ["db", "cache"], "shutdownAction": "none"})
    assert config.compose == ComposeConfig((str(tmp_path / "wt/.devcontainer/docker-compose.yml"),), "app",
                                           ("db", "cache"), "none")
    assert config.unsupported == [] and config.override_command is False


def test_a_compose_file_may_still_override_the_command(tmp_path):
    assert compose(tmp_path, {"overrideCommand": True}).override_command is True


@pytest.mark.parametrize("folder", ["/", "///"])
def test_a_compose_workspace_folder_of_the_root_is_where_commands_start(tmp_path, folder):
    config = compose(tmp_path, {"workspaceFolder": folder,
                                "containerEnv": {"F": "${containerWorkspaceFolder}",
                                                 "B": "<${containerWorkspaceFolderBasename}>"}})
    assert (config.workdir, config.workspace) == ("/", None)
    assert config.env == {"F": "/", "B": "<>"}


def test_a_compose_workspace_folder_elsewhere_is_where_the_worktree_is(tmp_path):
    config = compose(tmp_path, {"workspaceFolder": "/src/"})
    assert (config.workdir, config.workspace) == ("/src", "/src")


def test_a_compose_workspace_folder_is_checked_as_any_other(tmp_path):
    says(tmp_path, {"dockerComposeFile": "docker-compose.yml", "service": "app", "workspaceFolder": 5},
         "'workspaceFolder' must be a non-empty string", files=COMPOSE)


def test_a_file_without_compose_keeps_the_command_overridden_and_has_no_project(tmp_path):
    config = parse(tmp_path, {"service": "app", "runServices": ["db"], "shutdownAction": "none"})
    assert config.compose is None and config.override_command is True and config.unsupported == []


# ---------------------------------------------------------------- remoteEnv, userEnvProbe


def test_remote_env_is_written_as_the_reference_writes_it_and_null_unsets(tmp_path):
    config = parse(tmp_path, {"remoteEnv": {"S": "text", "N": None, "I": 1, "T": True, "F": 1.5,
                                            "W": "${localWorkspaceFolderBasename}"}})
    assert config.remote_env == {"S": "text", "N": None, "I": "1", "T": "true", "F": "1.5", "W": "wt"}
    assert config.env == {} and config.unsupported == []


def test_remote_env_is_empty_unless_asked(tmp_path):
    assert parse(tmp_path, {}).remote_env == {}
    assert parse(tmp_path, {"remoteEnv": None}).remote_env == {}
    assert parse(tmp_path, {}).user_env_probe is None


@pytest.mark.parametrize("value", [["A=1"], "A=1", 5])
def test_remote_env_must_be_an_object(tmp_path, value):
    says(tmp_path, {"remoteEnv": value}, "'remoteEnv' must be an object")


def test_a_remote_env_value_that_is_no_scalar_is_refused(tmp_path):
    says(tmp_path, {"remoteEnv": {"K": ["x"]}}, "the value of 'K' must be a string, number or boolean")


@pytest.mark.parametrize("probe", ["none", "loginShell", "interactiveShell", "loginInteractiveShell"])
def test_user_env_probe_is_read(tmp_path, probe):
    config = parse(tmp_path, {"userEnvProbe": probe})
    assert config.user_env_probe == probe and config.unsupported == []


@pytest.mark.parametrize("probe", ["bash", None, "", "LoginShell", True])
def test_a_user_env_probe_of_another_kind_is_refused(tmp_path, probe):
    says(tmp_path, {"userEnvProbe": probe},
         "'userEnvProbe' must be one of none, loginShell, interactiveShell, loginInteractiveShell")


# ---------------------------------------------------------------- appPort, portsAttributes


def test_app_ports_are_published_as_docker_run_reads_them(tmp_path):
    config = parse(tmp_path, {"appPort": [3000, "8080:80", "127.0.0.1:9000:90", "[::1]:9001:91", "localhost::92",
                                          " 93/tcp ", "0.0.0.0:94:94", "95/udp", "[2001:db8::1]:96:96", 3000, "4000:80",
                                          1, 65535]})
    assert config.ports == [PortRequest("app-3000", 3000, 3000, "app"), PortRequest("app-80", 80, 8080, "app"),
                            PortRequest("app-90", 90, 9000, "app"), PortRequest("app-91", 91, 9001, "app"),
                            PortRequest("app-92", 92, None, "app"), PortRequest("app-93", 93, None, "app"),
                            PortRequest("app-94", 94, 94, "app"), PortRequest("app-96", 96, 96, "app"),
                            PortRequest("app-1", 1, 1, "app"), PortRequest("app-65535", 65535, 65535, "app")]
    where_every_port_is = "published where every port is, on 127.0.0.1 unless publish_address says otherwise"
    assert config.unsupported == [f"appPort 0.0.0.0:94:94 (address 0.0.0.0: {where_every_port_is})",
                                  "appPort 95/udp (only TCP ports are published)",
                                  f"appPort [2001:db8::1]:96:96 (address 2001:db8::1: {where_every_port_is})"]


@pytest.mark.parametrize("app, port", [(8080, PortRequest("app-8080", 8080, 8080, "app")),
                                       ("8080:80", PortRequest("app-80", 80, 8080, "app"))])
def test_one_app_port_needs_no_list(tmp_path, app, port):
    assert parse(tmp_path, {"appPort": app}).ports == [port]


def test_an_app_port_comes_before_a_forwarded_port_of_the_same_container_port(tmp_path):
    config = parse(tmp_path, {"forwardPorts": [3000, 4000], "appPort": 3000})
    assert config.ports == [PortRequest("app-3000", 3000, 3000, "app"),
                            PortRequest("port-4000", 4000, None, "forwarded")]


def test_no_app_port_asks_for_none(tmp_path):
    assert parse(tmp_path, {"appPort": None}).ports == []
    assert parse(tmp_path, {"appPort": []}).ports == []


@pytest.mark.parametrize("entry", ["x", True, 1.5, None, "80/", "a:b:80", "80:", "[x]:1:80", {"port": 80}, "80/http"])
def test_an_app_port_that_is_no_port_is_refused(tmp_path, entry):
    says(tmp_path, {"appPort": [entry]},
         f"appPort entry {entry!r} is not a port or \"[ADDRESS:][HOST_PORT:]PORT\"")


@pytest.mark.parametrize("entry, number", [(0, "0"), (65536, "65536"), ("0:80", "0"), ("80:0", "0"),
                                           ("65536:80", "65536"), ("1.2.3.4:70000:1", "70000"),
                                           ("localhost:1:99999", "99999")])
def test_an_app_port_out_of_range_is_refused(tmp_path, entry, number):
    says(tmp_path, {"appPort": entry}, f"appPort {entry}: port {number} is out of range (1-65535)")


def test_ports_attributes_name_a_port_keep_it_unpublished_or_on_its_own_host_port(tmp_path):
    config = parse(tmp_path, {
        "forwardPorts": [3000, 3001, 3005, 4000, 5000, 5001, 6001, 7000, 7001, 7002, 7003],
        "portsAttributes": {"3000-3010": {"label": "Range"}, "3005": {"label": "Web App!"},
                            "4000": {"onAutoForward": "ignore"}, "5000": {"requireLocalPort": True, "label": "jupyter"},
                            "5001": {"requireLocalPort": "true", "label": "ssh"}, " 6000 - 6002 ": {"label": "_six_"},
                            "7000": {"label": "1st"}, "7001": {"label": "x" * 30 + "-y"}, "7002": {"label": 5},
                            "7003": {"label": "tensorboard"}, "node": {"label": "other"}},
        "otherPortsAttributes": {"onAutoForward": "ignore"}})
    assert config.ports == [PortRequest("range", 3000, None, "forwarded"),
                            PortRequest("port-3001", 3001, None, "forwarded"),
                            PortRequest("web-app", 3005, None, "forwarded"),
                            PortRequest("port-5000", 5000, 5000, "forwarded"),
                            PortRequest("port-5001", 5001, None, "forwarded"),
                            PortRequest("six", 6001, None, "forwarded"),
                            PortRequest("port-7000", 7000, None, "forwarded"),
                            PortRequest("x" * 30, 7001, None, "forwarded"),
                            PortRequest("port-7002", 7002, None, "forwarded"),
                            PortRequest("port-7003", 7003, None, "forwarded")]
    assert config.unsupported == []


def test_a_long_label_is_cut_to_31_characters(tmp_path):
    config = parse(tmp_path, {"forwardPorts": [1], "portsAttributes": {"1": {"label": "a" * 40}}})
    assert config.ports == [PortRequest("a" * 31, 1, None, "forwarded")]


def test_ports_attributes_name_an_app_port_but_do_not_unpublish_it(tmp_path):
    config = parse(tmp_path, {"appPort": [7000, "8000:80"], "portsAttributes": {
        "7000": {"label": "API", "onAutoForward": "ignore"}, "80": {"label": "api"}}})
    assert config.ports == [PortRequest("api", 7000, 7000, "app"), PortRequest("app-80", 80, 8000, "app")]


def test_an_exact_port_key_wins_over_a_range_written_after_it(tmp_path):
    config = parse(tmp_path, {"forwardPorts": [3005, 3006], "portsAttributes": {
        "3005": {"label": "exact"}, "3000-3010": {"label": "range"}}})
    assert config.ports == [PortRequest("exact", 3005, None, "forwarded"), PortRequest("range", 3006, None, "forwarded")]


def test_no_ports_attributes_is_no_attributes(tmp_path):
    config = parse(tmp_path, {"forwardPorts": [4000], "portsAttributes": None, "otherPortsAttributes": {}})
    assert config.ports == [PortRequest("port-4000", 4000, None, "forwarded")]


@pytest.mark.parametrize("value", [["3000"], "x", {"3000": "label"}, {"3000": {}, "3001": None}])
def test_ports_attributes_must_be_an_object_of_objects(tmp_path, value):
    says(tmp_path, {"portsAttributes": value}, "'portsAttributes' must be an object of objects (port -> attributes)")


@pytest.mark.parametrize("value", [["ignore"], "ignore", None])
def test_other_ports_attributes_must_be_an_object(tmp_path, value):
    says(tmp_path, {"otherPortsAttributes": value}, "'otherPortsAttributes' must be an object")


# ---------------------------------------------------------------- runArgs any file may set


def test_run_args_ulimits_stay_in_the_container_one_per_name_the_last_winning(tmp_path):
    config = run_args(tmp_path, ["--ulimit", "nofile=1024:2048", "--ulimit=core=-1", "--ulimit", "nofile=4096",
                                 "--ulimit", "stack=5:-1", "--ulimit", "memlock=-1:-1"], trust=False)
    assert config.container_options == {"ulimits": ["core=-1:-1", "nofile=4096:4096", "stack=5:-1",
                                                    "memlock=-1:-1"]}
    assert config.host_options == {} and config.skipped == [] and config.unsupported == []


@pytest.mark.parametrize("name", ["nice", "rtprio"])
def test_a_ulimit_that_outranks_the_host_needs_trust(tmp_path, name):
    trusted = run_args(tmp_path, ["--ulimit", f"{name}=5", "--ulimit", f"{name}=1:9", "--ulimit", "nofile=7"])
    assert trusted.host_options == {"ulimits": [f"{name}=1:9"]}
    assert trusted.container_options == {"ulimits": ["nofile=7:7"]}
    untrusted = run_args(tmp_path, ["--ulimit", f"{name}=5", "--ulimit", f"{name}=5"], trust=False)
    assert untrusted.host_options == {} and untrusted.container_options == {}
    assert untrusted.skipped == [f"runArgs --ulimit {name}=5"]


@pytest.mark.parametrize("value", ["bogus=1", "nofile", "nofile=", "nofile=a", "nofile=1:2:3", "nofile=1:", "=1",
                                   "nofile=1.5"])
def test_a_ulimit_docker_would_refuse_is_refused(tmp_path, value):
    says(tmp_path, {"runArgs": ["--ulimit", value]},
         f"runArgs --ulimit {value}: write --ulimit NAME=SOFT[:HARD] (NAME one of core, cpu, data, fsize, locks, "
         f"memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack; -1 is unlimited)")


@pytest.mark.parametrize("value", ["nofile=10:5", "nofile=-1:5", "nofile=-2", "nofile=-2:-1", "nofile=1:-2"])
def test_a_ulimit_whose_soft_limit_is_above_the_hard_one_is_refused(tmp_path, value):
    says(tmp_path, {"runArgs": [f"--ulimit={value}"]}, f"runArgs --ulimit {value}: the soft limit is above the hard one")


def test_run_args_add_host_label_hostname_platform_stay_in_the_container(tmp_path):
    config = run_args(tmp_path, ["--add-host", "db:10.0.0.1", "--add-host=gw=host-gateway", "--add-host", "v6:[::1]",
                                 "--add-host", "a.b-c.D:2001:db8::1", "--label", "a=b", "-l", "c", "--label=d=e=f",
                                 "--hostname", "box-1.local", "--platform", "Linux/AMD64"], trust=False)
    assert config.container_options == {
        "extra_hosts": ["db:10.0.0.1", "gw:host-gateway", "v6:::1", "a.b-c.D:2001:db8::1"],
        "labels": {"a": "b", "c": "", "d": "e=f"}, "hostname": "box-1.local", "platform": "linux/amd64"}
    assert config.host_options == {} and config.skipped == [] and config.unsupported == []


def test_short_hostname_and_platform_variants(tmp_path):
    config = run_args(tmp_path, ["-h", "x", "--platform=linux/arm64/v8", "--platform", "linux"])
    assert config.container_options == {"hostname": "x", "platform": "linux"}
    assert run_args(tmp_path, ["--platform", "linux/arm64/v8"]).container_options == {"platform": "linux/arm64/v8"}


@pytest.mark.parametrize("value", ["bad_host:1.2.3.4", "db:notanip", "db", "db:", ":1.2.3.4", "-x.y:1.2.3.4",
                                   "db:1.2.3.4.5", "db:host-gateway2"])
def test_an_add_host_docker_would_refuse_is_refused(tmp_path, value):
    says(tmp_path, {"runArgs": [f"--add-host={value}"]},
         f"runArgs --add-host {value}: write --add-host NAME:ADDRESS (an IP address or host-gateway)")


def test_an_add_host_name_may_be_253_characters_of_63_character_labels(tmp_path):
    name = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(name) == 253
    assert run_args(tmp_path, ["--add-host", f"{name}:1.2.3.4"]).container_options == {
        "extra_hosts": [f"{name}:1.2.3.4"]}
    says(tmp_path, {"runArgs": ["--add-host", f"{name}b:1.2.3.4"]},
         f"runArgs --add-host {name}b:1.2.3.4: write --add-host NAME:ADDRESS (an IP address or host-gateway)")
    label = "a" * 64
    says(tmp_path, {"runArgs": ["--add-host", f"{label}:1.2.3.4"]},
         f"runArgs --add-host {label}:1.2.3.4: write --add-host NAME:ADDRESS (an IP address or host-gateway)")


@pytest.mark.parametrize("value", ["=x", "=", "\t=x"])
def test_a_label_needs_a_key(tmp_path, value):
    says(tmp_path, {"runArgs": [f"--label={value}"]}, f"runArgs --label {value}: write --label KEY=VALUE")


@pytest.mark.parametrize("value", ["gpuspace.owner=me", "GPUSpace.gpus=0", "gpuspace."])
def test_a_gpuspace_label_is_refused_with_what_to_do(tmp_path, value):
    error = says(tmp_path, {"runArgs": ["--label", value]},
                 f"runArgs --label {value}: gpuspace.* labels are git-gpuspace's own (they say whose container it is "
                 f"and which GPUs it holds); nothing was made")
    assert error.hint == "choose another label key"


def test_a_label_like_ours_but_not_ours_is_taken(tmp_path):
    assert run_args(tmp_path, ["--label", "gpuspace=1", "--label", "x.gpuspace.y=2"]).container_options == {
        "labels": {"gpuspace": "1", "x.gpuspace.y": "2"}}


@pytest.mark.parametrize("value", ["bad_name", "a..b", "a-", "x" * 64, ".a"])
def test_a_hostname_docker_would_refuse_is_refused(tmp_path, value):
    says(tmp_path, {"runArgs": ["--hostname", value]},
         f"runArgs --hostname {value}: not a valid hostname (letters, digits, '-' and '.')")


@pytest.mark.parametrize("value", ["linux/amd64/v8/x", "linux/", "/amd64", "lin-ux", "linux/arm/v8_1"])
def test_a_platform_docker_would_refuse_is_refused(tmp_path, value):
    says(tmp_path, {"runArgs": [f"--platform={value}"]},
         f"runArgs --platform {value}: write --platform OS[/ARCH[/VARIANT]], e.g. linux/amd64")


def test_init_false_in_run_args_runs_the_command_as_pid_1_and_a_later_init_undoes_it(tmp_path):
    assert run_args(tmp_path, ["--init=false"]).container_options == {"init": False}
    assert run_args(tmp_path, ["--init=false", "--init"]).container_options == {}
    assert run_args(tmp_path, ["--init=false", "--init=true"]).container_options == {}
    assert parse(tmp_path, {"init": False, "runArgs": ["--init"]}).container_options == {}
    assert parse(tmp_path, {"init": True, "runArgs": ["--init=false"]}).container_options == {"init": False}
    config = run_args(tmp_path, ["--init=false"], trust=False)
    assert config.container_options == {"init": False} and config.skipped == [] and config.unsupported == []


def test_container_flags_without_a_value_are_named(tmp_path):
    config = run_args(tmp_path, ["--ulimit", "--add-host", "--label", "--hostname", "--platform", "--env-file",
                                 "--ulimit="])
    assert config.unsupported == ["runArgs --ulimit", "runArgs --add-host", "runArgs --label", "runArgs --hostname",
                                  "runArgs --platform", "runArgs --env-file", "runArgs --ulimit "]
    assert config.container_options == {}


# ---------------------------------------------------------------- runArgs --env-file


def test_a_trusted_env_file_is_read_as_docker_reads_it_under_container_env_and_e(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_HOST", "host value")
    monkeypatch.delenv("UNSET_HERE", raising=False)
    (tmp_path / "abs.env").write_text("G=absolute\nA=from the second file\n")
    config = parse(tmp_path, {"containerEnv": {"A": "container", "Z": "z"},
                              "runArgs": ["--env-file", "vars.env", f"--env-file={tmp_path / 'abs.env'}",
                                          "-e", "B=run"]},
                   files={"vars.env": "\ufeffA=1\r\n# a comment\n\n   B=two words \nC=x=y\nFROM_HOST\nUNSET_HERE\n"
                                      "E=\n#X=1\n"})
    assert config.env == {"A": "container", "B": "run", "C": "x=y", "FROM_HOST": "host value", "E": "", "G": "absolute",
                          "Z": "z"}
    assert config.skipped == [] and config.unsupported == []


def test_a_later_env_file_wins(tmp_path):
    config = parse(tmp_path, {"runArgs": ["--env-file", "a.env", "--env-file", "b.env"]},
                   files={"a.env": "K=a\nL=a\n", "b.env": "K=b\n"})
    assert config.env == {"K": "b", "L": "a"}


def test_an_untrusted_env_file_is_skipped_once(tmp_path):
    config = parse(tmp_path, {"runArgs": ["--env-file", "vars.env", "--env-file=vars.env"]},
                   files={"vars.env": "A=1\n"}, trust=False)
    assert config.env == {} and config.skipped == ["runArgs --env-file vars.env"]


def test_an_env_file_that_cannot_be_read_is_named(tmp_path):
    says(tmp_path, {"runArgs": ["--env-file", "missing.env"]},
         f"runArgs --env-file missing.env: cannot read {tmp_path / 'wt/missing.env'}: No such file or directory")


def test_an_env_file_that_is_no_utf8_is_refused(tmp_path):
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt/bin.env").write_bytes(b"A=\xff\n")
    says(tmp_path, {"runArgs": ["--env-file", "bin.env"]},
         f"runArgs --env-file bin.env: {tmp_path / 'wt/bin.env'} is not UTF-8 text")


def test_a_huge_env_file_is_refused(tmp_path):
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt/big.env").write_bytes(b"A=" + b"x" * devcontainer.MAX_BYTES)
    says(tmp_path, {"runArgs": ["--env-file", "big.env"]},
         f"runArgs --env-file big.env: {tmp_path / 'wt/big.env'} is larger than 1 MiB")


def test_an_env_file_of_exactly_the_limit_is_read(tmp_path):
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt/full.env").write_bytes(b"A=" + b"x" * (devcontainer.MAX_BYTES - 2))
    assert parse(tmp_path, {"runArgs": ["--env-file", "full.env"]}).env == {"A": "x" * (devcontainer.MAX_BYTES - 2)}


@pytest.mark.parametrize("text, line", [("B x=1\n", 1), ("A=1\n=1\n", 2), ("A=1\n\n# c\nB\tC=1\n", 4)])
def test_an_env_file_line_that_is_not_key_value_is_refused(tmp_path, text, line):
    says(tmp_path, {"runArgs": ["--env-file", "bad.env"]},
         f"runArgs --env-file bad.env: line {line} of {tmp_path / 'wt/bad.env'} is not KEY=VALUE",
         files={"bad.env": text})


# ---------------------------------------------------------------- the rest, exactly


def test_override_feature_install_order_is_followed(tmp_path):
    base = tmp_path / "wt" / ".devcontainer"
    feature_folder(base, "one", {"id": "one"})
    feature_folder(base, "two", {"id": "two"})
    config = parse(tmp_path, {"features": {"./one": {}, "./two": {}}, "overrideFeatureInstallOrder": ["./two", "./one"]})
    assert [feature.key for feature in config.features] == ["./two", "./one"]


def test_a_compose_workspace_folder_named_x_is_a_folder(tmp_path):
    config = compose(tmp_path, {"workspaceFolder": "/X"})
    assert (config.workdir, config.workspace) == ("/X", "/X")


def test_an_app_ports_attributes_are_its_container_ports(tmp_path):
    config = parse(tmp_path, {"appPort": "8000:80", "portsAttributes": {"80": {"label": "web"}, "8000": {"label": "no"}}})
    assert config.ports == [PortRequest("web", 80, 8000, "app")]


def test_an_app_port_address_may_be_ipv6_in_capitals(tmp_path):
    config = parse(tmp_path, {"appPort": "[2001:DB8::1]:96:96"})
    assert config.ports == [PortRequest("app-96", 96, 96, "app")]
    assert config.unsupported == ["appPort [2001:DB8::1]:96:96 (address 2001:DB8::1: published where every port is, "
                                  "on 127.0.0.1 unless publish_address says otherwise)"]


def test_a_label_of_a_letter_then_a_digit_is_a_name(tmp_path):
    config = parse(tmp_path, {"forwardPorts": [1], "portsAttributes": {"1": {"label": "a1"}}})
    assert config.ports == [PortRequest("a1", 1, None, "forwarded")]


def test_an_env_file_keeps_a_values_spaces_but_not_a_windows_line_end(tmp_path):
    config = parse(tmp_path, {"runArgs": ["--env-file", "vars.env"]},
                   files={"vars.env": "A=1\r\nB=two words \nC=\r\n"})
    assert config.env == {"A": "1", "B": "two words ", "C": ""}


def test_an_env_file_may_be_a_link_the_user_made(tmp_path):
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt/real.env").write_text("A=1\n")
    (tmp_path / "wt/vars.env").symlink_to("real.env")
    assert parse(tmp_path, {"runArgs": ["--env-file", "vars.env"]}).env == {"A": "1"}


def test_a_dockerfile_that_is_a_link_is_read_through_it(tmp_path):
    (tmp_path / "real").write_text("FROM base:1\n")
    (tmp_path / "Dockerfile").symlink_to("real")
    assert devcontainer.Build(tmp_path / "Dockerfile", tmp_path, {}).base_images() == ["base:1"]


def test_a_dockerfile_that_cannot_be_read_is_named(tmp_path):
    with pytest.raises(UsageError) as refused:
        devcontainer.Build(tmp_path / "Dockerfile", tmp_path, {}).base_images()
    assert str(refused.value) == f"cannot read {tmp_path / 'Dockerfile'}: No such file or directory"


def test_an_env_file_value_ending_in_capital_x_keeps_it(tmp_path):
    """Only a Windows line end is cut from a line, not letters."""
    config = parse(tmp_path, {"runArgs": ["--env-file", "vars.env"]}, files={"vars.env": "BOX=XX\r\nFAX=1X\n"})
    assert config.env == {"BOX": "XX", "FAX": "1X"}


def test_a_compose_file_in_a_linked_worktree_outside_the_main_one_is_inside_the_repository(tmp_path):
    """A linked worktree lies anywhere: its Compose file is the repository's though it is not
    under the main worktree."""
    config = parse(tmp_path, {"dockerComposeFile": "docker-compose.yml", "service": "app"},
                   files={".devcontainer/docker-compose.yml": "services: {app: {image: x}}\n"},
                   repo_root=tmp_path / "main")
    assert config.compose.files == (str((tmp_path / "wt" / ".devcontainer" / "docker-compose.yml").resolve()),)
