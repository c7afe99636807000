"""The GPU health check that runs inside a container (and, for the real-GPU check, on a host).

It prints one JSON object and needs nothing but Python; torch is used when importable.
`python -m git_gpuspace.health` runs the same probe in the current environment.
"""

from __future__ import annotations

PROBE = r"""
import json, sys
result = {"python": sys.version.split()[0], "torch": None}
try:
    import torch
except Exception as error:
    result["torch_error"] = f"{type(error).__name__}: {error}"
else:
    available = torch.cuda.is_available()
    result["torch"] = torch.__version__
    result["cuda_available"] = available
    result["device_count"] = torch.cuda.device_count() if available else 0
    result["devices"] = []
    for i in range(result["device_count"]):
        props = torch.cuda.get_device_properties(i)
        uuid = getattr(props, "uuid", None)
        result["devices"].append({"index": i, "name": props.name,
                                  "uuid": ("GPU-" + str(uuid)) if uuid is not None else None})
print(json.dumps(result))
"""


def judge(result: dict, expected: int) -> list[str]:
    """Problems with a probe result when `expected` GPUs should be visible; empty means pass."""
    if result.get("torch") is None:
        return []  # nothing to judge without torch: the caller reports it as skipped
    problems = []
    if expected and not result.get("cuda_available"):
        problems.append("torch.cuda.is_available() is False")
    if result.get("device_count", 0) != expected:
        problems.append(f"torch sees {result.get('device_count', 0)} GPU(s), expected {expected}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Run the probe here; with --expect N, exit 1 unless torch sees exactly N GPUs."""
    import argparse
    import contextlib
    import io
    import json

    parser = argparse.ArgumentParser(prog="python -m git_gpuspace.health")
    parser.add_argument("--expect", type=int, help="the number of GPUs torch must see")
    args = parser.parse_args(argv)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(PROBE, "<gpuspace-health>", "exec"), {})
    print(buffer.getvalue().strip())
    if args.expect is None:
        return 0
    result = json.loads(buffer.getvalue())
    if result.get("torch") is None:
        print(f"FAIL: torch is not importable ({result.get('torch_error')})")
        return 1
    problems = judge(result, args.expect)
    print("PASS" if not problems else "FAIL: " + "; ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
