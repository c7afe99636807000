"""Objects read in pack order (git_gpuspace/git/pack_order.py) are the objects git reads.

Every blob of packs git made with long delta chains, with REF_DELTA instead of OFS_DELTA, split
over several packs and loose objects, is read back and compared with `git cat-file`; with a
cache too small to keep any base the chains are followed down again each time. No engine.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from dulwich.repo import Repo

from git_gpuspace.git import pack_order
from helpers import git_out


def versions_repo(path: Path, commits: int = 30) -> Path:
    """Files that change a line per commit (long delta chains once packed), a few that share
    their content, and a binary one."""
    path.mkdir()
    git_out("init", "-q", "-b", "main", cwd=path)
    git_out("config", "user.name", "t", cwd=path)
    git_out("config", "user.email", "t@example.com", cwd=path)
    chance = random.Random(7)
    lines = {name: [f"# {name} line {i}\n" for i in range(200)] for name in ("a.py", "b.py", "c/d.py")}
    for version in range(commits):
        for name, text in lines.items():
            for _ in range(10):  # a random walk: each version is nearest to the one before and after
                text[chance.randrange(len(text))] = f"# {name} v{version} {chance.random()}\n"
            target = path / name
            target.parent.mkdir(exist_ok=True)
            target.write_text("".join(text))
        (path / "same1.txt").write_text("shared\n")
        (path / "same2.txt").write_text("shared\n")
        (path / "blob.bin").write_bytes(bytes(range(256)) * (version + 1))
        git_out("add", "-A", cwd=path)
        git_out("commit", "-q", "-m", f"v{version}", cwd=path)
    return path


def every_blob(repo: Path) -> list[str]:
    listing = git_out("rev-list", "--objects", "--all", cwd=repo).split("\n")
    shas = [line.split(" ", 1)[0] for line in listing if line]
    found = subprocess.run(["git", "cat-file", "--batch-check=%(objecttype) %(objectname)"], cwd=repo,
                           input="\n".join(shas) + "\n", capture_output=True, check=True, text=True).stdout
    return [line.split()[1] for line in found.splitlines() if line.startswith("blob ")]


def contents_by_git(repo: Path, sha: str) -> bytes:
    return subprocess.run(["git", "cat-file", "blob", sha], cwd=repo, capture_output=True, check=True).stdout


def read_all(repo: Path, shas: list[str], cache_bytes: int = 16 << 20,
             replacements: dict[bytes, bytes] | None = None) -> dict[str, tuple[int, bytes]]:
    with Repo(str(repo)) as opened:
        return {sha.decode(): (kind, data) for sha, kind, data in
                pack_order.in_pack_order(opened.object_store, [s.encode() for s in shas], cache_bytes, replacements)}


@pytest.mark.parametrize("repack", [
    ["repack", "-adfq", "--depth=50", "--window=50"],
    ["-c", "repack.useDeltaBaseOffset=false", "repack", "-adfq", "--depth=50", "--window=50"],  # REF_DELTA
], ids=["ofs-delta", "ref-delta"])
@pytest.mark.parametrize("cache_bytes", [16 << 20, 1], ids=["cache", "no-cache"])
def test_every_blob_reads_as_git_reads_it(tmp_path, repack, cache_bytes):
    repo = versions_repo(tmp_path / "repo")
    git_out(*repack, cwd=repo)
    blobs = every_blob(repo)
    assert len(blobs) > 60
    read = read_all(repo, blobs, cache_bytes)
    assert sorted(read) == sorted(blobs)
    for sha in blobs:
        assert read[sha] == (3, contents_by_git(repo, sha)), sha


def test_long_chains_were_made(tmp_path):
    """The packs above hold the chains this module walks (else the test proves little)."""
    repo = versions_repo(tmp_path / "repo")
    git_out("repack", "-adfq", "--depth=50", "--window=50", cwd=repo)
    pack = next((repo / ".git" / "objects" / "pack").glob("*.idx"))
    verified = git_out("verify-pack", "-v", str(pack), cwd=repo)
    assert "chain length = 20" in verified


def test_objects_over_several_packs_and_loose_ones(tmp_path):
    repo = versions_repo(tmp_path / "repo", commits=10)
    git_out("repack", "-adq", cwd=repo)
    (repo / "later.txt").write_text("second pack\n")
    git_out("add", "-A", cwd=repo)
    git_out("commit", "-q", "-m", "later", cwd=repo)
    git_out("repack", "-dq", cwd=repo)  # a second pack with what is new
    (repo / "loose.txt").write_text("never packed\n")
    git_out("add", "-A", cwd=repo)
    git_out("commit", "-q", "-m", "loose", cwd=repo)
    assert len(list((repo / ".git" / "objects" / "pack").glob("*.pack"))) == 2
    blobs = every_blob(repo)
    read = read_all(repo, blobs)
    for sha in blobs:
        assert read[sha] == (3, contents_by_git(repo, sha))


def test_a_replaced_object_reads_as_its_replacement_under_its_own_id(tmp_path):
    repo = versions_repo(tmp_path / "repo", commits=2)
    git_out("repack", "-adq", cwd=repo)
    original = git_out("rev-parse", "HEAD:a.py", cwd=repo).strip()
    replacement = git_out("rev-parse", "HEAD:b.py", cwd=repo).strip()
    read = read_all(repo, [original], replacements={original.encode(): replacement.encode()})
    assert read == {original: (3, contents_by_git(repo, replacement))}
