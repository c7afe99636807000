"""Every refusal README.md and docs/SECURITY.md promise, one test case per option.

A refusal is proved here as the docs state it: the exit code (2 for bad usage, 1 for a command
that failed), exactly one `git-gpuspace: error:` line, no traceback, and nothing made or changed
(worktree, branch, binding, container, file). What is "skipped unless trusted" is proved by the
container that is made without it. An existing test counts only when it checks all of that for
exactly that option; where one checks less (no exit code or one-line check, several options in
one loop, nothing-changed unchecked) the case is proved again here, and the table says so.

Audit: promise (where it is written) -> the test that proves it. "here" is this file.

README.md
| promise | options | proved by |
|---|---|---|
| `remove` refused with modified or untracked files unless --force (README.md:80) | modified, staged, untracked, deleted; with --purge | here: test_remove_refuses_a_worktree_with_changes[*] (cli/test_promises.py::test_remove_refuses_every_kind_of_change checks no exit code, error line or state) |
| `data rm` deletes orphaned data dirs only (README.md:94; SECURITY.md:51) | in use by a binding, in use by a run, not ours, a copied owner mark, one orphaned with one in use, none named | here: test_data_rm_deletes_only_orphaned_data_dirs_of_ours[*] (reliability/test_rough_edges.py::test_data_dirs_are_listed_with_sizes_and_orphaned_ones_deleted_on_request: two of them, non-zero exit only) |
| a changed devcontainer.json is untrusted again; `trust --revoke` (README.md:99, 191) | changed, revoked | devcontainer/test_trust.py::test_trust_is_per_content_and_can_be_revoked |
| a malformed --gpus spec is bad usage, exit 2 (README.md:108, 441) | listed twice, index and UUID of one GPU, garbage, negative | cli/test_bad_input.py::test_bad_input[gpu duplicated, gpu index and uuid of same, gpu garbage, gpu negative] |
| GPUs the host does not have (README.md:108) | index, UUID, count | cli/test_bad_input.py::test_bad_input[gpu index out of range, gpu unknown uuid, gpu count over inventory] |
| --share shares only with bindings that also passed --share (README.md:109, 330) | --share onto an exclusive GPU, exclusive onto a shared one | here: test_a_held_gpu_is_never_given_to_another_binding[--share-onto-an-exclusive-gpu, exclusive-onto-a-shared-gpu] (workspace/test_lifecycle.py::test_explicit_ids_all_none_and_share checks exit code and message only) |
| an image that cannot be pulled is an error (README.md:110, 458) | --image | cli/test_errors.py::test_refused_add_leaves_nothing[-b new {wt} --image localhost:1/nothing:here] |
| malformed sizes and limits are bad usage (README.md:111-112, 441) | --memory, --cpus, --shm-size (malformed, too small, absurd) | cli/test_bad_input.py::test_bad_input[memory malformed, memory too small, memory absurd, cpus malformed, cpus zero, cpus absurd, shm malformed] |
| ... in `init` and `config set` too (README.md:88-89, 441) | --gpus, --memory, --cpus, --shm-size; gpus, memory, cpus, shm_size | here: test_init_refuses_a_malformed_default_and_changes_nothing[*], test_config_set_refuses_a_malformed_value[*] (git/test_hooks.py::test_init_refuses_bad_defaults: --memory, no error-line check) |
| a service's host port that is no port is bad usage (README.md:114-116) | --jupyter=, --ssh=, --tensorboard= | here: test_a_service_host_port_that_is_no_port_is_bad_usage[*] (reliability/test_rough_edges.py::test_a_bad_service_port_is_reported_as_typed: --jupyter, no error-line check) |
| SSH takes public keys only (README.md:115) | --ssh-key missing, --ssh-key not a public key, no ~/.ssh/*.pub | here: test_ssh_without_a_public_key_is_refused[*] (workspace/test_workspace.py::test_ssh_takes_keys_only: a missing key, exit code and message only) |
| a malformed --port is bad usage (README.md:117) | out of range, malformed, name twice, host port twice | cli/test_bad_input.py::test_bad_input[port out of range, port malformed, port name twice, host port twice] |
| a bad --publish-address is bad usage (README.md:118) | --publish-address | cli/test_bad_input.py::test_bad_input[publish address] |
| an unknown --devcontainer NAME (README.md:120) | --devcontainer | cli/test_bad_input.py::test_bad_input[unknown devcontainer] |
| a host port asked for that is taken is an error, never remapped (README.md:141, 459) | --port, --jupyter, --tensorboard, --ssh held by a host process; --port held by a running, a not-started and a stopped binding (README.md:83, 113) | here: test_a_host_port_a_host_process_holds_is_an_error_never_remapped[*], test_a_host_port_another_binding_holds_is_an_error_never_remapped[*] (workspace/test_workspace.py::test_ports_never_collide_and_taken_ports_are_refused: --port, no error-line check) |
| an unreachable or unknown feature is a clear error (README.md:171) | registry unreachable, an old short id | devcontainer/test_devcontainer_fixtures.py::test_fixture[unreachable-feature, legacy-feature-id] |
| forwardPorts "db:5432" is named as not supported (README.md:173) | forwardPorts | devcontainer/test_devcontainer_fixtures.py::test_fixture[ports] |
| bind mounts of paths inside the repository only, untrusted (README.md:174, 194; SECURITY.md:84) | a path outside, the Docker socket, a tracked symlink out of the repository | cli/test_promises.py::test_each_widening_devcontainer_request_needs_trust[mount of /, mount of /var/run/docker.sock]; here: test_a_bind_mount_through_a_symlink_out_of_the_repository_needs_trust |
| workspaceMount must be the worktree (README.md:175) | workspaceMount | here: test_a_workspace_mount_of_anything_but_the_worktree_is_named_and_not_applied |
| lifecycle commands only when trusted (README.md:177, 192) | onCreateCommand, updateContentCommand, postCreateCommand, postStartCommand | cli/test_promises.py::test_each_widening_devcontainer_request_needs_trust[*Command] |
| overrideCommand false refuses the services (README.md:178) | --jupyter, --ssh, --tensorboard | devcontainer/test_devcontainer_fixtures.py::test_fixture[override-command-and-jupyter]; here: test_override_command_false_refuses_a_service[--ssh, --tensorboard] |
| privileged, capAdd, securityOpt only when trusted (README.md:179) | privileged, capAdd, securityOpt | cli/test_promises.py::test_each_widening_devcontainer_request_needs_trust[privileged, capAdd SYS_ADMIN, securityOpt seccomp=unconfined] |
| runArgs that widen only when trusted (README.md:181, 192-195) | --privileged, --cap-add, --security-opt, --network, --net, --ipc, --pid, --device, -v | cli/test_promises.py::test_each_widening_devcontainer_request_needs_trust[runArgs *] |
| runArgs --gpus never overrides the exclusive allocation (README.md:181; SECURITY.md:91) | --gpus all | here: test_run_args_gpus_never_override_the_exclusive_allocation (devcontainer/test_devcontainer.py::test_fields_taken_and_unsafe_ones_refused checks it among many fields) |
| ${localEnv:...} and ${env:...} only when trusted (README.md:185, 193) | localEnv, env, in containerEnv and build args | cli/test_promises.py::test_each_widening_devcontainer_request_needs_trust[${localEnv:HOME}, ${env:HOME}], devcontainer/test_trust.py::test_untrusted_file_gets_the_safe_subset_and_runs_nothing |
| untrusted, no build steps on the host's network (README.md:195) | build.options --network host | here: test_a_build_on_the_hosts_network_needs_trust (devcontainer/test_devcontainer_fixtures.py::test_untrusted_file_skips_what_needs_trust_and_says_so names it among four) |
| an existing volume with driver options is refused, nothing made, unless trusted (README.md; SECURITY.md) | mounts source=<volume> | here: test_an_existing_volume_with_driver_options_is_refused_untrusted (devcontainer/test_devcontainer_fixtures.py::test_an_existing_volume_with_driver_options_needs_trust checks less) |
| an existing volume this repository did not make is refused, nothing made, unless trusted (README.md; SECURITY.md) | mounts source=<volume> | devcontainer/test_devcontainer_fixtures.py::test_a_volume_another_project_made_is_not_mounted_by_an_untrusted_file |
| no untrusted bind of the git dir, a `.git` or a root holding one (SECURITY.md) | the worktree's .git, the worktree, the main worktree's .git | cli/test_promises.py::test_each_widening_devcontainer_request_needs_trust[/.git, mount of /, project/.git] |
| fields not supported are named; initializeCommand runs on the host only when trusted, and a failing one makes nothing (README.md) | initializeCommand untrusted, trusted, failing; customizations | devcontainer/test_devcontainer_fixtures.py::test_initialize_command_runs_on_the_host_in_the_worktree_only_when_trusted, test_a_failing_initialize_command_makes_nothing, test_fixture[initialize-command, image, dockerfile-with-target] |
| an untrusted Compose-based configuration is refused before anything is made (README.md:200) | dockerComposeFile | devcontainer/test_devcontainer_fixtures.py::test_fixture[compose]; devcontainer/test_devcontainer_compose.py::test_an_untrusted_compose_configuration_is_refused_with_nothing_made |
| a devcontainer.json over 1 MiB is refused (README.md:201; SECURITY.md:49) | size | here: test_a_devcontainer_json_over_one_mib_is_refused (devcontainer/test_trust.py::test_huge_devcontainer_json_is_refused_quickly also proves "at once", without the error-line check) |
| the hook never breaks git; a gone script says so; never `python -m` (README.md:211-218; SECURITY.md:137-141) | binding fails, script gone, a tracked git_gpuspace/ | git/test_hooks.py::test_hook_never_breaks_git_and_binding_waits, test_hook_with_its_interpreter_gone_warns_and_git_succeeds, test_hook_does_not_import_code_from_the_repo; cli/test_promises.py::test_the_hook_passes_on_the_chained_hooks_exit_status |
| `add` refuses what `git worktree add` refuses (README.md:25-26) | .GIT, sub/.git, a failing filter, a branch checked out elsewhere | git/test_conformance.py::test_what_git_refuses_is_refused_cleanly[*], git/test_git_interop.py::test_branch_checked_out_elsewhere_is_refused |
| a GPU a process outside gpuspace computes on is not handed out, to add either (README.md:258-261) | by index, by count | here: test_a_gpu_a_process_outside_gpuspace_computes_on_is_not_given_to_add[*] (runs/test_runs.py::test_a_gpu_busy_outside_gpuspace_is_not_handed_out: by index, exit code and message only) |
| `add --wait=TIMEOUT` waits, then fails (README.md:261) | --wait=1 | here: test_a_held_gpu_is_never_given_to_another_binding[--wait-that-runs-out] (runs/test_runs.py::test_add_wait_waits_for_a_gpu_in_the_queue: no error-line or state check) |
| a sweep never has more than --max-parallel running; --runs-per-gpu never packs with anything else (README.md:259-260) | --max-parallel, --runs-per-gpu | runs/test_runs.py::test_max_parallel_and_main_moving_mid_sweep, runs/test_runs.py::test_runs_per_gpu_packs_a_sweep_and_nothing_else |
| sweep names are unique; --append adds to one (README.md:272-273) | a second sweep of one name | here: test_a_second_sweep_of_the_same_name_is_refused_without_append (runs/test_runs.py::test_duplicate_sweep_name_needs_append: exit code and message only) |
| a Slurm job's container gets exactly the GPUs Slurm allocated, never all (README.md:289-290) | a GPU the node does not list, no allocation | here: test_a_slurm_task_refuses_a_gpu_the_node_does_not_list, test_a_slurm_task_without_an_allocation_gets_no_gpu_never_all |
| the pre-push hook refuses commits without a pass, naming them (README.md:322-323) | not checked, failed | here: test_the_pre_push_hook_refuses_commits_without_a_pass[*] (runs/test_verify.py::test_pre_push_refuses_commits_without_a_pass: both in one test, the remote unchecked) |
| a GPU held by one binding is never given to another, in any repo (README.md:330) | by index, by UUID, from another repo, by `bind`, held by a not-started or a stopped binding (README.md:83, 113) | here: test_a_held_gpu_is_never_given_to_another_binding[*] (workspace/test_lifecycle.py::test_exclusive_across_repos: from another repo, no error-line or branch check) |
| too few free GPUs: add names who holds them and creates nothing (README.md:333-334, 461) | by count | cli/test_errors.py::test_too_few_gpus_names_the_holders_and_rolls_back |
| a state file that cannot be parsed is reported and never overwritten (README.md:378-379; SECURITY.md:150-151) | corrupt, truncated, wrong types, newer schema | cli/test_errors.py::test_bad_state_file_is_reported_and_never_overwritten[*], cli/test_bad_input.py::test_bad_state_file[*] |
| unknown options and invalid branch names are bad usage (README.md:441) | unknown option; space, leading dash, .., .lock, ~^:, HEAD, exists | cli/test_bad_input.py::test_bad_input[*], cli/test_errors.py::test_refused_add_leaves_nothing[*] |
| an internal error exits 70 naming a log (README.md:442; SECURITY.md:171-172) | any bug | cli/test_units.py::test_internal_error_points_to_a_log |
| a failed add removes what it made (README.md:447; SECURITY.md:163-164) | each fault point | cli/test_promises.py::test_a_failed_add_leaves_nothing_it_made[*] |
| an unreachable engine, no NVIDIA runtime: one line and a hint (README.md:453-457; SECURITY.md:165) | DOCKER_HOST, docker context, engine without the hook | cli/test_errors.py::test_engine_unreachable_is_one_line_and_creates_nothing, cli/test_errors.py::test_engine_without_nvidia_runtime |
| `export` takes a bound worktree, a run or a sweep; a Pod clones from the repo's remote (README.md:93) | unknown name, unbound worktree, k8s without a remote, k8s with remotes but no origin | here: test_export_refuses_what_it_cannot_export_and_writes_no_file[*] (runs/test_export.py::test_export_of_something_unknown_is_one_line: two of them, exit code and message only) |
| the Jupyter token never appears in the engine's configuration; SSH without passwords (README.md:143-146; SECURITY.md:131-133) | --jupyter, --ssh | workspace/test_workspace.py::test_jupyter_behind_a_token_on_loopback_only, workspace/test_workspace.py::test_ssh_takes_keys_only |

docs/SECURITY.md
| promise | options | proved by |
|---|---|---|
| a hostile repository never reads the host (SECURITY.md:10) | a build context outside, a feature folder outside, a devcontainer.json linked out of the repository | here: test_a_devcontainer_json_cannot_read_the_host_outside_the_repository[*], test_a_devcontainer_json_that_leads_out_of_the_repository_is_refused |
| a container cannot change what the host's git runs (SECURITY.md:34-38) | hooks, config, state, commondir, ...; after a rename; the state lock; the main worktree; core.hooksPath | security/test_boundary.py (all five tests) |
| untrusted devcontainer.json: the safe subset, one notice (SECURITY.md:39, 80-83) | see the README rows above | devcontainer/test_trust.py::test_untrusted_file_gets_the_safe_subset_and_runs_nothing, cli/test_promises.py::test_each_widening_devcontainer_request_needs_trust[*] |
| trust is per content and repository; even a trusted command cannot reach the host's git (SECURITY.md:40) | | devcontainer/test_trust.py::test_trust_is_per_content_and_can_be_revoked |
| `remove --purge` deletes only a data dir we made (SECURITY.md:41) | relative, `..`, a symlink, a copied owner mark, outside the data roots | here: test_purge_refuses_a_data_dir_we_did_not_make[*] (security/test_state_authority.py::test_purge_deletes_only_a_data_dir_we_made: four in one loop) |
| a container named in the state file is touched only if the name is this worktree's (SECURITY.md:42) | remove, stop, restart, prune | here: test_the_state_file_cannot_name_a_container_that_is_not_this_worktrees[*] (security/test_state_authority.py::test_state_cannot_name_a_container_that_is_not_ours: three in one loop) |
| ... and its labels say so (SECURITY.md:42) | remove, stop, restart | here: test_a_container_with_our_name_but_not_our_labels_is_left_alone[*] (the same test: remove only) |
| the state file cannot widen a container (SECURITY.md:43) | privileged, cap_add, network_mode, ipc_mode, pid_mode, devices, security_opt, mounts outside the repository | here: test_the_state_file_cannot_widen_a_container[*] (security/test_state_authority.py::test_state_cannot_widen_a_container: four in one loop) |
| a mount source swapped for a symlink is refused at recreate (SECURITY.md:44) | mounts | here: test_a_mount_source_swapped_for_a_symlink_is_refused_at_recreate (security/test_state_authority.py's: no error-line or state check) |
| a `.gpuspace` replaced by a symlink is refused (SECURITY.md:45) | .gpuspace | here: test_a_private_dir_replaced_by_a_symlink_is_refused (security/test_state_authority.py::test_host_never_writes_through_symlinks_in_the_data_dir: no error-line check) |
| add and bind in a submodule or where core.worktree is set are refused; no worktree inside a git dir (SECURITY.md:46) | add in a submodule, add with core.worktree, add inside .git; bind in a submodule, bind with core.worktree | git/test_submodule_safety.py::test_add_inside_a_submodule_is_refused_and_writes_nothing_into_git_dirs, git/test_submodule_safety.py::test_a_repo_with_core_worktree_set_is_refused, cli/test_bad_input.py::test_bad_input[path inside .git]; here: test_bind_in_a_submodule_is_refused, test_bind_where_core_worktree_is_set_is_refused |
| waiting for a lock is bounded and names the holder (SECURITY.md:47, 152-156) | the GPU claim lock, the repo lock | reliability/test_lock_bounds.py::test_add_gives_up_on_a_held_gpu_claim_lock_and_leaves_nothing; here: test_a_held_repo_lock_is_a_bounded_wait_that_names_its_holder |
| a repository's build never runs under the repo lock (SECURITY.md:48) | | reliability/test_no_hangs.py::test_repo_lock_is_free_while_a_repository_build_runs |
| the build-context hash never reads devices, FIFOs or symlinks (SECURITY.md:49) | | devcontainer/test_trust.py::test_build_context_hash_never_reads_devices_fifos_or_symlinks |
| no container has extra power by default; ports on loopback (SECURITY.md:50, 79-83) | | security/test_security.py::test_default_container_has_no_extra_power |
| what a container writes in its data dir is read as data only (SECURITY.md:51) | exit, service-<name>, origin | runs/test_runs.py::test_a_run_ends_with_its_command_and_nothing_of_it_runs_on, reliability/test_rough_edges.py::test_services_that_do_not_answer_are_said_down_with_the_fix; `data rm`: see README |
| post-checkout runs from a hooks dir no container can write (SECURITY.md:52) | | git/test_conformance.py::test_same_as_git_worktree_add, security/test_boundary.py::test_hooks_path_inside_the_worktree_is_read_only |
| nothing a devcontainer.json names is mounted over the worktree, /data or the caches (SECURITY.md:86-87) | /data, /workspace, /cache, /cache/huggingface; runArgs -v over /data | devcontainer/test_devcontainer_fixtures.py::test_fixture[mount-over-data]; here: test_a_devcontainer_mount_is_never_put_over_our_own[*], test_a_trusted_run_arg_volume_over_the_data_dir_is_refused_and_leaves_nothing |
| features from a registry are unpacked with tar's data filter (SECURITY.md:88-90) | a `..` path, a symlink out, a hard link out, a device file, an absolute path | here: test_a_feature_archive_that_reaches_out_of_its_folder_is_refused[*], test_a_feature_archive_entry_with_an_absolute_path_stays_in_its_folder |
| names and hook arguments are data, never evaluated (SECURITY.md:116-119) | | security/test_security.py::test_hook_arguments_and_branch_names_are_never_evaluated, cli/test_bad_input.py::test_odd_but_valid_names_work |
| no hook is lost: with a hook and a chained hook both there, install keeps the newer as `<hook>.gpuspace-chained.2` (SECURITY.md, README.md) | post-checkout | git/test_hooks.py::test_a_hook_that_replaced_ours_is_chained_after_the_older_one |
| a crash leaves no binding whose GPUs another could take, no lost file (SECURITY.md:157-162) | each fault point | reliability/test_reliability.py::test_kill_during_add_then_next_command_converges, reliability/test_reliability.py::test_kill_during_remove_then_next_command_converges |
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from conftest import TEST_IMAGE, fake_gpu_uuids, make_repo
from git_gpuspace.devcontainer import parser as devcontainer, features
from helpers import assert_refused, commit_devcontainer, git, plant, tomllib

NOWHERE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}  # a refusal that must come before the engine


def on_disk(repo, where: Path) -> tuple:
    """What a refused command must leave as it was, without asking the engine."""
    return (repo.state_text(), repo.branches(), repo.git("worktree", "list", "--porcelain").stdout,
            sorted(p.name for p in where.iterdir()) if where.exists() else [])


def binding_of(repo, branch: str) -> dict:
    return next(r for r in repo.status() if r["branch"] == branch)


def data_dir_of(repo, branch: str) -> Path:
    """From the state file: no need to ask the engine."""
    return Path(next(b for b in tomllib.loads(repo.state_text())["bindings"] if b["branch"] == branch)["data_dir"])


def runs_file(repo) -> str:
    """The run store's runs, sweeps and issued ids as text, to compare before and after ("": none)."""
    from git_gpuspace.runs import store

    if not (repo.common_dir / store.FILE_NAME).exists():
        return ""
    queue = store.load(repo.common_dir)
    return repr((queue.runs, queue.sweeps, queue.issued))


@contextlib.contextmanager
def held_port():
    """A host port a host process has bound and listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@contextlib.contextmanager
def flock_held(path: Path):
    """`path` held by a `flock` process, as any other command or user could hold it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    holder = subprocess.Popen(["flock", str(path), "sleep", "60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["flock", "-n", str(path), "true"]).returncode == 0:
            assert time.monotonic() < deadline and holder.poll() is None, "flock never took the lock"
            time.sleep(0.05)
        yield holder
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


# --- remove (README: `remove` ... refused when it has modified or untracked files, unless --force) ---

def _modify(wt):
    (wt / "file0.txt").write_text("changed\n")


def _stage(wt):
    (wt / "file0.txt").write_text("staged\n")
    git("add", "file0.txt", cwd=wt)


def _untracked(wt):
    (wt / "notes.txt").write_text("mine\n")


def _delete(wt):
    (wt / "file0.txt").unlink()


CHANGES = [
    pytest.param(_modify, (), id="modified"),
    pytest.param(_stage, (), id="staged"),
    pytest.param(_untracked, (), id="untracked"),
    pytest.param(_delete, (), id="deleted"),
    pytest.param(_untracked, ("--purge",), id="untracked-with-purge"),
]


@pytest.mark.parametrize("change, flags", CHANGES)
def test_remove_refuses_a_worktree_with_changes(repo, tmp_path, change, flags):
    """The user's work is never deleted by accident: the container, binding, data dir and every
    file stay until --force."""
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(wt), "--gpus", "none", "--no-start")
    data_dir = data_dir_of(repo, "exp")
    change(wt)
    changes = repo.git("status", "--porcelain", cwd=wt).stdout
    before = repo.snapshot(tmp_path)
    assert_refused(repo.gs("remove", *flags, "exp"), 128, "contains modified or untracked files")  # git's code
    assert repo.snapshot(tmp_path) == before
    assert repo.git("status", "--porcelain", cwd=wt).stdout == changes and data_dir.is_dir()


# --- GPU exclusivity (README: a GPU held by one binding is never given to another, in any repo,
# unless both passed --share; `add` names who holds them and creates nothing) ---

GPU_CLAIMS = [
    # (holder's flags, how the holder is left, the claim's flags, how it claims, what the error says);
    # a holder made with --no-start holds its GPU as a running one does (README), and is made faster
    pytest.param(["--gpus", "0,"], "running", ["--gpus", "0,"], "add", "GPU 0 is held by", id="by-index"),
    pytest.param(["--gpus", "0,"], "created", ["--gpus", "{uuid0}"], "add", "GPU 0 is held by", id="by-uuid"),
    pytest.param(["--gpus", "0,"], "created", ["--gpus", "0,"], "other-repo", "GPU 0 is held by",
                 id="from-another-repo"),
    pytest.param(["--gpus", "0,"], "created", ["--gpus", "0,"], "bind", "GPU 0 is held by",
                 id="bind-of-a-git-worktree"),
    pytest.param(["--gpus", "0,"], "created", ["--gpus", "0,", "--share"], "add", "GPU 0 is held by",
                 id="--share-onto-an-exclusive-gpu"),
    pytest.param(["--gpus", "0,", "--share"], "created", ["--gpus", "0,"], "add", "GPU 0 is held by",
                 id="exclusive-onto-a-shared-gpu"),
    pytest.param(["--gpus", "0,"], "stopped", ["--gpus", "0,"], "add", "GPU 0 is held by",
                 id="held-by-a-stopped-binding"),
    pytest.param(["--gpus", "1"], "created", ["--gpus", "1", "--wait=1"], "add", "asked for 1 GPU, 0 free",
                 id="--wait-that-runs-out"),
]


@pytest.mark.parametrize("holder_flags, holder_state, claim, how, message", GPU_CLAIMS)
def test_a_held_gpu_is_never_given_to_another_binding(repo, tmp_path, monkeypatch, request,
                                                      holder_flags, holder_state, claim, how, message):
    """Exclusivity holds whatever the claim names the GPU by, from wherever it comes, and while the
    holder's container is not running; the refused claim leaves nothing behind."""
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    no_start = ["--no-start"] if holder_state == "created" else []
    repo.ok("add", "-b", "holder", str(tmp_path / "holder"), *holder_flags, *no_start)
    if holder_state == "stopped":
        repo.ok("stop", "holder")
    claimant = request.getfixturevalue("other_repo") if how == "other-repo" else repo
    wts = tmp_path / "wts"
    target = wts / "claim"
    if how == "bind":
        claimant.git("worktree", "add", "-q", "-b", "claim", str(target))
    args = [a.format(uuid0=fake_gpu_uuids()[0]) for a in claim]
    before, held = claimant.snapshot(wts), repo.snapshot(tmp_path)
    if how == "bind":
        result = claimant.gs("bind", str(target), *args)
    else:
        result = claimant.gs("add", "-b", "claim", str(target), *args)
    assert_refused(result, 1, message)
    assert claimant.snapshot(wts) == before and repo.snapshot(tmp_path) == held
    assert (how == "bind") == target.exists()


@pytest.mark.parametrize("claim", [["--gpus", "0,"], ["--gpus", "1"]], ids=["by-index", "by-count"])
def test_a_gpu_a_process_outside_gpuspace_computes_on_is_not_given_to_add(repo, tmp_path, monkeypatch, claim):
    """README: a GPU on which a process outside gpuspace computes is not handed out; this holds
    for add too."""
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    monkeypatch.setenv("FAKE_GPU_BUSY", "0")
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "claim", str(tmp_path / "wts" / "claim"), *claim)
    assert_refused(result, 1)
    assert "a process outside gpuspace computes on it" in result.stderr
    assert repo.snapshot(tmp_path / "wts") == before


# --- host ports (README: a host port you ask for that is taken is an error, never remapped) ---

@pytest.mark.parametrize("flags, name", [
    (["--port", "web=8000:{port}"], "web"),
    (["--jupyter={port}"], "jupyter"),
    (["--tensorboard={port}"], "tensorboard"),
    (["--ssh={port}", "--ssh-key", "{key}"], "ssh"),
], ids=["--port", "--jupyter", "--tensorboard", "--ssh"])
def test_a_host_port_a_host_process_holds_is_an_error_never_remapped(repo, tmp_path, flags, name):
    """A port asked for by number is the user's plan (a tunnel, a bookmark): a silent remap would break it."""
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyForTests test@host\n")
    before = repo.snapshot(tmp_path / "wts")
    with held_port() as busy:
        args = [a.format(port=busy, key=key) for a in flags]
        result = repo.gs("add", "-b", "p", str(tmp_path / "wts" / "p"), "--gpus", "none", *args)
    assert_refused(result, 1, f"host port {busy} ({name}) is already in use")
    assert repo.snapshot(tmp_path / "wts") == before


@pytest.mark.parametrize("holder_state", ["running", "created", "stopped"])
def test_a_host_port_another_binding_holds_is_an_error_never_remapped(repo, tmp_path, holder_state):
    """A binding keeps its ports while its container runs, before it first starts and while it is stopped."""
    repo.ok("add", "-b", "holder", str(tmp_path / "holder"), "--gpus", "none", "--port", "web=8000",
            *(["--no-start"] if holder_state == "created" else []))
    if holder_state == "stopped":
        repo.ok("stop", "holder")
    port = binding_of(repo, "holder")["ports"][0]["host_port"]
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "p", str(tmp_path / "wts" / "p"), "--gpus", "none", "--port", f"x=80:{port}")
    assert_refused(result, 1, f"host port {port} (x) is already in use")
    assert repo.snapshot(tmp_path / "wts") == before


@pytest.mark.parametrize("flag", ["--jupyter=80000", "--ssh=70000", "--tensorboard=web"])
def test_a_service_host_port_that_is_no_port_is_bad_usage(plain_repo, tmp_path, flag):
    """Reported as typed, before anything is made or the engine is asked."""
    before = on_disk(plain_repo, tmp_path)
    result = plain_repo.gs("add", "-b", "s", str(tmp_path / "s"), "--gpus", "none", flag, env=NOWHERE)
    assert_refused(result, 2, f"{flag.replace('=', ' ')}: not a host port (1-65535)")
    assert on_disk(plain_repo, tmp_path) == before


# --- SSH (README: public keys only, default ~/.ssh/*.pub) ---

@pytest.mark.parametrize("key, message", [
    ("missing.pub", "cannot read SSH public key"),
    ("private", "is not an SSH public key"),
    (None, "--ssh needs a public key, and ~/.ssh has no *.pub"),
], ids=["--ssh-key-that-is-missing", "--ssh-key-that-is-no-public-key", "no-key-at-all"])
def test_ssh_without_a_public_key_is_refused(repo, tmp_path, key, message):
    """sshd takes public keys only: with none to install, --ssh would publish a door nobody can open."""
    (tmp_path / "private").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n"
                                      "-----END OPENSSH PRIVATE KEY-----\n")
    before = repo.snapshot(tmp_path / "wts")
    flags = ["--ssh-key", str(tmp_path / key)] if key else []
    result = repo.gs("add", "-b", "s", str(tmp_path / "wts" / "s"), "--gpus", "none", "--ssh", *flags)
    assert_refused(result, 2, message)
    assert repo.snapshot(tmp_path / "wts") == before


# --- malformed values (README, exit codes: 2 is bad usage, a malformed size or GPU spec) ---

MALFORMED = [("gpus", "two", "invalid GPU id 'two'"), ("memory", "lots", "invalid --memory 'lots'"),
             ("cpus", "many", "invalid --cpus 'many'"), ("shm-size", "big", "invalid --shm-size 'big'")]
# keys only `config set` takes: refused when set, not at the next run
CONFIG_ONLY = [("backend", "foo", "unknown backend 'foo'"),
               ("slurm.container", "podman", "slurm.container must be docker or pyxis, not 'podman'")]


@pytest.mark.parametrize("option, value, message", MALFORMED, ids=[f"--{m[0]}" for m in MALFORMED])
def test_init_refuses_a_malformed_default_and_changes_nothing(plain_repo, option, value, message):
    """No repo defaults written and no hook installed: init is all or nothing."""
    hooks = plain_repo.common_dir / "hooks"
    before = (on_disk(plain_repo, plain_repo.path), sorted(p.name for p in hooks.iterdir()))
    assert_refused(plain_repo.gs("init", f"--{option}", value, env=NOWHERE), 2, message)
    assert (on_disk(plain_repo, plain_repo.path), sorted(p.name for p in hooks.iterdir())) == before


@pytest.mark.parametrize("option, value, message", MALFORMED + CONFIG_ONLY,
                         ids=[m[0].replace("-", "_") for m in MALFORMED + CONFIG_ONLY])
def test_config_set_refuses_a_malformed_value(plain_repo, option, value, message):
    """A repo default that would make every later add fail is refused; the file is not rewritten."""
    plain_repo.ok("config", "set", "memory", "4g")
    before = plain_repo.state_text()
    assert_refused(plain_repo.gs("config", "set", option.replace("-", "_"), value, env=NOWHERE), 2, message)
    assert plain_repo.state_text() == before


# --- devcontainer.json ---

@pytest.mark.parametrize("service", ["--ssh", "--tensorboard"])
def test_override_command_false_refuses_a_service(repo, tmp_path, service):
    """README: overrideCommand false runs the image's own command, so the services are refused
    (--jupyter is a row of devcontainer/test_devcontainer_fixtures.py)."""
    commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE, "overrideCommand": False}))
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyForTests test@host\n")
    flags = [service] + (["--ssh-key", str(key)] if service == "--ssh" else [])
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "svc", str(tmp_path / "wts" / "svc"), "--gpus", "none", *flags)
    assert_refused(result, 2, "overrideCommand to false", f"{service[2:]} cannot be started")
    assert repo.snapshot(tmp_path / "wts") == before


def _mounts(container) -> dict[str, dict]:
    return {mount["Destination"]: mount for mount in container.attrs["Mounts"]}


@pytest.mark.parametrize("target", ["/workspace", "/cache", "/cache/huggingface"])
def test_a_devcontainer_mount_is_never_put_over_our_own(repo, tmp_path, docker_client, target):
    """SECURITY.md: nothing the file names is mounted over the worktree, /data or the caches, trusted
    or not (/data is a row of devcontainer/test_devcontainer_fixtures.py); it is named instead."""
    volume = f"gpuspace-test-over-{os.getpid()}-{target.strip('/').replace('/', '-')}"
    commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE,
                                          "mounts": [f"type=volume,source={volume},target={target}"]}))
    try:
        result = repo.ok("add", "-b", "m", str(tmp_path / "m"), "--gpus", "none", "--no-start", "--trust")
        assert f"git-gpuspace mounts its own {target})" in result.stderr, result.stderr
        [container] = repo.containers()
        mounts = _mounts(container)
        assert all(m.get("Name") != volume for m in mounts.values())
        if target == "/workspace":
            assert mounts["/workspace"]["Source"] == str(tmp_path / "m")
        else:
            assert mounts["/cache/huggingface"]["Source"].endswith("git-gpuspace/shared/huggingface")
    finally:
        for container in repo.containers():
            container.remove(force=True)
        with contextlib.suppress(Exception):
            docker_client.volumes.get(volume).remove(force=True)


def test_a_trusted_run_arg_volume_over_the_data_dir_is_refused_and_leaves_nothing(repo, tmp_path):
    """Even trusted, `runArgs -v` over /data does not replace the binding's data dir: the add fails
    in one line and rolls back."""
    commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE, "runArgs": ["-v", f"{tmp_path}:/data"]}))
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "v", str(tmp_path / "wts" / "v"), "--gpus", "none", "--no-start", "--trust")
    assert_refused(result, 1, "/data")
    assert repo.snapshot(tmp_path / "wts") == before


def test_a_bind_mount_through_a_symlink_out_of_the_repository_needs_trust(repo, tmp_path):
    """SECURITY.md: bind mounts must resolve inside the repository; a tracked symlink to / is not inside."""
    (repo.path / "escape").symlink_to("/")
    commit_devcontainer(repo, json.dumps({
        "image": TEST_IMAGE, "mounts": ["source=${localWorkspaceFolder}/escape,target=/host,type=bind"]}))
    result = repo.ok("add", "-b", "s", str(tmp_path / "s"), "--gpus", "none", "--no-start")
    notice = next(line for line in result.stderr.splitlines() if "is not trusted, so it was made without" in line)
    assert f"mount of {tmp_path / 's' / 'escape'}" in notice
    [container] = repo.containers()
    assert "/host" not in _mounts(container)


def test_a_workspace_mount_of_anything_but_the_worktree_is_named_and_not_applied(repo, tmp_path):
    """README: workspaceMount must be the worktree."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    commit_devcontainer(repo, json.dumps({
        "image": TEST_IMAGE, "workspaceMount": f"source={outside},target=/src,type=bind", "workspaceFolder": "/src"}))
    result = repo.ok("add", "-b", "w", str(tmp_path / "w"), "--gpus", "none", "--no-start", "--trust")
    assert "only the worktree itself can be mounted" in result.stderr, result.stderr
    [container] = repo.containers()
    mounts = _mounts(container)
    assert mounts["/workspace"]["Source"] == str(tmp_path / "w") and "/src" not in mounts
    assert container.attrs["Config"]["WorkingDir"] == "/workspace"


def test_run_args_gpus_never_override_the_exclusive_allocation(repo, tmp_path):
    commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE, "runArgs": ["--gpus", "all"]}))
    result = repo.ok("add", "-b", "g", str(tmp_path / "g"), "--gpus", "1", "--no-start", "--trust")
    assert "runArgs --gpus all (GPUs come from the exclusive allocation)" in result.stderr
    [container] = repo.containers()
    [request] = container.attrs["HostConfig"]["DeviceRequests"]
    assert len(request["DeviceIDs"]) == 1
    assert len([g for g in json.loads(repo.ok("gpus", "--json").stdout) if not g["holders"]]) == 3


def test_an_existing_volume_with_driver_options_is_refused_untrusted(repo, tmp_path, docker_client):
    """A volume made as `-o bind,device=<dir>` is a host directory in disguise: it needs trust."""
    host_dir = tmp_path / "host-secrets"
    host_dir.mkdir()
    name = f"gpuspace-test-disguised-{os.getpid()}"
    docker_client.volumes.create(name, driver_opts={"type": "none", "o": "bind", "device": str(host_dir)})
    try:
        commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE, "mounts": [f"source={name},target=/v"]}))
        before = repo.snapshot(tmp_path / "wts")
        result = repo.gs("add", "-b", "v", str(tmp_path / "wts" / "v"), "--gpus", "none", "--no-start")
        assert_refused(result, 2, f"volume '{name}'", "driver options")
        assert repo.snapshot(tmp_path / "wts") == before
    finally:
        docker_client.volumes.get(name).remove(force=True)


def test_a_devcontainer_json_over_one_mib_is_refused(repo, tmp_path):
    commit_devcontainer(repo, '{"name": "' + "x" * (1 << 20) + '"}')
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "big", str(tmp_path / "wts" / "big"), "--gpus", "none")
    assert_refused(result, 2, "larger than 1 MiB")
    assert repo.snapshot(tmp_path / "wts") == before


def test_a_build_on_the_hosts_network_needs_trust(tmp_path):
    """README: untrusted, no build steps on the host's network (the build itself is fine)."""
    worktree = tmp_path / "wt"
    (worktree / ".devcontainer").mkdir(parents=True)
    (worktree / ".devcontainer" / "Dockerfile").write_text("FROM x\n")
    path = worktree / ".devcontainer" / "devcontainer.json"
    content = json.dumps({"build": {"dockerfile": "Dockerfile", "options": ["--network=host"]}}).encode()
    path.write_bytes(content)
    untrusted = devcontainer.load(path, content, worktree, worktree, False)
    assert "network_mode" not in untrusted.build.options
    assert untrusted.skipped == ["build.options --network host"]
    trusted = devcontainer.load(path, content, worktree, worktree, True)
    assert trusted.build.options.get("network_mode") == "host" and trusted.skipped == []


OUTSIDE_READS = [
    pytest.param({".devcontainer/Dockerfile": f"FROM {TEST_IMAGE}\n"},
                 {"build": {"dockerfile": "Dockerfile", "context": "{outside}"}}, "is outside the repository",
                 id="build-context"),
    pytest.param({}, {"image": TEST_IMAGE, "features": {"../../{outside_name}": {}}}, "is outside the repository",
                 id="feature-folder"),
]


@pytest.mark.parametrize("files, document, message", OUTSIDE_READS)
def test_a_devcontainer_json_cannot_read_the_host_outside_the_repository(repo, tmp_path, files, document, message):
    """SECURITY.md: a hostile repository must not read the host; what it names for a build stays in it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "devcontainer-feature.json").write_text("{}")
    (outside / "install.sh").write_text("cat /etc/hostname\n")
    text = json.dumps(document).replace("{outside}", str(outside)).replace("{outside_name}", "outside")
    commit_devcontainer(repo, text, extra=files)
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "o", str(tmp_path / "wts" / "o"), "--gpus", "none")
    assert_refused(result, 2, message)
    assert repo.snapshot(tmp_path / "wts") == before


def test_a_devcontainer_json_that_leads_out_of_the_repository_is_refused(repo, tmp_path):
    """A tracked symlink cannot make a file of the host the configuration."""
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"image": TEST_IMAGE, "postCreateCommand": "true"}))
    (repo.path / ".devcontainer").mkdir()
    (repo.path / ".devcontainer" / "devcontainer.json").symlink_to(outside)
    repo.git("add", ".")
    repo.git("commit", "-q", "-m", "a link out")
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "l", str(tmp_path / "wts" / "l"), "--gpus", "none")
    assert_refused(result, 2, "leads outside the repository")
    assert repo.snapshot(tmp_path / "wts") == before


# --- the state file is data, not authority (SECURITY.md) ---

@pytest.fixture
def bound(repo, tmp_path):
    """A binding made but not started: its container exists, holding what it holds."""
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none", "--no-start")
    return repo


PURGED = [
    pytest.param(lambda data_dir, victim, tmp: "relative/dir", id="relative-path"),
    pytest.param(lambda data_dir, victim, tmp: f"{data_dir}/../../../..", id="dot-dot"),
    pytest.param(lambda data_dir, victim, tmp: str(tmp / "link-to-ours"), id="symlink-to-our-own-data-dir"),
    pytest.param(lambda data_dir, victim, tmp: str(victim), id="copied-owner-mark"),
    pytest.param(lambda data_dir, victim, tmp: str(tmp / "nowhere" / "gpuspace-x"), id="outside-the-data-roots"),
]


@pytest.mark.parametrize("planted", PURGED)
def test_purge_refuses_a_data_dir_we_did_not_make(bound, tmp_path, planted):
    """SECURITY.md: the state file is data; a data_dir it names is deleted only if we made it."""
    data_dir = str(data_dir_of(bound, "exp"))
    victim = tmp_path / "victim"
    (victim / ".gpuspace").mkdir(parents=True)
    (victim / "precious.txt").write_text("keep")
    shutil.copy(f"{data_dir}/.gpuspace/owner", victim / ".gpuspace" / "owner")  # a copied mark proves nothing
    (tmp_path / "link-to-ours").symlink_to(data_dir)
    plant(bound, data_dir=planted(data_dir, victim, tmp_path))
    before = bound.snapshot(tmp_path)
    result = bound.gs("remove", "--purge", "--keep-worktree", str(tmp_path / "wt"))
    assert_refused(result, 1, "bindings[0].data_dir", "nothing was done")
    assert bound.snapshot(tmp_path) == before
    assert (victim / "precious.txt").read_text() == "keep" and Path(data_dir, ".gpuspace", "owner").is_file()


@pytest.fixture(scope="module")
def victim_container(docker_client):
    """Someone else's container, which no state file may make us stop or remove."""
    container = docker_client.containers.run(TEST_IMAGE, ["sleep", "600"], detach=True,
                                             name=f"victim-db-{os.getpid()}", labels={"test": "victim"})
    yield container
    container.remove(force=True)


@pytest.mark.parametrize("command", [["remove", "exp"], ["stop", "exp"], ["restart", "exp"], ["prune"]],
                         ids=["remove", "stop", "restart", "prune"])
def test_the_state_file_cannot_name_a_container_that_is_not_this_worktrees(bound, tmp_path, victim_container, command):
    """SECURITY.md: a planted container name makes no command stop or remove someone else's container."""
    plant(bound, container=victim_container.name)
    before = bound.snapshot(tmp_path)
    assert_refused(bound.gs(*command), 1, "bindings[0].container", "is not the name of this worktree's container")
    assert bound.snapshot(tmp_path) == before
    victim_container.reload()
    assert victim_container.status == "running"


@pytest.mark.parametrize("command", [["remove", "exp"], ["stop", "exp"], ["restart", "exp"]],
                         ids=["remove", "stop", "restart"])
def test_a_container_with_our_name_but_not_our_labels_is_left_alone(bound, tmp_path, docker_client, command):
    """SECURITY.md: stopped or removed only if the name is this worktree's *and* its labels say so."""
    [ours] = bound.containers()
    name = ours.name
    ours.remove(force=True)
    impostor = docker_client.containers.run(TEST_IMAGE, ["sleep", "600"], detach=True, name=name)
    try:
        impostor.reload()
        started = impostor.attrs["State"]["StartedAt"]
        before = (bound.state_text(), bound.branches(), sorted(p.name for p in tmp_path.iterdir()))
        assert_refused(bound.gs(*command), 1, f"container '{name}' does not belong to", "left alone")
        impostor.reload()
        assert impostor.status == "running" and impostor.attrs["State"]["StartedAt"] == started
        assert (bound.state_text(), bound.branches(), sorted(p.name for p in tmp_path.iterdir())) == before
    finally:
        impostor.remove(force=True)


WIDENING = [
    pytest.param("host_options", {"privileged": True}, id="privileged"),
    pytest.param("host_options", {"cap_add": ["SYS_ADMIN"]}, id="cap_add"),
    pytest.param("host_options", {"network_mode": "host"}, id="network_mode"),
    pytest.param("host_options", {"ipc_mode": "host"}, id="ipc_mode"),
    pytest.param("host_options", {"pid_mode": "host"}, id="pid_mode"),
    pytest.param("host_options", {"devices": ["/dev/fuse"]}, id="devices"),
    pytest.param("host_options", {"security_opt": ["seccomp=unconfined"]}, id="security_opt"),
    pytest.param("mounts", ["/:/host"], id="mounts-outside-the-repository"),
]


@pytest.mark.parametrize("key, value", WIDENING)
def test_the_state_file_cannot_widen_a_container(bound, tmp_path, key, value):
    """SECURITY.md: what widens a container applies only when a trusted devcontainer.json asks for
    it now; otherwise one error names the key and nothing is made."""
    for container in bound.containers():
        container.remove(force=True)  # `start` makes it again from the state file
    plant(bound, **{key: value})
    before = bound.state_text()
    named = f"bindings[0].{key}" + (f".{next(iter(value))}" if key == "host_options" else "")
    assert_refused(bound.gs("start", "exp"), 1, named, "nothing was done")
    assert bound.containers() == [] and bound.state_text() == before


def test_a_mount_source_swapped_for_a_symlink_is_refused_at_recreate(repo, tmp_path):
    commit_devcontainer(repo, '{"mounts": ["source=${localWorkspaceFolder}/datasets,target=/datasets,type=bind"]}',
                        extra={"datasets/README": "data\n"})
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none", "--no-start")
    [container] = repo.containers()
    shutil.rmtree(tmp_path / "wt" / "datasets")
    (tmp_path / "wt" / "datasets").symlink_to("/")  # what code in the container could do
    container.remove(force=True)
    before = repo.state_text()
    assert_refused(repo.gs("start", "exp"), 1, "bindings[0].mounts", "resolves to /,")
    assert repo.containers() == [] and repo.state_text() == before


def test_a_private_dir_replaced_by_a_symlink_is_refused(repo, tmp_path):
    """SECURITY.md: the host never writes through a `.gpuspace` a container replaced by a symlink."""
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none", "--no-start")
    data_dir = data_dir_of(repo, "exp")
    victim = tmp_path / "victim-dir"
    victim.mkdir()
    shutil.rmtree(data_dir / ".gpuspace")
    (data_dir / ".gpuspace").symlink_to(victim)
    for container in repo.containers():
        container.remove(force=True)
    before = repo.state_text()
    assert_refused(repo.gs("start", "exp"), 1, "is not a directory (a symlink?)")
    assert list(victim.iterdir()) == [] and repo.containers() == [] and repo.state_text() == before


# --- submodules and core.worktree (SECURITY.md: add/bind there are refused) ---

def test_bind_in_a_submodule_is_refused(tmp_path):
    """SECURITY.md: a submodule's git dir sets core.worktree; bind writes nothing into any git dir there."""
    inner = make_repo(tmp_path / "inner")
    outer = make_repo(tmp_path / "super")
    outer.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(inner.path), "mod")
    outer.git("commit", "-q", "-m", "add submodule")
    module = outer.path / ".git" / "modules" / "mod"
    listing = sorted(str(p.relative_to(outer.path / ".git")) for p in (outer.path / ".git").rglob("*")
                     if p.name not in ("index", "gpuspace.lock"))
    result = subprocess.run(["git-gpuspace", "bind", "--gpus", "none"], cwd=outer.path / "mod",
                            capture_output=True, text=True, env={**os.environ, **NOWHERE})
    assert_refused(result, 2, "sets core.worktree", "cannot bind worktrees here")
    assert sorted(str(p.relative_to(outer.path / ".git")) for p in (outer.path / ".git").rglob("*")
                  if p.name not in ("index", "gpuspace.lock")) == listing
    assert not (module / "gpuspace.toml").exists()


def test_bind_where_core_worktree_is_set_is_refused(plain_repo, tmp_path):
    """SECURITY.md: as for add, wherever core.worktree is set, before the engine is asked."""
    tree = tmp_path / "tree"
    tree.mkdir()
    plain_repo.git("config", "core.worktree", "../../tree")
    before = on_disk(plain_repo, tmp_path)
    result = plain_repo.gs("bind", "--gpus", "none", env=NOWHERE)
    assert_refused(result, 2, "sets core.worktree", "cannot bind worktrees here")
    assert on_disk(plain_repo, tmp_path) == before


# --- locks (SECURITY.md: waiting for a lock is bounded; the error names the lock and its holder) ---

def test_a_held_repo_lock_is_a_bounded_wait_that_names_its_holder(repo, tmp_path):
    """The GPU claim lock is reliability/test_lock_bounds.py's; this is the repository's own lock."""
    lock = repo.common_dir / "gpuspace.lock"
    before = repo.snapshot(tmp_path / "wts")
    with flock_held(lock) as holder:
        started = time.monotonic()
        result = repo.gs("add", "-b", "x", str(tmp_path / "wts" / "x"), "--gpus", "none",
                         env={"GPUSPACE_LOCK_TIMEOUT": "1"})
        elapsed = time.monotonic() - started
    assert_refused(result, 1, f"timed out after 1 s waiting for the lock {lock}", f"held by pid {holder.pid} (")
    assert 1 <= elapsed < 15
    assert repo.snapshot(tmp_path / "wts") == before


# --- verify (README: a pre-push hook refuses a push of commits whose tree has no `pass`, naming them) ---

@pytest.mark.parametrize("verdict", [None, "fail"], ids=["not-checked", "failed"])
def test_the_pre_push_hook_refuses_commits_without_a_pass(plain_repo, tmp_path, verdict):
    """The push is refused in one line naming the commit and its verdict; the remote keeps its branch."""
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    plain_repo.git("remote", "add", "origin", str(remote))
    plain_repo.git("push", "-q", "origin", "main")
    plain_repo.ok("verify", "add", "tests", "--gpus", "none", "--", "true")
    plain_repo.ok("hooks", "install", "--pre-push", "tests")
    plain_repo.git("commit", "-q", "--allow-empty", "-m", "unchecked")
    head = plain_repo.git("rev-parse", "HEAD").stdout.strip()
    if verdict:  # the user's own note, signed as `verify` signs it (an unsigned one is "not checked")
        from git_gpuspace import verify
        from git_gpuspace.git import worktrees

        verify._write(worktrees.discover(plain_repo.path), "tests", head, f"{verdict}\n\nexit code: 1\n",
                      also_tree=False)
    pushed = plain_repo.git("push", "origin", "main", check=False)
    assert pushed.returncode != 0
    refusals = [line for line in pushed.stderr.splitlines() if line.startswith("git-gpuspace: push refused")]
    assert len(refusals) == 1 and f"{head[:7]} (tests: {verdict or 'not checked'})" in refusals[0], pushed.stderr
    assert "Traceback" not in pushed.stderr and "git push --no-verify" in pushed.stderr
    assert git("rev-parse", "main", cwd=remote).stdout.strip() != head


# --- data dirs (README: `data rm` deletes orphaned ones; SECURITY.md: only a dir with our owner
# mark, not in use, named by the user) ---

def _data_root() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "git-gpuspace" / "workspaces"


DATA_RM = ["in-use-by-a-binding", "in-use-by-a-run", "not-ours", "copied-owner-mark", "orphaned-with-one-in-use",
           "none-named"]


@pytest.mark.parametrize("case", DATA_RM)
def test_data_rm_deletes_only_orphaned_data_dirs_of_ours(repo, tmp_path, case):
    """Checkpoints in use, or a directory we did not make, are never deleted; a refusal deletes nothing."""
    repo.ok("add", "-b", "keep", str(tmp_path / "keep"), "--gpus", "none", "--no-start")
    in_use = data_dir_of(repo, "keep")
    names, message = [], ""
    if case == "in-use-by-a-binding":
        names, message = [str(in_use)], f"{in_use} is in use by binding {tmp_path / 'keep'}"
    elif case == "in-use-by-a-run":
        repo.ok("run", "--gpus", "none", "--", "true")
        [run] = json.loads(repo.ok("runs", "--json").stdout)
        names, message = [Path(run["data_dir"]).name], f"is in use by run {run['id']}"
    elif case == "not-ours":
        (tmp_path / "precious").mkdir()
        names, message = [str(tmp_path / "precious")], "is not a data dir of git-gpuspace"
    elif case == "copied-owner-mark":
        fake = _data_root() / "gpuspace-someone-else"
        (fake / ".gpuspace").mkdir(parents=True)
        shutil.copy(in_use / ".gpuspace" / "owner", fake / ".gpuspace" / "owner")
        names, message = [fake.name], "is not a data dir of git-gpuspace"
    elif case == "orphaned-with-one-in-use":  # everything is checked before anything is deleted
        repo.ok("add", "-b", "drop", str(tmp_path / "drop"), "--gpus", "none", "--no-start")
        orphan = str(data_dir_of(repo, "drop"))
        repo.ok("remove", "drop")
        names, message = [orphan, str(in_use)], "is in use by binding"
    else:
        message = "name the data dirs to delete"
    for folder in (in_use, tmp_path, _data_root()):
        (folder / "canary").write_text("keep")
    before = sorted(str(p) for p in [*_data_root().rglob("*"), *tmp_path.glob("*")])
    assert_refused(repo.gs("data", "rm", *names), 2, message)
    assert sorted(str(p) for p in [*_data_root().rglob("*"), *tmp_path.glob("*")]) == before


# --- sweeps (README: sweep names are unique in the repo; --append adds runs to one) ---

def test_a_second_sweep_of_the_same_name_is_refused_without_append(repo, tmp_path):
    """Runs are found by their sweep's name: a second sweep of that name would mix two experiments."""
    repo.ok("sweep", "dup", "-p", "n=1", "--gpus", "none", "--", "echo", "{n}")
    before = (runs_file(repo), repo.git("for-each-ref").stdout, repo.snapshot(tmp_path))
    result = repo.gs("sweep", "dup", "-p", "n=2", "--gpus", "none", "--", "echo", "{n}")
    assert_refused(result, 2, "a sweep named 'dup' exists")
    assert (runs_file(repo), repo.git("for-each-ref").stdout, repo.snapshot(tmp_path)) == before


# --- export (README: a bound worktree, a run or a sweep; a Kubernetes Pod clones the commit
# from the repo's remote) ---

EXPORTS = [
    pytest.param(["nothing-here", "--to", "compose"], "is no run, sweep or worktree here", id="unknown-name"),
    pytest.param(["plain", "--to", "compose"], "has no container to export", id="unbound-worktree"),
    pytest.param(["exp", "--to", "k8s"], "clones the commit from a remote, and this repository has none",
                 id="k8s-without-a-remote"),
    pytest.param(["exp", "--to", "k8s"], "several but no 'origin'", id="k8s-with-remotes-but-no-origin"),
]


@pytest.mark.parametrize("arguments, message", EXPORTS)
def test_export_refuses_what_it_cannot_export_and_writes_no_file(bound, tmp_path, arguments, message):
    """A refused export writes no half file at -o."""
    bound.git("worktree", "add", "-q", "-b", "plain", str(tmp_path / "plain"))
    if "several" in message:
        bound.git("remote", "add", "one", "https://example.com/one.git")
        bound.git("remote", "add", "two", "https://example.com/two.git")
    out = tmp_path / "exported.json"
    before = bound.snapshot(tmp_path)
    assert_refused(bound.gs("export", *arguments, "-o", str(out)), 2, message)
    assert not out.exists() and bound.snapshot(tmp_path) == before


# --- Slurm (README: the job's container gets exactly the GPUs Slurm allocated, never all) ---

@pytest.fixture
def slurm_run(repo, tmp_path):
    """A run queued for Slurm, as `run --backend slurm` records it before `sbatch`: its detached
    worktree made, asking for 2 GPUs."""
    from git_gpuspace.runs import store

    worktree = tmp_path / "worktrees" / "runs" / "s-1"
    repo.git("worktree", "add", "-q", "--detach", str(worktree))
    queue = store.Runs(repo.common_dir / store.FILE_NAME)
    queue.runs.append(store.Run(id="s-1", command=["sh", "-c", "echo gpus=[$NVIDIA_VISIBLE_DEVICES]"],
                                commit=repo.git("rev-parse", "HEAD").stdout.strip(), worktree=str(worktree),
                                flags={"gpus": "2", "image": TEST_IMAGE}, backend="slurm", job="1"))
    queue.save()
    return repo


def test_a_slurm_task_refuses_a_gpu_the_node_does_not_list(slurm_run, monkeypatch):
    """A GPU Slurm names that the node's driver does not list is never guessed at: nothing starts."""
    monkeypatch.setenv("SLURM_JOB_GPUS", "7")
    before = runs_file(slurm_run)
    assert_refused(slurm_run.gs("_slurm-task", "s-1"), 1, "Slurm gave GPU 7, which this node's driver does not list")
    assert runs_file(slurm_run) == before and slurm_run.containers() == []


def test_a_slurm_task_without_an_allocation_gets_no_gpu_never_all(slurm_run, monkeypatch):
    """No SLURM_JOB_GPUS is no GPU, never every GPU of the node, whatever the run asked for."""
    monkeypatch.delenv("SLURM_JOB_GPUS", raising=False)
    monkeypatch.delenv("SLURM_STEP_GPUS", raising=False)
    result = slurm_run.gs("_slurm-task", "s-1")
    assert result.returncode == 0, result.stderr
    [record] = json.loads(slurm_run.ok("runs", "--json").stdout)
    assert record["state"] == "succeeded" and record["gpus"] == []
    assert "gpus=[]" in slurm_run.ok("logs", "s-1").stdout


# --- features from a registry (SECURITY.md: unpacked with tar's `data` filter: no absolute paths,
# links out of the folder or device files) ---

def feature_tar(*hostile: tarfile.TarInfo) -> bytes:
    """A feature's folder that would install fine, with `hostile` entries after its two files."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, text in (("devcontainer-feature.json", '{"id": "evil", "version": "1.0.0"}'),
                           ("install.sh", "#!/bin/sh\ntrue\n")):
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode = len(text), 0o755
            tar.addfile(info, io.BytesIO(text.encode()))
        for entry in hostile:
            data = b"planted\n" if entry.isreg() else None
            entry.size = len(data) if data else 0
            tar.addfile(entry, io.BytesIO(data) if data else None)
    return archive.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info


HOSTILE_ENTRIES = [
    pytest.param(lambda outside: [_entry("../" * 40 + str(outside)[1:] + "/planted")], id="dot-dot-path"),
    pytest.param(lambda outside: [_entry("link", tarfile.SYMTYPE, str(outside)), _entry("link/planted")],
                 id="symlink-out-of-the-folder"),
    pytest.param(lambda outside: [_entry("hard", tarfile.LNKTYPE, str(outside / "victim"))],
                 id="hard-link-out-of-the-folder"),
    pytest.param(lambda outside: [_entry("null", tarfile.CHRTYPE)], id="device-file"),
]


@pytest.mark.parametrize("entries", HOSTILE_ENTRIES)
def test_a_feature_archive_that_reaches_out_of_its_folder_is_refused(repo, tmp_path, feature_registry, entries):
    """A registry is not the repository: its archive cannot write, link or make devices outside the feature."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep\n")
    reference = feature_registry.serve("features/evil", "1", [feature_tar(*entries(outside))])
    commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE, "features": {reference: {}}}))
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "f", str(tmp_path / "wts" / "f"), "--gpus", "none")
    assert_refused(result, 2, f"cannot fetch feature {reference}")
    assert repo.snapshot(tmp_path / "wts") == before
    assert sorted(p.name for p in outside.iterdir()) == ["victim"] and (outside / "victim").read_text() == "keep\n"
    assert not features._cache_folder(reference)[1].exists()


def test_a_feature_archive_entry_with_an_absolute_path_stays_in_its_folder(tmp_path, feature_registry):
    """tar's data filter strips the leading / rather than refusing: the file lands inside the feature's folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    reference = feature_registry.serve("features/absolute", "1", [feature_tar(_entry(str(outside / "planted")))])
    folder = features.fetch_oci(reference)
    assert list(outside.iterdir()) == []
    assert (folder / str(outside / "planted")[1:]).read_text() == "planted\n"  # the leading / stripped
