"""benchmarks/run.py --smoke runs end to end (so the benchmarks never rot) and cleans up."""

from __future__ import annotations

import subprocess
import sys

from conftest import LABEL_REPO, ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from engine_proxy import RequestParser  # noqa: E402


def test_smoke_run_reports_every_figure_and_leaves_nothing(docker_client, tmp_path):
    report = tmp_path / "RESULTS.md"
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(report), "--tmp", str(work)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    text = report.read_text()
    for figure in (
        "`--version`",
        "worktree creation, 50 files",
        "worktree creation, 200 files",
        "post-checkout hook",
        "`add` end to end",
        "`status`, 3 bindings",
        "peak memory, `add`",
        "peak memory, `status`",
        "`status` engine calls",
        "`gpus` engine calls",
        "`add` engine calls",
        "sweep makespan, 4 runs of `sleep 1` on 2 GPUs",
        "sweep makespan, 4 runs of `sleep 1` on 2 GPUs: efficiency",
        "`add --no-start`, 2 files (the fixed cost)",
        "dispatch gap, p95",
        "`run` to the command's start",
        "engine calls per run, sweeps of 2 -> 4 runs",
        "kill -9 of the dispatcher, 2 random moments",
        "peak memory growth, `sweep`",
        "fair share, two repos' sweeps of 3 x `sleep 3` on 4 GPUs: repo A's GPUs",
        "fair share, two repos' sweeps of 3 x `sleep 3` on 4 GPUs: repo B's GPUs",
        "`add --wait --gpus 2` behind two repos' sweeps",
        "time slices, 3 runs (every third 3 s, the others 1 s) on 2 GPUs: the short runs' mean time to result",
        "time slices, 3 runs (every third 3 s, the others 1 s) on 2 GPUs: makespan",
        "search, best loss of 3 trials (median of 1 seeds",
        "search, GPU-seconds of 3 trials with --prune median",
        "search, best loss with --prune median against without",
        "tracking, a metric line to MLflow",
        "tracking, `run --gpus none -- true` with MLflow tracking on",
        "## Machine",
        "python benchmarks/run.py --smoke",
        "## Not run: the real GPU",
    ):
        assert figure in text, figure
    assert list(work.iterdir()) == []  # its temporary directory is gone
    left = [
        c.name for c in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": LABEL_REPO})
        if c.labels.get(LABEL_REPO, "").startswith(str(work))
    ]
    assert left == []


def test_request_parser_counts_requests_not_bodies():
    seen = []
    parser = RequestParser(lambda method, target: seen.append((method, target)))
    body = b"GET /fake HTTP/1.1\r\n\r\n"
    stream = (
        b"GET /v1.41/version HTTP/1.1\r\nHost: docker\r\n\r\n"
        + b"POST /v1.41/containers/create?name=x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        + b"POST /v1.41/build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\n\r\n"
        + b"DELETE /v1.41/containers/x?force=1 HTTP/1.1\r\n\r\n"
    )
    for offset in range(len(stream)):  # one byte at a time: requests split anywhere
        parser.feed(stream[offset:offset + 1])
    assert [method for method, _ in seen] == ["GET", "POST", "POST", "DELETE"]
