"""Dev Container Features: dependsOn, installsAfter, overrideFeatureInstallOrder, as the reference
implementation (devcontainers/cli) orders them.

The order's tests mirror the reference's own (src/test/container-features/containerFeaturesOrder.test.ts
over the fixtures in src/test/container-features/configs/feature-dependencies), with the same
expected order; the parser is called directly, registry features coming from a stand-in fetch.
The engine tests make containers with `git gpuspace add` and read the order install.sh wrote.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from conftest import TEST_IMAGE
from git_gpuspace.devcontainer import parser as devcontainer, features
from git_gpuspace.errors import UsageError
from helpers import DEPENDSON, DEPENDSON_REGISTRY


def feature_json(name: str, depends_on: dict | None = None, installs_after: list | None = None,
                 options: tuple[str, ...] = ("magicNumber",)) -> dict[str, str]:
    """The reference fixtures' feature: options defaulting to "0", and its dependencies."""
    metadata: dict = {"id": name, "version": "1.0.0",
                      "options": {option: {"type": "string", "default": "0"} for option in options}}
    if depends_on is not None:
        metadata["dependsOn"] = depends_on
    if installs_after is not None:
        metadata["installsAfter"] = installs_after
    return {f"{name}/devcontainer-feature.json": json.dumps(metadata), f"{name}/install.sh": "#!/bin/sh\n"}


def load(tmp_path: Path, document: dict, local: dict[str, str], registry: dict[str, dict] | None = None,
         at: str = ".devcontainer/devcontainer.json") -> devcontainer.Devcontainer:
    """`document` as the devcontainer.json at `at`; `local`: files under .devcontainer/;
    `registry`: the metadata of each registry feature the stand-in fetch serves, by reference."""
    worktree = tmp_path / "wt"
    for name, text in local.items():
        (worktree / ".devcontainer" / name).parent.mkdir(parents=True, exist_ok=True)
        (worktree / ".devcontainer" / name).write_text(text)
    path = worktree / at
    path.parent.mkdir(parents=True, exist_ok=True)
    content = json.dumps(document).encode()
    path.write_bytes(content)

    def fetch(reference: str) -> Path:
        folder = tmp_path / "registry" / reference.replace("/", "_").replace(":", "_")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "devcontainer-feature.json").write_text(json.dumps((registry or {})[reference]))
        (folder / "install.sh").write_text("#!/bin/sh\n")
        return folder

    return devcontainer.load(path, content, worktree, worktree, True, fetch)


def order(config: devcontainer.Devcontainer) -> list[tuple[str, object]]:
    return [(feature.key, feature.options) for feature in config.features]


def refusal(tmp_path: Path, *args, **kwargs) -> UsageError:
    with pytest.raises(UsageError) as refused:
        load(tmp_path, *args, **kwargs)
    return refused.value


# --- the reference's featureOrder tests -------------------------------------------------------

def test_installs_after_local_simple(tmp_path):
    """installsAfter/local-simple: ./b is not there, so only ./c counts."""
    local = {**feature_json("a", installs_after=["./b", "./c"]), **feature_json("b"), **feature_json("c")}
    config = load(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {}, "./c": {"magicNumber": "321"}}}, local)
    assert order(config) == [("./c", {"magicNumber": "321"}), ("./a", {})]


def test_installs_after_invalid_circular(tmp_path):
    local = {**feature_json("a", installs_after=["./b"]), **feature_json("b", installs_after=["./c"]),
             **feature_json("c", installs_after=["./a"])}
    error = refusal(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {}, "./b": {}, "./c": {}}}, local)
    assert "Failed to compute Feature installation order! Circular dependency detected: ./a, ./b, ./c" in str(error)


def test_depends_on_local_simple(tmp_path):
    """dependsOn/local-simple: the dependency is installed, with the options dependsOn gives."""
    local = {**feature_json("a", depends_on={"./b": {"magicNumber": "50"}}), **feature_json("b")}
    config = load(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {}}}, local)
    assert order(config) == [("./b", {"magicNumber": "50"}), ("./a", {})]
    assert config.features[0].environment() == {"MAGICNUMBER": "50"}
    assert not any("dependsOn" in named for named in config.unsupported)


def test_depends_on_local_with_options(tmp_path):
    """dependsOn/local-with-options: the same feature with other options is another install;
    a round sorts by path, then fewer options first, then by option values."""
    options = ("optA", "optB")
    local = {**feature_json("a", depends_on={"./b": {"optA": "a", "optB": "a"}, "./c": {}}, options=options),
             **feature_json("b", options=options),
             **feature_json("c", depends_on={"./b": {"optA": "b", "optB": "a"}, "./d": {}, "./e": {}}, options=options),
             **feature_json("d", depends_on={"./b": {"optA": "b", "optB": "b"}}, options=options),
             **feature_json("e", depends_on={"./b": {}}, options=options)}
    config = load(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {"optA": "a", "optB": "b"},
                                                                "./b": {"optA": "a", "optB": "b"}}}, local)
    assert order(config) == [
        ("./b", {}), ("./b", {"optA": "a", "optB": "a"}), ("./b", {"optA": "a", "optB": "b"}),
        ("./b", {"optA": "b", "optB": "a"}), ("./b", {"optA": "b", "optB": "b"}),
        ("./d", {}), ("./e", {}), ("./c", {}), ("./a", {"optA": "a", "optB": "b"})]


def test_depends_on_invalid_circular(tmp_path):
    local = {**feature_json("a", depends_on={"./b": {}}), **feature_json("b", depends_on={"./c": {"magicNumber": "50"}}),
             **feature_json("c", depends_on={"./a": {"magicNumber": "50"}})}
    error = refusal(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {}}}, local)
    assert str(error).endswith("Failed to compute Feature installation order! Circular dependency detected: "
                               "./a, ./b, ./c")
    assert error.hint == "their dependsOn and installsAfter (devcontainer-feature.json) name each other; nothing was made"


def test_depends_on_and_installs_after_local_simple(tmp_path):
    local = {**feature_json("a", depends_on={"./c": {"magicNumber": "321"}}, installs_after=["./b"]),
             **feature_json("b"), **feature_json("c")}
    config = load(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {}}}, local)
    assert order(config) == [("./c", {"magicNumber": "321"}), ("./a", {})]


@pytest.mark.parametrize("fixture,graph,roots,override,expected", [
    ("local-simple", {"a": {"./b": {}, "./c": {}, "./d": {}}}, ["./a"], ["./c"], ["./c", "./b", "./d", "./a"]),
    ("local-intermediate", {"a": {"./b": {}, "./d": {}}, "b": {"./c": {}}}, ["./a"], ["./c", "./d"],
     ["./c", "./d", "./b", "./a"]),
    ("local-roundPriority", {"b": {"./a": {}}}, ["./b", "./c"], ["./a", "./b", "./c"], ["./a", "./b", "./c"]),
])
def test_override_feature_install_order(tmp_path, fixture, graph, roots, override, expected):
    """overrideFeatureInstallOrder/<fixture>: a named feature installs as soon as its own
    dependencies allow, the first named first, before any feature not named."""
    local = {name: text for feature in "abcd" for name, text in feature_json(
        feature, depends_on=graph.get(feature), installs_after=["./c"] if (fixture, feature) == (
            "local-intermediate", "a") else None).items()}
    config = load(tmp_path, {"image": TEST_IMAGE, "features": {key: {} for key in roots},
                             "overrideFeatureInstallOrder": override}, local)
    assert [key for key, _ in order(config)] == expected
    assert "overrideFeatureInstallOrder" not in config.unsupported




def test_depends_on_registry_features(tmp_path):
    """dependsOn/oci-ab: one registry feature twice, with two sets of options, sorted by them."""
    config = load(tmp_path, {"image": TEST_IMAGE, "features": {f"{DEPENDSON}/b": {"magicNumber": "400"},
                                                                f"{DEPENDSON}/a": {"magicNumber": "10"}}},
                  {}, DEPENDSON_REGISTRY)
    assert order(config) == [(f"{DEPENDSON}/d", {"magicNumber": "30"}), (f"{DEPENDSON}/e", {"magicNumber": "50"}),
                             (f"{DEPENDSON}/a", {"magicNumber": "10"}), (f"{DEPENDSON}/a", {"magicNumber": "40"}),
                             (f"{DEPENDSON}/c", {"magicNumber": "20"}), (f"{DEPENDSON}/b", {"magicNumber": "400"})]


def test_override_with_local_and_registry_features(tmp_path):
    """overrideFeatureInstallOrder/mixed: a local feature before a registry one in a round."""
    local = {**feature_json("a", depends_on={"./b": {}, "./c": {}, "./d": {}, f"{DEPENDSON}/b": {"magicNumber": "400"}}),
             **feature_json("b"), **feature_json("c"), **feature_json("d")}
    config = load(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {}},
                             "overrideFeatureInstallOrder": [f"{DEPENDSON}/a", "./d"]}, local, DEPENDSON_REGISTRY)
    assert order(config) == [("./d", {}), ("./b", {}), ("./c", {}),
                             (f"{DEPENDSON}/d", {"magicNumber": "30"}), (f"{DEPENDSON}/e", {"magicNumber": "50"}),
                             (f"{DEPENDSON}/a", {"magicNumber": "40"}), (f"{DEPENDSON}/c", {"magicNumber": "20"}),
                             (f"{DEPENDSON}/b", {"magicNumber": "400"}), ("./a", {})]


# --- what the order algorithm rests on ------------------------------------------------------

def test_a_dependency_the_file_also_names_with_the_same_options_installs_once(tmp_path):
    local = {**feature_json("a", depends_on={"./b": {"magicNumber": "1"}}), **feature_json("b")}
    config = load(tmp_path, {"image": TEST_IMAGE, "features": {"./b": {"magicNumber": "1"}, "./a": {}}}, local)
    assert order(config) == [("./b", {"magicNumber": "1"}), ("./a", {})]
    config = load(tmp_path, {"image": TEST_IMAGE, "features": {"./b": {"magicNumber": "2"}, "./a": {}}}, local)
    assert order(config) == [("./b", {"magicNumber": "1"}), ("./b", {"magicNumber": "2"}), ("./a", {})]


def test_installs_after_a_registry_feature_whatever_its_tag_or_by_a_legacy_id(tmp_path):
    registry = {"ghcr.io/x/y/new:2": {"id": "new", "legacyIds": ["old"]}}
    local = {**feature_json("a", installs_after=["ghcr.io/x/y/old:1"]), **feature_json("z", installs_after=["ghcr.io/x/y/new"])}
    config = load(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {}, "./z": {}, "ghcr.io/x/y/new:2": {}}},
                  local, registry)
    assert [key for key, _ in order(config)] == ["ghcr.io/x/y/new:2", "./a", "./z"]


def test_a_feature_that_installs_after_itself_is_a_cycle_as_in_the_reference(tmp_path):
    error = refusal(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {}}}, feature_json("a", installs_after=["./a"]))
    assert "Circular dependency detected: ./a" in str(error)


def test_an_installs_after_naming_no_feature_is_named(tmp_path):
    local = {**feature_json("a", installs_after=["b"]), **feature_json("b")}
    config = load(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {}, "./b": {}}}, local)
    assert order(config) == [("./a", {}), ("./b", {})]
    assert "feature ./a: installsAfter b (names no local folder or registry feature)" in config.unsupported


@pytest.mark.parametrize("metadata,message", [
    ({"dependsOn": ["./b"]}, "feature ./a: dependsOn in devcontainer-feature.json must be an object (feature -> options)"),
    ({"installsAfter": "./b"}, "feature ./a: installsAfter in devcontainer-feature.json must be a list of feature ids"),
    ({"dependsOn": {"http://example.com/devcontainer-feature-b.tgz": {}}},
     "feature ./a depends on http://example.com/devcontainer-feature-b.tgz, which is not a local folder, an OCI "
     "reference or an https:// tarball"),
])
def test_bad_dependencies_are_one_error(tmp_path, metadata, message):
    local = {"a/devcontainer-feature.json": json.dumps({"id": "a", **metadata}), "a/install.sh": ""}
    error = refusal(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {}}}, local)
    assert str(error) == f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: {message}"


@pytest.mark.parametrize("override", ["./a", [1], ["myfeature"]])
def test_a_bad_override_is_one_error(tmp_path, override):
    error = refusal(tmp_path, {"image": TEST_IMAGE, "features": {"./a": {}}, "overrideFeatureInstallOrder": override},
                    feature_json("a"))
    assert ("'overrideFeatureInstallOrder' must be a list of feature ids" in str(error)
            or "Feature 'myfeature' in 'overrideFeatureInstallOrder' could not be processed." in str(error))


def test_a_local_feature_must_be_under_the_devcontainer_folder(tmp_path):
    """The reference's rule (processFeatureIdentifier): a local feature is in .devcontainer/,
    whichever devcontainer.json names it; from a .devcontainer.json at the root, "./.devcontainer/x"."""
    worktree = tmp_path / "wt"
    for folder in ("tools/f", ".devcontainer/f"):
        (worktree / folder).mkdir(parents=True)
        (worktree / folder / "devcontainer-feature.json").write_text('{"id": "f"}')
        (worktree / folder / "install.sh").write_text("")
    path = worktree / ".devcontainer.json"
    for key in ("./tools/f", "./f"):
        with pytest.raises(UsageError) as refused:
            devcontainer.load(path, json.dumps({"image": TEST_IMAGE, "features": {key: {}}}).encode(), worktree,
                              worktree, True)
        assert str(refused.value) == (f"{path}: feature {key}: Local file path parse error. Resolved path must be a "
                                      f"child of the .devcontainer/ folder.  Parsed: {worktree / key[2:]}")
    content = json.dumps({"image": TEST_IMAGE, "features": {"./.devcontainer/f": {}}}).encode()
    config = devcontainer.load(path, content, worktree, worktree, True)
    assert [feature.folder for feature in config.features] == [worktree / ".devcontainer" / "f"]
    nested = worktree / ".devcontainer" / "gpu" / "devcontainer.json"  # a named configuration: "../f"
    nested.parent.mkdir()
    config = devcontainer.load(nested, b'{"features": {"../f": {}}}', worktree, worktree, True)
    assert [feature.folder for feature in config.features] == [worktree / ".devcontainer" / "f"]


@pytest.mark.parametrize("key,message,hint", [
    ("docker-in-docker", "Could not resolve Feature 'docker-in-docker': the short ids of the old feature format are "
     "not supported", 'its current form is "ghcr.io/devcontainers/features/docker-in-docker:1"'),
    ("golang", "Could not resolve Feature 'golang': the short ids of the old feature format are not supported",
     'its current form is "ghcr.io/devcontainers/features/go:1"'),
    ("devcontainers/features/go", "Could not resolve Feature 'devcontainers/features/go'.  Ensure the Feature is "
     "published and accessible from your current environment.", "a feature from a registry is named with the "
     "registry's host (ghcr.io/owner/repo/feature); the GitHub-release features of the old format are not supported"),
])
def test_a_feature_id_of_the_old_format_cannot_be_resolved(tmp_path, key, message, hint):
    error = refusal(tmp_path, {"image": TEST_IMAGE, "features": {key: {}}}, {})
    assert (str(error), error.hint) == (f"{tmp_path / 'wt' / '.devcontainer' / 'devcontainer.json'}: {message}", hint)


def test_the_reference_collation_orders_as_localecompare():
    """JavaScript's ["./b", "ghcr.io/x", "./a", ...].sort((a, b) => a.localeCompare(b)), from node."""
    words = ["./b", "ghcr.io/x", "./a", "../a", "a", "A", "B", "b", "a-b", "a_b", "ab", "a.b", "a/b", "1.2", "10", "9"]
    expected = ["../a", "./a", "./b", "1.2", "10", "9", "a", "A", "a_b", "a-b", "a.b", "a/b", "ab", "b", "B", "ghcr.io/x"]
    from functools import cmp_to_key
    assert sorted(words, key=cmp_to_key(features._locale_compare)) == expected


# --- on the engine ----------------------------------------------------------------------------

def feature_archive(name: str, install: str, mode: str = "w", **metadata) -> bytes:
    """A feature's folder as a tar (`mode` "w:gz": a .tgz); install.sh runs `install`."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode=mode) as tar:
        for file, text in (("devcontainer-feature.json", json.dumps({"id": name, "options": {
                "word": {"type": "string", "default": "unset"}}, **metadata})),
                           ("install.sh", f"#!/bin/sh\nset -e\n{install}\n")):
            data = text.encode()
            info = tarfile.TarInfo(f"./{file}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return archive.getvalue()


def published_feature(registry, name: str, install: str) -> str:
    """`<host>/features/<name>:1` in conftest's registry; install.sh runs `install`."""
    return registry.serve(f"features/{name}", "1", [feature_archive(name, install)])


def local_feature(name: str, install: str, **metadata) -> dict[str, str]:
    return {f".devcontainer/{name}/devcontainer-feature.json": json.dumps({
                "id": name, "options": {"word": {"type": "string", "default": "unset"}}, **metadata}),
            f".devcontainer/{name}/install.sh": f"#!/bin/sh\nset -e\nmkdir -p /usr/local\n{install}\n"}


def record(name: str) -> str:
    return f'printf "%s " "{name}:$WORD" >> /usr/local/order'


def test_features_install_in_the_references_order_in_the_container(repo, tmp_path, feature_registry):
    """./a needs ./b (given options) and a registry feature, installs after ./c; the file names ./b
    with the same options too (installed once); ./d is first by overrideFeatureInstallOrder."""
    hello = published_feature(feature_registry, "hello", "mkdir -p /usr/local\n" + record("hello"))
    repo.commit({
        **local_feature("a", record("a"), dependsOn={"./b": {"word": "from-a"}, hello: {"word": "from-a"}},
                        installsAfter=["./c"]),
        **local_feature("b", record("b")), **local_feature("c", record("c")), **local_feature("d", record("d")),
        ".devcontainer/devcontainer.json": json.dumps({
            "image": TEST_IMAGE, "features": {"./a": {}, "./c": {}, "./b": {"word": "from-a"}, "./d": {}},
            "overrideFeatureInstallOrder": ["./d"]})}, "features that depend on each other")
    result = repo.gs("add", "-b", "deps", str(tmp_path / "wts" / "deps"), "--gpus", "none", "--trust")
    assert result.returncode == 0, result.stderr
    assert "dependsOn" not in result.stderr and "overrideFeatureInstallOrder" not in result.stderr
    [container] = repo.containers()
    output = container.exec_run(["cat", "/usr/local/order"])
    assert output.exit_code == 0, output.output
    assert output.output.decode() == "d:unset b:from-a c:unset hello:from-a a:unset "


def test_a_tarball_feature_and_the_registry_feature_it_depends_on_are_installed(repo, tmp_path, tarball_server,
                                                                              feature_registry):
    """features/image-with-v2-tarball and dependsOn-and-installsAfter/a: a feature from an https
    tarball (through a redirect, as GitHub's release downloads are), depending on a registry
    feature; a registry reference in upper case is read lowercased, as the reference reads it."""
    hello = published_feature(feature_registry, "hello", "mkdir -p /usr/local\n" + record("hello"))
    tarball_server.files["/releases/devcontainer-feature-tgz.tgz"] = tarball_server.url + "/objects/tgz"
    tarball_server.files["/objects/tgz"] = feature_archive("tgz", "mkdir -p /usr/local\n" + record("tgz"), "w:gz",
                                                           dependsOn={hello: {"word": "from-tgz"}})
    url = tarball_server.url + "/releases/devcontainer-feature-tgz.tgz"
    upper = hello.replace("/features/hello", "/Features/Hello")
    repo.commit({".devcontainer/devcontainer.json": json.dumps({
        "image": TEST_IMAGE, "features": {url: {"word": "x"}, upper: {"word": "upper"}}})}, "a tarball feature")
    result = repo.gs("add", "-b", "tgz", str(tmp_path / "wts" / "tgz"), "--gpus", "none")
    assert result.returncode == 0, result.stderr
    assert "not supported" not in result.stderr
    [container] = repo.containers()
    output = container.exec_run(["cat", "/usr/local/order"])
    assert output.output.decode() == "hello:from-tgz hello:upper tgz:x "


@pytest.mark.parametrize("key,files,words", [
    pytest.param("./a", {**local_feature("a", "true", dependsOn={"./b": {}}),
                         **local_feature("b", "true", dependsOn={"./a": {}})},
                 "Failed to compute Feature installation order! Circular dependency detected: ./a, ./b", id="circular"),
    pytest.param("github-cli", {}, "Could not resolve Feature 'github-cli'", id="old-id"),
    pytest.param("../tools/a", {"tools/a/devcontainer-feature.json": "{}", "tools/a/install.sh": ""},
                 "feature ../tools/a: Local file path parse error. Resolved path must be a child of the .devcontainer/ "
                 "folder.", id="outside-devcontainer"),
])
def test_a_feature_refusal_is_one_line_and_makes_nothing(repo, tmp_path, key, files, words):
    repo.commit({**files, ".devcontainer/devcontainer.json": json.dumps({"image": TEST_IMAGE, "features": {key: {}}})},
                "a refused feature")
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "refused", str(tmp_path / "wts" / "refused"), "--gpus", "none", "--trust")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("git-gpuspace: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert words in errors[0], result.stderr
    assert repo.snapshot(tmp_path / "wts") == before and "refused" not in repo.branches()
