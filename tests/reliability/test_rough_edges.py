"""Rough edges a user meets off the happy path: each test is the case as a user met it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest



def test_sigterm_during_add_rolls_back_like_ctrl_c(repo, tmp_path):
    before = repo.snapshot(tmp_path / "wts")
    killed = repo.gs("add", "-b", "t", str(tmp_path / "wts" / "t"), "--gpus", "none",
                     env={"GPUSPACE_FAULT_POINT": "after-worktree-add", "GPUSPACE_FAULT_ACTION": "run:kill -TERM $PPID"})
    assert killed.returncode == 128 + 15 and "interrupted (SIGTERM)" in killed.stderr, killed.stderr
    assert "Traceback" not in killed.stderr
    assert repo.snapshot(tmp_path / "wts") == before  # no worktree, branch, container or binding left


def test_hooks_stay_silent_when_git_runs_them_inside_a_container(repo, tmp_path):
    repo.ok("init", "--gpus", "none")
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"))
    [container] = repo.containers()
    result = container.exec_run(["git", "checkout", "-q", "-b", "inside"], workdir="/workspace", demux=True)
    assert result.exit_code == 0
    assert not result.output[1], result.output[1]  # no "git-gpuspace is gone" warning


def test_a_bad_service_port_is_reported_as_typed(repo, tmp_path):
    result = repo.gs("add", "-b", "j", str(tmp_path / "j"), "--jupyter=80000")
    assert result.returncode == 2 and "--jupyter 80000: not a host port (1-65535)" in result.stderr
    assert "8888:80000" not in result.stderr and not (tmp_path / "j").exists()


def test_a_repository_without_a_commit_gets_answers_not_crashes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=empty, check=True)
    for command, code in ((["status"], 0), (["remove", "--force", "../nothing"], 2)):
        result = subprocess.run(["git-gpuspace", *command], cwd=empty, capture_output=True, text=True)
        assert result.returncode == code and "internal error" not in result.stderr, result.stderr
    assert "main" in subprocess.run(["git-gpuspace", "status"], cwd=empty, capture_output=True, text=True).stdout


def test_config_shows_the_built_in_values(plain_repo):
    for key, value in (("publish_address", "127.0.0.1"), ("jupyter", "false"), ("ssh", "false")):
        result = subprocess.run(["git-gpuspace", "config", "get", key], cwd=plain_repo.path, capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.strip() == value
    data_root = subprocess.run(["git-gpuspace", "config", "get", "data_root"], cwd=plain_repo.path,
                               capture_output=True, text=True).stdout.strip()
    assert data_root.endswith("git-gpuspace/workspaces")
    listing = subprocess.run(["git-gpuspace", "config", "list"], cwd=plain_repo.path, capture_output=True, text=True).stdout
    assert "publish_address = 127.0.0.1  (built-in)" in listing and "tensorboard = false  (built-in)" in listing


def test_restart_says_restarted(repo, tmp_path):
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
    [container] = repo.containers()
    started = container.attrs["State"]["StartedAt"]
    result = repo.ok("restart", "exp")
    assert result.stdout.startswith("Restarted ")
    container.reload()
    assert container.attrs["State"]["StartedAt"] != started and container.status == "running"


def test_engine_errors_name_the_socket_not_the_sdks_url(repo, tmp_path, private_engine):
    env = {"DOCKER_HOST": private_engine.host}
    pid = (private_engine.base / "dockerd.pid").read_text().strip()
    socket_file = private_engine.base / "docker.sock"
    stop_engine = f"run:kill {pid}; for i in $(seq 100); do [ -S {socket_file} ] || break; sleep 0.1; done"
    during = repo.gs("add", "-b", "mid", str(tmp_path / "mid"), "--gpus", "none",
                     env={**env, "GPUSPACE_FAULT_POINT": "after-worktree-add", "GPUSPACE_FAULT_ACTION": stop_engine})
    assert during.returncode == 1 and f"cannot reach the Docker engine at {private_engine.host}" in during.stderr
    assert "http+docker://localhost" not in during.stderr
    private_engine.stop()  # reaps it


def read_only_git_dir(repo, *command: str) -> subprocess.CompletedProcess:
    """`git-gpuspace COMMAND` with the repository's git dir mounted read-only (a private mount
    namespace: nothing changes for anyone else)."""
    script = f"mount --bind -o ro {repo.common_dir} {repo.common_dir} && exec git-gpuspace \"$@\""
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *command], cwd=repo.path,
                          capture_output=True, text=True)


def test_a_read_only_git_dir_is_one_line_and_status_still_answers(repo, tmp_path):
    first = read_only_git_dir(repo, "status")  # no state file or lock yet
    assert first.returncode == 0 and "main" in first.stdout, first.stderr
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
    status = read_only_git_dir(repo, "status")
    assert status.returncode == 0 and "exp" in status.stdout, status.stderr
    before = repo.state_text()
    refused = read_only_git_dir(repo, "config", "set", "--repo", "memory", "2g")
    assert refused.returncode == 1, refused.stderr
    assert f"cannot write {repo.common_dir / 'gpuspace.toml'}: Read-only file system" in refused.stderr
    assert "internal error" not in refused.stderr and repo.state_text() == before
    assert not list(repo.common_dir.glob(".gpuspace.toml.*"))


def test_the_active_docker_context_is_honoured_and_named(repo, tmp_path, monkeypatch):
    """`docker context use` chooses the engine for us as for the docker CLI; DOCKER_HOST wins."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    gone = tmp_path / "nowhere.sock"
    subprocess.run(["docker", "context", "create", "elsewhere", "--docker", f"host=unix://{gone}"], check=True,
                   capture_output=True)
    subprocess.run(["docker", "context", "create", "here", "--docker", "host=unix:///var/run/docker.sock"],
                   check=True, capture_output=True)
    subprocess.run(["docker", "context", "use", "elsewhere"], check=True, capture_output=True)
    refused = repo.gs("add", "-b", "ctx", str(tmp_path / "ctx"), "--gpus", "none")
    assert refused.returncode != 0
    assert f"cannot reach the Docker engine at unix://{gone} (docker context 'elsewhere')" in refused.stderr
    assert not (tmp_path / "ctx").exists()
    works = repo.gs("add", "-b", "ctx", str(tmp_path / "ctx"), "--gpus", "none", env={"DOCKER_CONTEXT": "here"})
    assert works.returncode == 0, works.stderr


def test_piped_input_reaches_exec_and_shell_and_its_end_closes_it(repo, tmp_path):
    repo.ok("add", "-b", "io", str(tmp_path / "io"), "--gpus", "none")
    read = subprocess.run(["git-gpuspace", "exec", "io", "--", "sh", "-c", 'read x; echo "got: [$x]"; cat | wc -c'],
                          cwd=repo.path, input="print\n" + "y" * 100000, capture_output=True, text=True)
    assert read.returncode == 0, read.stderr
    assert read.stdout.splitlines() == ["got: [print]", "100000"]  # all of it, then EOF
    shell = subprocess.run(["git-gpuspace", "shell", "io"], cwd=repo.path, input="echo hi from $PWD; exit 3\n",
                           capture_output=True, text=True)
    assert shell.returncode == 3 and "hi from /workspace" in shell.stdout
    script = tmp_path / "x.sh"
    script.write_text("echo from a file\n")
    with open(script) as handle:  # `sh - < x.sh`
        from_file = subprocess.run(["git-gpuspace", "exec", "io", "--", "sh", "-"], cwd=repo.path, stdin=handle,
                                   capture_output=True, text=True)
    assert from_file.stdout == "from a file\n"
    unread = subprocess.run(["git-gpuspace", "exec", "io", "--", "true"], cwd=repo.path, input="x" * 10_000_000,
                            capture_output=True, text=True)
    assert unread.returncode == 0  # a command that reads nothing does not hang on our input


def test_one_cleanup_is_one_line(repo, tmp_path):
    repo.ok("add", "-b", "gone", str(tmp_path / "gone"), "--gpus", "none")
    repo.git("worktree", "remove", "--force", str(tmp_path / "gone"))
    lines = repo.ok("prune").stdout.splitlines()
    assert len(lines) == 1 and "removed container" in lines[0] and "is gone" in lines[0], lines
    assert repo.containers() == []


def test_data_dirs_are_listed_with_sizes_and_orphaned_ones_deleted_on_request(repo, tmp_path):
    repo.ok("add", "-b", "keep", str(tmp_path / "keep"), "--gpus", "none")
    repo.ok("add", "-b", "drop", str(tmp_path / "drop"), "--gpus", "none")
    [drop] = [r for r in repo.status() if r["branch"] == "drop"]
    (Path(drop["data_dir"]) / "checkpoints" / "model.pt").write_bytes(b"w" * 300_000)
    repo.ok("remove", "drop")  # the data dir outlives its binding, by design
    listed = {d["path"]: d for d in json.loads(repo.ok("data", "list", "--json").stdout)}
    assert listed[drop["data_dir"]]["orphaned"] and listed[drop["data_dir"]]["size_bytes"] >= 300_000
    [keep] = [r for r in repo.status() if r["branch"] == "keep"]
    assert listed[keep["data_dir"]]["used_by"] == f"binding {tmp_path / 'keep'}"
    [row] = [line for line in repo.ok("data").stdout.splitlines() if line.startswith(drop["data_dir"])]
    assert row.split()[1].endswith("k") and row.split()[-1] == "orphaned"  # about 300k on disk
    dry = repo.ok("prune", "--dry-run").stdout
    assert f"data dir {drop['data_dir']}" in dry and "orphaned" in dry and Path(drop["data_dir"]).exists()
    refused = repo.gs("data", "rm", keep["data_dir"])
    assert refused.returncode != 0 and "in use by binding" in refused.stderr and Path(keep["data_dir"]).exists()
    deleted = repo.ok("data", "rm", Path(drop["data_dir"]).name)
    assert "Deleted data dir" in deleted.stdout and not Path(drop["data_dir"]).exists()
    assert repo.gs("data", "rm", "/etc").returncode != 0 and Path("/etc").exists()


def test_prune_dry_run_changes_nothing(repo, tmp_path):
    repo.ok("add", "-b", "gone", str(tmp_path / "gone"), "--gpus", "none")
    repo.git("worktree", "remove", "--force", str(tmp_path / "gone"))
    before = (repo.state_text(), [c.name for c in repo.containers()])
    dry = repo.ok("prune", "--dry-run").stdout
    assert "would remove container" in dry and "is gone" in dry
    assert (repo.state_text(), [c.name for c in repo.containers()]) == before


def test_thousands_of_vanished_bindings_go_in_one_write(repo, tmp_path):
    """Bindings (pending here: no container to remove) whose worktrees are all gone: the state
    file is written once, not once per binding (which made this quadratic)."""
    from git_gpuspace import state
    from git_gpuspace.engine.containers import container_name
    from git_gpuspace.model import Binding

    count = 3000
    gone = [tmp_path / f"gone-{i}" for i in range(count)]
    with state.locked(repo.common_dir) as current:
        current.bindings = [Binding(path=str(path), container=container_name("project", path, repo.common_dir),
                                    image="x", pending="waiting") for path in gone]
        current.save()
    writes = tmp_path / "writes"
    pruned = repo.gs("prune", env={"GPUSPACE_FAULT_POINT": "before-state-rename",
                                   "GPUSPACE_FAULT_ACTION": f"run:echo write >> {writes}"})
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.count("is gone") == count
    assert writes.read_text().count("write") == 3  # one save: the state file and the hooks' two indexes (paths, git dirs)
    assert state.load(repo.common_dir).bindings == []


def test_a_lease_whose_worktree_is_gone_for_git_too_is_released_by_any_repo(repo, other_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    held = tmp_path / "resnet"
    repo.ok("add", "-b", "resnet", str(held))
    repo.git("worktree", "remove", "--force", str(held))  # plain git: no command of that repo runs after
    [container] = repo.containers()
    assert container.status == "running"
    listed = other_repo.ok("gpus").stdout
    assert "released" in listed or str(held) not in listed.split("(inventory")[0]
    taken = other_repo.gs("add", "-b", "vit", str(tmp_path / "vit"))  # another repo gets the GPU
    assert taken.returncode == 0, taken.stderr
    assert repo.containers() == []
    [record] = [g for g in json.loads(other_repo.ok("gpus", "--json").stdout)]
    [holder] = record["holders"]
    assert holder["worktree"] == str(tmp_path / "vit") and holder["user"]


def test_a_moved_worktree_keeps_its_lease(repo, other_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    repo.ok("add", "-b", "resnet", str(tmp_path / "resnet"))
    repo.git("worktree", "move", str(tmp_path / "resnet"), str(tmp_path / "resnet-moved"))
    refused = other_repo.gs("add", "-b", "vit", str(tmp_path / "vit"))
    assert refused.returncode != 0 and len(repo.containers()) == 1


@pytest.mark.parametrize("change, named", [
    (lambda text: text.replace('container = "gpuspace-', 'container = "" # gpuspace-', 1), "bindings[0].container ''"),
    (lambda text: text + "\n[bindings.host_options]\nfrobnicate = true\n", "bindings[0].host_options.frobnicate"),
    (lambda text: text + "\n[bindings.host_options]\nprivileged = \"yes\"\n", "bindings[0].host_options.privileged must be"),
    (lambda text: text.replace("schema = 1", "schema = -5"), "'schema' must be 1 or more"),
])
def test_a_bad_state_field_is_named_and_nothing_is_rewritten(repo, tmp_path, change, named):
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
    path = repo.common_dir / "gpuspace.toml"
    path.write_text(change(path.read_text()))
    before = path.read_bytes()
    for command in (("status",), ("prune",), ("remove", "exp")):
        result = repo.gs(*command)
        assert result.returncode not in (0, 70), result.stderr
        assert named in result.stderr and "cannot reach" not in result.stderr and "internal error" not in result.stderr
    assert path.read_bytes() == before


def test_keys_this_version_does_not_know_are_kept(repo, tmp_path):
    repo.ok("add", "-b", "one", str(tmp_path / "one"), "--gpus", "none")
    path = repo.common_dir / "gpuspace.toml"
    text = path.read_text()
    path.write_text('future_setting = "kept"\n' + text.replace("[[bindings]]\n", "[[bindings]]\nnote = \"mine\"\n", 1))
    repo.ok("add", "-b", "two", str(tmp_path / "two"), "--gpus", "none")  # the file is written again
    import tomllib

    document = tomllib.loads(path.read_text())
    assert document["future_setting"] == "kept"
    assert [b.get("note") for b in document["bindings"]] == ["mine", None]


def test_a_full_disk_during_add_is_one_line_and_leaves_no_lock(tmp_path):
    """The repository on a 1 MiB tmpfs (a private mount: nothing changes for anyone else), filled."""
    where = tmp_path / "small"
    where.mkdir()
    script = f"""
    mount -t tmpfs -o size=1m tmpfs {where} && cd {where} && git init -q -b main r && cd r &&
    git commit -q --allow-empty -m x && (dd if=/dev/zero of=../fill bs=4k 2>/dev/null || true) &&
    git-gpuspace add -b t3 ../wt --gpus none --no-start; echo "rc=$?"
    ls -a .git/refs/heads; rm ../fill
    git worktree add -q -b t3 ../by-git && echo "git took t3"
    """
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    assert "rc=1" in result.stdout, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("git-gpuspace: error")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr
    assert "internal error" not in result.stderr and "t3.lock" not in result.stdout
    assert "git took t3" in result.stdout, result.stderr  # no lock, no half-made branch in the way


def test_a_lock_left_by_a_git_cut_short_is_named(repo, tmp_path):
    lock = repo.common_dir / "refs" / "heads" / "t3.lock"
    lock.write_text("")  # what a writer killed mid-write leaves
    result = repo.gs("add", "-b", "t3", str(tmp_path / "wt"), "--gpus", "none")
    assert result.returncode == 1, result.stderr
    assert f"{lock} exists" in result.stderr and f"remove {lock}" in result.stderr
    assert "internal error" not in result.stderr and not (tmp_path / "wt").exists()
    lock.unlink()
    repo.ok("add", "-b", "t3", str(tmp_path / "wt"), "--gpus", "none")


def test_services_that_do_not_answer_are_said_down_with_the_fix(repo, tmp_path):
    """The test image has a stand-in jupyter (busybox httpd) but no sshd: add says so at once,
    status shows ssh down and Jupyter's URL; a port of the user's own is down until they serve it."""
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDx0ZWRrZXk0ZXN0a2V5dGVzdGtleXRlc3RrZXl0 test\n")
    added = repo.gs("add", "-b", "svc", str(tmp_path / "svc"), "--gpus", "none", "--jupyter", "--ssh",
                    "--ssh-key", str(key), "--port", "web=8000")
    assert added.returncode == 0, added.stderr
    assert "warning: ssh does not answer: sshd is not in this image" in added.stderr
    assert "install openssh-server in the image" in added.stderr
    assert f"git gpuspace restart {tmp_path / 'svc'}" in added.stderr and "jupyter does not answer" not in added.stderr
    [record] = [r for r in repo.status() if r["branch"] == "svc"]
    assert set(record["services_down"]) == {"ssh", "web"} and set(record["urls"]) == {"jupyter"}
    shown = repo.ok("status").stdout
    assert "ssh: down (sshd is not in this image)" in shown and "ssh -p" not in shown
    assert "/lab?token=" in shown and "web: down (nothing answers" in shown
    # a server of the user's own on the published port: up, and shown as a URL
    repo.ok("exec", "svc", "--", "sh", "-c", "busybox httpd -p 8000 -h /workspace")
    [record] = [r for r in repo.status() if r["branch"] == "svc"]
    assert "web" in record["urls"] and "web" not in record["services_down"]
