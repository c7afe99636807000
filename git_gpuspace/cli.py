"""`git gpuspace`: argparse only. One parser, one small entry per verb, errors to exit codes.

Verb modules are imported only when their verb runs, so `--version` and `-h` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__

EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: a bug, with a log
VERSION_TEXT = f"git-gpuspace {__version__}"


class _Parser(argparse.ArgumentParser):
    """argparse, with errors worded like every other error of ours, no guessing of abbreviated
    options (--gpu must not quietly mean --gpus), and options anywhere among a verb's positionals,
    as git takes them."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        # argparse alone gives a run of optional positionals their values at once: in `runs stop
        # --all run-3` the run's id comes after that run and is left over. Intermixed, the options
        # are taken out first and the positionals parsed from what remains. Not for the parser of
        # verbs, nor one whose last positional passes the rest on (exec's command).
        passes_on = any(action.nargs in (argparse.PARSER, argparse.REMAINDER) for action in self._get_positional_actions())
        if self._intermixing or passes_on:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls this method again, twice
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def error(self, message: str):
        self.print_usage(sys.stderr)
        print(f"git-gpuspace: error: {message}", file=sys.stderr)
        sys.exit(2)


def _add_container_settings(group) -> None:
    """The settings `add`, `bind` and `init` share (init records them as repo defaults)."""
    from .setting_keys import FLAGS

    for key, (metavar, text) in FLAGS.items():
        group.add_argument("--" + key.replace("_", "-"), metavar=metavar, dest=key, help=text)


def _add_binding_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("container")
    _add_container_settings(group)
    group.add_argument("--share", action="store_true", help="allow GPUs that other --share bindings hold")
    group.add_argument("--no-start", action="store_true", help="record the binding and create the container, but do not start it")
    services = parser.add_argument_group("ports and data")
    for name, port, what in (("jupyter", 8888, "Jupyter Lab, behind a random token"),
                             ("ssh", 22, "sshd, public keys only"),
                             ("tensorboard", 6006, "TensorBoard on /data/logs")):
        services.add_argument(f"--{name}", nargs="?", const=True, metavar="HOST_PORT",
                              help=f"publish {what} (container port {port}); host port chosen unless given")
    services.add_argument("--ssh-key", action="append", dest="ssh_keys", metavar="PATH",
                          help="public key allowed to log in over SSH (default: ~/.ssh/*.pub)")
    services.add_argument("--port", action="append", dest="ports", metavar="NAME=PORT[:HOST_PORT]",
                          help="publish another container port, e.g. --port web=8000")
    services.add_argument("--publish-address", metavar="ADDR", help="host address for published ports (default: 127.0.0.1)")
    services.add_argument("--data-root", metavar="DIR", help="where the binding's data dir goes (default: the user data dir)")
    services.add_argument("--devcontainer", metavar="NAME", help="use .devcontainer/NAME/devcontainer.json")
    services.add_argument("--trust", action="store_true",
                          help="trust the devcontainer.json as it is (see `git gpuspace trust`) and apply all it asks for")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every verb's parser, or only the one named `only` (a verb or an alias): a command builds
    the parser it runs, not the other thirty."""
    parser = _Parser(
        prog="git gpuspace",
        description="Bind each git worktree to its own Docker container and its own GPUs.",
    )
    parser.add_argument("--version", action="version", version=VERSION_TEXT)
    verbs = parser.add_subparsers(dest="verb", metavar="<command>")
    for names, add_verb in VERBS:
        if only is None or only in names:
            add_verb(verbs)
    return parser


def _verb_add(verbs) -> None:
    add = verbs.add_parser(
        "add",
        help="create a worktree with its own container and GPUs",
        description="Create a worktree as `git worktree add` does, and a container bound to it.",
    )
    add.add_argument("-b", dest="new_branch", metavar="<new-branch>", help="create this branch for the worktree")
    add.add_argument("-B", dest="new_branch_force", metavar="<new-branch>",
                     help="create this branch, or reset it to <commit-ish> if it exists")
    add.add_argument("-d", "--detach", action="store_true", help="check out a detached HEAD")
    add.add_argument("-f", "--force", action="count", default=0,
                     help="check out a branch checked out elsewhere, or take over a missing registered worktree's "
                     "path (twice: a locked one), as git's")
    add.add_argument("--checkout", action=argparse.BooleanOptionalAction, default=True,
                     help="populate the worktree (--no-checkout: HEAD only, no files, as git's)")
    add.add_argument("--lock", action="store_true", help="keep the new worktree locked (git worktree lock)")
    add.add_argument("--reason", metavar="<string>", help="the reason of --lock")
    add.add_argument("-q", "--quiet", action="store_true", help="no 'Preparing worktree' line")
    add.add_argument("--track", action="store_const", const="direct",
                     help="the new branch tracks <commit-ish>, a local or remote-tracking branch (git branch --track)")
    add.add_argument("--no-track", dest="track", action="store_const", const="no",
                     help="the new branch tracks nothing, even made from a remote-tracking branch")
    add.add_argument("--guess-remote", action=argparse.BooleanOptionalAction, default=None,
                     help="without <commit-ish>, base a new branch on a remote-tracking branch of its name "
                     "(default: worktree.guessRemote)")
    add.add_argument("path", nargs="?", help="where the worktree goes (default: ../worktrees/<branch>)")
    add.add_argument("commitish", nargs="?", metavar="commit-ish", help="branch or commit to check out (default: HEAD)")
    add.add_argument("--wait", nargs="?", const="forever", metavar="TIMEOUT",
                     help="wait for busy GPUs to be free instead of failing (optionally at most TIMEOUT: 90, 10m, 2h)")
    add.add_argument("--preempt", action="store_true",
                     help="when no GPU is free, take one from a preemptible run (it checkpoints and is queued again)")
    _add_binding_options(add)


def _verb_bind(verbs) -> None:
    bind = verbs.add_parser("bind", help="give an existing worktree its container and GPUs")
    bind.add_argument("worktree", nargs="?", help="path, directory name or branch (default: the current worktree)")
    _add_binding_options(bind)


def _verb_remove(verbs) -> None:
    remove = verbs.add_parser(
        "remove",
        aliases=["rm"],
        help="remove a worktree and its container; the branch stays",
    )
    remove.add_argument("worktree", help="path, directory name or branch")
    remove.add_argument("-f", "--force", action="count", default=0,
                        help="remove even with modified or untracked files (twice: even a locked worktree, as git's)")
    remove.add_argument("--keep-worktree", action="store_true", help="remove only the container and free its GPUs")
    remove.add_argument("--purge", action="store_true", help="also delete the binding's data dir (checkpoints, logs)")


def _verb_status(verbs) -> None:
    status = verbs.add_parser("status", help="every worktree with its branch, container, GPUs and image")
    status.add_argument("--json", action="store_true", help="machine-readable output (schema in the README)")


def _verb_sync(verbs) -> None:
    syncing = verbs.add_parser("sync", help="bring commits made in containers into their worktrees' branches, and "
                               "the host's into the containers",
                               description="Each bound container's git has its own git dir. `sync` imports the "
                               "commits a container made on its worktree's branch (fast-forward only, checked as "
                               "data), and gives the container the host's commits.")
    syncing.add_argument("worktree", nargs="*", metavar="WORKTREE",
                         help="path, directory name or branch (default: every bound worktree)")


def _verb_gpus(verbs) -> None:
    gpus = verbs.add_parser("gpus", help="the host's GPUs and who holds each")
    gpus.add_argument("--json", action="store_true", help="machine-readable output")


def _verb_prune(verbs) -> None:
    pruning = verbs.add_parser("prune", help="converge now: clean up after plain git, retry pending bindings")
    pruning.add_argument("-n", "--dry-run", action="store_true", help="say what would be done (and which data dirs "
                         "are orphaned), change nothing")


def _verb_data(verbs) -> None:
    data = verbs.add_parser("data", help="list the data dirs (checkpoints, logs) with sizes; delete orphaned ones",
                            description="Data dirs outlive their bindings. `list` shows each with its size, the "
                            "worktree it was made for and what uses it; `rm` deletes orphaned ones.")
    data.add_argument("action", choices=("list", "rm"), nargs="?", default="list", help="what to do (default: list)")
    data.add_argument("dirs", nargs="*", metavar="DIR", help="rm: data dirs (path or name) to delete")
    data.add_argument("--json", action="store_true", help="list: machine-readable output")


def _verbs_start_stop(verbs) -> None:
    for verb, text in (("start", "start a worktree's container (made again if gone; bound if pending)"),
                       ("stop", "stop a worktree's container; its GPUs stay reserved"),
                       ("restart", "stop, then start a worktree's container")):
        verbs.add_parser(verb, help=text).add_argument("worktree", help="path, directory name or branch")


def _verb_exec(verbs) -> None:
    execute = verbs.add_parser("exec", help="run a command in a worktree's container (its exit code is ours)")
    execute.add_argument("worktree", help="path, directory name or branch")
    execute.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")


def _verb_shell(verbs) -> None:
    verbs.add_parser("shell", help="an interactive shell in a worktree's container").add_argument(
        "worktree", nargs="?", help="path, directory name or branch (default: the current worktree)")


def _verb_logs(verbs) -> None:
    logs = verbs.add_parser("logs", help="the container's output")
    logs.add_argument("worktree", nargs="?", help="a run's id, or a worktree's path, directory name or branch "
                      "(default: the current worktree)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep following the output")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")


def _verb_check(verbs) -> None:
    check = verbs.add_parser("check", help="inside the container: are the GPUs exactly the bound ones? does torch see them?")
    check.add_argument("worktree", nargs="?", help="path, directory name or branch (default: the current worktree)")


def _verb_doctor(verbs) -> None:
    verbs.add_parser("doctor", help="check the host (git, engine, NVIDIA runtime, GPUs, image, hooks) and say how to fix it")


def _verbs_run_sweep(verbs) -> None:
    for verb, text in (("run", "run a command pinned to this commit in its own worktree, container and GPUs"),
                       ("sweep", "run a command once per parameter set (-p axes), each pinned and on its own GPUs")):
        runner = verbs.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ", from a queue that "
                                  "waits for free GPUs; dispatches in the foreground and exits 0 when every run succeeded.")
        if verb == "sweep":
            runner.add_argument("name", help="the sweep's name (unique in the repo); `sweep resume NAME` dispatches "
                                "what of that sweep is queued (and goes on searching); `sweep show NAME` shows a search")
            runner.add_argument("-p", "--param", action="append", dest="params", metavar="NAME=V1,V2",
                                help="an axis; the command uses it as {NAME}; several axes: their cross product")
            runner.add_argument("--grid-file", metavar="FILE", help="TOML: [axes] (lists of values) and/or [[sets]]")
            runner.add_argument("--random", type=int, metavar="N", help="N parameter sets drawn from the grid")
            runner.add_argument("--seed", type=int, metavar="S", help="the seed of --random or --search (default: a new draw)")
            runner.add_argument("--append", action="store_true", help="add runs to an existing sweep")
            runner.add_argument("--max-parallel", type=int, metavar="N", help="at most N runs of the sweep at once")
            runner.add_argument("--runs-per-gpu", type=int, default=1, metavar="K",
                                help="pack K runs of this sweep on one GPU (small models); never with anything else")
            searching = runner.add_argument_group(
                "search (Optuna)", "ask for parameters as runs end instead of running a grid: -p NAME=loguniform(A,B), "
                "uniform(A,B), int(A,B), choice(V1,V2,...); plain -p NAME=V1,V2 is a choice. `sweep show NAME` "
                "prints the best trial")
            searching.add_argument("--search", choices=("tpe", "random", "cmaes", "grid"),
                                   help="the sampler that picks each trial's parameters")
            searching.add_argument("--trials", type=int, metavar="N", help="how many trials (with --append: in all)")
            searching.add_argument("--metric", metavar="NAME", help="the value each run prints as NAME=value "
                                   "(or writes to /data/metrics.json): the last one is the trial's")
            direction = searching.add_mutually_exclusive_group()
            direction.add_argument("--minimize", dest="direction", action="store_const", const="minimize")
            direction.add_argument("--maximize", dest="direction", action="store_const", const="maximize")
            searching.add_argument("--prune", choices=("median", "hyperband", "none"), default="none",
                                   help="stop trials whose metric, as they print it, lags the others' (default none)")
        else:
            runner.set_defaults(name=None, params=None, append=False, max_parallel=None, grid_file=None, random=None,
                                seed=None, runs_per_gpu=1, search=None, trials=None, metric=None, direction=None,
                                prune="none")
        runner.add_argument("--commit", metavar="COMMIT-ISH", help="run this commit (default: HEAD of this "
                            "worktree, with its uncommitted changes to tracked files)")
        runner.add_argument("--priority", type=int, default=0, metavar="N", help="higher runs start first (default 0)")
        runner.add_argument("--backend", choices=("local", "slurm"),
                            help="where the runs run: this machine's engine, or Slurm (default: the `backend` setting)")
        runner.add_argument("--detach", action="store_true",
                            help="queue and return; a background dispatcher (one per repo) runs the queue")
        runner.add_argument("--retries", type=int, default=0, metavar="N",
                            help="queue a failed or interrupted run again, up to N times (default 0)")
        preemption = runner.add_argument_group("preemption")
        preemption.add_argument("--preemptible", action=argparse.BooleanOptionalAction, default=None,
                                help="its GPU may be taken: SIGTERM, --grace to checkpoint to /data, then it is "
                                "queued again and resumes with GPUSPACE_RESUME=1 (default: the `preemptible` setting)")
        preemption.add_argument("--preempt", action="store_true",
                                help="when no GPU is free, take one from a preemptible run of lower priority")
        preemption.add_argument("--grace", metavar="DURATION",
                                help="from SIGTERM to SIGKILL when preempted: 30, 30s, 5m, 1h (default 30s)")
        preemption.add_argument("--time-slice", dest="time_slice", metavar="DURATION",
                                help="after this long on its GPU, yield it to waiting runs of its priority (implies "
                                "--preemptible; local backend only)")
        if verb == "run":
            runner.add_argument("-q", "--quiet", action="store_true",
                                help="only the lines of its start and end, not the command's output")
        else:
            runner.set_defaults(quiet=True)  # a sweep shows a line per start and end; `logs -f` follows one run
        _add_container_settings(runner)
        runner.add_argument("command", nargs="*", help="-- then the command and its arguments")


def _verb_runs(verbs) -> None:
    runs = verbs.add_parser("runs", help="the queue and history of runs; resume, show, stop, retry, clean, forget, plot",
                            description="List runs (default): GPUs by index, the commit (`*`: a snapshot of "
                            "uncommitted changes), why a run waits or failed, and metrics (metrics.json, else "
                            "`name=number` in the log). `resume` dispatches what is queued (after Ctrl-C, kill or "
                            "reboot); `show ID`; `stop ID|--sweep NAME [--all]`; `retry ID|--sweep NAME --failed`; "
                            "`clean [ID|--sweep NAME] [--purge]` removes finished runs' worktrees, containers and "
                            "refs and keeps their records; `forget [ID|--sweep NAME]` drops records (cleaning them "
                            "first; with no target, the cleaned ones); `plot --sweep NAME --metric M -o FILE.png` draws each run's "
                            "curve of M.")
    runs.add_argument("action", nargs="?", choices=("list", "resume", "show", "stop", "retry", "clean", "forget", "plot"),
                      default="list", help="what to do (default: list)")
    runs.add_argument("run", nargs="?", metavar="ID", help="a run's id (show, stop, retry, clean, forget)")
    runs.add_argument("--sweep", metavar="NAME", help="only this sweep's runs")
    runs.add_argument("--all", action="store_true", help="stop: also drop the queued runs")
    runs.add_argument("--failed", action="store_true", help="retry: the failed and interrupted runs")
    runs.add_argument("--purge", action="store_true",
                      help="clean, forget: also delete the runs' data dirs (logs, checkpoints)")
    runs.add_argument("--csv", action="store_true", help="list as CSV")
    runs.add_argument("--state", choices=("queued", "running", "preempted", "succeeded", "failed", "stopped", "pruned"), help="only runs in this state")
    runs.add_argument("--metrics", metavar="NAME,...",
                      help="the metric columns, in this order (default: the `runs.metrics` setting, else every "
                      "metric that is not a parameter's name)")
    runs.add_argument("--metric", metavar="NAME", help="plot: the metric whose curves are drawn")
    runs.add_argument("-o", "--output", metavar="FILE", help="plot: the image to write (.png, .pdf, .svg)")
    runs.add_argument("--sort", metavar="[-]METRIC",
                      help="order by a metric from the runs' logs; --sort=-METRIC: descending")
    runs.add_argument("--json", action="store_true", help="machine-readable output")


def _verb_trust(verbs) -> None:
    trusting = verbs.add_parser(
        "trust",
        help="trust a worktree's devcontainer.json: its commands, ${localEnv:...}, runArgs and mounts apply",
        description="Record that you trust a worktree's devcontainer.json as it is now (by its hash, in your "
        "config dir). Untrusted, containers are made without its lifecycle commands, without ${localEnv:...} "
        "and without runArgs or mounts that widen access. A changed file is untrusted again.",
    )
    trusting.add_argument("worktree", nargs="?", help="path, directory name or branch (default: the current worktree)")
    trusting.add_argument("--devcontainer", metavar="NAME", help="the file .devcontainer/NAME/devcontainer.json")
    trust_action = trusting.add_mutually_exclusive_group()
    trust_action.add_argument("--list", action="store_true", help="list what you trust")
    trust_action.add_argument("--revoke", action="store_true", help="no longer trust the worktree's devcontainer.json")


def _verb_config(verbs) -> None:
    settings = verbs.add_parser("config", help="get, set, unset or list settings (user or repo)")
    actions = settings.add_subparsers(dest="action", metavar="<action>", required=True)
    from .setting_keys import KEYS

    keys = ", ".join(KEYS)
    for action, text in (("get", "print a setting (the effective one unless --user/--repo)"),
                         ("set", "set a setting (in the repo when inside one, as git config)"),
                         ("unset", "remove a setting"), ("list", "every setting and where it comes from")):
        sub = actions.add_parser(action, help=text)
        if action != "list":
            sub.add_argument("key", help=keys)
        if action == "set":
            sub.add_argument("value")
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--user", action="store_true", help="the user config file")
        where.add_argument("--repo", action="store_true", help="the repo defaults in .git/gpuspace.toml")


def _verb_init(verbs) -> None:
    init = verbs.add_parser(
        "init",
        help="record repo defaults and install the hooks (plain `git worktree add` then binds)",
        description="Record repo defaults in .git/gpuspace.toml and install the git hooks.",
    )
    _add_container_settings(init.add_argument_group("repo defaults"))
    init.add_argument("--no-hooks", action="store_true", help="record the defaults only")


def _verb_hooks(verbs) -> None:
    hooks = verbs.add_parser("hooks", help="install or uninstall the git hooks")
    hooks.add_argument("action", choices=("install", "uninstall", "status"))
    hooks.add_argument("--pre-push", metavar="NAME", action="append", dest="pre_push",
                       help="install: also a pre-push hook that refuses commits without a pass of this check")


def _verb_completion(verbs) -> None:
    completion = verbs.add_parser(
        "completion",
        help="print a bash or zsh completion script",
        description="Print a completion script for bash or zsh, generated from this version's commands. "
        'Load it from ~/.bashrc with: eval "$(git gpuspace completion bash)"; '
        'from ~/.zshrc, after compinit, with: eval "$(git gpuspace completion zsh)".',
    )
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete for")


def _verb_verify(verbs) -> None:
    checking = verbs.add_parser(
        "verify", help="check commits in their own containers; verdicts in git notes (refs/notes/gpuspace/<check>)",
        description="`verify add NAME [--gpus SPEC] [--image IMAGE] -- CMD` names a check; `verify list`; `verify rm "
        "NAME`; `verify on-commit NAME` / `verify off NAME` runs it on each new commit (post-commit hook). "
        "`verify [COMMIT|A..B] [--name NAME] [-j N] [-k]` checks HEAD, a commit or each commit of a range with every "
        "named check (or `-- CMD`, a one-off check named default); a tree already checked is not run again.")
    checking.add_argument("target", nargs="?", metavar="COMMIT|RANGE|ACTION",
                          help="a commit, a range A..B (default: HEAD), or add, list, rm, on-commit, off")
    checking.add_argument("check", nargs="?", metavar="NAME", help="the check (add, rm, on-commit, off)")
    checking.add_argument("--name", metavar="NAME", help="only this check")
    checking.add_argument("-j", dest="jobs", type=int, default=1, metavar="N", help="commits checked at once (default 1)")
    checking.add_argument("-k", "--keep-going", action="store_true", help="go on after a failing commit")
    checking.add_argument("--force", action="store_true", help="run even where the tree has a verdict")
    checking.add_argument("--gpus", metavar="SPEC", help="add: GPUs for each run (default: the repo default)")
    checking.add_argument("--image", metavar="IMAGE", help="add: the image (default: the repo's)")
    checking.add_argument("--backend", choices=("local", "slurm"),
                          help="where the checks run: this machine's engine, or Slurm (default: the `backend` setting)")
    checking.add_argument("command", nargs="*", help="-- then the check's command")


def _verb_export(verbs) -> None:
    exporting = verbs.add_parser(
        "export", help="write a worktree, run or sweep as a Compose service, devcontainer.json, Kubernetes "
        "Pod/Indexed Job or sbatch script",
        description="What a bound worktree, a run or a sweep would be under another tool, for moving it there. "
        "Each run keeps its own worktree (or commit), environment (GPUSPACE_RUN, GPUSPACE_PARAM_*, HF_HOME, ...) and "
        "/data: compose (a service per run, GPUs reserved by device id or count), devcontainer (one worktree or run: "
        "image, mounts, runArgs, ports), k8s (a Pod; an Indexed Job for a sweep; the commit checked out from the "
        "repo's remote by an init container; /data on a PersistentVolumeClaim you name; a commit the remote lacks is "
        "named with its push), slurm (an sbatch script; a job array for a sweep whose task index picks the run). "
        "Compose files and Kubernetes manifests are JSON, which is YAML too (a manifest opens with a comment on what "
        "to fill in).")
    exporting.add_argument("what", metavar="WORKTREE|RUN|SWEEP", help="a bound worktree, a run id or a sweep name")
    exporting.add_argument("--to", required=True, choices=("compose", "devcontainer", "k8s", "slurm"),
                           help="the format")
    exporting.add_argument("-o", dest="output", metavar="FILE", help="write there (default: standard output)")


def _verb_slurm_task(verbs) -> None:
    task = verbs.add_parser("_slurm-task")  # what a Slurm job runs on its node; not for people
    task.add_argument("run")


def _verb_ui(verbs) -> None:
    ui = verbs.add_parser(
        "ui", help="serve MLflow's UI for the repo's tracked runs on 127.0.0.1",
        description="Serve MLflow's own UI for the repo's MLflow store (the `tracking.uri` setting; by default "
        ".git/gpuspace-mlflow.db) on 127.0.0.1 and a free port, printing its URL, until Ctrl-C. Runs are logged "
        "to MLflow by a tracker process of the repo while they run: params, tags, each `name=number` of the log as "
        "the next step of that metric (`step=N` or `epoch=N` on the line sets it), /data/metrics.json, the status and "
        "/data/artifacts. Needs the mlflow extra: pip install 'git-gpuspace[mlflow]'.")
    ui.add_argument("--port", type=int, metavar="N", help="this port instead of a free one")


def _verb_track(verbs) -> None:
    track = verbs.add_parser("_track")  # the repo's tracker, started in the background; not for people
    track.add_argument("--once", action="store_true")
    track.add_argument("--background", action="store_true")  # started by a dispatcher: it runs niced


def _verb_hook(verbs) -> None:
    hook = verbs.add_parser("_hook")  # what the installed hooks call; not for people
    hook.add_argument("event", choices=("new-worktree", "converge", "verify", "pre-push", "sync"))


VERBS = [  # (the names a verb answers to, what adds its parser), in the order help lists them
    (('add',), _verb_add),
    (('bind',), _verb_bind),
    (('remove', 'rm'), _verb_remove),
    (('status',), _verb_status),
    (('sync',), _verb_sync),
    (('gpus',), _verb_gpus),
    (('prune',), _verb_prune),
    (('data',), _verb_data),
    (('start', 'stop', 'restart'), _verbs_start_stop),
    (('exec',), _verb_exec),
    (('shell',), _verb_shell),
    (('logs',), _verb_logs),
    (('check',), _verb_check),
    (('doctor',), _verb_doctor),
    (('run', 'sweep'), _verbs_run_sweep),
    (('runs',), _verb_runs),
    (('trust',), _verb_trust),
    (('config',), _verb_config),
    (('init',), _verb_init),
    (('hooks',), _verb_hooks),
    (('completion',), _verb_completion),
    (('verify',), _verb_verify),
    (('export',), _verb_export),
    (('_slurm-task',), _verb_slurm_task),
    (('ui',), _verb_ui),
    (('_track',), _verb_track),
    (('_hook',), _verb_hook),
]


_MODULES = {"rm": "remove", "stop": "start", "restart": "start", "_hook": "hook", "shell": "exec", "sweep": "run",
            "_slurm-task": "slurm_task", "_track": "track", "ui": "track"}


def main(argv: Sequence[str] | None = None) -> int:
    _man_page_for_editable_install()
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:
        print(VERSION_TEXT)  # what argparse would print, without building every parser first
        return 0
    argv = list(sys.argv[1:] if argv is None else argv)
    named = {name for names, _ in VERBS for name in names}
    parser = build_parser(only=argv[0] if argv and argv[0] in named else None)  # -h and a typo: all of them
    command = None
    if argv[:1] in (["run"], ["sweep"], ["verify"]) and "--" in argv:  # argparse mixes options after a positional into a remainder
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    if argv == ["--help"]:  # git turns `git gpuspace --help` into `man git-gpuspace`; run directly, the same
        from . import manpage

        return manpage.show(parser)
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if command is not None:
        args.command = command
    if args.verb is None:
        parser.print_help()
        return 2
    module = importlib.import_module(f".commands.{_MODULES.get(args.verb, args.verb)}", __package__)
    for signum in (signal.SIGTERM, signal.SIGHUP):  # `timeout`, a closed terminal: roll back as Ctrl-C does
        signal.signal(signum, _interrupt)
    return run_guarded(module.run, args)


def _man_page_for_editable_install() -> None:
    """`pip install -e` leaves the man page out: linked where man finds it on the first run of
    the console script (one stat of the page's place on every later run)."""
    script = Path(os.path.abspath(sys.argv[0]))
    if script.name != "git-gpuspace" or os.path.lexists(script.parent.parent / "share/man/man1/git-gpuspace.1"):
        return
    from . import manpage

    manpage.link_for_man(script)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so that rollbacks run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame):
    raise Interrupted(signum)


def run_guarded(function, args: argparse.Namespace) -> int:
    """Expected failures print one line (and a hint); a bug prints where its log is."""
    from .errors import GpuspaceError

    try:
        try:
            return function(args)
        except Exception as error:
            raise _expected(error) or error
    except GpuspaceError as error:
        from .output import printable  # names in a message may come from a repository or a container

        print(f"git-gpuspace: error: {printable(error)}", file=sys.stderr)
        if error.hint:
            print(f"hint: {printable(error.hint)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as error:
        signum = getattr(error, "signum", signal.SIGINT)
        print(f"git-gpuspace: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        return 0  # `git gpuspace status | head` is not an error
    except Exception as error:  # a bug: keep the traceback for the report, not the screen
        report_internal_error(error)
        return EXIT_INTERNAL


def _expected(error: Exception):
    """Failures of the machine, not of our code, as one line: a git file locked by another
    writer (or left by one cut short)."""
    from .errors import WorktreeError

    if type(error).__name__ == "FileLocked" and hasattr(error, "lockfilename"):
        lock = os.fsdecode(error.lockfilename)
        return WorktreeError(f"cannot write {os.fsdecode(error.filename)}: {lock} exists (another git command is "
                             f"writing it, or one was cut short)", hint=f"if no git command is running, remove {lock}")
    return None


def report_internal_error(error: Exception) -> None:
    log = _write_crash_log()
    print(f"git-gpuspace: internal error: {type(error).__name__}: {error}", file=sys.stderr)
    print(f"hint: this is a bug; the details are in {log}", file=sys.stderr)


def _write_crash_log() -> str:
    import datetime
    import traceback

    import platformdirs

    directory = platformdirs.user_log_path("git-gpuspace")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "crash.log"
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"--- {datetime.datetime.now().isoformat()} git-gpuspace {__version__} {sys.argv}\n")
            log.write(traceback.format_exc())
        return str(path)
    except OSError:
        return "(no log: the log directory is not writable)"


if __name__ == "__main__":
    sys.exit(main())
