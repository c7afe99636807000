"""state.py exactly: loading the state file (every refusal named by index and key) and saving it.

Every message a user reads is pinned in full, and every boundary, so that scripts/mutation's
changes to the module fail a test. Engine-free and fast."""

from __future__ import annotations

import datetime as dt
import errno
import os
import tomllib
from pathlib import Path

import pytest
import tomli_w

from git_gpuspace import data_dirs, hook_index, state
from git_gpuspace.errors import GpuspaceError, StateError
from git_gpuspace.model import Binding, Limits, PortMap, name_digest

# ---------------------------------------------------------------- state: loading

FIX_HINT = "fix or move the file by hand; git-gpuspace will not overwrite it"
REMOVE = object()


def container_for(common: Path, worktree: str, repo: str = "r") -> str:
    return f"gpuspace-{repo}-{Path(worktree).name}-{name_digest(common, Path(worktree))}"


def entry(common: Path, worktree: str = "/w/a", **changes) -> dict:
    fields = {"path": worktree, "container": container_for(common, worktree), "image": "img", **changes}
    return {key: value for key, value in fields.items() if value is not REMOVE}


def write(common: Path, document: dict | str | bytes) -> Path:
    path = common / "gpuspace.toml"
    if isinstance(document, dict):
        document = tomli_w.dumps(document)
    path.write_bytes(document if isinstance(document, bytes) else document.encode())
    return path


def refused(common: Path, document) -> StateError:
    path = write(common, document)
    with pytest.raises(StateError) as caught:
        state.load(common)
    caught.value.args = (str(caught.value).replace(str(path), "STATE"),)
    return caught.value


TOP_LEVEL_REFUSALS = [
    ({"schema": "one"}, "STATE: 'schema' must be an integer"),
    ({"schema": True}, "STATE: 'schema' must be an integer"),
    ({"schema": 0}, "STATE: 'schema' must be 1 or more, not 0"),
    ({"defaults": 1}, "STATE: [defaults] must be a table"),
    ({"bindings": 1}, "STATE: 'bindings' must be an array of tables"),
    ({"auto_bind": "yes"}, "STATE: auto_bind must be true or false"),
    ({"checks": 1}, "STATE: checks must be a table of checks"),
    ({"checks": {"t": 1}}, "STATE: checks.t must be a table"),
    ({"checks": {"t": {}}}, "STATE: checks.t.command must be a list of strings"),
    ({"checks": {"t": {"command": []}}}, "STATE: checks.t.command must be a list of strings"),
    ({"checks": {"t": {"command": ["ok", 1]}}}, "STATE: checks.t.command must be a list of strings"),
    ({"checks": {"t": {"command": ["x"], "gpus": 1}}}, "STATE: checks.t.gpus must be a string"),
    ({"checks": {"t": {"command": ["x"], "image": 1}}}, "STATE: checks.t.image must be a string"),
    ({"checks": {"t": {"command": ["x"], "on_commit": "yes"}}}, "STATE: checks.t.on_commit must be true or false"),
    ({"pre_push": "t"}, "STATE: pre_push must be a list of check names"),
    ({"pre_push": ["t", 1]}, "STATE: pre_push must be a list of check names"),
]


@pytest.mark.parametrize("document,message", TOP_LEVEL_REFUSALS)
def test_a_bad_top_level_value_is_named_and_never_repaired(tmp_path, document, message):
    error = refused(tmp_path, document)
    assert str(error) == message and error.hint == FIX_HINT


def test_a_newer_schema_asks_for_an_upgrade(tmp_path):
    error = refused(tmp_path, {"schema": state.SCHEMA_VERSION + 1})
    assert str(error) == (f"STATE has schema {state.SCHEMA_VERSION + 1}, newer than this git-gpuspace understands "
                          f"({state.SCHEMA_VERSION})")
    assert error.hint == "upgrade git-gpuspace (pip install -U git-gpuspace)"


@pytest.mark.parametrize("raw,message", [
    (b"schema = 1\n\xff\n", "STATE is not UTF-8 text (byte 11)"),
    (b"schema = 1\n[[bindings]\n", "STATE: Expected ']]' at the end of an array declaration at line 2, column 11"),
    (b"schema = 1\nbindings = [1,", "STATE: Invalid value at line 2, column 15 (end of file)"),
    (b"schema = 1\nbindings = [1,\n", "STATE: Invalid value at line 3, column 1 (end of file)"),
])
def test_an_unparsable_file_names_the_line_and_column(tmp_path, raw, message):
    error = refused(tmp_path, raw)
    assert str(error) == message and error.hint == FIX_HINT


def test_a_state_file_that_cannot_be_read_says_why(tmp_path):
    (tmp_path / "gpuspace.toml").mkdir()
    with pytest.raises(StateError) as caught:
        state.load(tmp_path)
    assert str(caught.value) == f"cannot read {tmp_path / 'gpuspace.toml'}: Is a directory"


def test_a_missing_file_is_an_empty_state_at_its_path(tmp_path):
    loaded = state.load(tmp_path)
    assert loaded == state.State(path=tmp_path / "gpuspace.toml")


def test_a_minimal_file_gets_every_default(tmp_path):
    write(tmp_path, {"bindings": [entry(tmp_path)]})
    loaded = state.load(tmp_path)
    assert (loaded.defaults, loaded.auto_bind, loaded.checks, loaded.pre_push, loaded.extra) == ({}, False, {}, [], {})
    [binding] = loaded.bindings
    expected = Binding(path="/w/a", container=container_for(tmp_path, "/w/a"), image="img", created=binding.created)
    assert binding == expected


BINDING_REFUSALS = [
    ({"path": REMOVE}, " lacks 'path'"),
    ({"container": REMOVE}, " lacks 'container'"),
    ({"image": REMOVE}, " lacks 'image'"),
    ({"image": 1}, ".image must be a string"),
    ({"branch": 1}, ".branch must be a string"),
    ({"gpus": "GPU-1"}, ".gpus must be a list of GPU UUIDs"),
    ({"gpus": ["GPU-1", 1]}, ".gpus must be a list of GPU UUIDs"),
    ({"limits": 1}, ".limits must be a table"),
    ({"limits": {"memory": "1g"}}, ".limits.memory must be an integer (bytes)"),
    ({"limits": {"memory": True}}, ".limits.memory must be an integer (bytes)"),
    ({"limits": {"shm_size": 1.5}}, ".limits.shm_size must be an integer (bytes)"),
    ({"limits": {"cpus": "2"}}, ".limits.cpus must be a number"),
    ({"limits": {"cpus": True}}, ".limits.cpus must be a number"),
    ({"share": "yes"}, ".share must be true or false"),
    ({"created": "2026-01-02"}, ".created must be a date-time"),
    ({"worktree_id": 1}, ".worktree_id must be a string"),
    ({"gpu_request": 1}, ".gpu_request must be a string"),
    ({"pending": True}, ".pending must be a string"),
    ({"data_dir": 1}, ".data_dir must be a string"),
    ({"devcontainer": 1}, ".devcontainer must be a string"),
    ({"ports": "web=80:20000@127.0.0.1"}, ".ports must be a list of port mappings"),
    ({"ports": [1]}, ".ports has a bad entry 1 (name=container:host@address)"),
    ({"ports": ["web=80"]}, ".ports has a bad entry 'web=80' (name=container:host@address)"),
    ({"env": 1}, ".env must be a table of strings"),
    ({"env": {"A": 1}}, ".env must be a table of strings"),
    ({"mounts": "/a:/b"}, ".mounts must be a list of strings"),
    ({"mounts": [1]}, ".mounts must be a list of strings"),
    ({"host_options": 1}, ".host_options must be a table"),
    ({"host_options": {"root": True}}, ".host_options.root is not an option git-gpuspace sets (cap_add, devices, "
                                       "ipc_mode, network_mode, pid_mode, privileged, security_opt, ulimits); nothing was "
                                       "done"),
    ({"container_options": []}, ".container_options must be a table"),
    ({"container_options": {"privileged": True}}, ".container_options.privileged is not an option git-gpuspace sets "
                                                  "(extra_hosts, hostname, init, labels, platform, ulimits); nothing "
                                                  "was done"),
    ({"container_options": {"init": "no"}}, ".container_options.init must be true or false"),
    ({"container_options": {"ulimits": [1]}}, ".container_options.ulimits must hold strings only"),
    ({"container_options": {"labels": {"gpuspace.worktree": "/x"}}}, ".container_options.labels sets a gpuspace.* "
                                                                     "label, which only git-gpuspace writes; nothing "
                                                                     "was done"),
    ({"host_options": {"privileged": "yes"}}, ".host_options.privileged must be true or false"),
    ({"host_options": {"cap_add": "SYS_ADMIN"}}, ".host_options.cap_add must be a list"),
    ({"host_options": {"network_mode": 1}}, ".host_options.network_mode must be a string"),
    ({"container": "gpuspace-evil"}, ".container 'gpuspace-evil' is not the name of this worktree's container; "
                                     "nothing was done"),
    ({"remote_env": 1}, ".remote_env must be a table of strings"),
    ({"remote_env": {"A": 1}}, ".remote_env must be a table of strings"),
    ({"workspace": 1}, ".workspace must be a string"),
    ({"workdir": 1}, ".workdir must be a string"),
    ({"container_user": 1}, ".container_user must be a string"),
    ({"remote_user": 1}, ".remote_user must be a string"),
    ({"user_env_probe": 1}, ".user_env_probe must be a string"),
    ({"container_options": {"labels": {"a": 1}}}, ".container_options.labels must hold strings only"),
    ({"container_options": {"labels": ["a"]}}, ".container_options.labels must be a table of strings"),
    ({"container_options": {"extra_hosts": "db:1"}}, ".container_options.extra_hosts must be a list of strings"),
    ({"container_options": {"hostname": 1}}, ".container_options.hostname must be a string"),
    ({"container_options": {"platform": ["x"]}}, ".container_options.platform must be a string"),
    ({"container_options": {"init": 1}}, ".container_options.init must be true or false"),
    ({"container_options": {"labels": {"GPUSpace.Repo": "x"}}}, ".container_options.labels sets a gpuspace.* "
                                                                "label, which only git-gpuspace writes; nothing "
                                                                "was done"),
    ({"host_options": {"devices": "/dev/x"}}, ".host_options.devices must be a list"),
    ({"host_options": {"security_opt": "x"}}, ".host_options.security_opt must be a list"),
    ({"host_options": {"ulimits": "x"}}, ".host_options.ulimits must be a list"),
    ({"host_options": {"ipc_mode": 1}}, ".host_options.ipc_mode must be a string"),
    ({"host_options": {"pid_mode": True}}, ".host_options.pid_mode must be a string"),
    ({"limits": {"cpus": 1.5, "memory": 1.5}}, ".limits.memory must be an integer (bytes)"),
    ({"created": 1}, ".created must be a date-time"),
    ({"gpus": [True]}, ".gpus must be a list of GPU UUIDs"),
]


@pytest.mark.parametrize("changes,message", BINDING_REFUSALS)
def test_a_bad_binding_is_named_by_its_index_and_key(tmp_path, changes, message):
    document = {"bindings": [entry(tmp_path, "/w/ok"), entry(tmp_path, **changes)]}
    error = refused(tmp_path, document)
    assert str(error) == f"STATE: bindings[1]{message}" and error.hint == FIX_HINT


def test_a_binding_that_is_no_table_is_refused(tmp_path):
    error = refused(tmp_path, {"bindings": [1]})
    assert str(error) == "STATE: bindings[0] must be a table" and error.hint == FIX_HINT


def test_a_path_that_is_no_string_is_refused(tmp_path):
    document = {"bindings": [{"path": 1, "container": "c", "image": "i"}]}
    assert str(refused(tmp_path, document)) == "STATE: bindings[0].path must be a string"


def test_container_names_keep_the_case_of_the_repo_and_worktree(tmp_path):
    write(tmp_path, {"bindings": [entry(tmp_path, "/w/ViT", container=container_for(tmp_path, "/w/ViT", "MyRepo"))]})
    assert state.load(tmp_path).bindings[0].container.startswith("gpuspace-MyRepo-ViT-")


def test_a_container_of_another_worktree_is_refused(tmp_path):
    document = {"bindings": [entry(tmp_path, "/w/a", container=container_for(tmp_path, "/w/b"))]}
    assert "is not the name of this worktree's container" in str(refused(tmp_path, document))


def test_whole_number_cpus_load_as_a_float(tmp_path):
    write(tmp_path, {"bindings": [entry(tmp_path, limits={"cpus": 2, "memory": 1 << 30})]})
    assert state.load(tmp_path).bindings[0].limits == Limits(memory_bytes=1 << 30, cpus=2.0)


# ---------------------------------------------------------------- state: saving

def full_binding(common: Path, worktree: str = "/w/full") -> Binding:
    return Binding(
        path=worktree, container=container_for(common, worktree), image="img:1", branch="feature/x",
        gpus=["GPU-1", "GPU-2"], limits=Limits(memory_bytes=1 << 30, cpus=2.5, shm_bytes=8 << 30), share=True,
        worktree_id="full", gpu_request="2", pending="engine down", data_dir="/d/full", devcontainer=".devcontainer.json",
        ports=[PortMap("jupyter", 8888, 20001, "127.0.0.1"), PortMap("ssh", 22, 20002, "::1")],
        env={"A": "1", "B": "two"}, mounts=["/src:/dst:ro", "/x:/y"],
        host_options={"privileged": True, "cap_add": ["SYS_PTRACE"], "network_mode": "host"},
        extra={"future_key": {"nested": 1}}, created=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    )


def test_everything_a_binding_holds_survives_a_save_and_load(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml", defaults={"image": "img", "gpus": "1"}, auto_bind=True,
                        checks={"unit": {"command": ["pytest", "-q"], "gpus": "1", "image": "img", "on_commit": True},
                                "lint": {"command": ["ruff"]}},
                        pre_push=["unit"], extra={"later": "kept"})
    saved.bindings = [full_binding(tmp_path),
                      Binding(path="/w/bare", container=container_for(tmp_path, "/w/bare"), image="img",
                              limits=Limits(shm_bytes=1 << 20))]
    saved.save()
    loaded = state.load(tmp_path)
    assert loaded == saved
    assert loaded.bindings[1].limits == Limits(shm_bytes=1 << 20)


def test_the_file_names_its_schema_and_leaves_out_what_is_unset(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml")
    saved.bindings = [Binding(path="/w/a", container=container_for(tmp_path, "/w/a"), image="img",
                              created=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc))]
    saved.save()
    document = tomllib.loads(saved.path.read_text())
    assert document == {"schema": state.SCHEMA_VERSION, "bindings": [
        {"path": "/w/a", "container": container_for(tmp_path, "/w/a"), "image": "img", "gpus": [], "share": False,
         "created": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)}]}


def test_unknown_keys_are_written_back_as_they_were(tmp_path):
    write(tmp_path, {"schema": 1, "later": {"x": [1, 2]}, "bindings": [entry(tmp_path, later_too="y")]})
    state.load(tmp_path).save()
    document = tomllib.loads((tmp_path / "gpuspace.toml").read_text())
    assert document["later"] == {"x": [1, 2]} and document["bindings"][0]["later_too"] == "y"
    assert "later" not in document["bindings"][0] and "later_too" not in document


def test_a_binding_that_keeps_the_images_own_command_says_so_in_the_file(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml")
    saved.bindings = [Binding(path="/w/a", container=container_for(tmp_path, "/w/a"), image="i", override_command=False),
                      Binding(path="/w/b", container=container_for(tmp_path, "/w/b"), image="i")]
    saved.save()
    written = tomllib.loads(saved.path.read_text())["bindings"]
    assert written[0]["override_command"] is False and "override_command" not in written[1]
    assert [b.override_command for b in state.load(tmp_path).bindings] == [False, True]


def test_an_override_command_that_is_no_boolean_is_refused(tmp_path):
    error = refused(tmp_path, {"bindings": [entry(tmp_path, override_command="no")]})
    assert str(error) == "STATE: bindings[0].override_command must be true or false" and error.hint == FIX_HINT


def test_find_and_remove_go_by_the_worktree_path(tmp_path):
    loaded = state.State(path=tmp_path / "gpuspace.toml")
    a, b = (Binding(path=p, container="c", image="i") for p in ("/w/a", "/w/b"))
    loaded.bindings = [a, b]
    assert loaded.find(Path("/w/b")) is b and loaded.find("/w/a") is a and loaded.find("/w/c") is None
    loaded.remove(Path("/w/a"))
    assert loaded.bindings == [b]


def test_the_hook_index_lists_bound_paths_and_marks_pending_and_on_commit(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml", checks={"t": {"command": ["x"], "on_commit": True}})
    saved.bindings = [Binding(path="/w/a", container="c", image="i", pending="engine down"),
                      Binding(path="/w/odd\nname", container="c", image="i"),
                      Binding(path="/w/b", container="c", image="i")]
    hook_index.write(tmp_path, saved.bindings, saved.checks)
    assert (tmp_path / "gpuspace.paths").read_text() == "/w/a\n/w/b\n"
    assert (tmp_path / "gpuspace.pending").exists() and (tmp_path / "gpuspace.verify-on-commit").exists()
    saved.bindings[0].pending = None
    saved.checks["t"]["on_commit"] = False
    hook_index.write(tmp_path, saved.bindings, saved.checks)
    assert not (tmp_path / "gpuspace.pending").exists() and not (tmp_path / "gpuspace.verify-on-commit").exists()


def test_a_reader_during_a_save_sees_the_old_file_and_a_hidden_temporary_beside_it(tmp_path, monkeypatch):
    """Fault point before the rename: the new content waits in a private dotfile in the same directory."""
    write(tmp_path, {"schema": 1, "defaults": {"image": "old"}})
    probe = tmp_path / "probe"
    monkeypatch.setenv("GPUSPACE_FAULT_POINT", "before-state-rename")
    monkeypatch.setenv("GPUSPACE_FAULT_ACTION",
                       f"run:cd {tmp_path} && cp -n gpuspace.toml {probe}.old; "
                       f"stat -c '%n %a' .gpuspace.toml.* >> {probe} 2>/dev/null")
    loaded = state.load(tmp_path)
    loaded.defaults = {"image": "new"}
    loaded.save()
    assert 'image = "old"' in (tmp_path / "probe.old").read_text()
    [line] = probe.read_text().splitlines()
    name, mode = line.split()
    assert name.startswith(".gpuspace.toml.") and mode == "600"
    assert state.load(tmp_path).defaults == {"image": "new"}


def test_a_failure_before_the_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    write(tmp_path, {"schema": 1, "defaults": {"image": "old"}})
    monkeypatch.setenv("GPUSPACE_FAULT_POINT", "before-state-rename")
    monkeypatch.setenv("GPUSPACE_FAULT_ACTION", "fail")
    loaded = state.load(tmp_path)
    loaded.defaults = {"image": "new"}
    with pytest.raises(GpuspaceError, match="injected failure at before-state-rename"):
        loaded.save()
    assert state.load(tmp_path).defaults == {"image": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpuspace.toml"]


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch):
    write(tmp_path, {"schema": 1, "defaults": {"image": "old"}})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    loaded = state.load(tmp_path)
    with pytest.raises(StateError) as caught:
        loaded.save()
    assert str(caught.value) == f"cannot write {tmp_path / 'gpuspace.toml'}: No space left on device"
    assert caught.value.hint == "free some space, or make the git dir writable; the old file is unchanged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpuspace.toml"]


def test_an_os_error_without_strerror_is_shown_as_it_is(tmp_path, monkeypatch):
    def odd(fd):
        raise OSError("odd failure")

    monkeypatch.setattr(os, "fsync", odd)
    with pytest.raises(StateError) as caught:
        state.State(path=tmp_path / "gpuspace.toml").save()
    assert str(caught.value) == f"cannot write {tmp_path / 'gpuspace.toml'}: odd failure"


def test_a_temporary_removed_by_someone_else_still_fails_as_one_line(tmp_path, monkeypatch):
    """The cleanup after a failed rename must not hide the failure when the temporary is already gone."""
    monkeypatch.setenv("GPUSPACE_FAULT_POINT", "before-state-rename")
    monkeypatch.setenv("GPUSPACE_FAULT_ACTION", f"run:rm -f {tmp_path}/.gpuspace.toml.*")
    with pytest.raises(StateError) as caught:
        state.State(path=tmp_path / "gpuspace.toml").save()
    assert str(caught.value) == f"cannot write {tmp_path / 'gpuspace.toml'}: No such file or directory"


# ---------------------------------------------------------------- state: every field, both ways

def test_a_binding_from_a_devcontainer_keeps_every_field_through_a_save_and_load(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml")
    saved.bindings = [Binding(
        path="/w/dev", container=container_for(tmp_path, "/w/dev"), image="img", workspace="/src", workdir="/src/sub",
        container_user="c", remote_user="r", user_env_probe="loginShell", remote_env={"PATH": "/x", "E": ""},
        container_options={"init": True, "hostname": "h", "platform": "linux/amd64", "ulimits": ["nofile=1:2"],
                           "extra_hosts": ["db:10.0.0.1"], "labels": {"team": "ml"}},
        ports=[PortMap("port-9000", 9000, 20003, "127.0.0.1", "forwarded")],
        host_options={"ipc_mode": "host", "pid_mode": "host", "devices": ["/dev/fuse"], "security_opt": ["seccomp=x"],
                      "ulimits": ["core=0"]},
        created=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc))]
    saved.save()
    written = tomllib.loads(saved.path.read_text())["bindings"][0]
    assert written == {
        "path": "/w/dev", "container": container_for(tmp_path, "/w/dev"), "image": "img", "gpus": [], "share": False,
        "created": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc), "workspace": "/src", "workdir": "/src/sub",
        "container_user": "c", "remote_user": "r", "user_env_probe": "loginShell",
        "ports": ["port-9000=9000:20003@127.0.0.1/forwarded"], "remote_env": {"PATH": "/x", "E": ""},
        "host_options": {"ipc_mode": "host", "pid_mode": "host", "devices": ["/dev/fuse"],
                         "security_opt": ["seccomp=x"], "ulimits": ["core=0"]},
        "container_options": {"init": True, "hostname": "h", "platform": "linux/amd64", "ulimits": ["nofile=1:2"],
                              "extra_hosts": ["db:10.0.0.1"], "labels": {"team": "ml"}}}
    assert state.load(tmp_path) == saved


def test_the_saved_file_holds_the_top_level_tables_in_full(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml", defaults={"image": "img"}, auto_bind=True,
                        checks={"unit": {"command": ["pytest"], "on_commit": True}}, pre_push=["unit"],
                        extra={"later": 1})
    saved.save()
    assert tomllib.loads(saved.path.read_text()) == {
        "later": 1, "schema": 1, "auto_bind": True, "defaults": {"image": "img"},
        "checks": {"unit": {"command": ["pytest"], "on_commit": True}}, "pre_push": ["unit"], "bindings": []}


def test_a_loaded_state_owns_its_lists_and_tables(tmp_path):
    """Changing what was loaded (then not saving) leaves the next load as the file says."""
    write(tmp_path, {"pre_push": ["t"], "checks": {"t": {"command": ["x"]}},
                     "bindings": [entry(tmp_path, gpus=["GPU-1"], env={"A": "1"}, remote_env={"B": "2"},
                                        mounts=["/a:/b"], host_options={"cap_add": ["X"]},
                                        container_options={"labels": {"k": "v"}})]})
    loaded = state.load(tmp_path)
    [binding] = loaded.bindings
    assert (binding.gpus, binding.env, binding.remote_env, binding.mounts, binding.host_options,
            binding.container_options, loaded.pre_push) == (
        ["GPU-1"], {"A": "1"}, {"B": "2"}, ["/a:/b"], {"cap_add": ["X"]}, {"labels": {"k": "v"}}, ["t"])
    saved = state.State(path=tmp_path / "gpuspace.toml", pre_push=loaded.pre_push, bindings=loaded.bindings)
    saved.save()
    binding.gpus.append("GPU-2")
    binding.env["C"] = "3"
    binding.remote_env["D"] = "4"
    binding.mounts.append("/c:/d")
    binding.host_options["privileged"] = True
    binding.container_options["init"] = True
    loaded.pre_push.append("u")
    written = tomllib.loads(saved.path.read_text())
    assert written["pre_push"] == ["t"]
    assert {key: written["bindings"][0][key] for key in ("gpus", "env", "remote_env", "mounts", "host_options",
                                                          "container_options")} == {
        "gpus": ["GPU-1"], "env": {"A": "1"}, "remote_env": {"B": "2"}, "mounts": ["/a:/b"],
        "host_options": {"cap_add": ["X"]}, "container_options": {"labels": {"k": "v"}}}




def test_container_options_of_every_kind_are_taken(tmp_path):
    options = {"ulimits": [], "extra_hosts": ["a:1"], "labels": {"gpuspace": "not ours", "x.gpuspace.y": "z"},
               "hostname": "h", "platform": "p", "init": False}
    write(tmp_path, {"bindings": [entry(tmp_path, container_options=options)]})
    assert state.load(tmp_path).bindings[0].container_options == options


def test_a_created_time_is_read_as_written(tmp_path):
    when = dt.datetime(2025, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    write(tmp_path, {"bindings": [entry(tmp_path, created=when, branch="main", share=True, override_command=True)]})
    [binding] = state.load(tmp_path).bindings
    assert (binding.created, binding.branch, binding.share, binding.override_command) == (when, "main", True, True)


def test_a_binding_with_cpus_only_has_no_other_limits(tmp_path):
    write(tmp_path, {"bindings": [entry(tmp_path, limits={"cpus": 0.5})]})
    assert state.load(tmp_path).bindings[0].limits == Limits(cpus=0.5)
    write(tmp_path, {"bindings": [entry(tmp_path, limits={"memory": 1 << 30, "shm_size": 1 << 20})]})
    assert state.load(tmp_path).bindings[0].limits == Limits(memory_bytes=1 << 30, shm_bytes=1 << 20)


# ---------------------------------------------------------------- state: container names

@pytest.mark.parametrize("repo_name", ["my_repo.v2-x", "A9", ""])
def test_a_repository_name_of_letters_digits_dots_dashes_and_underscores_is_ours(tmp_path, repo_name):
    container = container_for(tmp_path, "/w/a", repo_name)
    write(tmp_path, {"bindings": [entry(tmp_path, container=container)]})
    [binding] = state.load(tmp_path).bindings
    assert (binding.container, binding.repo) == (container, None)


@pytest.mark.parametrize("container", [
    "gpuspace-r/x-a-{digest}", "gpuspace-r x-a-{digest}", "xgpuspace-r-a-{digest}", "gpuspace-r-a-{digest}-x",
    "gpuspace-r-a-{digest}\n", "gpuspace-{digest}", "Gpuspace-r-a-{digest}",
])
def test_a_container_name_we_would_not_give_is_refused(tmp_path, container):
    name = container.format(digest=name_digest(tmp_path, Path("/w/a")))
    error = refused(tmp_path, {"bindings": [entry(tmp_path, container=name)]})
    assert str(error) == (f"STATE: bindings[0].container {name!r} is not the name of this worktree's container; "
                          f"nothing was done")
    assert error.hint == FIX_HINT


# ---------------------------------------------------------------- state: the places the repository was

def origin_line(place: Path | str) -> str:
    return f"{data_dirs.user_mac(f'gpuspace.origin{chr(0)}{place}')} {place}\n"


def moved_from(common: Path, old: Path, worktree: str = "/w/a", origins: str | None = None) -> dict:
    """A state file whose binding's container was named while the repository was at `old`."""
    (common / state.ORIGINS_NAME).write_text(origin_line(old) if origins is None else origins)
    return {"bindings": [entry(common, worktree, container=container_for(old, worktree))]}


def test_a_binding_named_where_the_repository_was_is_loaded_with_that_place(tmp_path):
    common, old = tmp_path / "now" / ".git", tmp_path / "then" / ".git"
    common.mkdir(parents=True)
    write(common, moved_from(common, old))
    [binding] = state.load(common).bindings
    assert binding.repo == str(old)


def test_a_save_vouches_for_where_the_repository_is_and_each_place_it_was(tmp_path):
    common = tmp_path / "now" / ".git"
    common.mkdir(parents=True)
    saved = state.State(path=common / "gpuspace.toml")
    saved.bindings = [Binding(path=f"/w/{n}", container="c", image="i", repo=repo) for n, repo in
                      enumerate(["/old/b", None, str(common), "/old/a", "/old/b", "/odd\nplace"])]
    saved.save()
    assert (common / "gpuspace.origins").read_text() == (
        origin_line(common) + origin_line("/old/a") + origin_line("/old/b"))
    assert len(origin_line(common).split(" ")[0]) == 64


def test_an_unchanged_origins_file_is_not_written_again(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml")
    saved.save()
    origins = tmp_path / "gpuspace.origins"
    assert origins.read_text() == origin_line(tmp_path)
    before = origins.stat().st_ino
    saved.save()
    assert origins.stat().st_ino == before
    origins.write_text("stale\n")
    saved.save()
    assert origins.read_text() == origin_line(tmp_path)


def test_a_folder_where_the_origins_file_goes_fails_the_save_in_one_line(tmp_path):
    (tmp_path / "gpuspace.origins").mkdir()
    with pytest.raises(StateError) as caught:
        state.State(path=tmp_path / "gpuspace.toml").save()
    assert str(caught.value) == f"cannot write {tmp_path / 'gpuspace.origins'}: Is a directory"


def test_a_place_the_users_key_does_not_vouch_for_names_none_of_its_containers(tmp_path):
    common, old = tmp_path / "now" / ".git", tmp_path / "then" / ".git"
    common.mkdir(parents=True)
    forged = "0" * 64 + f" {old}\n"
    name = container_for(old, "/w/a")
    for origins in (forged, origin_line(old).replace(" ", "0 ", 1), origin_line(old)[1:]):
        error = refused(common, moved_from(common, old, origins=origins))
        assert str(error) == (f"STATE: bindings[0].container {name!r} was named when this repository was at {old}, "
                              f"which gpuspace.origins does not vouch for (its keyed hash is not your "
                              f"git-gpuspace's); nothing was done")
        assert error.hint == FIX_HINT


def test_a_place_that_still_holds_a_git_dir_names_none_of_its_containers(tmp_path):
    common, old = tmp_path / "now" / ".git", tmp_path / "then" / ".git"
    common.mkdir(parents=True)
    old.mkdir(parents=True)
    error = refused(common, moved_from(common, old))
    assert str(error) == (f"STATE: bindings[0].container {container_for(old, '/w/a')!r} was named when this "
                          f"repository was at {old}, which still holds a git dir: its containers are that "
                          f"repository's (a copy, not a move?); nothing was done")
    assert error.hint == FIX_HINT


def test_a_place_that_is_this_very_git_dir_by_another_name_counts(tmp_path):
    common = tmp_path / "now" / ".git"
    common.mkdir(parents=True)
    (tmp_path / "alias").symlink_to(common)
    write(common, moved_from(common, tmp_path / "alias"))
    assert state.load(common).bindings[0].repo == str(tmp_path / "alias")


def test_the_first_place_that_named_the_container_is_the_one_judged(tmp_path):
    common, old, other = tmp_path / "now" / ".git", tmp_path / "then" / ".git", tmp_path / "other" / ".git"
    common.mkdir(parents=True)
    lines = "no-space-here\n" + "relative/place\n" + origin_line(other) + origin_line(old) + "0" * 64 + f" {old}\n"
    write(common, moved_from(common, old, origins=lines))
    assert state.load(common).bindings[0].repo == str(old)


def test_a_place_with_a_space_in_it_is_read_whole(tmp_path):
    common, old = tmp_path / "now" / ".git", tmp_path / "was here" / ".git"
    common.mkdir(parents=True)
    write(common, moved_from(common, old))
    assert state.load(common).bindings[0].repo == str(old)


def test_an_origins_file_with_bytes_that_are_not_text_is_still_read(tmp_path):
    common, old = tmp_path / "now" / ".git", tmp_path / "then" / ".git"
    common.mkdir(parents=True)
    document = moved_from(common, old)
    (common / "gpuspace.origins").write_bytes(b"\xff\xfe garbage\n" + origin_line(old).encode())
    write(common, document)
    assert state.load(common).bindings[0].repo == str(old)


def test_only_the_first_mebibyte_of_the_origins_file_is_read(tmp_path):
    common, old = tmp_path / "now" / ".git", tmp_path / "then" / ".git"
    common.mkdir(parents=True)
    document = moved_from(common, old)
    write(common, document)
    line = origin_line(old)
    (common / "gpuspace.origins").write_text("x" * ((1 << 20) - len(line) - 1) + "\n" + line)  # 1 MiB in all
    assert state.load(common).bindings[0].repo == str(old)
    (common / "gpuspace.origins").write_text("x" * ((1 << 20) - len(line) + 1) + "\n" + line)  # its end cut off
    assert "is not the name of this worktree's container" in str(refused(common, document))


def test_a_relative_place_is_no_place(tmp_path, monkeypatch):
    common = tmp_path / "now" / ".git"
    common.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    document = moved_from(common, Path("then/.git"))
    assert "is not the name of this worktree's container" in str(refused(common, document))


def test_without_an_origins_file_a_name_from_elsewhere_is_refused(tmp_path):
    common, old = tmp_path / "now" / ".git", tmp_path / "then" / ".git"
    common.mkdir(parents=True)
    document = moved_from(common, old)
    (common / "gpuspace.origins").unlink()
    assert "is not the name of this worktree's container" in str(refused(common, document))
    (common / "gpuspace.origins").mkdir()
    assert "is not the name of this worktree's container" in str(refused(common, document))


def test_the_origins_are_read_once_for_all_bindings(tmp_path, monkeypatch):
    common, old = tmp_path / "now" / ".git", tmp_path / "then" / ".git"
    common.mkdir(parents=True)
    (common / "gpuspace.origins").write_text(origin_line(old))
    write(common, {"bindings": [entry(common, w, container=container_for(old, w)) for w in ("/w/a", "/w/b")]})
    opened = []
    real_open = open

    def counting_open(file, *args, **kwargs):
        if str(file).endswith("gpuspace.origins"):
            opened.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    assert [b.repo for b in state.load(common).bindings] == [str(old), str(old)]
    assert len(opened) == 1


# ---------------------------------------------------------------- state: the lock

def test_locked_yields_the_state_as_the_file_has_it(tmp_path):
    write(tmp_path, {"defaults": {"image": "img"}})
    with state.locked(tmp_path) as held:
        assert held.defaults == {"image": "img"} and held.path == tmp_path / "gpuspace.toml"
        with state.locked_if_free(tmp_path) as other:
            assert other is None
    assert (tmp_path / "gpuspace.lock").exists()


def test_locked_if_free_yields_the_state_when_no_one_holds_the_lock(tmp_path):
    write(tmp_path, {"defaults": {"image": "img"}})
    with state.locked_if_free(tmp_path) as held:
        assert held is not None and held.defaults == {"image": "img"}


def test_locked_if_free_yields_none_where_no_lock_can_be_made(tmp_path):
    with state.locked_if_free(tmp_path / "missing") as held:
        assert held is None


def test_a_place_behind_a_dangling_link_is_not_known_to_be_gone(tmp_path):
    """A place under a mount point that is not mounted now may still hold the repository."""
    common = tmp_path / "now" / ".git"
    common.mkdir(parents=True)
    (tmp_path / "unmounted").symlink_to(tmp_path / "nowhere")
    old = tmp_path / "unmounted" / ".git"
    error = refused(common, moved_from(common, old))
    assert str(error).endswith(f"was named when this repository was at {old}, which still holds a git dir: its "
                               f"containers are that repository's (a copy, not a move?); nothing was done")


def test_a_binding_read_without_the_origins_takes_only_names_from_here(tmp_path):
    old = tmp_path / "then" / ".git"
    (tmp_path / state.ORIGINS_NAME).write_text(origin_line(old))
    path = tmp_path / "gpuspace.toml"
    here = state._binding_from_toml(path, 0, entry(tmp_path))
    assert (here.container, here.repo) == (container_for(tmp_path, "/w/a"), None)
    with pytest.raises(StateError) as caught:
        state._binding_from_toml(path, 0, entry(tmp_path, container=container_for(old, "/w/a")))
    assert str(caught.value) == (f"{path}: bindings[0].container {container_for(old, '/w/a')!r} is not the name of "
                                 f"this worktree's container; nothing was done")
