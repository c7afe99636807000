"""Exact behaviour of the pure modules: allocation, spec parsing, the state file, the settings layers.

These pin what a user reads (every message and hint in full) and every boundary, so that a
changed comparison, a dropped argument or an edited message fails a test (scripts/mutation
measures that). Fast and engine-free: they run with tests/cli/test_units.py.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import io
import os
import tempfile
import tomllib
from pathlib import Path

import pytest
import tomli_w

from git_gpuspace import allocate, config, specs, state
from git_gpuspace.errors import GpuspaceError, GpusUnavailable, PortTaken, StateError, UsageError
from git_gpuspace.model import Binding, Gpu, GpuRequest, Holder, Limits, PortMap, PortRequest, current_user, name_digest

# ---------------------------------------------------------------- allocate.choose

INVENTORY = [Gpu(index=i, uuid=f"GPU-{i}") for i in range(4)]
ME = current_user()
DEFAULT_HINT = "free one with `git gpuspace remove <path>`, or pass --share to share a GPU on purpose"
SHARE_HINT = "a GPU is shared only when every holder passed --share; free one with `git gpuspace remove <path>`"
OTHER_USER_HINT = "another user holds it: ask them, or wait (`git gpuspace gpus` shows who holds what)"
OUTSIDE_HINT = "a process outside gpuspace computes on it: wait for it to end, or ask for another GPU"


def held(name: str, share: bool = False, pack: str = "", user: str = "", branch: str | None = "same",
         container: str | None = None) -> Holder:
    return Holder(repo="/r/.git", worktree=f"/w/{name}", branch=name if branch == "same" else branch,
                  container=f"c-{name}" if container is None else container, share=share, pack=pack, user=user)


def indices(gpus: list[Gpu]) -> list[int]:
    return [gpu.index for gpu in gpus]


def refusal(request: GpuRequest, leases, share: bool = False, pack=None, inventory=INVENTORY) -> GpusUnavailable:
    with pytest.raises(GpusUnavailable) as refused:
        allocate.choose(request, inventory, leases, share, pack)
    return refused.value


def test_a_host_without_gpus_says_so_and_offers_none():
    error = refusal(GpuRequest(count=1), {}, inventory=[])
    assert str(error) == "no NVIDIA GPU found on this host (NVML and nvidia-smi found none)"
    assert error.hint == "use --gpus none for a container without GPUs"


def test_a_gpu_named_twice_by_index_and_uuid_is_a_usage_error_quoting_the_spec():
    with pytest.raises(UsageError) as refused:
        allocate.choose(GpuRequest(ids=("1", "GPU-1")), INVENTORY, {}, share=False)
    assert str(refused.value) == "the same GPU is named twice in --gpus 1,GPU-1"


def test_asking_for_more_gpus_than_exist_names_the_host_total():
    error = refusal(GpuRequest(count=5), {})
    assert str(error) == "asked for 5 GPUs, but this host has 4"
    assert error.hint == "use --gpus 4 or fewer"


def test_asking_for_exactly_every_gpu_by_count_gets_them_all():
    assert indices(allocate.choose(GpuRequest(count=4), INVENTORY, {}, share=False)) == [0, 1, 2, 3]


def test_a_count_met_exactly_by_the_free_gpus_succeeds():
    leases = {"GPU-0": [held("a")], "GPU-2": [held("b")]}
    assert indices(allocate.choose(GpuRequest(count=2), INVENTORY, leases, share=False)) == [1, 3]


def test_a_refused_count_lists_every_holder_and_the_default_hint():
    leases = {"GPU-0": [held("a", user=ME)], "GPU-1": [held("b")], "GPU-3": [held("d")]}
    error = refusal(GpuRequest(count=2), leases)
    assert str(error) == ("asked for 2 GPUs, 1 free; GPU 0 is held by /w/a (a); GPU 1 is held by /w/b (b); "
                          "GPU 3 is held by /w/d (d)")
    assert error.hint == DEFAULT_HINT


def test_a_refusal_says_who_holds_each_gpu_taken_by_index():
    """What a queue shows as the reason its run waits (`GPUs 0-3 held by …`)."""
    leases = {"GPU-0": [held("a", user=ME)], "GPU-1": [held("b")], "GPU-3": [held("d")]}
    assert refusal(GpuRequest(count=2), leases).held == {0: "/w/a (a)", 1: "/w/b (b)", 3: "/w/d (d)"}
    assert refusal(GpuRequest(ids=("1",)), leases).held == {1: "/w/b (b)"}


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


def test_a_refused_single_gpu_is_singular():
    leases = {f"GPU-{i}": [held(f"w{i}")] for i in range(4)}
    message = str(refusal(GpuRequest(count=1), leases))
    assert message.startswith("asked for 1 GPU, 0 free; GPU 0 is held by /w/w0 (w0); ")


def test_holders_of_one_gpu_are_joined_with_and_and_a_branchless_one_has_no_parentheses():
    leases = {"GPU-0": [held("a", share=True), held("b", share=True, branch=None)]}
    error = refusal(GpuRequest(ids=("0",)), leases)
    assert str(error) == "GPU 0 is held by /w/a (a) and /w/b"
    assert error.hint == DEFAULT_HINT


def test_only_another_users_holders_are_named_with_their_user():
    leases = {"GPU-0": [held("a", share=True, user="alice"), held("b", share=True, user=ME),
                        held("c", share=True, user="")]}
    message = str(refusal(GpuRequest(ids=("0",)), leases))
    assert message == "GPU 0 is held by /w/a (a) of user alice and /w/b (b) and /w/c (c)"


def test_another_users_gpu_gets_the_ask_them_hint():
    leases = {"GPU-1": [held("a", user="alice"), held("b", user="bob")]}
    error = refusal(GpuRequest(ids=("1",)), leases)
    assert str(error) == "GPU 1 is held by /w/a (a) of user alice and /w/b (b) of user bob"
    assert error.hint == OTHER_USER_HINT


@pytest.mark.parametrize("users", [["alice", ME], ["alice", ""], [ME], [""]])
def test_the_ask_them_hint_needs_every_holder_to_be_another_user(users):
    leases = {"GPU-1": [held(f"h{i}", user=user) for i, user in enumerate(users)]}
    assert refusal(GpuRequest(ids=("1",)), leases).hint == DEFAULT_HINT


def test_a_process_outside_gpuspace_gets_its_own_hint():
    leases = {"GPU-2": [held("outside", container="", user="alice")]}
    assert refusal(GpuRequest(ids=("2",)), leases).hint == OUTSIDE_HINT
    leases = {f"GPU-{i}": [held(f"x{i}", container="")] for i in range(4)}
    assert refusal(GpuRequest(count=1), leases).hint == OUTSIDE_HINT


def test_with_share_a_refusal_explains_that_every_holder_must_share():
    leases = {"GPU-1": [held("b")]}
    assert refusal(GpuRequest(ids=("1",)), leases, share=True).hint == SHARE_HINT
    leases = {f"GPU-{i}": [held(f"w{i}")] for i in range(4)}
    assert refusal(GpuRequest(count=1), leases, share=True).hint == SHARE_HINT


def test_a_count_with_share_uses_shared_gpus_least_shared_first():
    leases = {"GPU-0": [held("a", share=True), held("b", share=True)], "GPU-1": [held("c", share=True)],
              "GPU-2": [held("d")], "GPU-3": [held("e", share=True)]}
    assert indices(allocate.choose(GpuRequest(count=1), INVENTORY, leases, share=True)) == [1]
    assert indices(allocate.choose(GpuRequest(count=3), INVENTORY, leases, share=True)) == [0, 1, 3]


def test_a_refused_count_with_share_does_not_list_the_gpus_it_could_share():
    leases = {"GPU-0": [held("a", share=True)], "GPU-1": [held("b")], "GPU-2": [held("c")], "GPU-3": [held("d")]}
    error = refusal(GpuRequest(count=2), leases, share=True)
    assert str(error) == ("asked for 2 GPUs, 1 free; GPU 1 is held by /w/b (b); GPU 2 is held by /w/c (c); "
                          "GPU 3 is held by /w/d (d)")


def test_packing_admits_runs_of_the_same_group_up_to_k():
    one = {"GPU-0": [held("r1", pack="sweep")]}
    assert indices(allocate.choose(GpuRequest(ids=("0",)), INVENTORY, one, False, ("sweep", 2))) == [0]
    two = {"GPU-0": [held("r1", pack="sweep"), held("r2", pack="sweep")]}
    assert str(refusal(GpuRequest(ids=("0",)), two, pack=("sweep", 2))) == "GPU 0 is held by /w/r1 (r1) and /w/r2 (r2)"
    other = {"GPU-0": [held("r1", pack="other")]}
    refusal(GpuRequest(ids=("0",)), other, pack=("sweep", 2))
    assert indices(allocate.choose(GpuRequest(ids=("0",)), INVENTORY, two, False, ("sweep", 3))) == [0]


def test_packing_is_not_sharing():
    sharer = {"GPU-0": [held("s", share=True)]}
    refusal(GpuRequest(ids=("0",)), sharer, pack=("sweep", 2))
    assert str(refusal(GpuRequest(count=4), sharer, pack=("sweep", 2))).startswith("asked for 4 GPUs, 3 free; GPU 0")


def test_a_packed_count_fills_the_group_gpus_and_lists_only_the_others_when_short():
    leases = {f"GPU-{i}": [held(f"r{i}", pack="sweep")] for i in range(4)}
    assert indices(allocate.choose(GpuRequest(count=1), INVENTORY, leases, False, ("sweep", 2))) == [0]
    leases = {"GPU-0": [held("r0", pack="sweep")], "GPU-1": [held("b")], "GPU-2": [held("c")], "GPU-3": [held("d")]}
    error = refusal(GpuRequest(count=2), leases, pack=("sweep", 2))
    assert str(error) == ("asked for 2 GPUs, 1 free; GPU 1 is held by /w/b (b); GPU 2 is held by /w/c (c); "
                          "GPU 3 is held by /w/d (d)")


def test_an_unknown_gpu_lists_the_indices_this_host_has():
    error = refusal(GpuRequest(ids=("7",)), {})
    assert str(error) == "unknown GPU '7'"
    assert error.hint == "this host has GPUs 0, 1, 2, 3; see `git gpuspace gpus`"


# ---------------------------------------------------------------- allocate.choose_ports

def always_free(address: str, port: int) -> bool:
    return True


def first_choice(seed: str, name: str = "web") -> int:
    return allocate.choose_ports([PortRequest(name, 80)], set(), "127.0.0.1", always_free, seed)[0].host_port


def test_a_host_port_asked_for_and_free_is_given_on_the_address():
    asked = []

    def is_free(address, port):
        asked.append((address, port))
        return address == "10.0.0.5"

    chosen = allocate.choose_ports([PortRequest("jupyter", 8888, 18888)], {5000}, "10.0.0.5", is_free, "s")
    assert chosen == [PortMap("jupyter", 8888, 18888, "10.0.0.5")]
    assert asked == [("10.0.0.5", 18888)]


@pytest.mark.parametrize("taken,free", [({18888}, True), (set(), False)])
def test_a_host_port_asked_for_that_is_taken_is_refused_never_remapped(taken, free):
    with pytest.raises(PortTaken) as refused:
        allocate.choose_ports([PortRequest("jupyter", 8888, 18888)], taken, "127.0.0.1", lambda a, p: free, "s")
    assert str(refused.value) == "host port 18888 (jupyter) is already in use"
    assert refused.value.hint == "pick another, or write --port jupyter=8888 to get a free one"


def test_the_search_starts_where_a_sha256_of_seed_and_name_points():
    """A stable hash (not Python's per-process hash()): the same worktree starts at the same port every run."""
    for seed, name in (("/repo/.git\0/wt/a", "web"), ("/repo/.git\0/wt/b", "web"), ("/repo/.git\0/wt/a", "tb")):
        digest = int(hashlib.sha256(f"{seed}\0{name}".encode()).hexdigest(), 16)
        assert first_choice(seed, name) == 20000 + digest % 10000


def test_a_chosen_port_skips_taken_and_busy_ports_upwards_and_wraps_to_the_bottom():
    seed = next(s for s in (f"seed{i}" for i in range(1000)) if 20000 < first_choice(s) < 29990)
    start = first_choice(seed)
    request = [PortRequest("web", 80)]
    assert allocate.choose_ports(request, {start}, "127.0.0.1", always_free, seed)[0].host_port == start + 1
    busy = allocate.choose_ports(request, set(), "127.0.0.1", lambda a, p: p not in (start, start + 1), seed)
    assert busy[0].host_port == start + 2
    wrapped = allocate.choose_ports(request, set(), "127.0.0.1", lambda a, p: p < start - 5, seed)
    assert wrapped == [PortMap("web", 80, 20000, "127.0.0.1")]


def test_the_address_is_what_a_chosen_port_is_checked_on():
    chosen = allocate.choose_ports([PortRequest("web", 80)], set(), "::1", lambda a, p: a == "::1", "s")
    assert chosen[0].address == "::1" and 20000 <= chosen[0].host_port < 30000


def test_ports_of_one_call_never_collide():
    start = first_choice("s")
    chosen = allocate.choose_ports([PortRequest("ssh", 22, start), PortRequest("web", 80)], set(), "127.0.0.1",
                                   always_free, "s")
    assert [port.host_port for port in chosen] == [start, start + 1 if start < 29999 else 20000]
    with pytest.raises(PortTaken):
        allocate.choose_ports([PortRequest("a", 1, 5000), PortRequest("b", 2, 5000)], set(), "127.0.0.1",
                              always_free, "s")


def test_the_callers_taken_set_is_left_as_it_was():
    taken = {1234}
    allocate.choose_ports([PortRequest("web", 80)], taken, "127.0.0.1", always_free, "s")
    assert taken == {1234}


def test_no_free_port_in_the_range_names_the_range():
    with pytest.raises(PortTaken) as refused:
        allocate.choose_ports([PortRequest("web", 80)], set(), "127.0.0.1", lambda a, p: False, "s")
    assert str(refused.value) == "no free host port for web in 20000-29999"


# ---------------------------------------------------------------- specs

def usage_error(call, *args) -> UsageError:
    with pytest.raises(UsageError) as refused:
        call(*args)
    return refused.value


def test_an_unparsable_size_quotes_it_and_shows_the_forms():
    error = usage_error(specs.parse_size, "12q", "--shm-size")
    assert str(error) == "invalid --shm-size '12q'"
    assert error.hint == "use a number with an optional unit: 512m, 16g, 1.5t"


def test_a_size_below_the_minimum_names_the_minimum():
    assert specs.parse_size("1", "--memory") == 1
    assert str(usage_error(specs.parse_size, "0", "--memory")) == "--memory '0' is too small (at least 1)"
    assert str(usage_error(specs.parse_size, "0.5", "--memory")) == "--memory '0.5' is too small (at least 1)"
    assert specs.parse_size("6m", "--memory", specs.MIN_MEMORY) == 6 << 20
    too_small = usage_error(specs.parse_size, "5m", "--memory", specs.MIN_MEMORY)
    assert str(too_small) == "--memory '5m' is too small (at least 6m)"


def test_host_memory_is_the_physical_memory():
    """Physical pages times the page size, the ceiling of --memory."""
    assert specs.host_memory() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") > 64 << 20


def test_a_limit_up_to_the_host_memory_is_accepted_and_more_is_refused(monkeypatch):
    monkeypatch.setattr(specs, "host_memory", lambda: 8 << 30)
    assert specs.parse_limit("8g", "--memory") == 8 << 30
    assert specs.parse_limit("1", "--memory") == 1
    assert str(usage_error(specs.parse_limit, "9g", "--memory")) == "--memory 9g is more than this host's memory (8g)"
    too_small = usage_error(specs.parse_limit, "5m", "--memory", specs.MIN_MEMORY)
    assert str(too_small) == "--memory '5m' is too small (at least 6m)"
    assert str(usage_error(specs.parse_limit, "lots", "--shm-size")) == "invalid --shm-size 'lots'"


def test_a_limit_is_not_capped_where_the_host_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(specs, "host_memory", lambda: None)
    assert specs.parse_limit("1p", "--memory") == 1 << 50


@pytest.mark.parametrize("num_bytes,text", [(1 << 10, "1k"), (1 << 20, "1m"), (3 << 40, "3t"), (1536, "1.5k"),
                                            ((5 << 30) // 2 + 1, "2.5g"), (1023, "1023")])
def test_format_size_prefers_whole_units_then_one_decimal(num_bytes, text):
    assert specs.format_size(num_bytes) == text


def test_cpus_at_both_ends_of_the_range_are_accepted():
    host = os.cpu_count() or 1
    assert specs.parse_cpus("0.01") == 0.01
    assert specs.parse_cpus(str(host)) == host


def test_cpus_out_of_range_names_the_range():
    host = os.cpu_count() or 1
    message = str(usage_error(specs.parse_cpus, "0.009"))
    assert message == f"--cpus 0.009 is out of range: this host has {host} CPUs (0.01 to {host})"


def test_cpus_that_are_no_number_quote_the_text():
    error = usage_error(specs.parse_cpus, "four")
    assert str(error) == "invalid --cpus 'four'"
    assert error.hint == "use a number such as 4 or 2.5"


def test_a_host_whose_cpu_count_is_unknown_counts_as_one_cpu(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert specs.parse_cpus("1") == 1
    assert str(usage_error(specs.parse_cpus, "1.5")) == "--cpus 1.5 is out of range: this host has 1 CPUs (0.01 to 1)"


GPU_HINT = "use a count (2), indices or UUIDs (0,2 or GPU-…), 'all' or 'none'"


@pytest.mark.parametrize("text", ["", "  ", "None", "0"])
def test_empty_none_and_zero_gpus_mean_no_gpu(text):
    assert specs.parse_gpus(text) == GpuRequest()


@pytest.mark.parametrize("text,message", [
    (",", "invalid --gpus ','"),
    ("device=", "invalid --gpus 'device='"),
    ("0,x", "invalid GPU id 'x' in --gpus '0,x'"),
])
def test_bad_gpu_specs_quote_what_was_typed_with_the_forms(text, message):
    error = usage_error(specs.parse_gpus, text)
    assert str(error) == message and error.hint == GPU_HINT


def test_gpus_listed_twice_are_named_once_each():
    assert str(usage_error(specs.parse_gpus, "1,0,1,0")) == "GPU 0, 1 is listed twice in --gpus '1,0,1,0'"


@pytest.mark.parametrize("text,request_", [
    ("web=8000", PortRequest("web", 8000)),
    (" tb=6006:16006 ", PortRequest("tb", 6006, 16006)),
    ("a=1:65535", PortRequest("a", 1, 65535)),
])
def test_port_specs_name_a_container_port_and_maybe_a_host_port(text, request_):
    assert specs.parse_port(text) == request_


@pytest.mark.parametrize("text", ["web", "web=", "Web=80", "web=80:", "=80", "web=80:90:100"])
def test_a_malformed_port_spec_shows_the_form(text):
    error = usage_error(specs.parse_port, text)
    assert str(error) == f"invalid --port '{text}'"
    assert error.hint == "write NAME=CONTAINER_PORT or NAME=CONTAINER_PORT:HOST_PORT, e.g. --port web=8000"


@pytest.mark.parametrize("text,number", [("web=0", 0), ("web=65536", 65536), ("web=80:0", 0), ("web=80:99999", 99999)])
def test_a_port_number_out_of_range_is_named(text, number):
    assert str(usage_error(specs.parse_port, text)) == f"port {number} in '{text}' is out of range (1-65535)"


@pytest.mark.parametrize("text,address", [(" 0.0.0.0 ", "0.0.0.0"), ("0:0::1", "::1")])
def test_a_publish_address_is_normalised(text, address):
    assert specs.parse_address(text) == address


def test_a_bad_publish_address_quotes_it():
    error = usage_error(specs.parse_address, "localhost")
    assert str(error) == "invalid --publish-address 'localhost'"
    assert error.hint == "an IP address such as 127.0.0.1"


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


# ---------------------------------------------------------------- state: loading

FIX_HINT = "fix or move the file by hand; git-gpuspace will not overwrite it"
REMOVE = object()


def container_for(common: Path, worktree: str, repo: str = "r") -> str:
    return f"gpuspace-{repo}-{Path(worktree).name}-{name_digest(common, Path(worktree))}"


def entry(common: Path, worktree: str = "/w/a", **changes) -> dict:
    fields = {"path": worktree, "container": container_for(common, worktree), "image": "img", **changes}
    return {key: value for key, value in fields.items() if value is not REMOVE}


def write(common: Path, document: dict | str | bytes) -> Path:
    path = common / "gpuspace.toml"
    if isinstance(document, dict):
        document = tomli_w.dumps(document)
    path.write_bytes(document if isinstance(document, bytes) else document.encode())
    return path


def refused(common: Path, document) -> StateError:
    path = write(common, document)
    with pytest.raises(StateError) as caught:
        state.load(common)
    caught.value.args = (str(caught.value).replace(str(path), "STATE"),)
    return caught.value


TOP_LEVEL_REFUSALS = [
    ({"schema": "one"}, "STATE: 'schema' must be an integer"),
    ({"schema": True}, "STATE: 'schema' must be an integer"),
    ({"schema": 0}, "STATE: 'schema' must be 1 or more, not 0"),
    ({"defaults": 1}, "STATE: [defaults] must be a table"),
    ({"bindings": 1}, "STATE: 'bindings' must be an array of tables"),
    ({"auto_bind": "yes"}, "STATE: auto_bind must be true or false"),
    ({"checks": 1}, "STATE: checks must be a table of checks"),
    ({"checks": {"t": 1}}, "STATE: checks.t must be a table"),
    ({"checks": {"t": {}}}, "STATE: checks.t.command must be a list of strings"),
    ({"checks": {"t": {"command": []}}}, "STATE: checks.t.command must be a list of strings"),
    ({"checks": {"t": {"command": ["ok", 1]}}}, "STATE: checks.t.command must be a list of strings"),
    ({"checks": {"t": {"command": ["x"], "gpus": 1}}}, "STATE: checks.t.gpus must be a string"),
    ({"checks": {"t": {"command": ["x"], "image": 1}}}, "STATE: checks.t.image must be a string"),
    ({"checks": {"t": {"command": ["x"], "on_commit": "yes"}}}, "STATE: checks.t.on_commit must be true or false"),
    ({"pre_push": "t"}, "STATE: pre_push must be a list of check names"),
    ({"pre_push": ["t", 1]}, "STATE: pre_push must be a list of check names"),
]


@pytest.mark.parametrize("document,message", TOP_LEVEL_REFUSALS)
def test_a_bad_top_level_value_is_named_and_never_repaired(tmp_path, document, message):
    error = refused(tmp_path, document)
    assert str(error) == message and error.hint == FIX_HINT


def test_a_newer_schema_asks_for_an_upgrade(tmp_path):
    error = refused(tmp_path, {"schema": state.SCHEMA_VERSION + 1})
    assert str(error) == (f"STATE has schema {state.SCHEMA_VERSION + 1}, newer than this git-gpuspace understands "
                          f"({state.SCHEMA_VERSION})")
    assert error.hint == "upgrade git-gpuspace (pip install -U git-gpuspace)"


@pytest.mark.parametrize("raw,message", [
    (b"schema = 1\n\xff\n", "STATE is not UTF-8 text (byte 11)"),
    (b"schema = 1\n[[bindings]\n", "STATE: Expected ']]' at the end of an array declaration at line 2, column 11"),
    (b"schema = 1\nbindings = [1,", "STATE: Invalid value at line 2, column 15 (end of file)"),
    (b"schema = 1\nbindings = [1,\n", "STATE: Invalid value at line 3, column 1 (end of file)"),
])
def test_an_unparsable_file_names_the_line_and_column(tmp_path, raw, message):
    error = refused(tmp_path, raw)
    assert str(error) == message and error.hint == FIX_HINT


def test_a_state_file_that_cannot_be_read_says_why(tmp_path):
    (tmp_path / "gpuspace.toml").mkdir()
    with pytest.raises(StateError) as caught:
        state.load(tmp_path)
    assert str(caught.value) == f"cannot read {tmp_path / 'gpuspace.toml'}: Is a directory"


def test_a_missing_file_is_an_empty_state_at_its_path(tmp_path):
    loaded = state.load(tmp_path)
    assert loaded == state.State(path=tmp_path / "gpuspace.toml")


def test_a_minimal_file_gets_every_default(tmp_path):
    write(tmp_path, {"bindings": [entry(tmp_path)]})
    loaded = state.load(tmp_path)
    assert (loaded.defaults, loaded.auto_bind, loaded.checks, loaded.pre_push, loaded.extra) == ({}, False, {}, [], {})
    [binding] = loaded.bindings
    expected = Binding(path="/w/a", container=container_for(tmp_path, "/w/a"), image="img", created=binding.created)
    assert binding == expected


BINDING_REFUSALS = [
    ({"path": REMOVE}, " lacks 'path'"),
    ({"container": REMOVE}, " lacks 'container'"),
    ({"image": REMOVE}, " lacks 'image'"),
    ({"image": 1}, ".image must be a string"),
    ({"branch": 1}, ".branch must be a string"),
    ({"gpus": "GPU-1"}, ".gpus must be a list of GPU UUIDs"),
    ({"gpus": ["GPU-1", 1]}, ".gpus must be a list of GPU UUIDs"),
    ({"limits": 1}, ".limits must be a table"),
    ({"limits": {"memory": "1g"}}, ".limits.memory must be an integer (bytes)"),
    ({"limits": {"memory": True}}, ".limits.memory must be an integer (bytes)"),
    ({"limits": {"shm_size": 1.5}}, ".limits.shm_size must be an integer (bytes)"),
    ({"limits": {"cpus": "2"}}, ".limits.cpus must be a number"),
    ({"limits": {"cpus": True}}, ".limits.cpus must be a number"),
    ({"share": "yes"}, ".share must be true or false"),
    ({"created": "2026-01-02"}, ".created must be a date-time"),
    ({"worktree_id": 1}, ".worktree_id must be a string"),
    ({"gpu_request": 1}, ".gpu_request must be a string"),
    ({"pending": True}, ".pending must be a string"),
    ({"data_dir": 1}, ".data_dir must be a string"),
    ({"devcontainer": 1}, ".devcontainer must be a string"),
    ({"ports": "web=80:20000@127.0.0.1"}, ".ports must be a list of port mappings"),
    ({"ports": [1]}, ".ports has a bad entry 1 (name=container:host@address)"),
    ({"ports": ["web=80"]}, ".ports has a bad entry 'web=80' (name=container:host@address)"),
    ({"env": 1}, ".env must be a table of strings"),
    ({"env": {"A": 1}}, ".env must be a table of strings"),
    ({"mounts": "/a:/b"}, ".mounts must be a list of strings"),
    ({"mounts": [1]}, ".mounts must be a list of strings"),
    ({"host_options": 1}, ".host_options must be a table"),
    ({"host_options": {"root": True}}, ".host_options.root is not an option git-gpuspace sets (cap_add, devices, "
                                       "ipc_mode, network_mode, pid_mode, privileged, security_opt, ulimits); nothing was "
                                       "done"),
    ({"container_options": []}, ".container_options must be a table"),
    ({"container_options": {"privileged": True}}, ".container_options.privileged is not an option git-gpuspace sets "
                                                  "(extra_hosts, hostname, init, labels, platform, ulimits); nothing "
                                                  "was done"),
    ({"container_options": {"init": "no"}}, ".container_options.init must be true or false"),
    ({"container_options": {"ulimits": [1]}}, ".container_options.ulimits must hold strings only"),
    ({"container_options": {"labels": {"gpuspace.worktree": "/x"}}}, ".container_options.labels sets a gpuspace.* "
                                                                     "label, which only git-gpuspace writes; nothing "
                                                                     "was done"),
    ({"host_options": {"privileged": "yes"}}, ".host_options.privileged must be true or false"),
    ({"host_options": {"cap_add": "SYS_ADMIN"}}, ".host_options.cap_add must be a list"),
    ({"host_options": {"network_mode": 1}}, ".host_options.network_mode must be a string"),
    ({"container": "gpuspace-evil"}, ".container 'gpuspace-evil' is not the name of this worktree's container; "
                                     "nothing was done"),
]


@pytest.mark.parametrize("changes,message", BINDING_REFUSALS)
def test_a_bad_binding_is_named_by_its_index_and_key(tmp_path, changes, message):
    document = {"bindings": [entry(tmp_path, "/w/ok"), entry(tmp_path, **changes)]}
    error = refused(tmp_path, document)
    assert str(error) == f"STATE: bindings[1]{message}" and error.hint == FIX_HINT


def test_a_binding_that_is_no_table_is_refused(tmp_path):
    error = refused(tmp_path, {"bindings": [1]})
    assert str(error) == "STATE: bindings[0] must be a table" and error.hint == FIX_HINT


def test_a_path_that_is_no_string_is_refused(tmp_path):
    document = {"bindings": [{"path": 1, "container": "c", "image": "i"}]}
    assert str(refused(tmp_path, document)) == "STATE: bindings[0].path must be a string"


def test_container_names_keep_the_case_of_the_repo_and_worktree(tmp_path):
    write(tmp_path, {"bindings": [entry(tmp_path, "/w/ViT", container=container_for(tmp_path, "/w/ViT", "MyRepo"))]})
    assert state.load(tmp_path).bindings[0].container.startswith("gpuspace-MyRepo-ViT-")


def test_a_container_of_another_worktree_is_refused(tmp_path):
    document = {"bindings": [entry(tmp_path, "/w/a", container=container_for(tmp_path, "/w/b"))]}
    assert "is not the name of this worktree's container" in str(refused(tmp_path, document))


def test_whole_number_cpus_load_as_a_float(tmp_path):
    write(tmp_path, {"bindings": [entry(tmp_path, limits={"cpus": 2, "memory": 1 << 30})]})
    assert state.load(tmp_path).bindings[0].limits == Limits(memory_bytes=1 << 30, cpus=2.0)


# ---------------------------------------------------------------- state: saving

def full_binding(common: Path, worktree: str = "/w/full") -> Binding:
    return Binding(
        path=worktree, container=container_for(common, worktree), image="img:1", branch="feature/x",
        gpus=["GPU-1", "GPU-2"], limits=Limits(memory_bytes=1 << 30, cpus=2.5, shm_bytes=8 << 30), share=True,
        worktree_id="full", gpu_request="2", pending="engine down", data_dir="/d/full", devcontainer=".devcontainer.json",
        ports=[PortMap("jupyter", 8888, 20001, "127.0.0.1"), PortMap("ssh", 22, 20002, "::1")],
        env={"A": "1", "B": "two"}, mounts=["/src:/dst:ro", "/x:/y"],
        host_options={"privileged": True, "cap_add": ["SYS_PTRACE"], "network_mode": "host"},
        extra={"future_key": {"nested": 1}}, created=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    )


def test_everything_a_binding_holds_survives_a_save_and_load(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml", defaults={"image": "img", "gpus": "1"}, auto_bind=True,
                        checks={"unit": {"command": ["pytest", "-q"], "gpus": "1", "image": "img", "on_commit": True},
                                "lint": {"command": ["ruff"]}},
                        pre_push=["unit"], extra={"later": "kept"})
    saved.bindings = [full_binding(tmp_path),
                      Binding(path="/w/bare", container=container_for(tmp_path, "/w/bare"), image="img",
                              limits=Limits(shm_bytes=1 << 20))]
    saved.save()
    loaded = state.load(tmp_path)
    assert loaded == saved
    assert loaded.bindings[1].limits == Limits(shm_bytes=1 << 20)


def test_the_file_names_its_schema_and_leaves_out_what_is_unset(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml")
    saved.bindings = [Binding(path="/w/a", container=container_for(tmp_path, "/w/a"), image="img",
                              created=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc))]
    saved.save()
    document = tomllib.loads(saved.path.read_text())
    assert document == {"schema": state.SCHEMA_VERSION, "bindings": [
        {"path": "/w/a", "container": container_for(tmp_path, "/w/a"), "image": "img", "gpus": [], "share": False,
         "created": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)}]}


def test_unknown_keys_are_written_back_as_they_were(tmp_path):
    write(tmp_path, {"schema": 1, "later": {"x": [1, 2]}, "bindings": [entry(tmp_path, later_too="y")]})
    state.load(tmp_path).save()
    document = tomllib.loads((tmp_path / "gpuspace.toml").read_text())
    assert document["later"] == {"x": [1, 2]} and document["bindings"][0]["later_too"] == "y"
    assert "later" not in document["bindings"][0] and "later_too" not in document


def test_a_binding_that_keeps_the_images_own_command_says_so_in_the_file(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml")
    saved.bindings = [Binding(path="/w/a", container=container_for(tmp_path, "/w/a"), image="i", override_command=False),
                      Binding(path="/w/b", container=container_for(tmp_path, "/w/b"), image="i")]
    saved.save()
    written = tomllib.loads(saved.path.read_text())["bindings"]
    assert written[0]["override_command"] is False and "override_command" not in written[1]
    assert [b.override_command for b in state.load(tmp_path).bindings] == [False, True]


def test_an_override_command_that_is_no_boolean_is_refused(tmp_path):
    error = refused(tmp_path, {"bindings": [entry(tmp_path, override_command="no")]})
    assert str(error) == "STATE: bindings[0].override_command must be true or false" and error.hint == FIX_HINT


def test_find_and_remove_go_by_the_worktree_path(tmp_path):
    loaded = state.State(path=tmp_path / "gpuspace.toml")
    a, b = (Binding(path=p, container="c", image="i") for p in ("/w/a", "/w/b"))
    loaded.bindings = [a, b]
    assert loaded.find(Path("/w/b")) is b and loaded.find("/w/a") is a and loaded.find("/w/c") is None
    loaded.remove(Path("/w/a"))
    assert loaded.bindings == [b]


def test_the_hook_index_lists_bound_paths_and_marks_pending_and_on_commit(tmp_path):
    saved = state.State(path=tmp_path / "gpuspace.toml", checks={"t": {"command": ["x"], "on_commit": True}})
    saved.bindings = [Binding(path="/w/a", container="c", image="i", pending="engine down"),
                      Binding(path="/w/odd\nname", container="c", image="i"),
                      Binding(path="/w/b", container="c", image="i")]
    saved._write_hook_index()
    assert (tmp_path / "gpuspace.paths").read_text() == "/w/a\n/w/b\n"
    assert (tmp_path / "gpuspace.pending").exists() and (tmp_path / "gpuspace.verify-on-commit").exists()
    saved.bindings[0].pending = None
    saved.checks["t"]["on_commit"] = False
    saved._write_hook_index()
    assert not (tmp_path / "gpuspace.pending").exists() and not (tmp_path / "gpuspace.verify-on-commit").exists()


def test_a_reader_during_a_save_sees_the_old_file_and_a_hidden_temporary_beside_it(tmp_path, monkeypatch):
    """Fault point before the rename: the new content waits in a private dotfile in the same directory."""
    write(tmp_path, {"schema": 1, "defaults": {"image": "old"}})
    probe = tmp_path / "probe"
    monkeypatch.setenv("GPUSPACE_FAULT_POINT", "before-state-rename")
    monkeypatch.setenv("GPUSPACE_FAULT_ACTION",
                       f"run:cd {tmp_path} && cp -n gpuspace.toml {probe}.old; "
                       f"stat -c '%n %a' .gpuspace.toml.* >> {probe} 2>/dev/null")
    loaded = state.load(tmp_path)
    loaded.defaults = {"image": "new"}
    loaded.save()
    assert 'image = "old"' in (tmp_path / "probe.old").read_text()
    [line] = probe.read_text().splitlines()
    name, mode = line.split()
    assert name.startswith(".gpuspace.toml.") and mode == "600"
    assert state.load(tmp_path).defaults == {"image": "new"}


def test_a_failure_before_the_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    write(tmp_path, {"schema": 1, "defaults": {"image": "old"}})
    monkeypatch.setenv("GPUSPACE_FAULT_POINT", "before-state-rename")
    monkeypatch.setenv("GPUSPACE_FAULT_ACTION", "fail")
    loaded = state.load(tmp_path)
    loaded.defaults = {"image": "new"}
    with pytest.raises(GpuspaceError, match="injected failure at before-state-rename"):
        loaded.save()
    assert state.load(tmp_path).defaults == {"image": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpuspace.toml"]


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch):
    write(tmp_path, {"schema": 1, "defaults": {"image": "old"}})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    loaded = state.load(tmp_path)
    with pytest.raises(StateError) as caught:
        loaded.save()
    assert str(caught.value) == f"cannot write {tmp_path / 'gpuspace.toml'}: No space left on device"
    assert caught.value.hint == "free some space, or make the git dir writable; the old file is unchanged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpuspace.toml"]


def test_an_os_error_without_strerror_is_shown_as_it_is(tmp_path, monkeypatch):
    def odd(fd):
        raise OSError("odd failure")

    monkeypatch.setattr(os, "fsync", odd)
    with pytest.raises(StateError) as caught:
        state.State(path=tmp_path / "gpuspace.toml").save()
    assert str(caught.value) == f"cannot write {tmp_path / 'gpuspace.toml'}: odd failure"


def test_a_temporary_removed_by_someone_else_still_fails_as_one_line(tmp_path, monkeypatch):
    """The cleanup after a failed rename must not hide the failure when the temporary is already gone."""
    monkeypatch.setenv("GPUSPACE_FAULT_POINT", "before-state-rename")
    monkeypatch.setenv("GPUSPACE_FAULT_ACTION", f"run:rm -f {tmp_path}/.gpuspace.toml.*")
    with pytest.raises(StateError) as caught:
        state.State(path=tmp_path / "gpuspace.toml").save()
    assert str(caught.value) == f"cannot write {tmp_path / 'gpuspace.toml'}: No such file or directory"
