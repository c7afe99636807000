"""features.py exactly: a Dev Container Feature's metadata, its resolution, install order and
derived image, and fetching it from a registry (conftest's in-process one, feature_registry).

Every message a user reads is pinned in full, and every boundary, so that scripts/mutation's
changes to the module fail a test. Engine-free and fast."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tarfile
import tempfile
from pathlib import Path

import pytest

from git_gpuspace.devcontainer import parser as devcontainer, features
from git_gpuspace.errors import UsageError

from helpers import FEATURE_TAR, cache_of, feature_folder, fetch_refusal, list_in_reverse, parse, tar_of, where

# ---------------------------------------------------------------- features: Feature


@pytest.mark.parametrize("key,id_", [("./my-feature", "my-feature"), ("../up/feat", "feat"),
                                     ("ghcr.io/devcontainers/features/python:1", "python"),
                                     ("ghcr.io/x/node", "node"), (f"ghcr.io/x/y@sha256:{'a' * 64}", "y"),
                                     ("localhost:5000/features/hello:1", "hello")])
def test_a_features_id_is_its_last_path_part_without_tag(tmp_path, key, id_):
    assert features.Feature(key, tmp_path).id == id_


def test_feature_options_become_the_install_scripts_environment(tmp_path):
    metadata = {"options": {"version": {"default": "latest"}, "ppa-x.y": {"default": True}, "no-default": {"type": "string"},
                            "nul": {"default": None}, "odd": "not an object", "2fast": {"default": 2}}}
    feature = features.Feature("./f", tmp_path, {"version": "3.11", "extra": False}, metadata)
    assert feature.environment() == {"VERSION": "3.11", "PPA_X_Y": "true", "NUL": "null", "_FAST": "2", "EXTRA": "false"}


def test_a_version_string_is_the_version_option(tmp_path):
    metadata = {"options": {"version": {"default": "latest"}, "other": {"default": "o"}}}
    assert features.Feature("./f", tmp_path, "3.11", metadata).environment() == {"VERSION": "3.11", "OTHER": "o"}
    assert features.Feature("./f", tmp_path, "3.11", {"options": {"other": {"default": "o"}}}).environment() == {"OTHER": "o"}
    assert features.Feature("./f", tmp_path, "3.11", {}).environment() == {}
    assert features.Feature("./f", tmp_path, {}, {"options": None}).environment() == {}


@pytest.mark.parametrize("name,safe", [("a-b.c", "A_B_C"), ("1abc", "_ABC"), ("__x", "_X"), ("_1x", "_X"), ("x_1", "X_1"),
                                       ("12", "_"), ("é", "É")])
def test_option_names_become_shell_names_as_in_the_reference(tmp_path, name, safe):
    assert list(features.Feature("./f", tmp_path, {name: "v"}, {}).environment()) == [safe]


def test_a_features_container_env_is_text(tmp_path):
    feature = features.Feature("./f", tmp_path, {}, {"containerEnv": {"A": 1, "B": True, "C": None, "D": "x"}})
    assert feature.container_env() == {"A": "1", "B": "true", "C": "null", "D": "x"}
    assert features.Feature("./f", tmp_path, {}, {"containerEnv": ["A=1"]}).container_env() == {}
    assert features.Feature("./f", tmp_path, {}, {}).container_env() == {}


# ---------------------------------------------------------------- features: resolve


def resolve(tmp_path, key, options=None, fetch=None):
    base = tmp_path / "wt" / ".devcontainer"
    base.mkdir(parents=True, exist_ok=True)
    return features.resolve(base / "devcontainer.json", key, options, base, tmp_path / "wt", tmp_path / "wt", fetch)


def resolve_refusal(tmp_path, key, options=None, fetch=None) -> UsageError:
    with pytest.raises(UsageError) as refused:
        resolve(tmp_path, key, options, fetch)
    return refused.value


def test_a_local_feature_is_its_folder_and_metadata(tmp_path):
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f", '// comment\n{"id": "f", "options": {},}')
    feature = resolve(tmp_path, "./f", {"a": 1})
    assert (feature.key, feature.folder, feature.options, feature.metadata) == ("./f", folder, {"a": 1}, {"id": "f", "options": {}})
    feature_folder(tmp_path / "wt" / ".devcontainer" / "deep", "up")
    assert resolve(tmp_path, "./deep/up").folder == tmp_path / "wt" / ".devcontainer" / "deep" / "up"


@pytest.mark.parametrize("options,kept", [(None, {}), (True, {}), (False, {}), ("1.2", "1.2"), ({"a": "b"}, {"a": "b"})])
def test_feature_options_may_be_empty_a_version_or_an_object(tmp_path, options, kept):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    feature = resolve(tmp_path, "./f", options)
    assert feature.options == kept and type(feature.options) is type(kept)


def test_feature_options_are_a_copy(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    options = {"a": "b"}
    resolve(tmp_path, "./f", options).options["c"] = "d"
    assert options == {"a": "b"}


@pytest.mark.parametrize("options", [1, ["a"], 1.5])
def test_feature_options_of_another_kind_are_refused(tmp_path, options):
    error = resolve_refusal(tmp_path, "./f", options)
    assert str(error) == f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: the options of feature ./f must be an object"


def test_a_feature_outside_the_repository_is_refused(tmp_path):
    feature_folder(tmp_path, "outside")
    error = resolve_refusal(tmp_path, "../../outside")
    assert str(error) == f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature ../../outside is outside the repository"


def test_a_feature_in_the_repository_beyond_the_worktrees_devcontainer_folder_is_refused(tmp_path):
    """The reference's rule: a local feature is under the worktree's .devcontainer/."""
    worktree, repo = tmp_path / "wt", tmp_path / "repo"
    feature_folder(repo, "f")
    (worktree / ".devcontainer").mkdir(parents=True)
    path = worktree / ".devcontainer" / "devcontainer.json"
    with pytest.raises(UsageError) as refused:
        devcontainer.load(path, b'{"features": {"../../repo/f": {}}}', worktree, repo, True)
    assert str(refused.value) == (f"{path}: feature ../../repo/f: Local file path parse error. Resolved path must be a "
                                  f"child of the .devcontainer/ folder.  Parsed: {repo / 'f'}")


def test_a_short_id_of_the_old_format_is_refused(tmp_path):
    error = resolve_refusal(tmp_path, "pytorch")
    assert str(error) == (f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature 'pytorch' names neither a "
                          f"folder nor a registry: a feature in a folder is written \"./pytorch\"")
    assert error.hint == "the short ids of the old feature format are not supported"
    error = resolve_refusal(tmp_path, "python")  # one the reference maps to its published form
    assert str(error) == (f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: Could not resolve Feature "
                          f"'python': the short ids of the old feature format are not supported")
    assert error.hint == 'its current form is "ghcr.io/devcontainers/features/python:1"'


@pytest.mark.parametrize("key", ["ghcr.io/devcontainers/features/python:1", "ghcr.io/x/node", "localhost:5000/f/hello:1.0",
                                 "localhost:5000/f/hello",
                                 f"ghcr.io/x/y@sha256:{'0' * 64}", "a.b-c/d_e/f.g-h:v_1.2-3"])
def test_a_registry_reference_is_fetched(tmp_path, key):
    fetched = []

    def fetch(reference):
        fetched.append(reference)
        return feature_folder(tmp_path / "cache", "x")

    assert resolve(tmp_path, key, fetch=fetch).folder == tmp_path / "cache" / "x"
    assert fetched == [key]


@pytest.mark.parametrize("key", ["https://example.com/f.tgz", "GHCR.io/x/y:1", "ghcr.io/x/y:", "ghcr.io/x/y:a:b",
                                 "ghcr.io/x/y@sha256:abc", "ghcr.io:port/x/y", "ghcr.io/x/Y"])
def test_a_reference_of_another_kind_is_not_supported(tmp_path, key):
    assert resolve(tmp_path, key, fetch=lambda reference: pytest.fail("fetched")) is None


def test_without_a_fetcher_a_reference_is_pulled_from_its_registry(tmp_path, monkeypatch):
    pulled = []

    def fetch_oci(reference):
        pulled.append(reference)
        return feature_folder(tmp_path / "cache", "x")

    monkeypatch.setattr(features, "fetch_oci", fetch_oci)
    assert resolve(tmp_path, "ghcr.io/x/y:1").folder == tmp_path / "cache" / "x"
    assert pulled == ["ghcr.io/x/y:1"]


@pytest.mark.parametrize("missing", ["devcontainer-feature.json", "install.sh"])
def test_a_feature_without_its_files_is_refused(tmp_path, missing):
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    (folder / missing).unlink()
    (folder / missing).mkdir()  # not a file either
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature ./f has no {missing}"
    assert error.hint == f"a feature is a folder with devcontainer-feature.json and install.sh (looked in {folder})"


def test_a_feature_whose_metadata_does_not_parse_is_refused(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", "{")
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == (f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature ./f: "
                          f"devcontainer-feature.json is not valid JSON: <string>:1 Unexpected end of input at column 2")


def test_a_feature_whose_metadata_is_not_utf8_is_refused(tmp_path):
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    (folder / "devcontainer-feature.json").write_bytes(b"\xff")
    error = resolve_refusal(tmp_path, "./f")
    assert str(error).startswith(f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature ./f: "
                                 f"devcontainer-feature.json is not valid JSON: ")


def test_a_features_metadata_must_be_an_object(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", "[]")
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == (f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: feature ./f: "
                          f"devcontainer-feature.json must be an object")


# ---------------------------------------------------------------- features: order, derived image


def derived(tmp_path, **changes) -> features.DerivedImage:
    folder = tmp_path / "feature"
    if not folder.exists():
        feature_folder(tmp_path, "feature", {"id": "feature"})
        (folder / "sub").mkdir()
        (folder / "sub" / "data").write_text("one")
    fields = dict(base="img:1", base_id="sha256:1", base_user="", features=[features.Feature("./feature", folder, {"a": "1"}, {})])
    fields.update(changes)
    return features.DerivedImage(**fields)


def test_a_derived_image_tag_hashes_every_input(tmp_path):
    tag = derived(tmp_path).tag()
    assert tag.startswith("gpuspace-build/features:") and len(tag.split(":")[1]) == 16
    assert derived(tmp_path).tag() == tag
    folder = tmp_path / "feature"
    variants = [derived(tmp_path, base="img:2"), derived(tmp_path, base_id="sha256:2"), derived(tmp_path, base_user="u"),
                derived(tmp_path, container_user="u"), derived(tmp_path, remote_user="u"),
                derived(tmp_path, features=[features.Feature("./other", folder, {"a": "1"}, {})]),
                derived(tmp_path, features=[features.Feature("./feature", folder, {"a": "2"}, {})]),
                derived(tmp_path, features=[])]
    tags = {variant.tag() for variant in variants}
    assert len(tags) == len(variants) and tag not in tags


def test_a_derived_image_tag_follows_the_features_files(tmp_path):
    image = derived(tmp_path)
    tags = [image.tag()]
    folder = tmp_path / "feature"
    (folder / "sub" / "data").write_text("two")
    tags.append(image.tag())
    (folder / "sub" / "data").rename(folder / "sub" / "renamed")
    tags.append(image.tag())
    (folder / "install.sh").write_text("echo changed\n")
    tags.append(image.tag())
    assert len(set(tags)) == 4


def test_a_derived_image_tag_does_not_depend_on_the_listing_order(tmp_path, monkeypatch):
    image = derived(tmp_path)
    for name in ("b", "a", "c"):
        (tmp_path / "feature" / name).mkdir()
        (tmp_path / "feature" / name / "z").write_text(name)
        (tmp_path / "feature" / name / "y").write_text(name)
    tag = image.tag()
    list_in_reverse(monkeypatch)
    assert image.tag() == tag


def test_the_derived_dockerfile_installs_each_feature_as_root_then_restores_the_user(tmp_path):
    one = features.Feature("./one", tmp_path, {"ver": "1 2"}, {"containerEnv": {"PATH": "/opt/x:${PATH}", "Q": 'a"b\\c\nd'}})
    two = features.Feature("./two", tmp_path, {}, {})
    image = features.DerivedImage("img:1", "sha256:1", "dev", [one, two], container_user="me", remote_user="o'brien")
    homes = ("export _CONTAINER_USER_HOME=$(awk -F: -v u=me '$1==u{print $6}' /etc/passwd) "
             "_REMOTE_USER_HOME=$(awk -F: -v u='o'\"'\"'brien' '$1==u{print $6}' /etc/passwd)")
    assert image.dockerfile() == (
        "FROM img:1\n"
        "USER root\n"
        'ENV PATH="/opt/x:${PATH}"\n'
        'ENV Q="a\\"b\\\\c\\nd"\n'
        "COPY 0/ /tmp/gpuspace-features/0/\n"
        f"RUN cd /tmp/gpuspace-features/0 && chmod +x install.sh && {homes} && env _CONTAINER_USER=me "
        "_REMOTE_USER='o'\"'\"'brien' VER='1 2' ./install.sh && rm -rf /tmp/gpuspace-features/0\n"
        "COPY 1/ /tmp/gpuspace-features/1/\n"
        f"RUN cd /tmp/gpuspace-features/1 && chmod +x install.sh && {homes} && env _CONTAINER_USER=me "
        "_REMOTE_USER='o'\"'\"'brien' ./install.sh && rm -rf /tmp/gpuspace-features/1\n"
        "USER dev\n")


@pytest.mark.parametrize("base_user,container_user,remote_user,users", [
    ("", None, None, ("root", "root")),
    ("dev", None, None, ("dev", "dev")),
    ("dev", "c", None, ("c", "c")),
    ("", None, "r", ("root", "r")),
])
def test_the_derived_dockerfile_users_default_to_the_images_then_root(tmp_path, base_user, container_user, remote_user, users):
    image = features.DerivedImage("img", "id", base_user, [features.Feature("./f", tmp_path, {"o": "v"}, {})],
                                  container_user=container_user, remote_user=remote_user)
    lines = image.dockerfile().splitlines()
    assert f"env _CONTAINER_USER={users[0]} _REMOTE_USER={users[1]} O=v ./install.sh" in lines[3]
    assert f"-v u={users[0]} '$1==u{{print $6}}'" in lines[3] and f"-v u={users[1]} '$1==u{{print $6}}'" in lines[3]
    assert (lines[-1] == f"USER {base_user}") == bool(base_user)  # no USER line when the image had none


def test_a_feature_option_may_override_the_user_variables(tmp_path):
    image = features.DerivedImage("img", "id", "", [features.Feature("./f", tmp_path, {"_remote_user": "x"}, {})])
    assert "env _CONTAINER_USER=root _REMOTE_USER=x ./install.sh" in image.dockerfile()


def test_the_derived_image_context_holds_each_feature_numbered_and_the_dockerfile(tmp_path):
    one = feature_folder(tmp_path, "one")
    (one / "link").symlink_to("/etc/passwd")
    two = feature_folder(tmp_path, "two", install="echo two\n")
    image = features.DerivedImage("img", "id", "", [features.Feature("./one", one), features.Feature("./two", two)])
    context = image.context()
    try:
        assert sorted(p.name for p in context.iterdir()) == ["0", "1", "Dockerfile"]
        assert (context / "Dockerfile").read_text() == image.dockerfile()
        assert (context / "1" / "install.sh").read_text() == "echo two\n"
        assert os.readlink(context / "0" / "link") == "/etc/passwd"
        assert context.name.startswith("gpuspace-features-")
    finally:
        shutil.rmtree(context)


def test_a_feature_is_fetched_into_the_users_cache(feature_registry, no_proxy, tmp_path, monkeypatch):
    """Only into the cache: not the current directory, not TMPDIR (the unpacked folder is renamed into place)."""
    host, serve = feature_registry.host, feature_registry.serve
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    serve("features/hello", "1", [tar_of(FEATURE_TAR)])
    folder = features.fetch_oci(f"{host}/features/hello:1")
    assert folder == cache_of(f"{host}/features/hello:1")
    assert sorted(p.name for p in folder.iterdir()) == ["devcontainer-feature.json", "install.sh"]
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no download or unpack dir left
    (folder / "stale").write_text("from an older fetch")
    assert sorted(p.name for p in features.fetch_oci(f"{host}/features/hello:1").iterdir()) == [
        "devcontainer-feature.json", "install.sh"]
    assert list(tmp_path.iterdir()) == []


def test_a_reference_without_a_tag_is_fetched_as_latest(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/hello", "latest", [tar_of(FEATURE_TAR)])
    assert features.fetch_oci(f"{host}/features/hello") == cache_of(f"{host}/features/hello:latest")


def test_a_feature_in_the_file_is_resolved_from_its_registry(tmp_path, feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/hello", "1", [tar_of(FEATURE_TAR)])
    config = parse(tmp_path, {"features": {f"{host}/features/hello:1": {}}})
    [feature] = config.features
    assert feature.folder == cache_of(f"{host}/features/hello:1") and feature.metadata == {"id": "hello"}


def test_a_cached_feature_is_read_without_the_network(feature_registry, no_proxy, monkeypatch):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/hello", "1", [tar_of(FEATURE_TAR)])
    assert features.cached_oci(f"{host}/features/hello:1") == cache_of(f"{host}/features/hello:1")  # fetched now
    assert (cache_of(f"{host}/features/hello:1") / "install.sh").is_file()
    monkeypatch.setattr(features, "fetch_oci", lambda reference: pytest.fail("fetched again"))
    assert features.cached_oci(f"{host}/features/hello:1") == cache_of(f"{host}/features/hello:1")


def test_a_feature_of_two_layers_is_refused(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/two", "1", [tar_of(FEATURE_TAR), tar_of({"./other": "x"})])
    assert str(fetch_refusal(f"{host}/features/two:1")) == f"cannot fetch feature {host}/features/two:1: expected one layer, found 2"


def test_a_feature_whose_archive_links_out_is_refused(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/evil", "1", [tar_of({**FEATURE_TAR, "./escape/../../../x": "x"})])
    message = str(fetch_refusal(f"{host}/features/evil:1", clean=False))
    assert message.startswith(f"cannot fetch feature {host}/features/evil:1: ") and "outside the destination" in message
    assert not cache_of(f"{host}/features/evil:1").exists()


def test_a_feature_whose_archive_has_an_absolute_link_is_refused(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/link", "1", [tar_of({**FEATURE_TAR, "./passwd": None})])
    message = str(fetch_refusal(f"{host}/features/link:1", clean=False))
    assert message == f"cannot fetch feature {host}/features/link:1: './passwd' is a link to an absolute path"
    assert not cache_of(f"{host}/features/link:1").exists()


def test_a_refused_archive_leaves_nothing_in_the_cache(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/evil", "1", [tar_of({**FEATURE_TAR, "./escape/../../../x": "x"})])
    fetch_refusal(f"{host}/features/evil:1")


def test_an_unreachable_registry_is_named_at_once(no_proxy):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = str(fetch_refusal(f"127.0.0.1:{port}/features/hello:1"))
    assert message == f"cannot fetch feature 127.0.0.1:{port}/features/hello:1: cannot reach 127.0.0.1:{port}: Connection refused"


def test_a_feature_that_fails_after_an_older_fetch_keeps_the_old_one(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/hello", "1", [tar_of(FEATURE_TAR)])
    folder = features.fetch_oci(f"{host}/features/hello:1")
    serve("features/hello", "1", [tar_of(FEATURE_TAR), tar_of(FEATURE_TAR | {"./x": "y"})])
    with pytest.raises(UsageError):
        features.fetch_oci(f"{host}/features/hello:1")
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
    assert (folder / "install.sh").is_file()


@pytest.fixture
def connections(monkeypatch, no_proxy):
    """Where _reachable connects, and with what timeout; every connection refused."""
    made = []

    def create_connection(address, timeout):
        made.append((address, timeout))
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return made


@pytest.mark.parametrize("registry_,insecure,address", [
    ("ghcr.io", False, ("ghcr.io", 443)), ("localhost", True, ("localhost", 80)), ("host:5000", False, ("host", 5000)),
    ("[::1]:5000", True, ("::1", 5000)), ("[::1]", True, ("::1", 80)), ("XREGX", False, ("XREGX", 443))])
def test_a_registry_is_tried_on_its_port_for_ten_seconds(connections, registry_, insecure, address):
    with pytest.raises(ConnectionError) as refused:
        features._reachable(registry_, insecure)
    assert str(refused.value) == f"cannot reach {registry_}: Connection refused"
    assert connections == [(address, 10)]


def test_an_error_without_strerror_is_named_as_it_is(monkeypatch, no_proxy):
    def create_connection(address, timeout):
        raise OSError("no route")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    with pytest.raises(ConnectionError, match="^cannot reach ghcr.io: no route$"):
        features._reachable("ghcr.io", False)


def test_a_reachable_registry_is_let_through(monkeypatch, no_proxy):
    closed = []

    class Connection:
        def close(self):
            closed.append(True)

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: Connection())
    assert features._reachable("ghcr.io", False) is None and closed == [True]


@pytest.mark.parametrize("insecure", [True, False])
def test_through_a_proxy_the_library_decides(connections, monkeypatch, insecure):
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    monkeypatch.setenv("no_proxy", "internal.example")
    assert features._reachable("ghcr.io", insecure) is None and connections == []
    with pytest.raises(ConnectionError):  # no proxy for this one
        features._reachable("registry.internal.example:5000", insecure)
    assert connections == [(("registry.internal.example", 5000), 10)]


def test_a_local_registry_is_fetched_over_plain_http(monkeypatch, no_proxy):
    seen = []

    def reachable(registry_, insecure):
        seen.append((registry_, insecure))
        raise ConnectionError("stop")

    monkeypatch.setattr(features, "_reachable", reachable)
    for reference in ("localhost:5000/a/b:1", "127.0.0.1/a/b:1", "localhost/a/b", "ghcr.io/a/b:1", "localhostx/a/b:1",
                      "ghcr.io:443/a/b:1"):
        with pytest.raises(UsageError, match="^cannot fetch feature .*: stop$"):
            features.fetch_oci(reference)
    assert seen == [("localhost:5000", True), ("127.0.0.1", True), ("localhost", True), ("ghcr.io", False),
                    ("localhostx", False), ("ghcr.io:443", False)]


@pytest.mark.parametrize("error,reason", [
    (ValueError("a  b\n c "), "a b c"), (ValueError(""), "ValueError"), (KeyError(), "KeyError"),
    (ValueError("x" * 400), "x" * 300)])
def test_a_fetch_failure_is_one_short_line(error, reason):
    assert features._reason(error) == reason


def test_a_features_options_declaration_must_be_an_object(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "f", {"options": ["version"]})
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == (f"{where(tmp_path)}: feature ./f: options in devcontainer-feature.json must be an object")


def test_a_features_metadata_through_a_link_is_refused_with_the_systems_reason(tmp_path):
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    (tmp_path / "elsewhere.json").write_text("{}")
    (folder / "devcontainer-feature.json").unlink()
    (folder / "devcontainer-feature.json").symlink_to(tmp_path / "elsewhere.json")
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == (f"{where(tmp_path)}: feature ./f: cannot read devcontainer-feature.json: "
                          f"Too many levels of symbolic links")


def test_a_features_metadata_swapped_for_a_fifo_after_the_check_is_refused_at_once(tmp_path, monkeypatch):
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    (folder / "devcontainer-feature.json").unlink()
    os.mkfifo(folder / "devcontainer-feature.json")
    monkeypatch.setattr(Path, "is_file", lambda self: True)
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == f"{where(tmp_path)}: feature ./f: cannot read devcontainer-feature.json: not a regular file"


def test_a_features_metadata_of_up_to_one_mib_is_read_whole(tmp_path):
    limit = features.MAX_METADATA_BYTES
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f", '{"id": "f"' + " " * (limit - 11) + "}")
    assert (folder / "devcontainer-feature.json").stat().st_size == limit
    assert resolve(tmp_path, "./f").metadata == {"id": "f"}
    (folder / "devcontainer-feature.json").write_text('{"id": "f"' + " " * (limit - 10) + "}")
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == f"{where(tmp_path)}: feature ./f: cannot read devcontainer-feature.json: larger than 1 MiB"


def test_a_huge_features_metadata_is_refused_after_reading_one_mib(tmp_path):
    """A terabyte (sparse) is refused as any file over the limit: only the limit is read."""
    folder = feature_folder(tmp_path / "wt" / ".devcontainer", "f")
    os.truncate(folder / "devcontainer-feature.json", 1 << 40)
    error = resolve_refusal(tmp_path, "./f")
    assert str(error) == f"{where(tmp_path)}: feature ./f: cannot read devcontainer-feature.json: larger than 1 MiB"


def test_a_layer_that_does_not_match_its_digest_is_refused(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    claimed = "sha256:" + hashlib.sha256(b"another layer").hexdigest()
    serve("features/forged", "1", [tar_of(FEATURE_TAR)], digest=claimed)
    message = str(fetch_refusal(f"{host}/features/forged:1"))
    assert message == f"cannot fetch feature {host}/features/forged:1: the layer does not match its digest"
    assert not cache_of(f"{host}/features/forged:1").exists()


@pytest.mark.parametrize("digest", [12, "sha256:short", "sha512:" + "0" * 128])
def test_a_layer_without_a_sha256_digest_is_refused(feature_registry, no_proxy, digest):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/odd", "1", [tar_of(FEATURE_TAR)], digest=digest)
    assert str(fetch_refusal(f"{host}/features/odd:1")) == (
        f"cannot fetch feature {host}/features/odd:1: its layer is not a Dev Container Feature "
        f"({features.LAYER_TYPE} with a sha256 digest)")


def test_a_python_that_cannot_unpack_safely_fetches_nothing(feature_registry, no_proxy, monkeypatch):
    host, serve = feature_registry.host, feature_registry.serve
    serve("features/hello", "1", [tar_of(FEATURE_TAR)])
    monkeypatch.delattr(tarfile, "data_filter")
    assert str(fetch_refusal(f"{host}/features/hello:1")) == (
        f"cannot fetch feature {host}/features/hello:1: this Python cannot unpack an archive safely "
        f"(3.10.12, 3.11.4 or later needed)")
    assert not cache_of(f"{host}/features/hello:1").exists()


def test_a_reference_with_a_digest_gets_no_tag(feature_registry, no_proxy):
    host, serve = feature_registry.host, feature_registry.serve
    digest = "sha256:" + "a" * 64
    serve("features/hello", digest, [tar_of(FEATURE_TAR)])
    assert features.fetch_oci(f"{host}/features/hello@{digest}") == cache_of(f"{host}/features/hello@{digest}")
