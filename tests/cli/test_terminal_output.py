"""What people read is safe to print: values anyone may choose (a parameter value, a branch or
path name, a metric name a run writes) reach the terminal with their control characters
escaped, so that none of them can colour, move the cursor or overwrite a line. JSON stays
exact JSON."""

from __future__ import annotations

import csv
import io
import json

from git_gpuspace import output

HOSTILE = "x\x1b[31my\rz"  # a colour, then a carriage return that would overwrite the line
SHOWN = "x\\x1b[31my\\x0dz"
METRIC = "acc\x1b[2Jx"  # a metric name from the run's metrics.json: ESC [2J clears the screen
RAW = ("\x1b", "\r", "\x9b", "\x07", "\x7f")


def raw_controls(text: str) -> list[str]:
    """The control characters in `text`, other than the newlines between lines."""
    return [char for char in RAW if char in text]


def test_escape_shows_every_control_character_one_way():
    assert output.escape(HOSTILE) == SHOWN
    assert output.escape("a\x00b\x07c\td\x7fe\x9bf\u00e9") == "a\\x00b\\x07c\\x09d\\x7fe\\x9bf\u00e9"
    assert output.escape("C:\\x1b") == "C:\\\\x1b"  # a backslash is doubled: it never reads as an escape
    assert output.escape("plain value 1e-3") == "plain value 1e-3"
    # the edges of each range: US and space, DEL, the last C1 control and NBSP
    assert output.escape("\x1f \x7e\x7f\x80\x9f\xa0") == "\\x1f ~\\x7f\\x80\\x9f\xa0"
    assert output.table(["A", "B"], [[HOSTILE, "1"]]).splitlines() == [f"{'A'.ljust(len(SHOWN))}  B", f"{SHOWN}  1"]


def test_sweep_values_and_metric_names_are_escaped_in_runs_csv_logs_and_progress(repo):
    (repo.path / "notes\x1b[8m").write_text("an untracked file a container named\n")
    swept = repo.gs("sweep", "esc", "-p", f"tag={HOSTILE}", "--gpus", "none", "--", "sh", "-c",
                    f"printf '%s\\n' {{tag}}; printf 'loss=0.5 \\033[32mok\\n'; "
                    f"printf '{{\"acc\\\\u001b[2Jx\": 0.75}}' > /data/metrics.json")
    assert swept.returncode == 0, swept.stderr
    assert not raw_controls(swept.stderr) and f"'{SHOWN}'" in swept.stderr  # the started line: the value shell-quoted
    assert "untracked files are not in the run: notes\\x1b[8m" in swept.stderr

    [record] = json.loads(repo.ok("runs", "--json").stdout)  # JSON: exact, as json.dumps escapes it
    # metrics.json, when the run writes one, says what its metrics are: the log's loss=0.5 is not one
    assert record["params"] == {"tag": HOSTILE} and record["metrics"] == {METRIC: 0.75}

    table = repo.ok("runs").stdout
    assert not raw_controls(table)
    header, row = table.splitlines()
    assert f"tag={SHOWN}" in row and "ACC\\x1b[2JX" in header
    assert row.index("0.75") == header.index("ACC")  # the columns line up: widths are those of what is shown

    listed = repo.ok("runs", "--csv").stdout
    assert not raw_controls(listed)
    rows = list(csv.reader(io.StringIO(listed)))
    assert "acc\\x1b[2jx" in rows[0] and rows[1][2] == f"tag={SHOWN}"

    logs = repo.ok("logs", record["id"])
    assert "x\x1b[31my" in logs.stdout and "\x1b[32mok" in logs.stdout  # the log itself, as the run wrote it
    [header] = logs.stderr.splitlines()
    assert header == f"==> run {record['id']} of sweep esc tag={SHOWN} at {record['commit'][:8]}: succeeded (exit 0) <=="

    refused = repo.gs("runs", "--sort", "nope")
    assert refused.returncode == 2 and "acc\\x1b[2Jx" in refused.stderr and not raw_controls(refused.stderr)


def test_branch_and_path_names_are_escaped_in_add_status_logs_and_remove(repo, tmp_path):
    branch = "b\u009b31m"  # git takes C1 controls in a branch name (C0 ones it refuses)
    path = tmp_path / "w\x1b[31m\rx"
    shown_path = str(tmp_path) + "/w\\x1b[31m\\x0dx"
    added = repo.ok("add", "-b", branch, str(path), "--gpus", "none")
    assert not raw_controls(added.stdout)
    assert f"Worktree {shown_path} (branch b\\x9b31m)" in added.stdout

    table = repo.ok("status").stdout
    assert not raw_controls(table)
    row = next(line for line in table.splitlines() if line.startswith(shown_path))
    assert row.split()[1] == "b\\x9b31m"
    assert {(r["path"], r["branch"]) for r in repo.status()} >= {(str(path), branch)}  # JSON: exact

    logs = repo.ok("logs", str(path))
    [header] = logs.stderr.splitlines()
    assert header.startswith("==> container ") and header.endswith(f" of {shown_path} (branch b\\x9b31m) <==")

    removed = repo.ok("remove", str(path))
    assert not raw_controls(removed.stdout) and f"Removed worktree {shown_path} (branch b\\x9b31m kept)" in removed.stdout


def test_names_in_error_lines_are_escaped(plain_repo):
    result = plain_repo.gs("remove", HOSTILE)
    assert result.returncode != 0
    assert f"no worktree '{SHOWN}'" in result.stderr, result.stderr
    assert raw_controls(result.stderr) == []
