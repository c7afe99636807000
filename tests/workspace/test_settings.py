"""settings.py exactly: the settings layers (built in, user, repository, devcontainer.json,
flags), their checks, and what a worktree's binding gets from them.

Every message a user reads is pinned in full, and every boundary, so that scripts/mutation's
changes to the module fail a test. Engine-free and fast."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from git_gpuspace.devcontainer import features
from git_gpuspace import gpus, settings, specs, trust
from git_gpuspace.errors import StateError, UsageError
from git_gpuspace.model import Binding, GpuRequest, Limits, PortMap, PortRequest
from git_gpuspace.git.worktrees import RepoInfo, Worktree

from helpers import DOCKERFILE, FEATURE_TAR, cache_of, feature_folder, fetch_refusal, parse, refusal, says, tar_of

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


# ---------------------------------------------------------------- every field a devcontainer.json or binding gives


def test_a_devcontainers_remote_env_probe_initialize_command_and_options_reach_the_settings(tmp_path, user_image):
    dev = dev_config(tmp_path, {"userEnvProbe": "loginShell", "remoteEnv": {"A": "1", "B": None},
                                "initializeCommand": "make init", "runArgs": ["--hostname", "h"]})
    made = settings.settings_from({}, {}, False, dev)
    assert (made.remote_env, made.user_env_probe, made.initialize, made.container_options, made.compose) == (
        {"A": "1", "B": None}, "loginShell", ("make init", tmp_path / "wt"), {"hostname": "h"}, None)
    made.remote_env["C"] = "3"
    made.container_options["init"] = True
    assert dev.remote_env == {"A": "1", "B": None} and dev.container_options == {"hostname": "h"}


def test_without_an_initialize_command_nothing_runs_on_the_host(tmp_path, user_image):
    assert settings.settings_from({}, {}, False, dev_config(tmp_path, {"postCreateCommand": "x"})).initialize is None


def test_a_compose_based_devcontainers_project_reaches_the_settings(tmp_path, user_image):
    project = object()
    dev = replace(dev_config(tmp_path, {}), compose=project)
    assert settings.settings_from({}, {}, False, dev).compose is project


@pytest.fixture
def small_host(monkeypatch):
    monkeypatch.setattr(specs, "host_memory", lambda: 1 << 30)


@pytest.mark.parametrize("key,flag", [("memory", "--memory"), ("shm_size", "--shm-size")])
def test_a_limit_from_the_devcontainer_is_named_by_the_file_in_its_error(tmp_path, small_host, key, flag):
    dev = dev_config(tmp_path, {"image": "x", "runArgs": [flag, "2g"]})
    error = settings_refusal({key: "1m"}, {}, False, dev)
    assert str(error) == f"devcontainer.json runArgs {flag} 2g is more than this host's memory (1g)"
    assert error.hint == f"pass {flag} SIZE to override the file; nothing was made"


@pytest.mark.parametrize("key,flag", [("memory", "--memory"), ("shm_size", "--shm-size")])
def test_a_limit_flag_over_a_devcontainers_is_named_by_the_flag(tmp_path, small_host, key, flag):
    dev = dev_config(tmp_path, {"image": "x", "runArgs": [flag, "64m"]})
    error = settings_refusal({}, {key: "3g"}, False, dev)
    assert str(error) == f"{flag} 3g is more than this host's memory (1g)" and error.hint is None
    error = settings_refusal({key: "3g"}, {}, False, dev_config(tmp_path, {"image": "x"}))
    assert str(error) == f"{flag} 3g is more than this host's memory (1g)" and error.hint is None


def test_a_devcontainers_memory_below_the_minimum_is_named_by_the_file(tmp_path):
    dev = dev_config(tmp_path, {"image": "x", "runArgs": ["--memory", "1k"]})
    error = settings_refusal({}, {}, False, dev)
    assert str(error) == "devcontainer.json runArgs --memory '1k' is too small (at least 6m)"


def test_a_bindings_remote_env_probe_options_and_port_origins_are_its_settings():
    binding = Binding(path="/w/a", container="c", image="img", remote_env={"A": "1"}, user_env_probe="none",
                      container_options={"hostname": "h"},
                      ports=[PortMap("port-9000", 9000, 20000, "127.0.0.1", "forwarded"), PortMap("app", 80, 8080, "::1", "app")])
    made = settings.settings_of(binding)
    assert (made.remote_env, made.user_env_probe, made.container_options, made.ports) == (
        {"A": "1"}, "none", {"hostname": "h"},
        (PortRequest("port-9000", 9000, 20000, "forwarded"), PortRequest("app", 80, 8080, "app")))
    made.remote_env["B"] = "2"
    made.container_options["init"] = True
    assert binding.remote_env == {"A": "1"} and binding.container_options == {"hostname": "h"}


# ---------------------------------------------------------------- settings_for_worktree: trust and its notices


def test_a_trusted_file_whose_dockerfile_is_in_the_main_worktree_stays_trusted(checkout, capsys):
    info, worktree = checkout
    (info.main_path / "Dockerfile").write_text("FROM x\n")
    write_devcontainer(worktree, {"build": {"dockerfile": str(info.main_path / "Dockerfile")},
                                  "postCreateCommand": "make"}, True, info)
    made = for_worktree(checkout)
    assert made.trusted is True and made.lifecycle == {"postCreateCommand": "make"}


NOT_COVERED = ("git-gpuspace: trusting devcontainer.json covers .devcontainer/ (1 file), not what it also uses: the "
               "build context .. (what the Dockerfile copies from it); review those too (a change to them does not "
               "make it untrusted again)\n")


def test_trusting_a_file_names_what_the_trust_does_not_cover_once(checkout, capsys):
    info, worktree = checkout
    write_devcontainer(worktree, {"build": {"dockerfile": "Dockerfile", "context": ".."}}, False, info)
    (worktree.path / ".devcontainer" / "Dockerfile").write_text("FROM x\n")
    assert for_worktree(checkout, trust_it=True).trusted is True
    assert capsys.readouterr().err == NOT_COVERED.replace("(1 file)", "(2 files)")
    assert for_worktree(checkout).trusted is True  # trusted before: nothing new to say
    assert capsys.readouterr().err == ""
    for_worktree(checkout, trust_it=True, notices=False)
    assert capsys.readouterr().err == ""


def test_an_untrusted_file_names_what_trust_would_not_cover_only_when_it_skipped_something(checkout, capsys):
    info, worktree = checkout
    (worktree.path / ".devcontainer" / "Dockerfile").write_text("FROM x\n")
    write_devcontainer(worktree, {"build": {"dockerfile": "Dockerfile", "context": ".."}}, False, info)
    assert for_worktree(checkout).trusted is False
    assert capsys.readouterr().err == ""
    write_devcontainer(worktree, {"build": {"dockerfile": "Dockerfile", "context": ".."}, "postCreateCommand": "x"},
                       False, info)
    for_worktree(checkout)
    assert capsys.readouterr().err == (
        f"git-gpuspace: devcontainer.json is not trusted, so it was made without: postCreateCommand; to allow them, "
        f"review it and run `git gpuspace trust {worktree.path}`, then recreate the container "
        f"(`git gpuspace remove --keep-worktree` and `bind`)\n" + NOT_COVERED.replace("(1 file)", "(2 files)"))


@pytest.mark.parametrize("gpu", [2, 3])
def test_an_untrusted_file_that_asks_for_several_gpus_says_how_many_are_claimed(checkout, capsys, gpu):
    info, worktree = checkout
    write_devcontainer(worktree, {"image": "dev", "hostRequirements": {"gpu": gpu}}, False, info)
    assert for_worktree(checkout).gpu_spec == str(gpu)
    assert capsys.readouterr().err == (
        f"git-gpuspace: devcontainer.json is not trusted and asks for {gpu} GPUs (hostRequirements.gpu), so {gpu} will "
        f"be claimed; pass --gpus N to claim fewer, or review the file and run `git gpuspace trust {worktree.path}` "
        f"to accept it\n")


@pytest.mark.parametrize("gpu,trusted,flags,notices", [
    (1, False, {}, True), (True, False, {}, True), ("optional", False, {}, True), (3, True, {}, True),
    (3, False, {"gpus": "1"}, True), (3, False, {"gpus": None}, False),
])
def test_a_file_that_takes_no_more_than_one_gpu_from_others_says_nothing_of_gpus(checkout, capsys, gpu, trusted,
                                                                                 flags, notices):
    info, worktree = checkout
    write_devcontainer(worktree, {"image": "dev", "hostRequirements": {"gpu": gpu}}, trusted, info)
    for_worktree(checkout, flags, notices=notices)
    assert capsys.readouterr().err == ""
