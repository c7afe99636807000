"""`git gpuspace check [<worktree>]`: inside the container, are the GPUs exactly the bound ones?

nvidia-smi in the container must list exactly the bound GPU UUIDs; when Python with torch is
there, torch.cuda must be available and see the same number of devices with the same names.
"""

from __future__ import annotations

import argparse
import json

from .. import gpus, output
from ..engine.containers import Engine
from ..health import PROBE, judge
from .exec import running_container

PASS, FAIL, SKIP = "pass", "FAIL", "skip"


def run(args: argparse.Namespace) -> int:
    _, binding, engine = running_container(args.worktree)
    by_uuid = {gpu.uuid: gpu for gpu in gpus.inventory()}
    expected = sorted(binding.gpus)
    rows: list[list[str]] = []

    code, out = engine.exec(binding.container, ["nvidia-smi", "--query-gpu=index,uuid,name", "--format=csv,noheader"], {})
    seen = [line.split(",")[1].strip() for line in out.decode(errors="replace").splitlines() if line.count(",") >= 2]
    names = [line.split(",")[2].strip() for line in out.decode(errors="replace").splitlines() if line.count(",") >= 2]
    if code == 0 and sorted(seen) == expected:
        rows.append(["GPUs visible (nvidia-smi)", PASS, ", ".join(_label(u, by_uuid) for u in seen) or "none, as bound"])
    elif not expected and code != 0:
        rows.append(["GPUs visible (nvidia-smi)", PASS, "none, as bound"])
    elif code in (126, 127) or b"not found" in out:
        rows.append(["GPUs visible (nvidia-smi)", FAIL, "nvidia-smi is not in the container (is the NVIDIA runtime on?)"])
    else:
        shown = ", ".join(seen) if code == 0 else out.decode(errors="replace").strip()[:200]
        rows.append(["GPUs visible (nvidia-smi)", FAIL, f"bound {', '.join(expected) or 'none'}; container sees {shown or 'none'}"])

    python = _python(engine, binding.container)
    if python is None:
        rows.append(["torch.cuda", SKIP, "no python in the container"])
    else:
        code, out = engine.exec(binding.container, [python, "-c", PROBE], {})
        try:
            result = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            rows.append(["torch.cuda", FAIL, f"the probe failed: {out.decode(errors='replace').strip()[:200]}"])
        else:
            if result.get("torch") is None:
                rows.append(["torch.cuda", SKIP, f"torch not importable ({result.get('torch_error', '?')})"])
            else:
                problems = judge(result, len(expected))
                torch_names = [d["name"] for d in result.get("devices", [])]
                if not problems and names and sorted(torch_names) != sorted(names):
                    problems.append(f"torch names {torch_names} differ from nvidia-smi {names}")
                detail = "; ".join(problems) or f"{result['device_count']} device(s): {', '.join(torch_names) or 'none'}"
                rows.append([f"torch {result['torch']} cuda", FAIL if problems else PASS, detail])

    print(output.table(["CHECK", "RESULT", "DETAIL"], rows))
    return 1 if any(row[1] == FAIL for row in rows) else 0


def _label(uuid: str, by_uuid: dict) -> str:
    gpu = by_uuid.get(uuid)
    return f"GPU {gpu.index} {uuid}" if gpu else uuid


def _python(engine: Engine, container: str) -> str | None:
    for candidate in ("python3", "python"):
        code, _ = engine.exec(container, ["sh", "-c", f"command -v {candidate}"], {})
        if code == 0:
            return candidate
    return None
