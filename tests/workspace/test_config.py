"""config.py exactly: the user's config file and the layers of settings it takes part in.

Every message a user reads is pinned in full, and every boundary, so that scripts/mutation's
changes to the module fail a test. Engine-free and fast."""

from __future__ import annotations

import io
import os
import tempfile
import tomllib
from pathlib import Path

import pytest

from git_gpuspace import config
from git_gpuspace.errors import StateError, UsageError

from helpers import usage_error


def test_durations_in_seconds_and_their_refusals():
    assert [config.duration(text, "--grace") for text in ("30", "30s", "1.5s", "5m", "1h", " 2M ", ".5", "0")] == \
        [30, 30, 1.5, 300, 3600, 120, 0.5, 0]
    for text, why in (("-3", "a duration is not negative"), ("3x", "not a duration"), ("", "not a duration")):
        with pytest.raises(UsageError) as refused:
            config.duration(text, "--grace")
        assert str(refused.value) == f"invalid --grace '{text}': {why}"
        assert refused.value.hint == "a duration such as 30, 30s, 1.5s, 5m or 1h"
    with pytest.raises(UsageError) as refused:
        config.duration("0s", "--time-slice", zero=False)
    assert str(refused.value) == "invalid --time-slice '0s': it must be more than 0"
    assert refused.value.hint == "a duration such as 30, 30s, 1.5s, 5m or 1h"
    assert config.duration("0.1", "--time-slice", zero=False) == 0.1


def test_booleans_as_typed_or_as_a_file_holds_them():
    assert [config.boolean("preemptible", value) for value in (True, False, "true", " Yes ", "on", "false",
                                                                "NO", "off")] == [True, False] + [True] * 3 + [False] * 3
    with pytest.raises(UsageError) as refused:
        config.boolean("preemptible", "maybe")
    assert str(refused.value) == "preemptible must be true or false, not 'maybe'"
    assert refused.value.hint == "git gpuspace config set preemptible true (or false)"
    assert config.coerce("preemptible", "TRUE") is True and config.coerce("preemptible", "off") is False
    with pytest.raises(UsageError, match="^preemptible must be true or false, not 'maybe'$"):
        config.coerce("preemptible", "maybe")
    assert config.coerce("jupyter", "8888") == 8888 and config.coerce("image", "x:1") == "x:1"


# ---------------------------------------------------------------- config (the settings layers)

def user_config() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "git-gpuspace" / "config.toml"


def test_user_files_follow_xdg():
    assert config.user_config_path() == user_config()
    assert config.default_data_root() == Path(os.environ["XDG_DATA_HOME"]) / "git-gpuspace" / "workspaces"
    assert config.built_in() == {**config.BUILT_IN, "data_root": str(config.default_data_root())}


def test_the_user_layer_is_the_defaults_table():
    user_config().write_text('[defaults]\nimage = "mine"\ngpus = "2"\n[other]\nx = 1\n', encoding="utf-8")
    assert config.load_user() == {"image": "mine", "gpus": "2"}
    user_config().write_text("[other]\nx = 1\n")
    assert config.load_user() == {}
    user_config().unlink()
    assert config.load_user() == {}


def latin1_locale(encoding, stacklevel=2):
    """What io.text_encoding answers under a legacy Latin-1 locale, for text opened without an encoding."""
    return encoding or "latin-1"


def test_the_user_config_is_utf8_whatever_the_locale(monkeypatch):
    user_config().write_bytes('[defaults]\nimage = "ümage"\n[other]\nname = "Jürgen"\n'.encode())
    monkeypatch.setattr(io, "text_encoding", latin1_locale)
    assert config.load_user() == {"image": "ümage"}
    config.save_user({"image": "ö"})
    assert tomllib.loads(user_config().read_text(encoding="utf-8")) == {"defaults": {"image": "ö"},
                                                                          "other": {"name": "Jürgen"}}


@pytest.mark.parametrize("content,reason", [
    (b"[defaults\n", "Expected ']' at the end of a table declaration (at line 1, column 10)"),
    (b"\xff", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
])
def test_an_unreadable_user_config_is_named_with_the_reason(content, reason):
    user_config().write_bytes(content)
    with pytest.raises(StateError) as refused:
        config.load_user()
    assert str(refused.value) == f"cannot read {user_config()}: {reason}"
    assert refused.value.hint == "fix or remove the file"


def test_a_user_defaults_that_is_no_table_is_refused():
    user_config().write_text('defaults = "x"\n')
    with pytest.raises(StateError) as refused:
        config.load_user()
    assert str(refused.value) == f"{user_config()}: [defaults] must be a table"
    assert refused.value.hint == "fix or remove the file"


def test_layers_merge_built_in_user_repo_devcontainer_then_flags():
    user_config().write_text('[defaults]\nimage = "user"\ngpus = "2"\nmemory = "1g"\nshm_size = "1g"\nbogus = 1\n')
    merged = config.effective(
        {"gpus": "3", "memory": "2g", "cpus": "4", "nonsense": "x"},
        {"image": "flag", "memory": None, "cpus": None},
        {"memory": "3g", "cpus": "5"},
    )
    assert merged == {**config.built_in(), "image": "flag", "gpus": "3", "memory": "3g", "cpus": "5", "shm_size": "1g"}


def test_without_a_devcontainer_layer_the_repo_layer_shows_through():
    user_config().unlink()
    assert config.effective({"cpus": "4"}, {})["cpus"] == "4"
    assert config.effective({}, {"jupyter": False}, None)["jupyter"] is False


@pytest.mark.parametrize("text,value", [("true", True), (" YES ", True), ("On", True), ("false", False), ("No", False),
                                        ("OFF", False), (" 8888 ", 8888)])
def test_service_settings_are_true_false_or_a_port(text, value):
    for key in config.BOOLEAN_OR_PORT:
        assert config.coerce(key, text) == value and type(config.coerce(key, text)) is type(value)


def test_a_bad_service_setting_names_the_choices():
    assert str(usage_error(config.coerce, "ssh", "maybe")) == "ssh must be true, false or a host port, not 'maybe'"


def test_other_settings_are_kept_as_typed():
    assert config.coerce("image", " Img:TRUE ") == " Img:TRUE "
    assert config.coerce("gpus", "yes") == "yes"


@pytest.mark.parametrize("value,text", [(True, "true"), (False, "false"), (8888, "8888"), ("Img:Tag", "Img:Tag")])
def test_render_writes_booleans_as_toml_does(value, text):
    assert config.render(value) == text


def test_save_user_rewrites_defaults_and_keeps_other_tables():
    user_config().write_text('[defaults]\nimage = "old"\n[other]\nx = 1\n')
    config.save_user({"image": "new", "jupyter": True})
    assert tomllib.loads(user_config().read_text()) == {"defaults": {"image": "new", "jupyter": True}, "other": {"x": 1}}
    assert config.load_user() == {"image": "new", "jupyter": True}
    assert sorted(p.name for p in user_config().parent.iterdir()) == ["config.toml"]


def test_save_user_makes_the_config_dirs_when_missing():
    base = Path(os.environ["XDG_CONFIG_HOME"])
    for path in (user_config(), user_config().parent, base):
        path.unlink() if path.is_file() else path.rmdir()
    config.save_user({"gpus": "2"})
    assert config.load_user() == {"gpus": "2"}


def test_save_user_that_fails_leaves_the_old_file_and_no_temporary(monkeypatch):
    """A full disk while writing: one line naming the file, the old config kept, nothing left beside it."""
    user_config().write_text('[defaults]\nimage = "old"\n')

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(StateError) as refused:
        config.save_user({"image": "new"})
    assert str(refused.value) == f"cannot write {user_config()}: No space left on device"
    assert refused.value.hint == "free some space; the old file is unchanged"
    assert config.load_user() == {"image": "old"}
    assert sorted(p.name for p in user_config().parent.iterdir()) == ["config.toml"]


def test_save_user_writes_beside_the_config_not_in_tmpdir(monkeypatch, tmp_path):
    """The rename is atomic only on one file system: the temporary file must sit beside config.toml."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    config.save_user({"image": "x"})
    assert config.load_user() == {"image": "x"}
