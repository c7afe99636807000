"""Bad input and failures: one clear line, non-zero exit, nothing half-made."""

from __future__ import annotations

import io
from pathlib import Path

import docker.errors
import pytest
import requests.exceptions

from conftest import gpuspace
from git_gpuspace.engine.containers import Engine
from git_gpuspace.errors import EngineUnavailable


def _assert_refused(result, code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("git-gpuspace: error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


REFUSALS = [
    # (arguments after `add`, exit code, what the message says)
    (["-b", "bad name", "{wt}"], 255, "not a valid branch name"),
    (["-b-leading-dash", "{wt}"], 255, "not a valid branch name"),
    (["-b", "{wt}", "--bogus-flag"], 2, "unrecognized arguments: --bogus-flag"),
    (["-b", "a..b", "{wt}"], 255, "not a valid branch name"),
    (["-b", "main", "{wt}"], 255, "already exists"),
    (["-b", "new", "{existing}"], 128, "already exists"),
    (["-b", "new", "{wt}", "no-such-ref"], 255, "not a valid object name: 'no-such-ref'"),
    (["{wt}", "no-such-ref"], 128, "invalid reference: no-such-ref"),
    (["-b", "new", "{wt}", "--gpus", "9,"], 1, "unknown GPU '9'"),
    (["-b", "new", "{wt}", "--gpus", "GPU-ffff"], 1, "unknown GPU 'GPU-ffff'"),
    (["-b", "new", "{wt}", "--gpus", "0,0"], 2, "listed twice"),
    (["-b", "new", "{wt}", "--gpus", "lots"], 2, "invalid GPU id"),
    (["-b", "new", "{wt}", "--gpus", "5"], 1, "this host has 4"),
    (["-b", "new", "{wt}", "--memory", "12q"], 2, "invalid --memory '12q'"),
    (["-b", "new", "{wt}", "--memory", "1k"], 2, "too small"),
    (["-b", "new", "{wt}", "--cpus", "many"], 2, "invalid --cpus"),
    (["-b", "new", "{wt}", "--cpus", "100000"], 2, "out of range"),
    (["-b", "new", "{wt}", "--shm-size", "big"], 2, "invalid --shm-size"),
    (["-b", "new", "{wt}", "--image", "localhost:1/nothing:here"], 1, "cannot pull image"),
    ([], 2, "give a path"),
]


@pytest.mark.parametrize("arguments,code,message", REFUSALS, ids=[" ".join(r[0]) or "no-args" for r in REFUSALS])
def test_refused_add_leaves_nothing(repo, tmp_path, arguments, code, message):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("user data\n")
    worktrees_dir = tmp_path / "wts"
    args = [a.format(wt=worktrees_dir / "new", existing=existing) for a in arguments]
    before = repo.snapshot(worktrees_dir)
    _assert_refused(repo.gs("add", *args), code, message)
    assert repo.snapshot(worktrees_dir) == before
    assert not (worktrees_dir / "new").exists()
    assert (existing / "keep.txt").read_text() == "user data\n"


def test_too_few_gpus_names_the_holders_and_rolls_back(repo, tmp_path):
    repo.ok("add", "-b", "big", str(tmp_path / "big"), "--gpus", "3")
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "more", str(tmp_path / "wts" / "more"), "--gpus", "2")
    _assert_refused(result, 1, "asked for 2 GPUs, 1 free", f"held by {tmp_path / 'big'} (big)", "--share")
    assert repo.snapshot(tmp_path / "wts") == before


class DroppedEngineApi:
    """The SDK's low-level client of an engine that went away: the connection drops at once,
    or in the middle of a stream."""

    def wait(self, name):
        raise requests.exceptions.ConnectionError("('Connection aborted.', RemoteDisconnected())")

    def logs(self, name, **_):
        yield b"a first line\n"
        raise requests.exceptions.ConnectionError("('Connection aborted.', RemoteDisconnected())")

    def inspect_image(self, image):
        if image == "gone":
            raise docker.errors.ImageNotFound("No such image: gone")
        raise requests.exceptions.ConnectionError("Connection refused")


def test_an_engine_lost_in_the_middle_of_any_call_is_one_line_with_its_fix():
    """Every public method of Engine, including a wait and a stream already under way; the
    engine's own answers (no such image) still reach the method."""
    engine = Engine.__new__(Engine)
    engine.api, engine.base_url = DroppedEngineApi(), "unix:///run/gone.sock"
    for call in (lambda: engine.wait("c"), lambda: engine.logs("c", False, "all", io.BytesIO()),
                 lambda: engine.has_image("pytorch")):
        with pytest.raises(EngineUnavailable) as lost:
            call()
        assert str(lost.value) == "cannot reach the Docker engine at unix:///run/gone.sock"
        assert lost.value.hint.startswith("start it (sudo systemctl start docker)")
    assert engine.image_attrs("gone") is None


def test_engine_unreachable_is_one_line_and_creates_nothing(plain_repo, tmp_path):
    before = (plain_repo.branches(), plain_repo.git("worktree", "list").stdout)
    result = gpuspace(
        "add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none",
        cwd=plain_repo.path, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    _assert_refused(result, 1, "cannot reach the Docker engine at unix:///nonexistent/docker.sock", "hint: start it")
    assert (plain_repo.branches(), plain_repo.git("worktree", "list").stdout) == before
    assert not (tmp_path / "wt").exists()
    assert not (plain_repo.common_dir / "gpuspace.toml").exists()


@pytest.mark.parametrize(
    "content,where",
    [
        ("schema = 1\n[[bindings]\npath = 'x'\n", "line 2, column"),
        ("schema = 1\nbindings = [\n", "line 3, column 1 (end of file)"),
        ("schema = 'one'\n", "'schema' must be an integer"),
        ("schema = 1\n[[bindings]]\npath = 1\ncontainer = 'c'\nimage = 'i'\n", "bindings[0].path must be a string"),
        ("schema = 1\n[[bindings]]\npath = '/x'\ncontainer = 'c'\nimage = 'i'\ngpus = 'GPU-1'\n", "bindings[0].gpus must be a list"),
        ("schema = 99\n", "newer than this git-gpuspace understands"),
    ],
)
def test_bad_state_file_is_reported_and_never_overwritten(plain_repo, tmp_path, content, where):
    state = plain_repo.common_dir / "gpuspace.toml"
    state.write_text(content)
    for args in (["status"], ["add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none"]):
        result = gpuspace(*args, cwd=plain_repo.path)
        _assert_refused(result, 1, str(state), where)
    assert state.read_text() == content
    assert not (tmp_path / "wt").exists()
    assert "exp" not in plain_repo.branches()


def test_outside_a_repository(tmp_path):
    result = gpuspace("status", cwd=tmp_path)
    _assert_refused(result, 1, "not a git repository")


def test_inside_the_git_directory(plain_repo):
    result = gpuspace("status", cwd=plain_repo.common_dir)
    _assert_refused(result, 1, "inside the git directory")


def test_unknown_worktree_name(repo):
    result = repo.gs("remove", "no-such-worktree")
    _assert_refused(result, 2, "no worktree 'no-such-worktree'")


def test_an_engine_without_the_hook_is_made_so_on_a_host_that_has_one(repo, tmp_path, docker_client):
    """On a host with NVIDIA's hook on the system PATH (put there now when this host has none),
    the engine without it still has none: the suite runs the same on a GPU host."""
    import shutil

    from conftest import FAKES, PrivateEngine

    hook = Path("/usr/local/sbin/nvidia-container-runtime-hook")
    placed = not hook.exists()
    if placed:
        hook.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FAKES / "nvidia-container-runtime-hook", hook)
    engine = None
    try:
        engine = PrivateEngine(with_nvidia_hook=False, image_source=docker_client)
        result = repo.gs("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "1", env={"DOCKER_HOST": engine.host})
        _assert_refused(result, 1, "no NVIDIA runtime")
    finally:
        if engine is not None:
            engine.close()
        if placed:
            hook.unlink()


def test_engine_without_nvidia_runtime(repo, tmp_path, no_nvidia_engine):
    """A real second dockerd started without the NVIDIA hook: the engine's own refusal, translated."""
    wt = tmp_path / "wt"
    result = repo.gs("add", "-b", "exp", str(wt), "--gpus", "1", env={"DOCKER_HOST": no_nvidia_engine})
    _assert_refused(result, 1, "no NVIDIA runtime", "nvidia-container-toolkit", "--gpus none")
    assert not wt.exists() and "exp" not in repo.branches()
    assert "bindings" not in repo.state_text() or "bindings = []" in repo.state_text()
    ok = repo.gs("add", "-b", "cpu", str(tmp_path / "cpu"), "--gpus", "none", env={"DOCKER_HOST": no_nvidia_engine})
    assert ok.returncode == 0, ok.stderr
