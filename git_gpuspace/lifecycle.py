"""Steps shared by commands, hooks and reconcile: plan a binding, bind, unbind, recreate."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from . import allocate, boundary, config, data_dirs, gpus, services
from .devcontainer import compose, parser as devcontainer, features, image_metadata, remote_env, user_uid
from .engine import claim, container_env
from .git import private_git, worktrees
from .engine.containers import LABEL_GIT, LABEL_REPO, PRIVATE_GIT, ContainerSpec, Engine, container_name, labels_for
from .errors import GpuspaceError, UsageError
from .faults import checkpoint
from .installation import WORKSPACE
from .leases import leases, release_vanished
from .model import Binding, Gpu, PortMap, mount_parts
from .rollback import Rollback
from .settings import Settings, checked_settings
from .specs import parse_gpus
from .state import State


@dataclass(frozen=True)
class RunSpec:
    """What makes a container a run's: its main process is the command, and it is not restarted."""

    command: list[str]
    env: dict[str, str]
    labels: dict[str, str]


@dataclass
class Plan:
    """An engine that answered, an image that is there, and GPUs that looked free."""

    settings: Settings
    engine: Engine
    inventory: list[Gpu]
    # ids of finished runs' containers, removed right after this claim: their GPUs count as free.
    # By id: a run started again gets a new container of the same name, which holds its GPUs.
    released: frozenset[str] = frozenset()
    claim_wait: float | None = claim.TIMEOUT_S  # how long to wait for another holder of the GPU claim


def prepare(settings: Settings, engine: Engine | None = None, released: frozenset[str] = frozenset()) -> Plan:
    """Connect, check the GPUs could be had, and pull the image: all before creating anything.

    The GPU check here only refuses early; the claim in `bind_worktree` is the one that counts.
    """
    engine = engine or Engine()
    plan = Plan(settings, engine, gpus.inventory() if not settings.request.none else [], released)
    if not settings.request.none:  # the ledger (and the GPUs' own process lists) only when GPUs are asked for
        managed = release_vanished(engine, engine.list_managed())
        allocate.choose(settings.request, plan.inventory,
                        leases([c for c in managed if c.id not in released]), settings.share, settings.pack)
    if settings.initialize is not None:
        _initialize(*settings.initialize)
    image, platform = settings.image, settings.container_options.get("platform")
    if settings.compose is not None:
        return plan  # Compose builds and pulls the project's images, for the worktree's own project (_claim_and_create)
    # runArgs --platform: every image the container runs is pulled or built for it
    if settings.build is not None:
        build = settings.build
        if platform and "platform" not in build.options:
            build = replace(build, options={**build.options, "platform": platform})
        image = _built_image(engine, build)
    else:
        engine.ensure_image(image, platform)
    plan.settings = _on_image(engine, settings, image, platform)
    return plan


def _on_image(engine: Engine, settings: Settings, image: str, platform: str | None) -> Settings:
    """The settings for a container of `image` (present): the image's devcontainer.metadata
    merged in, the features installed on it, and a non-root user given your uid."""
    base_entries = image_metadata.entries_of(((engine.image_attrs(image) or {}).get("Config") or {}).get("Labels"))
    settings = with_image_metadata(settings, base_entries)
    if settings.features:
        image = _image_with_features(engine, image, settings, base_entries, platform)
    account = settings.remote_user or settings.container_user
    with_your_uid = user_uid.uid_image(engine, image, account, platform) if os.getuid() != 0 else None
    if with_your_uid is not None:
        image = with_your_uid
        settings = replace(settings, container_user=account, user_has_your_uid=True)
    return replace(settings, image=image)


def with_image_metadata(settings: Settings, entries: list[dict]) -> Settings:
    """The image's devcontainer.metadata under the file's own settings: users, userEnvProbe,
    remoteEnv and containerEnv (lifecycle commands are read from the container's image when
    they run: `run_lifecycle`)."""
    if not entries:
        return settings
    own = {"remoteUser": settings.remote_user, "containerUser": settings.container_user,
           "userEnvProbe": settings.user_env_probe, "remoteEnv": settings.remote_env}
    merged = image_metadata.merge([*entries, own])
    return replace(settings, remote_user=merged.remote_user, container_user=merged.container_user,
                   user_env_probe=merged.user_env_probe, remote_env=merged.remote_env,
                   env={**merged.container_env, **settings.env})


def _initialize(command, worktree: Path) -> None:
    """A trusted devcontainer.json's initializeCommand: on the host, as the user, in the worktree,
    before the image is pulled or built (as the reference runs it). A failure makes nothing."""
    steps = list(command.items()) if isinstance(command, dict) else [("", command)]
    running = []
    for name, step in steps:  # an object's commands run side by side, as the reference runs them
        argv = ["/bin/sh", "-c", step] if isinstance(step, str) else [str(part) for part in step]
        print(f"Running initializeCommand{f' {name}' if name else ''} on the host: "
              f"{step if isinstance(step, str) else shlex.join(argv)}", file=sys.stderr)
        try:
            running.append((name, subprocess.Popen(argv, cwd=worktree, stdin=subprocess.DEVNULL,
                                                   stdout=sys.stderr, stderr=sys.stderr)))
        except OSError as error:
            raise GpuspaceError(f"initializeCommand could not start: {error.strerror or error}; nothing was made") from None
    failed = [(name, code) for name, process in running if (code := process.wait()) != 0]
    if failed:
        name, code = failed[0]
        raise GpuspaceError(f"initializeCommand{f' {name}' if name else ''} exited with {code}; nothing was made",
                            hint="it is the devcontainer.json's, run on this host: fix it, or the file")


def _built_image(engine: Engine, build: devcontainer.Build) -> str:
    """The Dockerfile's image, built unless an image of the same inputs (base images too) exists."""
    base_ids = {}
    for base in build.base_images():
        base_id = engine.image_id(base)
        if base_id is None:  # the build would pull it; pulled now so that its id is part of the tag
            engine.pull(base, platform=build.options.get("platform"))
            base_id = engine.image_id(base) or ""
        base_ids[base] = base_id
    tag = build.tag(base_ids)
    if not engine.has_image(tag):
        engine.build(build.context, build.dockerfile, tag, build.args, target=build.target,
                     cache_from=build.cache_from, **build.options)
    return tag


def _image_with_features(engine: Engine, base: str, settings: Settings, base_entries: list[dict],
                         platform: str | None) -> str:
    """`base` with the features installed, in the order installsAfter asks for; its
    devcontainer.metadata label is the base image's entries, then each feature's, as the
    reference records them."""
    attrs = engine.image_attrs(base) or {}  # there: pulled or built just before
    label = image_metadata.label_value([*base_entries, *(image_metadata.feature_entry(f.key, f.metadata)
                                                         for f in settings.features)])
    derived = features.DerivedImage(base, attrs.get("Id", ""), (attrs.get("Config") or {}).get("User") or "",
                                    list(settings.features), settings.container_user,  # in install order
                                    settings.remote_user, labels={image_metadata.LABEL: label})
    tag = derived.tag()
    if not engine.has_image(tag):
        context = derived.context()
        try:
            engine.build(context, context / "Dockerfile", tag, {}, labels=derived.labels, platform=platform,
                         what=f"features {', '.join(f.key for f in derived.features)}")
        finally:
            shutil.rmtree(context, ignore_errors=True)
    return tag


def _claim_volumes(engine: Engine, settings: Settings, common_dir: Path, undo: Rollback) -> None:
    """A named volume an untrusted devcontainer.json (or the state file) names is one this
    repository made, or is made now, labelled for it: an existing volume of anyone else's may
    hold their data, and one with driver options may be a host directory (`-o bind,device=/`)."""
    for mount in settings.mounts:
        kind, source, target, _ = mount_parts(mount)
        if kind != "volume" or not source or mount in settings.trusted_mounts:
            continue
        attrs = engine.volume_attrs(source)
        if attrs is None:
            engine.create_volume(source, {LABEL_REPO: str(common_dir)})
            undo.push(f"remove volume {source}", lambda name=source: engine.remove_volume(name))
            continue
        hint = "review the file and trust it (`git gpuspace trust`, or --trust) to mount it"
        if attrs.get("Options"):
            raise UsageError(f"the devcontainer.json mounts volume '{source}' at {target}, an existing volume with "
                             f"driver options ({', '.join(sorted(attrs['Options']))}): it may be a host directory; "
                             f"nothing was made", hint=hint)
        if (attrs.get("Labels") or {}).get(LABEL_REPO) != str(common_dir):
            raise UsageError(f"the devcontainer.json mounts volume '{source}' at {target}, an existing volume this "
                             f"repository did not make: it may hold another project's data; nothing was made", hint=hint)


def bind_worktree(
    info: worktrees.RepoInfo,
    plan: Plan,
    state: State,
    worktree: worktrees.Worktree,
    *,
    start: bool,
    undo: Rollback,
    replacing: Binding | None = None,
) -> tuple[Binding, list[Gpu]]:
    """Claim GPUs and ports, create (and maybe start) the container, record the binding.

    `replacing`: a binding whose container gives way to this one (its GPUs pass over).
    """
    settings = plan.settings
    name = container_name(info.name, worktree.path, info.common_dir)
    data_dir = _data_dir(settings, name, undo, (info.common_dir, worktree.path))
    private = _private_git(info, worktree, name, replacing, undo)
    binds = _container_binds(info, worktree, settings, data_dir, private)
    old = replacing.container if replacing else None
    chosen, ports = _claim_and_create(info, plan, name, worktree, data_dir, binds, undo, old, keep_up=start)
    checkpoint("after-container-create")
    container_env.write_context(data_dir, container_env.context(worktree.path, worktree.branch, worktree.head))
    if start:
        plan.engine.start(name)
        checkpoint("after-container-start")
    binding = Binding(
        path=str(worktree.path),
        container=name,
        image=plan.settings.image,  # a Compose service's, known once its project's images are there
        branch=worktree.branch,
        gpus=[gpu.uuid for gpu in chosen],
        limits=settings.limits,
        share=settings.share,
        worktree_id=worktree.admin_id,
        gpu_request=settings.gpu_spec,
        ports=ports,
        data_dir=str(data_dir),
        **_kept_settings(settings),
    )
    state.bindings = [b for b in state.bindings if b is not replacing and b.path != binding.path]
    state.bindings.append(binding)  # (a pending binding for this worktree is replaced too)
    state.save()
    return binding, chosen


def _private_git(info: worktrees.RepoInfo, worktree: worktrees.Worktree, name: str, replacing: Binding | None,
                 undo: Rollback) -> private_git.PrivateGit:
    """The container's own git dir: made from the worktree now, or the one of the binding this
    container replaces (what its container committed there stays, under the new name)."""
    private = private_git.for_container(name)
    before = private_git.for_container(replacing.container) if replacing is not None else None
    if before is not None and before.exists():
        private_git.move(before, private)
        undo.push(f"move private git dir back to {before.home}", lambda: private_git.move(private, before))
        if replacing.repo not in (None, str(info.common_dir)):  # the repository moved, its objects with it
            private_git.repoint_objects(private, info.common_dir / "objects")
        return private
    private_git.create(info, worktree, private)
    undo.push(f"remove private git dir {private.home}", lambda: private_git.remove(private))
    checkpoint("after-private-git")
    return private


def _kept_settings(settings: Settings) -> dict:
    """What a binding keeps of its devcontainer.json, to make its container again as it was."""
    return dict(env=dict(settings.env), mounts=list(settings.mounts), host_options=dict(settings.host_options),
                devcontainer=settings.devcontainer, workspace=settings.workspace, workdir=settings.workdir,
                container_user=settings.container_user, remote_user=settings.remote_user,
                remote_env={name: value for name, value in settings.remote_env.items() if value is not None},
                user_env_probe=settings.user_env_probe,
                override_command=settings.override_command, container_options=dict(settings.container_options))


def _data_dir(settings: Settings, name: str, undo: Rollback, origin: tuple[Path, Path]) -> Path:
    if settings.data_dir:
        path, made = data_dirs.create_data_dir(Path(settings.data_dir).parent, Path(settings.data_dir).name, origin)
    else:
        root = Path(os.path.expanduser(settings.data_root)) if settings.data_root else config.default_data_root()
        path, made = data_dirs.create_data_dir(root, name, origin)
    if made:
        undo.push(f"remove data dir {path}", lambda: shutil.rmtree(path, ignore_errors=True))
        checkpoint("after-data-dir")
    names = {port.name for port in settings.ports}
    if "jupyter" in names:
        services.jupyter_token(path)
    if "ssh" in names:
        services.install_ssh_keys(path, [Path(key) for key in settings.ssh_keys] or None)
    return path


def _container_binds(info: worktrees.RepoInfo, worktree: worktrees.Worktree, settings: Settings,
                     data_dir: Path, private: private_git.PrivateGit | None) -> list[tuple[str, str, bool]]:
    """The git dir as boundary.py lays it out, then the data dir, caches and asked-for mounts.
    `private`: the binding's own git dir; a run (None) gets no writable git."""
    hooks_path = worktrees.config_value(info, "core", "hooksPath")
    binds = boundary.git_binds(worktree.path, info.common_dir, worktree.is_main, private, hooks_path,
                               settings.workspace or WORKSPACE)
    return binds + _workspace_binds(settings, data_dir)


def _workspace_binds(settings: Settings, data_dir: Path) -> list[tuple[str, str, bool]]:
    caches = container_env.ensure_caches()
    binds = [(str(data_dir), data_dirs.DATA_MOUNT, False)]
    binds += [(str(caches / cache), f"{container_env.CACHE_MOUNT}/{cache}", False) for cache in container_env.CACHES]
    # sshd looks the user up: a bare uid needs an account (an image's own account given your uid has one)
    if any(port.name == "ssh" for port in settings.ports) and os.getuid() != 0 and not settings.user_has_your_uid:
        passwd, group = services.accounts(os.getuid(), os.getgid())
        binds += [(str(passwd), "/etc/passwd", True), (str(group), "/etc/group", True)]
    for mount in settings.mounts:
        kind, source, target, read_only = mount_parts(mount)
        if kind == "bind":
            binds.append((source, target, read_only))
    return binds


def _claim_and_create(
    info: worktrees.RepoInfo,
    plan: Plan,
    name: str,
    worktree: worktrees.Worktree,
    data_dir: Path,
    binds: list[tuple[str, str, bool]],
    undo: Rollback,
    replacing: str | None = None,
    run: RunSpec | None = None,
    keep_up: bool = True,
) -> tuple[list[Gpu], list[PortMap]]:
    """Atomic across every repo on the host: the engine's GPU claim is held from reading the
    leases (container labels) until the new labelled container exists."""
    settings, engine = plan.settings, plan.engine
    if settings.compose is not None:  # its images built or pulled before the claim, as any image is
        if run is not None:
            raise UsageError("a run's container cannot come from a Compose-based devcontainer.json; nothing was made",
                             hint="give the run --image, or a devcontainer.json with \"image\" or \"build\"")
        service_image = compose.prepare(settings.compose, name, engine.has_image)
        settings = plan.settings = _on_image(engine, settings, service_image, settings.container_options.get("platform"))
    elif replacing is not None and compose.recorded(replacing):  # the state file does not say what the project was
        raise UsageError(f"{replacing} is the service of a Compose project, which cannot be made again from the state "
                         f"file; nothing was changed", hint="`git gpuspace remove --keep-worktree`, then `git gpuspace "
                                                            "bind --trust`, makes the project again")
    with claim.engine_claim(engine, settings.image, plan.claim_wait):
        managed = engine.list_managed()
        if not settings.request.none:
            managed = release_vanished(engine, managed)
        # `name` taken by a container of ours means no binding claims it (an interrupted command).
        for gone in {name, replacing} & {container.name for container in managed}:
            engine.remove(gone)
        managed = [container for container in managed
                   if container.name not in (name, replacing) and container.id not in plan.released]
        chosen = allocate.choose(settings.request, plan.inventory, leases(managed) if not settings.request.none else {},
                                 settings.share, settings.pack)
        ports: list[PortMap] = []
        if settings.ports:
            reserved = {port.host_port for container in managed for port in container.ports}
            ports = allocate.choose_ports(
                list(settings.ports), reserved | engine.published_ports(), settings.address,
                services.host_port_free, str(worktree.path),
            )
        uuids = [gpu.uuid for gpu in chosen]
        _claim_volumes(engine, settings, info.common_dir, undo)
        # a Compose-based file's: the bound service of the worktree's own project, made by Compose
        create = engine.create if settings.compose is None else \
            (lambda spec: compose.up(settings.compose, spec))
        create(
            ContainerSpec(
                name=name,
                image=settings.image,
                worktree=worktree.path,
                labels={**labels_for(info.common_dir, worktree.path, worktree.branch, uuids, settings.share, ports,
                                     settings.pack[0] if settings.pack else ""),
                        **(run.labels if run else {LABEL_GIT: PRIVATE_GIT})},
                gpus=uuids,
                limits=settings.limits,
                ports=ports,
                env={**container_env.environment(ports, container_env.context(worktree.path, worktree.branch, worktree.head)),
                     **settings.env, **(run.env if run else {})},
                binds=binds,
                command=run.command if run else services.command() if settings.override_command else None,
                host_options=settings.host_options,
                volumes=[parts for parts in map(mount_parts, settings.mounts) if parts[0] != "bind"],
                workspace=settings.workspace or WORKSPACE,
                workdir=settings.workdir or settings.workspace or WORKSPACE,
                user=settings.container_user,
                user_has_your_uid=settings.user_has_your_uid,
                restart=run is None and keep_up,
                container_options=settings.container_options,
            )
        )
        undo.push(f"remove container {name}", lambda: engine.remove(name))
    return chosen, ports


def create_run(info: worktrees.RepoInfo, plan: Plan, worktree: worktrees.Worktree, run: RunSpec,
               undo: Rollback) -> tuple[str, list[Gpu], Path]:
    """Claim GPUs for a run and create its container, not started: (container name, GPUs, data
    dir). Its GPUs are in the ledger from here; the caller records the start before it starts it."""
    name = container_name(info.name, worktree.path, info.common_dir)
    data_dir = _data_dir(plan.settings, name, undo, (info.common_dir, worktree.path))
    binds = _container_binds(info, worktree, plan.settings, data_dir, None)
    chosen, _ = _claim_and_create(info, plan, name, worktree, data_dir, binds, undo, run=run)
    return name, chosen, data_dir


def start_run(info: worktrees.RepoInfo, plan: Plan, worktree: worktrees.Worktree, run: RunSpec,
              undo: Rollback) -> tuple[str, list[Gpu], Path]:
    """Claim GPUs for a run and start its container: (container name, GPUs, data dir)."""
    name, chosen, data_dir = create_run(info, plan, worktree, run, undo)
    plan.engine.start(name)
    return name, chosen, data_dir


def record_pending(state: State, info: worktrees.RepoInfo, worktree: worktrees.Worktree, settings: Settings, reason: str) -> Binding:
    """The worktree should have a container but cannot yet: keep the wish and the reason."""
    binding = Binding(
        path=str(worktree.path),
        container=container_name(info.name, worktree.path, info.common_dir),
        image=settings.image,
        branch=worktree.branch,
        limits=settings.limits,
        share=settings.share,
        worktree_id=worktree.admin_id,
        gpu_request=settings.gpu_spec,
        pending=reason,
        ports=[PortMap(p.name, p.container_port, p.host_port or 0, settings.address, p.origin) for p in settings.ports],
        data_dir=settings.data_dir,
        **_kept_settings(settings),
    )
    state.remove(binding.path)
    state.bindings.append(binding)
    state.save()
    return binding


def recreate(info: worktrees.RepoInfo, engine: Engine, state: State, binding: Binding, worktree: worktrees.Worktree) -> Binding:
    """A new container for a binding (worktree moved, container lost), with the same GPUs,
    ports and data dir.

    The old container goes inside the same GPU claim that claims its GPUs again, so no
    other repo can take them in between.
    """
    same_gpus = ",".join(binding.gpus) or "none"
    settings = replace(checked_settings(info, state.path, state.bindings.index(binding), binding, worktree),
                       gpu_spec=binding.gpu_request or same_gpus, request=parse_gpus(same_gpus))
    engine.ensure_image(binding.image)
    plan = Plan(settings, engine, gpus.inventory() if binding.gpus else [])
    with Rollback() as undo:
        new, _ = bind_worktree(info, plan, state, worktree, start=True, undo=undo, replacing=binding)
    return new


def unbind(engine: Engine, state: State, binding: Binding) -> None:
    """Forget the binding, then stop and delete the container (releasing its GPUs).

    In this order a crash in between leaves a container no binding claims, which the next
    reconcile removes; the other order would leave a binding whose container is gone.
    """
    owner = owner_of(state, binding)
    engine.require_owner(binding.container, owner)  # before forgetting the binding: nothing done if not ours
    state.remove(binding.path)
    state.save()
    checkpoint("after-unbind-save")
    engine.remove(binding.container)
    private_git.remove(private_git.for_container(binding.container))
    remote_env.forget(binding.container)


def owner_of(state: State, binding: Binding) -> tuple[str, str]:
    """The (repo, worktree) labels the binding's container must carry: the repo it was made in,
    which the state file vouches for when the repository has moved since (state._named_under)."""
    return binding.repo or str(state.path.parent), binding.path


def resolve_worktree(info: worktrees.RepoInfo, target: str | None) -> worktrees.Worktree:
    """A worktree named by path, by directory name or by branch; default: the one we are in."""
    known = worktrees.list_worktrees(info)
    if target is None:
        here = Path.cwd().resolve()
        inside = [w for w in known if not w.prunable and (here == w.path.resolve() or w.path.resolve() in here.parents)]
        if inside:
            return max(inside, key=lambda w: len(str(w.path)))
        raise UsageError("not inside a worktree", hint="name the worktree by path, directory name or branch")
    found = worktrees.find_worktree(info, Path(target))
    if found is not None:
        return found
    matches = [w for w in known if target in (w.path.name, w.branch)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        paths = ", ".join(str(w.path) for w in matches)
        raise UsageError(f"'{target}' names several worktrees: {paths}", hint="give the path")
    raise UsageError(f"no worktree '{target}' in this repository", hint="`git gpuspace status` lists them")


def default_worktree_path(info: worktrees.RepoInfo, branch: str) -> Path:
    """The usual convention: ../worktrees/<branch> beside the main worktree."""
    return info.anchor.parent / "worktrees" / branch.replace("/", "-")


def absolute(path: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def require_unbound(state: State, path: Path) -> None:
    existing = state.find(path)
    if existing is not None and not existing.pending:
        raise GpuspaceError(f"'{path}' is already bound", hint="see `git gpuspace status`")


def run_of_worktree(info: worktrees.RepoInfo, worktree: worktrees.Worktree):
    """The run whose worktree this is (under ../worktrees/runs/), else None. One row of the run
    store, by the directory's name: cheap enough for an error path."""
    from .runs import store as run_store

    try:
        run = run_store.load(info.common_dir, ids={worktree.path.name}).find(worktree.path.name)
    except GpuspaceError:  # an unreadable run store is not what the caller asks about
        return None
    return run if run is not None and Path(run.worktree).resolve() == worktree.path.resolve() else None


def not_bound(info: worktrees.RepoInfo, worktree: worktrees.Worktree, verb: str) -> GpuspaceError:
    """The error for a worktree without a binding. A run's worktree has none by design: its
    container is the run's, so the error names the run and the verbs that act on it."""
    run = run_of_worktree(info, worktree)
    if run is None:
        return GpuspaceError(f"'{worktree.path}' is not bound to a container", hint="`git gpuspace bind` binds it")
    if run.state not in ("queued", "running"):  # ended: its container is gone already
        hint = f"`git gpuspace logs {run.id}` shows its output, `git gpuspace runs clean` removes its worktree"
    elif verb == "stop":
        hint = f"git gpuspace runs stop {run.id}"
    elif verb == "remove":
        hint = f"`git gpuspace runs stop {run.id}`, then `git gpuspace runs clean` removes its worktree"
    else:
        hint = f"`git gpuspace logs {run.id}` shows its output, `git gpuspace runs stop {run.id}` stops it"
    return GpuspaceError(f"'{worktree.path}' is the worktree of run {run.id} ({run.state}), not a bound worktree",
                         hint=hint)
