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
from functools import cmp_to_key
from pathlib import Path

import pytest

from git_gpuspace.devcontainer import parser as devcontainer, features
from git_gpuspace.errors import UsageError
from git_gpuspace.folders import hash_tree

from helpers import DEPENDSON, DEPENDSON_REGISTRY, FEATURE_TAR, cache_of, feature_folder, fetch_refusal, list_in_reverse, parse, tar_of, where

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


@pytest.mark.parametrize("key", ["ghcr.io/codspace/dependson/D", "GHCR.io/X/y:1"])
def test_a_registry_reference_is_read_lowercased_as_the_reference_reads_it(tmp_path, key):
    """The reference's getRef downcases the whole input (dependsOn/tgz-ab names ghcr.io/codspace/dependson/D)."""
    fetched = []

    def fetch(reference):
        fetched.append(reference)
        return feature_folder(tmp_path / "cache", "x")

    feature = resolve(tmp_path, key, fetch=fetch)
    assert fetched == [key.lower()] and feature.key == key  # named as written
    assert feature.source == features._oci_source(key.lower())


def test_a_tarball_url_is_fetched_and_its_id_is_the_tarballs(tmp_path):
    key = "https://github.com/o/r/releases/download/0.0.2/devcontainer-feature-A_b-1.tgz"
    fetched = []

    def fetch(reference):
        fetched.append(reference)
        return feature_folder(tmp_path / "cache", "x")

    feature = resolve(tmp_path, key, fetch=fetch)
    assert fetched == [key] and feature.id == "A_b-1" and feature.folder == tmp_path / "cache" / "x"
    assert feature.source == features.Source("direct-tarball", key)


@pytest.mark.parametrize("name", ["feature.tgz", "devcontainer-feature-.tgz", "devcontainer-feature-a.b.tgz",
                                  "devcontainer-feature-a.tar.gz"])
def test_a_tarball_url_of_another_name_is_refused_as_the_reference_refuses_it(tmp_path, name):
    error = resolve_refusal(tmp_path, f"https://example.com/{name}", fetch=lambda reference: pytest.fail("fetched"))
    assert str(error) == (f"{where(tmp_path)}: feature https://example.com/{name}: Expected tarball name to follow "
                          f"'devcontainer-feature-<feature-id>.tgz' format.")
    assert error.hint == ("a feature's tarball is named devcontainer-feature-<id>.tgz, the id of letters, digits, - "
                          "and _")


def test_a_tarball_url_without_a_path_names_no_tarball(tmp_path):
    error = resolve_refusal(tmp_path, "https://example.com", fetch=lambda reference: pytest.fail("fetched"))
    assert str(error).endswith("feature https://example.com: Expected tarball name to follow "
                               "'devcontainer-feature-<feature-id>.tgz' format.")


def test_tarballs_install_in_the_order_of_their_urls_and_by_their_dependencies(tmp_path):
    """As the reference compares direct-tarball features: by URL, then options; dependsOn first."""
    one, two = "https://h/x/devcontainer-feature-b.tgz", "https://h/y/devcontainer-feature-a.tgz"
    registry = {one: order_feature("b"), two: order_feature("a", depends_on={one: {"magicNumber": "1"}})}
    assert keys_and_options(tmp_path, {two: {}, one: {}}, registry=registry) == [(one, {}), (one, {"magicNumber": "1"}),
                                                                                 (two, {})]


@pytest.mark.parametrize("key", ["http://example.com/devcontainer-feature-f.tgz", "ghcr.io/x/y:", "ghcr.io/x/y:a:b",
                                 "ghcr.io/x/y@sha256:abc", "ghcr.io:port/x/y"])
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


def gzipped(entries: dict) -> bytes:
    import gzip

    return gzip.compress(tar_of(entries))


def test_a_tarball_is_fetched_into_the_users_cache(tarball_server, tmp_path, monkeypatch):
    """Through redirects (GitHub's release downloads redirect; one here is relative), gzipped;
    only into the cache, not the current directory or TMPDIR; fetched again, it replaces what was there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    tarball_server.files["/dl/devcontainer-feature-hello.tgz"] = tarball_server.url + "/objects/1"
    tarball_server.files["/objects/1"] = "/objects/2"
    tarball_server.files["/objects/2"] = gzipped(FEATURE_TAR)
    url = tarball_server.url + "/dl/devcontainer-feature-hello.tgz"
    folder = features.fetch_feature(url)
    assert folder == cache_of(url) and features.cached_feature(url) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["devcontainer-feature.json", "install.sh"]
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no download or unpack dir left
    (folder / "stale").write_text("from an older fetch")
    assert sorted(p.name for p in features.fetch_tarball(url).iterdir()) == ["devcontainer-feature.json", "install.sh"]
    assert list(tmp_path.iterdir()) == []


def test_a_tarball_of_exactly_the_limit_is_taken(tarball_server, monkeypatch):
    archive = gzipped(FEATURE_TAR)
    monkeypatch.setattr(features, "MAX_TARBALL_BYTES", len(archive))
    tarball_server.files["/devcontainer-feature-hello.tgz"] = archive
    folder = features.fetch_tarball(tarball_server.url + "/devcontainer-feature-hello.tgz")
    assert sorted(p.name for p in folder.iterdir()) == ["devcontainer-feature.json", "install.sh"]


def tarball_refusal(url: str) -> str:
    with pytest.raises(UsageError) as refused:
        features.fetch_tarball(url)
    assert refused.value.hint == ("check the URL and that its host is reachable; a feature in a folder of the "
                                  "repository (\"./my-feature\") needs no network")
    assert [p.name for p in cache_of("x").parent.iterdir()] == []  # nothing left behind
    return str(refused.value)


def test_a_tarball_that_is_not_there_is_one_line(tarball_server):
    url = tarball_server.url + "/devcontainer-feature-gone.tgz"
    assert tarball_refusal(url) == f"cannot fetch feature {url}: 404 Client Error: Not Found for url: {url}"


def test_a_tarball_redirected_to_plain_http_is_refused(tarball_server):
    url = tarball_server.url + "/devcontainer-feature-x.tgz"
    tarball_server.files["/devcontainer-feature-x.tgz"] = "http://127.0.0.1:1/x.tgz"
    assert tarball_refusal(url) == f"cannot fetch feature {url}: it redirects to http://127.0.0.1:1/x.tgz, not https"


def test_a_tarball_whose_links_lead_out_is_refused(tarball_server):
    url = tarball_server.url + "/devcontainer-feature-x.tgz"
    tarball_server.files["/devcontainer-feature-x.tgz"] = gzipped({**FEATURE_TAR, "./passwd": None})
    assert tarball_refusal(url).startswith(f"cannot fetch feature {url}: ")


def test_a_tarball_larger_than_the_limit_is_refused(tarball_server, monkeypatch):
    monkeypatch.setattr(features, "MAX_TARBALL_BYTES", 1 << 20)
    url = tarball_server.url + "/devcontainer-feature-x.tgz"
    tarball_server.files["/devcontainer-feature-x.tgz"] = os.urandom(3 << 20)
    assert tarball_refusal(url) == f"cannot fetch feature {url}: larger than 1 MiB"


def test_a_tarball_on_an_unreachable_host_says_so(tarball_server):
    url = "https://127.0.0.1:1/devcontainer-feature-x.tgz"
    assert tarball_refusal(url) == f"cannot fetch feature {url}: cannot reach 127.0.0.1:1: Connection refused"


def test_a_tarball_url_without_a_port_is_reached_on_443(tarball_server, monkeypatch):
    tried = []

    def refused(address, timeout):
        tried.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    url = "https://127.0.0.1/devcontainer-feature-x.tgz"
    assert tarball_refusal(url) == f"cannot fetch feature {url}: cannot reach 127.0.0.1:443: Connection refused"
    assert tried == [("127.0.0.1", 443)]


def test_a_tarball_that_never_ends_is_refused_at_the_limit(tarball_server, monkeypatch):
    """Read as it comes: the limit stops it, not the end of a body that has none."""
    monkeypatch.setattr(features, "MAX_TARBALL_BYTES", 1 << 20)
    url = tarball_server.url + "/devcontainer-feature-x.tgz"
    tarball_server.files["/devcontainer-feature-x.tgz"] = tarball_server.ENDLESS
    assert tarball_refusal(url) == f"cannot fetch feature {url}: larger than 1 MiB"


def test_a_tarball_whose_answer_never_comes_is_given_up_on(tarball_server, monkeypatch):
    monkeypatch.setattr(features, "TARBALL_TIMEOUT_S", (2, 1))
    url = tarball_server.url + "/devcontainer-feature-x.tgz"
    tarball_server.files["/devcontainer-feature-x.tgz"] = tarball_server.STALL
    said = tarball_refusal(url)
    assert said.startswith(f"cannot fetch feature {url}: ") and "Read timed out" in said, said


def test_a_tarball_from_a_host_with_an_untrusted_certificate_is_refused(tarball_server, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    url = tarball_server.url + "/devcontainer-feature-hello.tgz"
    tarball_server.files["/devcontainer-feature-hello.tgz"] = gzipped(FEATURE_TAR)
    assert "CERTIFICATE_VERIFY_FAILED" in tarball_refusal(url)


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
    assert features.cached_feature(f"{host}/features/hello:1") == cache_of(f"{host}/features/hello:1")  # fetched now
    assert (cache_of(f"{host}/features/hello:1") / "install.sh").is_file()
    monkeypatch.setattr(features, "fetch_oci", lambda reference: pytest.fail("fetched again"))
    assert features.cached_feature(f"{host}/features/hello:1") == cache_of(f"{host}/features/hello:1")


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


# ---------------------------------------------------------------- features: install order (dependsOn, installsAfter, override)


def order_feature(name: str, depends_on: dict | None = None, installs_after: list | None = None,
                  options: tuple[str, ...] = ("magicNumber",), **extra) -> dict:
    """The metadata of the reference fixtures' feature: options defaulting to "0", and its dependencies."""
    metadata: dict = {"id": name, "version": "1.0.0",
                      "options": {option: {"type": "string", "default": "0"} for option in options}, **extra}
    if depends_on is not None:
        metadata["dependsOn"] = depends_on
    if installs_after is not None:
        metadata["installsAfter"] = installs_after
    return metadata


def ordered(tmp_path, requested: dict, local: dict[str, dict] | None = None, registry: dict[str, dict] | None = None,
            override=None, fetched: list | None = None):
    """install_order of `requested` named by the worktree's .devcontainer/devcontainer.json; `local`:
    the metadata of each folder under .devcontainer/; `registry`: of each registry feature, by reference."""
    base = tmp_path / "wt" / ".devcontainer"
    base.mkdir(parents=True, exist_ok=True)
    for name, metadata in (local or {}).items():
        feature_folder(base, name, metadata)

    def fetch(reference: str) -> Path:
        if fetched is not None:
            fetched.append(reference)
        metadata = (registry or {})[reference]
        return feature_folder(tmp_path / "registry", reference.replace("/", "_").replace(":", "_"), metadata,
                              install=f"#!/bin/sh\n# {metadata.get('content', '')}\n")

    return features.install_order(base / "devcontainer.json", requested, override, base, tmp_path / "wt",
                                  tmp_path / "wt", fetch)


def keys_and_options(tmp_path, *args, **kwargs) -> list[tuple[str, object]]:
    installed, named = ordered(tmp_path, *args, **kwargs)
    assert named == []
    return [(feature.key, feature.options) for feature in installed]


def order_refusal(tmp_path, *args, **kwargs) -> UsageError:
    with pytest.raises(UsageError) as refused:
        ordered(tmp_path, *args, **kwargs)
    return refused.value


CYCLE_HINT = "their dependsOn and installsAfter (devcontainer-feature.json) name each other; nothing was made"


def test_no_features_install_nothing(tmp_path):
    assert ordered(tmp_path, {}) == ([], [])


def test_features_without_dependencies_install_sorted_by_path(tmp_path):
    local = {name: order_feature(name) for name in ("b", "a", "c")}
    assert keys_and_options(tmp_path, {"./c": {}, "./a": "1", "./b": True}, local) == [
        ("./a", "1"), ("./b", {}), ("./c", {})]


def test_an_installs_after_orders_only_among_the_features_there(tmp_path):
    """installsAfter/local-simple: ./b is not there, so only ./c counts."""
    local = {"a": order_feature("a", installs_after=["./b", "./c"]), "b": order_feature("b"), "c": order_feature("c")}
    assert keys_and_options(tmp_path, {"./a": {}, "./c": {"magicNumber": "321"}}, local) == [
        ("./c", {"magicNumber": "321"}), ("./a", {})]


def test_installs_after_that_name_each_other_are_the_references_cycle_error(tmp_path):
    local = {"a": order_feature("a", installs_after=["./b"]), "b": order_feature("b", installs_after=["./c"]),
             "c": order_feature("c", installs_after=["./a"])}
    error = order_refusal(tmp_path, {"./a": {}, "./b": {}, "./c": {}, "./d": {}}, {**local, "d": order_feature("d")})
    assert str(error) == (f"{where(tmp_path)}: Failed to compute Feature installation order! Circular dependency "
                          f"detected: ./a, ./b, ./c")
    assert error.hint == CYCLE_HINT


def test_a_feature_that_installs_after_itself_is_a_cycle(tmp_path):
    error = order_refusal(tmp_path, {"./a": {}}, {"a": order_feature("a", installs_after=["./a"])})
    assert str(error) == f"{where(tmp_path)}: Failed to compute Feature installation order! Circular dependency detected: ./a"


def test_a_dependency_installs_first_with_the_options_depends_on_gives(tmp_path):
    """dependsOn/local-simple."""
    local = {"a": order_feature("a", depends_on={"./b": {"magicNumber": "50"}}), "b": order_feature("b")}
    installed, named = ordered(tmp_path, {"./a": {}}, local)
    assert [(feature.key, feature.options) for feature in installed] == [("./b", {"magicNumber": "50"}), ("./a", {})]
    assert [feature.environment() for feature in installed] == [{"MAGICNUMBER": "50"}, {"MAGICNUMBER": "0"}]
    assert [feature.folder for feature in installed] == [tmp_path / "wt" / ".devcontainer" / "b",
                                                         tmp_path / "wt" / ".devcontainer" / "a"]
    assert named == []


def test_one_feature_with_other_options_is_another_install_sorted_by_its_options(tmp_path):
    """dependsOn/local-with-options: a round sorts by path, then fewer options first, then by values."""
    options = ("optA", "optB")
    local = {"a": order_feature("a", depends_on={"./b": {"optA": "a", "optB": "a"}, "./c": {}}, options=options),
             "b": order_feature("b", options=options),
             "c": order_feature("c", depends_on={"./b": {"optA": "b", "optB": "a"}, "./d": {}, "./e": {}}, options=options),
             "d": order_feature("d", depends_on={"./b": {"optA": "b", "optB": "b"}}, options=options),
             "e": order_feature("e", depends_on={"./b": {}}, options=options)}
    assert keys_and_options(tmp_path, {"./a": {"optA": "a", "optB": "b"}, "./b": {"optA": "a", "optB": "b"}}, local) == [
        ("./b", {}), ("./b", {"optA": "a", "optB": "a"}), ("./b", {"optA": "a", "optB": "b"}),
        ("./b", {"optA": "b", "optB": "a"}), ("./b", {"optA": "b", "optB": "b"}),
        ("./d", {}), ("./e", {}), ("./c", {}), ("./a", {"optA": "a", "optB": "b"})]


def test_depends_on_that_name_each_other_are_the_references_cycle_error(tmp_path):
    local = {"a": order_feature("a", depends_on={"./b": {}}), "b": order_feature("b", depends_on={"./c": {"magicNumber": "50"}}),
             "c": order_feature("c", depends_on={"./a": {"magicNumber": "50"}})}
    error = order_refusal(tmp_path, {"./a": {}}, local)
    assert str(error) == (f"{where(tmp_path)}: Failed to compute Feature installation order! Circular dependency "
                          f"detected: ./a, ./b, ./c")
    assert error.hint == CYCLE_HINT


def test_a_cycle_names_each_feature_once(tmp_path):
    local = {"a": order_feature("a", depends_on={"./b": {}}), "b": order_feature("b", depends_on={"./a": {"magicNumber": "1"}})}
    error = order_refusal(tmp_path, {"./a": {}}, local)
    assert str(error) == f"{where(tmp_path)}: Failed to compute Feature installation order! Circular dependency detected: ./a, ./b"


def test_depends_on_and_installs_after_together(tmp_path):
    local = {"a": order_feature("a", depends_on={"./c": {"magicNumber": "321"}}, installs_after=["./b"]),
             "b": order_feature("b"), "c": order_feature("c")}
    assert keys_and_options(tmp_path, {"./a": {}}, local) == [("./c", {"magicNumber": "321"}), ("./a", {})]


@pytest.mark.parametrize("fixture,graph,roots,override,expected", [
    ("local-simple", {"a": {"./b": {}, "./c": {}, "./d": {}}}, ["./a"], ["./c"], ["./c", "./b", "./d", "./a"]),
    ("local-intermediate", {"a": {"./b": {}, "./d": {}}, "b": {"./c": {}}}, ["./a"], ["./c", "./d"],
     ["./c", "./d", "./b", "./a"]),
    ("local-roundPriority", {"b": {"./a": {}}}, ["./b", "./c"], ["./a", "./b", "./c"], ["./a", "./b", "./c"]),
    ("reversed", {}, ["./a", "./b", "./c", "./d"], ["./d", "./c", "./b"], ["./d", "./c", "./b", "./a"]),
    ("named-twice", {}, ["./a", "./b", "./c"], ["./c", "./b", "./c"], ["./c", "./b", "./a"]),
])
def test_override_feature_install_order_installs_a_named_feature_as_soon_as_it_can(tmp_path, fixture, graph, roots,
                                                                                   override, expected):
    """overrideFeatureInstallOrder/<fixture>: the first named first, before any feature not named."""
    local = {name: order_feature(name, depends_on=graph.get(name),
                                 installs_after=["./c"] if (fixture, name) == ("local-intermediate", "a") else None)
             for name in "abcd"}
    installed, named = ordered(tmp_path, {key: {} for key in roots}, local, override=override)
    assert [feature.key for feature in installed] == expected and named == []




def test_registry_dependencies_install_first_sorted_by_id_then_options(tmp_path):
    """dependsOn/oci-ab: one registry feature twice, with two sets of options, sorted by them."""
    fetched = []
    assert keys_and_options(tmp_path, {f"{DEPENDSON}/b": {"magicNumber": "400"}, f"{DEPENDSON}/a": {"magicNumber": "10"}},
                            registry=DEPENDSON_REGISTRY, fetched=fetched) == [
        (f"{DEPENDSON}/d", {"magicNumber": "30"}), (f"{DEPENDSON}/e", {"magicNumber": "50"}),
        (f"{DEPENDSON}/a", {"magicNumber": "10"}), (f"{DEPENDSON}/a", {"magicNumber": "40"}),
        (f"{DEPENDSON}/c", {"magicNumber": "20"}), (f"{DEPENDSON}/b", {"magicNumber": "400"})]
    assert fetched == [f"{DEPENDSON}/b", f"{DEPENDSON}/a", f"{DEPENDSON}/a", f"{DEPENDSON}/c", f"{DEPENDSON}/e",
                       f"{DEPENDSON}/e", f"{DEPENDSON}/d"]


def test_override_orders_local_and_registry_features_together(tmp_path):
    """overrideFeatureInstallOrder/mixed: a local feature before a registry one in a round."""
    local = {"a": order_feature("a", depends_on={"./b": {}, "./c": {}, "./d": {}, f"{DEPENDSON}/b": {"magicNumber": "400"}}),
             "b": order_feature("b"), "c": order_feature("c"), "d": order_feature("d")}
    assert keys_and_options(tmp_path, {"./a": {}}, local, DEPENDSON_REGISTRY, override=[f"{DEPENDSON}/a", "./d"]) == [
        ("./d", {}), ("./b", {}), ("./c", {}),
        (f"{DEPENDSON}/d", {"magicNumber": "30"}), (f"{DEPENDSON}/e", {"magicNumber": "50"}),
        (f"{DEPENDSON}/a", {"magicNumber": "40"}), (f"{DEPENDSON}/c", {"magicNumber": "20"}),
        (f"{DEPENDSON}/b", {"magicNumber": "400"}), ("./a", {})]


def test_a_dependency_the_file_also_names_with_the_same_options_installs_once(tmp_path):
    local = {"a": order_feature("a", depends_on={"./b": {"magicNumber": "1"}}), "b": order_feature("b")}
    assert keys_and_options(tmp_path, {"./b": {"magicNumber": "1"}, "./a": {}}, local) == [
        ("./b", {"magicNumber": "1"}), ("./a", {})]
    assert keys_and_options(tmp_path, {"./b": {"magicNumber": "2"}, "./a": {}}, local) == [
        ("./b", {"magicNumber": "1"}), ("./b", {"magicNumber": "2"}), ("./a", {})]


def test_one_local_folder_named_two_ways_installs_once(tmp_path):
    local = {"a": order_feature("a", depends_on={"./x/../b": {}}), "b": order_feature("b")}
    assert keys_and_options(tmp_path, {"./b": {}, "./a": {}}, local) == [("./b", {}), ("./a", {})]


def test_a_registry_feature_named_twice_with_the_same_content_and_options_installs_once(tmp_path):
    """The reference compares registry features by their content (the manifest's digest)."""
    registry = {"ghcr.io/x/y/f:1": {"id": "f"}, "ghcr.io/x/y/f:2": {"id": "f"}, "ghcr.io/x/y/f:3": {"id": "f", "content": "3"}}
    assert keys_and_options(tmp_path, {"ghcr.io/x/y/f:2": {}, "ghcr.io/x/y/f:1": {}}, registry=registry) == [
        ("ghcr.io/x/y/f:2", {})]
    assert keys_and_options(tmp_path, {"ghcr.io/x/y/f:3": {}, "ghcr.io/x/y/f:1": {}}, registry=registry) == [
        ("ghcr.io/x/y/f:1", {}), ("ghcr.io/x/y/f:3", {})]
    assert keys_and_options(tmp_path, {"ghcr.io/x/y/f:2": {"o": "1"}, "ghcr.io/x/y/f:1": {}}, registry=registry) == [
        ("ghcr.io/x/y/f:1", {}), ("ghcr.io/x/y/f:2", {"o": "1"})]


def test_registry_features_sort_by_namespace_then_id_then_tag_then_options_then_content(tmp_path):
    registry = {"ghcr.io/b/f:1": {"id": "f"}, "ghcr.io/a/g:1": {"id": "g"}, "ghcr.io/a/f:2": {"id": "f", "content": "2"},
                "ghcr.io/a/f:1": {"id": "f", "content": "1"}, "ghcr.io/a/h:1": {"id": "h", "content": "b"},
                "ghcr.io/a/h:2": {"id": "h", "content": "a"}}
    assert [key for key, _ in keys_and_options(tmp_path, {key: {} for key in registry}, registry=registry)] == [
        "ghcr.io/a/f:1", "ghcr.io/a/f:2", "ghcr.io/a/g:1", "ghcr.io/a/h:1", "ghcr.io/a/h:2", "ghcr.io/b/f:1"]


def test_registry_features_of_one_id_with_a_digest_sort_by_options_then_content(tmp_path):
    one, two = f"ghcr.io/a/f@sha256:{'1' * 64}", f"ghcr.io/a/f@sha256:{'2' * 64}"
    registry = {one: {"id": "f", "content": "x"}, two: {"id": "f", "content": "y"}, "ghcr.io/a/f:9": {"id": "f"}}
    installed, _ = ordered(tmp_path, {two: {}, one: {}, "ghcr.io/a/f:9": {"o": "1"}}, registry=registry)
    digests = {}
    for feature in installed:
        digest = hashlib.sha256()
        hash_tree(digest, feature.folder)
        digests[feature.key] = digest.hexdigest()
    by_content = sorted([one, two], key=lambda key: digests[key])
    assert [feature.key for feature in installed] == [*by_content, "ghcr.io/a/f:9"]


def test_features_of_both_kinds_sort_by_the_key_as_written(tmp_path):
    registry = {"ghcr.io/x/y/a:1": {"id": "a"}}
    local = {"b": order_feature("b"), "z": order_feature("z")}
    assert [key for key, _ in keys_and_options(tmp_path, {"ghcr.io/x/y/a:1": {}, "./z": {}, "./b": {}}, local,
                                               registry)] == ["./b", "./z", "ghcr.io/x/y/a:1"]


def test_a_renamed_registry_feature_of_one_namespace_is_one_feature_by_its_legacy_ids(tmp_path):
    """Aliases: ids that share a name compare by tag; others by id."""
    registry = {"ghcr.io/x/y/new:2": {"id": "new", "legacyIds": ["old"], "content": "n"},
                "ghcr.io/x/y/old:1": {"id": "old", "content": "o"},
                "ghcr.io/x/y/aaa:3": {"id": "aaa", "content": "a"}}
    assert [key for key, _ in keys_and_options(tmp_path, {key: {} for key in registry}, registry=registry)] == [
        "ghcr.io/x/y/aaa:3", "ghcr.io/x/y/old:1", "ghcr.io/x/y/new:2"]


def test_installs_after_a_registry_feature_whatever_its_tag_or_by_a_legacy_id(tmp_path):
    registry = {"ghcr.io/x/y/new:2": {"id": "new", "legacyIds": ["old"]}}
    local = {"a": order_feature("a", installs_after=["ghcr.io/x/y/old:1"]), "z": order_feature("z", installs_after=["ghcr.io/x/y/new"])}
    assert [key for key, _ in keys_and_options(tmp_path, {"./a": {}, "./z": {}, "ghcr.io/x/y/new:2": {}}, local,
                                               registry)] == ["ghcr.io/x/y/new:2", "./a", "./z"]


def test_a_legacy_id_of_another_namespace_is_another_feature(tmp_path):
    registry = {"ghcr.io/x/y/new:2": {"id": "new", "legacyIds": ["old"]}}
    local = {"a": order_feature("a", installs_after=["ghcr.io/other/old:1", "ghcr.io/x/y/unrelated"])}
    assert [key for key, _ in keys_and_options(tmp_path, {"./a": {}, "ghcr.io/x/y/new:2": {}}, local, registry)] == [
        "./a", "ghcr.io/x/y/new:2"]


def test_a_current_id_names_the_feature_for_installs_after(tmp_path):
    registry = {"ghcr.io/x/y/f:2": {"id": "old", "currentId": "f", "legacyIds": "not a list"}}
    local = {"a": order_feature("a", installs_after=["ghcr.io/x/y/f:1"])}
    assert [key for key, _ in keys_and_options(tmp_path, {"./a": {}, "ghcr.io/x/y/f:2": {}}, local, registry)] == [
        "ghcr.io/x/y/f:2", "./a"]


def test_an_old_short_id_in_installs_after_names_its_current_registry_feature(tmp_path):
    registry = {"ghcr.io/devcontainers/features/go:1": {"id": "go"}}
    local = {"a": order_feature("a", installs_after=["golang"])}
    assert [key for key, _ in keys_and_options(tmp_path, {"./a": {}, "ghcr.io/devcontainers/features/go:1": {}}, local,
                                               registry)] == ["ghcr.io/devcontainers/features/go:1", "./a"]


def test_an_installs_after_naming_no_feature_is_named(tmp_path):
    local = {"a": order_feature("a", installs_after=["b", "owner/repo/c", "https://example.com/f.tgz", "ghcr.io/x/y:"]),
             "b": order_feature("b")}
    installed, named = ordered(tmp_path, {"./a": {}, "./b": {}}, local)
    assert [feature.key for feature in installed] == ["./a", "./b"]
    assert named == [f"feature ./a: installsAfter {key} (names no local folder or registry feature)"
                     for key in ("b", "owner/repo/c", "https://example.com/f.tgz", "ghcr.io/x/y:")]


def test_a_feature_of_an_unsupported_kind_in_the_file_is_named_not_installed(tmp_path):
    installed, named = ordered(tmp_path, {"http://example.com/f.tgz": {}, "./a": {}}, {"a": order_feature("a")})
    assert [feature.key for feature in installed] == ["./a"]
    assert named == ["feature http://example.com/f.tgz (only a local folder, an OCI reference or an https:// tarball)"]


@pytest.mark.parametrize("metadata,message", [
    ({"dependsOn": ["./b"]}, "feature ./a: dependsOn in devcontainer-feature.json must be an object (feature -> options)"),
    ({"installsAfter": "./b"}, "feature ./a: installsAfter in devcontainer-feature.json must be a list of feature ids"),
    ({"installsAfter": ["./b", 1]}, "feature ./a: installsAfter in devcontainer-feature.json must be a list of feature ids"),
    ({"dependsOn": {"http://example.com/devcontainer-feature-b.tgz": {}}},
     "feature ./a depends on http://example.com/devcontainer-feature-b.tgz, which is not a local folder, an OCI "
     "reference or an https:// tarball"),
])
def test_bad_dependencies_are_one_error(tmp_path, metadata, message):
    error = order_refusal(tmp_path, {"./a": {}}, {"a": {"id": "a", **metadata}})
    assert str(error) == f"{where(tmp_path)}: {message}"


@pytest.mark.parametrize("override", ["./a", [1], ["./a", None], {"./a": 1}])
def test_an_override_that_is_not_a_list_of_ids_is_one_error(tmp_path, override):
    error = order_refusal(tmp_path, {"./a": {}}, {"a": order_feature("a")}, override=override)
    assert str(error) == f"{where(tmp_path)}: 'overrideFeatureInstallOrder' must be a list of feature ids"


@pytest.mark.parametrize("key", ["myfeature", "owner/repo/f", "ghcr.io/x/y:"])
def test_an_override_naming_no_feature_is_one_error(tmp_path, key):
    error = order_refusal(tmp_path, {"./a": {}}, {"a": order_feature("a")}, override=["./a", key])
    assert str(error) == f"{where(tmp_path)}: Feature '{key}' in 'overrideFeatureInstallOrder' could not be processed."
    assert error.hint == "name a feature as the features object does (\"./name\" or a registry reference)"


def test_an_override_names_a_registry_feature_whatever_its_tag_but_not_by_a_legacy_id(tmp_path):
    registry = {"ghcr.io/x/y/new:2": {"id": "new", "legacyIds": ["old"]}}
    local = {"a": order_feature("a")}
    requested = {"./a": {}, "ghcr.io/x/y/new:2": {}}
    assert [key for key, _ in keys_and_options(tmp_path, requested, local, registry, override=["ghcr.io/x/y/new"])] == [
        "ghcr.io/x/y/new:2", "./a"]
    assert [key for key, _ in keys_and_options(tmp_path, requested, local, registry, override=["ghcr.io/x/y/old:2"])] == [
        "./a", "ghcr.io/x/y/new:2"]
    assert [key for key, _ in keys_and_options(tmp_path, requested, local, registry, override=["golang"])] == [
        "./a", "ghcr.io/x/y/new:2"]


def test_an_empty_override_changes_nothing(tmp_path):
    local = {"a": order_feature("a"), "b": order_feature("b")}
    assert keys_and_options(tmp_path, {"./b": {}, "./a": {}}, local, override=[]) == [("./a", {}), ("./b", {})]


def test_up_to_a_hundred_features_with_their_dependencies(tmp_path):
    local = {f"f{number:03}": order_feature(f"f{number:03}") for number in range(101)}
    installed, _ = ordered(tmp_path, {f"./f{number:03}": {} for number in range(100)}, local)
    assert [feature.key for feature in installed] == [f"./f{number:03}" for number in range(100)]
    chain = {"a": order_feature("a", depends_on={"./f000": {}})}
    installed, _ = ordered(tmp_path, {"./a": {}, **{f"./f{number:03}": {} for number in range(99)}}, {**local, **chain})
    assert len(installed) == 100
    error = order_refusal(tmp_path, {"./a": {}, **{f"./f{number:03}": {} for number in range(1, 100)}}, {**local, **chain})
    assert str(error) == f"{where(tmp_path)}: more than 100 features with their dependencies (dependsOn)"


def test_a_dependency_outside_the_devcontainer_folder_is_refused(tmp_path):
    feature_folder(tmp_path / "wt" / "tools", "b")
    error = order_refusal(tmp_path, {"./a": {}}, {"a": order_feature("a", depends_on={"../tools/b": {}})})
    assert str(error) == (f"{where(tmp_path)}: feature ../tools/b: Local file path parse error. Resolved path must be a "
                          f"child of the .devcontainer/ folder.  Parsed: {tmp_path / 'wt' / 'tools' / 'b'}")
    assert error.hint == ("a local feature is a folder under .devcontainer/, named from the devcontainer.json "
                          "(\"./name\")")


def test_an_installs_after_outside_the_devcontainer_folder_is_refused(tmp_path):
    error = order_refusal(tmp_path, {"./a": {}}, {"a": order_feature("a", installs_after=["../tools/b"])})
    assert str(error) == (f"{where(tmp_path)}: feature ../tools/b: Local file path parse error. Resolved path must be a "
                          f"child of the .devcontainer/ folder.  Parsed: {tmp_path / 'wt' / 'tools' / 'b'}")


def test_a_local_feature_must_be_under_the_devcontainer_folder_whichever_file_names_it(tmp_path):
    """The reference's rule (processFeatureIdentifier): from a .devcontainer.json at the root, "./.devcontainer/x";
    from a named configuration in .devcontainer/gpu/, "../x"."""
    worktree = tmp_path / "wt"
    feature_folder(worktree / "tools", "f")
    feature_folder(worktree / ".devcontainer", "f")
    feature_folder(worktree / ".devcontainerx", "f")
    path = worktree / ".devcontainer.json"
    for key in ("./tools/f", "./f", "./.devcontainerx/f", "./.devcontainer/../f"):
        with pytest.raises(UsageError) as refused:
            features.resolve(path, key, {}, worktree, worktree, worktree, None)
        assert str(refused.value) == (f"{path}: feature {key}: Local file path parse error. Resolved path must be a "
                                      f"child of the .devcontainer/ folder.  Parsed: {os.path.normpath(worktree / key)}")
        assert refused.value.hint == ("a local feature is a folder under .devcontainer/, named from the "
                                      "devcontainer.json (\"./name\")")
    feature = features.resolve(path, "./.devcontainer/f", {}, worktree, worktree, worktree, None)
    assert (feature.folder, feature.source) == (worktree / ".devcontainer" / "f",
                                                features.Source("file-path", str(worktree / ".devcontainer" / "f")))
    nested = worktree / ".devcontainer" / "gpu"
    feature = features.resolve(nested / "devcontainer.json", "../f", {}, nested, worktree, worktree, None)
    assert (feature.folder, feature.source) == (worktree / ".devcontainer" / "f",
                                                features.Source("file-path", str(worktree / ".devcontainer" / "f")))


def test_a_local_features_source_is_its_path_as_written_not_through_links(tmp_path):
    feature_folder(tmp_path / "wt" / ".devcontainer", "real")
    (tmp_path / "wt" / ".devcontainer" / "link").symlink_to("real")
    feature = resolve(tmp_path, "./link")
    assert feature.folder == tmp_path / "wt" / ".devcontainer" / "real"
    assert feature.source == features.Source("file-path", str(tmp_path / "wt" / ".devcontainer" / "link"))
    assert feature.source.resource == str(tmp_path / "wt" / ".devcontainer" / "link")


@pytest.mark.parametrize("key,source", [
    ("ghcr.io/x/y/f:1", ("ghcr.io/x/y", "f", "1")), ("ghcr.io/x/y/f", ("ghcr.io/x/y", "f", "latest")),
    (f"ghcr.io/x/f@sha256:{'a' * 64}", ("ghcr.io/x", "f", None)), ("localhost:5000/f/hello:1.0", ("localhost:5000/f", "hello", "1.0")),
    ("localhost:5000/f/hello", ("localhost:5000/f", "hello", "latest")),
])
def test_a_registry_features_source_is_namespace_id_and_tag(tmp_path, key, source):
    feature = resolve(tmp_path, key, fetch=lambda reference: feature_folder(tmp_path / "cache", "x"))
    assert feature.source == features.Source("oci", *source)
    assert feature.source.resource == f"{source[0]}/{source[1]}"


@pytest.mark.parametrize("key,hint", [
    ("docker-in-docker", 'its current form is "ghcr.io/devcontainers/features/docker-in-docker:1"'),
    ("golang", 'its current form is "ghcr.io/devcontainers/features/go:1"'),
    ("common", 'its current form is "ghcr.io/devcontainers/features/common-utils:1"'),
    ("maven", 'its current form is "ghcr.io/devcontainers/features/java:1"'),
    ("jupyterlab", 'its current form is "ghcr.io/devcontainers/features/python:1"'),
    ("terraform", 'its current form is "ghcr.io/devcontainers/features/terraform:1"'),
    ("aws-cli", 'its current form is "ghcr.io/devcontainers/features/aws-cli:1"'),
])
def test_an_old_short_id_cannot_be_resolved_and_names_its_current_form(tmp_path, key, hint):
    error = resolve_refusal(tmp_path, key)
    assert (str(error), error.hint) == (f"{where(tmp_path)}: Could not resolve Feature '{key}': the short ids of the old "
                                        f"feature format are not supported", hint)


def test_the_old_short_ids_are_the_references(tmp_path):
    assert features._MIGRATED_IDS == {
        "aws-cli": "aws-cli", "azure-cli": "azure-cli", "desktop-lite": "desktop-lite", "docker-in-docker": "docker-in-docker",
        "docker-from-docker": "docker-from-docker", "dotnet": "dotnet", "git": "git", "git-lfs": "git-lfs",
        "github-cli": "github-cli", "java": "java", "kubectl-helm-minikube": "kubectl-helm-minikube", "node": "node",
        "powershell": "powershell", "python": "python", "ruby": "ruby", "rust": "rust", "sshd": "sshd",
        "terraform": "terraform", "golang": "go", "common": "common-utils", "gradle": "java", "maven": "java",
        "jupyterlab": "python"}


@pytest.mark.parametrize("key", ["devcontainers/features/go", "owner/repo/f:1", "user/f"])
def test_a_registry_reference_without_a_host_cannot_be_resolved(tmp_path, key):
    error = resolve_refusal(tmp_path, key, fetch=lambda reference: pytest.fail("fetched"))
    assert (str(error), error.hint) == (
        f"{where(tmp_path)}: Could not resolve Feature '{key}'.  Ensure the Feature is published and accessible from "
        f"your current environment.", "a feature from a registry is named with the registry's host "
        "(ghcr.io/owner/repo/feature); the GitHub-release features of the old format are not supported")


@pytest.mark.parametrize("host,registry", [("ghcr.io", True), ("host:5000", True), ("localhost", True), ("owner", False),
                                           ("localhostx", False), ("Localhost", False)])
def test_a_registry_is_told_from_a_user_as_docker_does(host, registry):
    assert features._registry_host(host) is registry


@pytest.mark.parametrize("reference,tagged", [("ghcr.io/x/f", "ghcr.io/x/f:latest"), ("ghcr.io/x/f:1", "ghcr.io/x/f:1"),
                                              ("localhost:5000/x/f", "localhost:5000/x/f:latest"),
                                              (f"ghcr.io/x/f@sha256:{'a' * 64}", f"ghcr.io/x/f@sha256:{'a' * 64}")])
def test_a_reference_without_a_tag_means_latest(reference, tagged):
    assert features._with_tag(reference) == tagged


# ---------------------------------------------------------------- features: the reference's comparisons


def test_the_reference_collation_orders_as_localecompare():
    """JavaScript's [...].sort((a, b) => a.localeCompare(b)), from node."""
    words = ["./b", "ghcr.io/x", "./a", "../a", "a", "A", "B", "b", "a-b", "a_b", "ab", "a.b", "a/b", "1.2", "10", "9"]
    expected = ["../a", "./a", "./b", "1.2", "10", "9", "a", "A", "a_b", "a-b", "a.b", "a/b", "ab", "b", "B", "ghcr.io/x"]
    assert sorted(words, key=cmp_to_key(features._locale_compare)) == expected


@pytest.mark.parametrize("a,b,result", [("a", "a", 0), ("a", "b", -1), ("b", "a", 1), ("a", "A", -1), ("A", "a", 1),
                                        ("B", "a", 1), ("9", "a", -1), ("_", "0", -1), ("~", "$", -1), ("é", "z", 1),
                                        ("z", "é", -1), ("a", "ab", -1), ("", "a", -1), (" ", "_", -1)])
def test_locale_compare_is_minus_one_zero_or_one(a, b, result):
    assert features._locale_compare(a, b) == result


def test_the_collation_key_is_punctuation_then_digits_then_letters_then_the_rest_then_case():
    assert features._collation_key("_9aZé") == ([(0, 1), (1, ord("9")), (2, ord("a")), (2, ord("z")), (2, ord("é"))],
                                                [False, False, False, True, False])
    assert features._collation_key("\x01") == ([(3, 1)], [False])
    assert features._collation_key("$ ") == ([(0, len(features._PUNCTUATION) - 1), (0, 0)], [False, False])


@pytest.mark.parametrize("a,b,result", [
    ("1", "2", -1), ("2", "1", 1), ("1", "1", 0),
    ({}, {"a": "1"}, -1), ({"a": "1", "b": "1"}, {"a": "1"}, 1), ({"a": "1"}, {"a": "1"}, 0),
    ({"a": "1"}, {"b": "1"}, -1), ({"b": "1"}, {"a": "1"}, 1),
    ({"a": "1", "b": "2"}, {"a": "1", "b": "1"}, 1), ({"a": "x"}, {"a": "Y"}, -1),
    ({"a": True}, {"a": False}, 1), ({"a": False}, {"a": True}, -1), ({"a": True}, {"a": True}, 0),
    ({"a": 1}, {"a": 2}, 0), ({"a": "1"}, {"a": 1}, 0), ({"a": True, "b": "2"}, {"a": True, "b": "1"}, 1),
    ({"a": "1"}, "1", -1), ("1", {"a": "1"}, 1),
])
def test_options_compare_as_the_reference_fewer_first_then_by_name_and_value(a, b, result):
    assert features._options_compare(a, b) == result


def test_a_feature_outside_the_repository_names_the_local_rule(tmp_path):
    feature_folder(tmp_path, "outside")
    assert resolve_refusal(tmp_path, "../../outside").hint == (
        "a local feature is a folder under .devcontainer/, named from the devcontainer.json (\"./name\")")


@pytest.mark.parametrize("key", ["owner/x.y/f", "owner/host:5000/f", "owner/localhost/f/g"])
def test_a_reference_is_told_a_registry_by_its_first_part_only(tmp_path, key):
    error = resolve_refusal(tmp_path, key, fetch=lambda reference: pytest.fail("fetched"))
    assert str(error) == (f"{where(tmp_path)}: Could not resolve Feature '{key}'.  Ensure the Feature is published and "
                          f"accessible from your current environment.")


def test_an_installs_after_or_override_naming_a_host_after_the_first_part_names_no_feature(tmp_path):
    local = {"a": order_feature("a", installs_after=["owner/x.y/f", "owner/localhost/f"])}
    installed, named = ordered(tmp_path, {"./a": {}}, local)
    assert [feature.key for feature in installed] == ["./a"]
    assert named == [f"feature ./a: installsAfter {key} (names no local folder or registry feature)"
                     for key in ("owner/x.y/f", "owner/localhost/f")]
    error = order_refusal(tmp_path, {"./a": {}}, local, override=["owner/x.y/f"])
    assert str(error) == f"{where(tmp_path)}: Feature 'owner/x.y/f' in 'overrideFeatureInstallOrder' could not be processed."


@pytest.mark.parametrize("key,source", [
    ("golang", features.Source("oci", "ghcr.io/devcontainers/features", "go", "1")),
    ("python", features.Source("oci", "ghcr.io/devcontainers/features", "python", "1")),
    ("pytorch", None), ("ghcr.io/x/f", features.Source("oci", "ghcr.io/x", "f", "latest")),
    ("ghcr.io/x/f:2", features.Source("oci", "ghcr.io/x", "f", "2")), ("owner/x.y/f", None), ("ghcr.io/x/F", features.Source("oci", "ghcr.io/x", "f", "latest")),
    ("https://h/devcontainer-feature-f.tgz", features.Source("direct-tarball", "https://h/devcontainer-feature-f.tgz")),
    ("https://h/f.tgz", None),
])
def test_an_installs_after_entry_names_a_feature_as_the_reference_maps_it(tmp_path, key, source):
    """An old short id stands for the version 1 of its current form, as the reference maps it."""
    base = tmp_path / "wt" / ".devcontainer"
    assert features._source(base / "devcontainer.json", key, base, tmp_path / "wt") == source


def test_an_override_outside_the_devcontainer_folder_is_refused(tmp_path):
    error = order_refusal(tmp_path, {"./a": {}}, {"a": order_feature("a")}, override=["../tools/b"])
    assert str(error) == (f"{where(tmp_path)}: feature ../tools/b: Local file path parse error. Resolved path must be a "
                          f"child of the .devcontainer/ folder.  Parsed: {tmp_path / 'wt' / 'tools' / 'b'}")


@pytest.mark.parametrize("metadata", [{"id": "old", "currentId": "new"}, {"id": "new"}, {"currentId": "new"},
                                      {"id": "pkg", "legacyIds": ["new"]}])
def test_installs_after_finds_a_registry_feature_by_its_current_id_or_id_or_legacy_ids(tmp_path, metadata):
    registry = {"ghcr.io/x/y/pkg:2": metadata}
    local = {"a": order_feature("a", installs_after=["ghcr.io/x/y/new"])}
    assert [key for key, _ in keys_and_options(tmp_path, {"./a": {}, "ghcr.io/x/y/pkg:2": {}}, local, registry)] == [
        "ghcr.io/x/y/pkg:2", "./a"]


def test_without_an_id_a_registry_feature_is_named_by_its_reference(tmp_path):
    registry = {"ghcr.io/x/y/pkg:2": {}}
    local = {"a": order_feature("a", installs_after=["ghcr.io/x/y/new"])}
    assert [key for key, _ in keys_and_options(tmp_path, {"./a": {}, "ghcr.io/x/y/pkg:2": {}}, local, registry)] == [
        "./a", "ghcr.io/x/y/pkg:2"]


@pytest.mark.parametrize("first", ["ghcr.io/x/y/old:1", "ghcr.io/x/y/new:2"])
def test_a_renamed_registry_feature_and_its_old_id_sort_by_tag_either_way(tmp_path, first):
    """new names old among its legacyIds: they are one feature, of tags 1 and 2."""
    registry = {"ghcr.io/x/y/new:2": {"id": "new", "legacyIds": ["old"], "content": "n"},
                "ghcr.io/x/y/old:1": {"id": "old", "content": "o"}}
    requested = {first: {}, **{key: {} for key in registry if key != first}}
    assert [key for key, _ in keys_and_options(tmp_path, requested, registry=registry)] == [
        "ghcr.io/x/y/old:1", "ghcr.io/x/y/new:2"]
