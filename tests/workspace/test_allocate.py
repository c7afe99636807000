"""allocate.py exactly: which GPUs and host ports a binding gets, and every refusal's words.

Every message a user reads is pinned in full, and every boundary, so that scripts/mutation's
changes to the module fail a test. Engine-free and fast."""

from __future__ import annotations

import hashlib

import pytest

from git_gpuspace import allocate
from git_gpuspace.errors import GpusUnavailable, PortTaken, UsageError
from git_gpuspace.model import Gpu, GpuRequest, Holder, PortMap, PortRequest, current_user

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


def test_a_chosen_port_keeps_the_devcontainer_field_that_asked_for_it():
    """status says which field (forwardPorts, appPort) published a port: the origin goes along."""
    chosen = allocate.choose_ports([PortRequest("app", 3000, 13000, origin="app"),
                                    PortRequest("web", 8080, origin="forwarded")], set(), "127.0.0.1",
                                   lambda address, port: True, "s")
    assert [(port.name, port.origin) for port in chosen] == [("app", "app"), ("web", "forwarded")]
    assert chosen[0].label() == "app=3000:13000@127.0.0.1/app"


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
