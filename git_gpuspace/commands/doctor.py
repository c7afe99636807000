"""`git gpuspace doctor`: check the host, and say how to fix what is wrong."""

from __future__ import annotations

import argparse
import re
import subprocess

from .. import config, gpus, output, state
from ..git import hooks, worktrees
from ..engine.containers import Engine
from ..errors import GpuspaceError

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIN_GIT = (2, 31)


def run(args: argparse.Namespace) -> int:
    rows: list[list[str]] = []

    def add(check: str, result: str, detail: str, fix: str = "") -> None:
        rows.append([check, result, detail, fix])

    version = _git_version()
    if version is None:
        add("git", FAIL, "git not found", "install git")
    else:
        good = version >= MIN_GIT
        add("git", OK if good else FAIL, ".".join(map(str, version)), "" if good else "install git 2.31 or newer")

    source, inventory = gpus.probe()
    if inventory:
        add("GPU inventory", OK, f"{len(inventory)} GPU(s) via {source}: {', '.join(sorted({g.name for g in inventory}))}")
    else:
        add("GPU inventory", WARN, "no GPU found (NVML and nvidia-smi answered nothing)",
            "install the NVIDIA driver, or use --gpus none")

    image = None
    repo = None
    try:
        repo = worktrees.discover()
    except GpuspaceError:
        pass
    try:
        repo_defaults = state.load(repo.common_dir).defaults if repo else {}
        image = str(config.effective(repo_defaults, {})["image"])
        add("config", OK, f"user config {config.user_config_path()}" + (", repo state valid" if repo else ""))
    except GpuspaceError as error:
        add("config", FAIL, str(error), error.hint or "")

    try:
        engine = Engine()
        info = engine.info()
        add("Docker engine", OK, f"{info.get('ServerVersion', '?')} at {engine.base_url}")
    except GpuspaceError as error:
        engine = None
        add("Docker engine", FAIL, str(error), error.hint or "")

    if engine is not None and image:
        present = engine.has_image(image)
        add("default image", OK if present else WARN, f"{image} {'present' if present else 'not pulled yet'}",
            "" if present else f"docker pull {image} (or the first add pulls it)")
        if inventory and present:
            problem = engine.gpu_probe(image, inventory[0].uuid)
            add("NVIDIA runtime", OK if problem is None else FAIL,
                "the engine gives containers GPUs" if problem is None else problem,
                "" if problem is None else "install nvidia-container-toolkit, then restart dockerd")
        elif inventory:
            add("NVIDIA runtime", WARN, "not probed: the default image is not present", f"docker pull {image}")

    if repo is not None:
        where = hooks.hooks_dir(repo)
        if hooks.installed(repo):
            add("hooks", OK, f"installed in {where}")
        else:
            add("hooks", WARN, f"not installed in {where}", "git gpuspace hooks install (or git gpuspace init)")

    print(output.table(["CHECK", "RESULT", "DETAIL", "FIX"], rows))
    return 1 if any(row[1] == FAIL for row in rows) else 0


def _git_version() -> tuple[int, int] | None:
    try:
        text = subprocess.run(["git", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    found = re.search(r"(\d+)\.(\d+)", text)
    return (int(found.group(1)), int(found.group(2))) if found else None
