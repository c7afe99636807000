"""The scheduling policy of a shared machine: fair share, reservations, preemption, time slices."""

from __future__ import annotations

import pytest

from git_gpuspace.runs.schedule import Holding, Plan, Want, plan

GPUS = ("G0", "G1", "G2", "G3")


def hold(gpu: str, user: str, key: str, **labels) -> Holding:
    return Holding(gpu=gpu, user=user, repo=labels.pop("repo", f"/{user}"), key=key, **labels)


def want(key: str, user: str, **fields) -> Want:
    return Want(key=key, user=user, repo=fields.pop("repo", f"/{user}"), **fields)


def sweep(user: str, runs: int, since: float, **fields) -> list[Want]:
    return [want(f"/{user}#{n:02d}", user, since=since, **fields) for n in range(runs)]


# Order and fair share


def test_a_lone_request_takes_the_lowest_free_gpus():
    result = plan(GPUS, [hold("G0", "bob", "/w/b")], [want("/a#1", "alice", count=2)], now=0)
    assert result == Plan(grants={"/a#1": ("G1", "G2")})


def test_one_user_alone_takes_every_free_gpu():
    result = plan(GPUS, [], sweep("alice", 6, since=0), now=0)
    assert sorted(result.grants) == ["/alice#00", "/alice#01", "/alice#02", "/alice#03"]
    assert result.reserved == {}
    assert result.waits["/alice#04"] == "queue: behind /alice#03"


def test_two_sweeps_share_the_free_gpus_alternately():
    wants = sweep("alice", 12, since=0) + sweep("bob", 12, since=0.5)
    result = plan(GPUS, [], wants, now=1)
    assert result.grants == {"/alice#00": ("G0",), "/bob#00": ("G1",), "/alice#01": ("G2",), "/bob#01": ("G3",)}
    assert result.waits["/alice#02"] == "fair share: bob held 1 GPU, alice 2"
    assert result.waits["/bob#02"] == "queue: behind /bob#01"
    result = plan(GPUS[:3], [], wants, now=1)
    assert result.waits["/bob#01"] == "fair share: alice and bob held 1 GPU each, alice asked first"


def test_the_user_holding_fewer_gpus_goes_first_whoever_asked_first():
    holdings = [hold("G0", "alice", "/alice#a"), hold("G1", "alice", "/alice#b"), hold("G2", "alice", "/alice#c")]
    wants = [want("/alice#d", "alice", since=0), want("/bob#a", "bob", since=9)]
    result = plan(GPUS, holdings, wants, now=10)
    assert result.grants == {"/bob#a": ("G3",)}
    assert result.waits == {"/alice#d": "fair share: bob held 0 GPUs, alice 3"}


def test_gpus_held_count_once_per_user_and_gpu():
    # a shared GPU held twice by alice counts once: alice holds 1, bob holds 2
    holdings = [hold("G0", "alice", "/w/a1"), hold("G0", "alice", "/w/a2"),
                hold("G1", "bob", "/w/b1"), hold("G2", "bob", "/w/b2")]
    wants = [want("/bob#1", "bob", since=0), want("/alice#1", "alice", since=5)]
    assert plan(GPUS, holdings, wants, now=9).grants == {"/alice#1": ("G3",)}


def test_equal_holdings_go_first_come_by_each_users_oldest_request():
    wants = [want("/bob#1", "bob", since=2), want("/alice#1", "alice", since=3), want("/alice#0", "alice", since=1)]
    result = plan(("G0",), [], wants, now=5)
    assert result.grants == {"/alice#0": ("G0",)}


def test_equal_holdings_go_to_the_user_who_asked_first_whatever_the_name():
    wants = [want("/a#1", "alice", since=2), want("/b#1", "bob", since=1)]
    assert plan(("G0",), [], wants, now=5).grants == {"/b#1": ("G0",)}


def test_ties_break_by_user_name_then_key():
    wants = [want("/b#1", "bob", since=1), want("/a#2", "alice", since=1), want("/a#1", "alice", since=1)]
    assert plan(("G0",), [], wants, now=5).grants == {"/a#1": ("G0",)}


def test_priority_orders_a_users_own_work_only():
    wants = [want("/alice#1", "alice", since=0), want("/alice#2", "alice", since=5, priority=3),
             want("/bob#1", "bob", since=1, priority=9)]
    result = plan(("G0", "G1"), [], wants, now=6)
    assert result.grants == {"/alice#2": ("G0",), "/bob#1": ("G1",)}
    assert result.waits == {"/alice#1": "fair share: bob held 0 GPUs, alice 1"}
    holdings = [hold("G1", "bob", "/bob#0")]
    result = plan(("G0", "G1"), holdings, wants, now=6)
    assert result.grants == {"/alice#2": ("G0",)}
    assert result.waits["/alice#1"] == "priority: behind 1 request of priority 3"


def test_priority_reason_counts_every_higher_request_of_the_user():
    wants = [want("/a#0", "alice"), want("/a#1", "alice", priority=2), want("/a#2", "alice", priority=5),
             want("/a#3", "alice", priority=5)]
    result = plan(("G0",), [], wants, now=1)
    assert result.grants == {"/a#2": ("G0",)}
    assert result.waits["/a#0"] == "priority: behind 3 requests of priority 2 to 5"
    assert result.waits["/a#1"] == "priority: behind 2 requests of priority 5"
    wants.append(want("/a#4", "alice", priority=7))
    assert plan(("G0",), [], wants, now=1).waits["/a#0"] == "priority: behind 4 requests of priority 2 to 7"
    assert result.waits["/a#3"] == "queue: behind /a#2"


def test_an_interactive_request_goes_before_the_users_runs_of_its_priority():
    wants = [want("/alice#1", "alice", since=0), want("/w/a", "alice", since=9, interactive=True),
             want("/alice#2", "alice", since=0, priority=1)]
    result = plan(("G0", "G1"), [], wants, now=10)
    assert result.grants == {"/alice#2": ("G0",), "/w/a": ("G1",)}


def test_within_a_user_the_repo_holding_fewer_gpus_goes_first():
    holdings = [hold("G0", "alice", "/x#0", repo="/x")]
    wants = [want("/x#1", "alice", repo="/x", since=0), want("/y#1", "alice", repo="/y", since=5)]
    assert plan(("G0", "G1"), holdings, wants, now=6).grants == {"/y#1": ("G1",)}


@pytest.mark.parametrize("held_by_x", [0, 1])
def test_a_grant_adds_to_its_repos_count(held_by_x):
    # /x and /y of one user start level; /x's grant puts /y ahead of /x's next request
    holdings = [hold("G0", "alice", "/y#0", repo="/y")] + [hold("G1", "alice", "/x#0", repo="/x")] * held_by_x
    wants = [want("/x#1", "alice", repo="/x", since=0), want("/x#2", "alice", repo="/x", since=1),
             want("/y#1", "alice", repo="/y", since=2)]
    result = plan(GPUS, holdings, wants, now=3)
    order = list(result.grants)
    assert order[:2] == (["/x#1", "/x#2"] if not held_by_x else ["/x#1", "/y#1"])


def test_grants_update_the_counts_of_user_and_repo():
    wants = [want("/x#1", "alice", repo="/x", since=0), want("/x#2", "alice", repo="/x", since=1),
             want("/y#1", "alice", repo="/y", since=2), want("/b#1", "bob", since=0.5)]
    result = plan(GPUS[:3], [], wants, now=3)
    assert result.grants == {"/x#1": ("G0",), "/b#1": ("G1",), "/y#1": ("G2",)}


# Reservations


def test_a_request_that_does_not_fit_holds_the_free_gpus_back():
    holdings = [hold("G0", "alice", "/alice#0"), hold("G1", "bob", "/bob#0"), hold("G2", "bob", "/bob#1")]
    wants = [want("/w/c", "carol", count=2, since=3.5, interactive=True), *sweep("alice", 3, since=0)]
    result = plan(GPUS, holdings, wants, now=4)
    assert result.grants == {}
    assert result.reserved == {"/w/c": ("G3",)}
    assert result.waits["/w/c"] == "waiting for 2 GPUs: 1 free"
    assert result.waits["/alice#00"] == "reservation: 1 GPU held back for /w/c"


def test_a_reservation_waits_for_none_free_and_blocks_later_requests():
    holdings = [hold(gpu, "alice", f"/alice#{gpu}") for gpu in GPUS]
    result = plan(GPUS, holdings, [want("/w/c", "carol", count=2), want("/b#1", "bob")], now=1)
    assert result.reserved == {}
    assert result.waits == {"/w/c": "waiting for 2 GPUs: 0 free", "/b#1": "waiting for 1 GPU: 0 free"}


def test_a_reservation_is_kept_only_for_the_gpus_a_request_can_use():
    holdings = [hold("G0", "bob", "/bob#0")]
    wants = [want("/w/a", "alice", gpus=("G0", "G1")), want("/b#1", "bob", count=2)]
    result = plan(GPUS, holdings, wants, now=1)
    assert result.reserved == {"/w/a": ("G1",)}
    assert result.grants == {"/b#1": ("G2", "G3")}


def test_grants_before_the_reservation_name_their_cause():
    wants = [want("/a#1", "alice", since=0), want("/w/b", "bob", count=2, since=1)]
    result = plan(("G0", "G1"), [hold("G1", "carol", "/c#1")], wants, now=2)
    assert result.grants == {"/a#1": ("G0",)}
    assert result.reserved == {}
    assert result.waits == {"/w/b": "fair share: alice and bob held 0 GPUs each, alice asked first"}


def test_a_request_that_can_never_fit_holds_nothing_back():
    wants = [want("/w/big", "alice", count=5, since=0), want("/w/gone", "alice", gpus=("G9", "G1", "G8"), since=1),
             want("/b#1", "bob", since=2)]
    result = plan(GPUS, [], wants, now=3)
    assert result.grants == {"/b#1": ("G0",)}
    assert result.reserved == {}
    assert result.waits == {"/w/big": "asks for 5 GPUs, this machine has 4 usable", "/w/gone": "not usable here: G9, G8"}


def test_a_request_for_more_gpus_than_usable_names_them():
    result = plan(("G0",), [], [want("/w/a", "alice", count=2)], now=0)
    assert result.waits == {"/w/a": "asks for 2 GPUs, this machine has 1 usable"}


def test_specific_gpus_are_taken_as_named():
    holdings = [hold("G1", "bob", "/bob#0")]
    wants = [want("/w/a", "alice", gpus=("G3", "G2")), want("/w/c", "carol", gpus=("G1",))]
    result = plan(GPUS, holdings, wants, now=1)
    assert result.grants == {"/w/a": ("G2", "G3")}
    assert result.waits == {"/w/c": "waiting for 1 GPU: 0 free"}


def test_a_gpu_named_twice_is_needed_once():
    assert Want(key="k", user="u", repo="r", count=3, gpus=("G1", "G1")).need == 1
    assert Want(key="k", user="u", repo="r", count=3).need == 3
    assert plan(GPUS, [], [want("/w/a", "alice", gpus=("G1", "G1"))], now=0).grants == {"/w/a": ("G1",)}


def test_specific_gpus_taken_by_a_grant_name_the_grant():
    wants = [want("/b#1", "bob", since=0), want("/w/a", "alice", gpus=("G0",), since=1)]
    result = plan(GPUS, [hold("G3", "alice", "/a#0")], wants, now=2)
    assert result.grants == {"/b#1": ("G0",)}
    assert result.waits == {"/w/a": "fair share: bob held 0 GPUs, alice 1"}


# Preemption


def test_add_preempt_takes_the_lowest_priority_then_latest_started_preemptible():
    holdings = [hold("G0", "bob", "/b#keep", priority=0, started=5),
                hold("G1", "bob", "/b#old", priority=0, preemptible=True, started=1),
                hold("G2", "bob", "/b#new", priority=0, preemptible=True, started=3),
                hold("G3", "carol", "/c#low", priority=-1, preemptible=True, started=0)]
    add = want("/w/a", "alice", count=2, preempt=True, interactive=True, since=9)
    result = plan(GPUS, holdings, [add], now=10)
    assert result.grants == {}
    assert result.preempt == {"/c#low": "for alice's add --preempt (/w/a)", "/b#new": "for alice's add --preempt (/w/a)"}
    assert result.reserved == {"/w/a": ("G2", "G3")}
    assert result.waits == {"/w/a": "waiting for 2 GPUs: 0 free; preempting /b#new, /c#low"}


def test_preemption_takes_whole_holders_and_free_gpus_first():
    holdings = [hold("G0", "bob", "/w/b", preemptible=True, started=2), hold("G1", "bob", "/w/b", preemptible=True, started=2),
                hold("G2", "carol", "/c#1", preemptible=True, started=1)]
    add = want("/w/a", "alice", count=2, preempt=True, interactive=True)
    result = plan(GPUS, holdings, [add], now=10)
    assert result.preempt == {"/w/b": "for alice's add --preempt (/w/a)"}
    assert result.reserved == {"/w/a": ("G0", "G3")}
    assert result.waits == {"/w/a": "waiting for 2 GPUs: 1 free; preempting /w/b"}


def test_nobody_is_preempted_when_free_gpus_suffice():
    holdings = [hold("G0", "bob", "/b#1", preemptible=True)]
    result = plan(GPUS, holdings, [want("/w/a", "alice", count=3, preempt=True, interactive=True)], now=1)
    assert result == Plan(grants={"/w/a": ("G1", "G2", "G3")})


def test_a_non_preemptible_holder_is_never_touched():
    holdings = [hold(gpu, "bob", f"/b#{gpu}", priority=-5) for gpu in GPUS]
    result = plan(GPUS, holdings, [want("/w/a", "alice", preempt=True, interactive=True, priority=9)], now=1)
    assert result.preempt == {}
    assert result.waits == {"/w/a": "waiting for 1 GPU: 0 free"}


def test_nobody_is_preempted_when_that_would_not_let_the_request_start():
    holdings = [hold("G0", "bob", "/b#1", preemptible=True), hold("G1", "bob", "/b#2")]
    result = plan(("G0", "G1"), holdings, [want("/w/a", "alice", count=2, preempt=True, interactive=True)], now=1)
    assert result.preempt == {}
    assert result.reserved == {}


def test_a_shared_gpu_frees_only_when_all_its_holders_go():
    holdings = [hold("G0", "bob", "/b#1", preemptible=True), hold("G0", "carol", "/c#1"),
                hold("G1", "bob", "/b#2", preemptible=True, started=1)]
    result = plan(("G0", "G1"), holdings, [want("/w/a", "alice", preempt=True, interactive=True)], now=2)
    assert result.preempt == {"/b#2": "for alice's add --preempt (/w/a)"}
    assert result.reserved == {"/w/a": ("G1",)}


def test_a_run_preempts_only_runs_of_lower_priority():
    holdings = [hold("G0", "bob", "/b#same", priority=5, preemptible=True, started=9),
                hold("G1", "bob", "/b#low", priority=4, preemptible=True, started=1)]
    run = want("/a#1", "alice", priority=5, preempt=True)
    result = plan(("G0", "G1"), holdings, [run], now=10)
    assert result.preempt == {"/b#low": "for /a#1 of alice (priority 5)"}
    assert result.reserved == {"/a#1": ("G1",)}
    assert plan(("G0",), holdings[:1], [run], now=10).preempt == {}


def test_a_holder_is_preempted_once_and_for_gpus_the_request_can_use():
    holdings = [hold("G0", "bob", "/b#1", preemptible=True, started=1),
                hold("G1", "bob", "/b#2", preemptible=True, started=2),
                hold("G2", "bob", "/b#3", preemptible=True, started=3)]
    wants = [want("/w/a", "alice", preempt=True, interactive=True, gpus=("G0",), since=0),
             want("/w/c", "carol", preempt=True, interactive=True, since=1)]
    result = plan(GPUS[:3], holdings, wants, now=5)
    assert result.preempt == {"/b#1": "for alice's add --preempt (/w/a)", "/b#3": "for carol's add --preempt (/w/c)"}
    assert result.reserved == {"/w/a": ("G0",), "/w/c": ("G2",)}


def test_requests_that_may_preempt_go_first_on_free_gpus():
    holdings = [hold("G1", "alice", "/a#0")]
    wants = [want("/b#1", "bob", since=0), want("/w/a", "alice", preempt=True, interactive=True, since=5)]
    result = plan(("G0", "G1"), holdings, wants, now=6)
    assert result.grants == {"/w/a": ("G0",)}
    assert result.waits == {"/b#1": "preemption: /w/a may preempt, so it goes first"}


def test_a_preempting_request_keeps_freed_gpus_while_others_wait():
    holdings = [hold("G0", "bob", "/b#1", preemptible=True)]
    wants = [want("/w/a", "alice", preempt=True, interactive=True, since=5), want("/c#1", "carol", since=0)]
    result = plan(("G0",), holdings, wants, now=6)
    assert result.reserved == {"/w/a": ("G0",)}
    assert result.waits["/c#1"] == "reservation: 1 GPU held back for /w/a"


# Time slices


def sliced(gpu: str, key: str, started: float, **labels) -> Holding:
    return hold(gpu, labels.pop("user", "bob"), key, preemptible=True, time_slice=5, started=started, **labels)


def test_a_run_whose_time_slice_is_up_makes_room_for_one_of_its_priority():
    holdings = [sliced("G0", "/b#1", started=0), sliced("G1", "/b#2", started=4)]
    result = plan(("G0", "G1"), holdings, [want("/b#3", "bob", since=1)], now=5)
    assert result.preempt == {"/b#1": "its time slice (5 s) is up; /b#3 waits"}
    assert result.reserved == {"/b#3": ("G0",)}
    assert result.waits == {"/b#3": "waiting for 1 GPU: 0 free; preempting /b#1"}


def test_a_run_within_its_time_slice_keeps_its_gpu():
    holdings = [sliced("G0", "/b#1", started=0.5)]
    assert plan(("G0",), holdings, [want("/b#3", "bob")], now=5.4).preempt == {}
    assert plan(("G0",), holdings, [want("/b#3", "bob")], now=5.5).preempt != {}


def test_time_slices_wait_only_for_requests_of_the_same_priority():
    holdings = [sliced("G0", "/b#1", started=0, priority=1)]
    for other in (0, 2):
        assert plan(("G0",), holdings, [want("/b#3", "bob", priority=other)], now=50).preempt == {}
    assert plan(("G0",), holdings, [want("/b#3", "bob", priority=1)], now=50).preempt != {}


def test_a_request_granted_now_slices_nobody():
    holdings = [sliced("G0", "/b#1", started=0)]
    result = plan(("G0", "G1"), holdings, [want("/b#3", "bob")], now=50)
    assert result == Plan(grants={"/b#3": ("G1",)})


def test_a_request_that_can_never_fit_slices_nobody():
    holdings = [sliced("G0", "/b#1", started=0)]
    assert plan(("G0",), holdings, [want("/w/a", "bob", gpus=("G0", "G7"))], now=50).preempt == {}


def test_no_time_slice_no_slicing_and_only_preemptible_runs():
    holdings = [hold("G0", "bob", "/b#1", preemptible=True, started=0),
                hold("G1", "bob", "/b#2", time_slice=1, started=0)]
    assert plan(("G0", "G1"), holdings, [want("/b#3", "bob")], now=50).preempt == {}


def test_time_slices_end_only_when_that_lets_a_request_start():
    holdings = [sliced("G0", "/b#1", started=0), sliced("G1", "/b#2", started=4), sliced("G2", "/b#3", started=1)]
    wants = [want("/w/a", "alice", count=2)]
    assert plan(GPUS[:3], holdings, wants, now=5).preempt == {}
    result = plan(GPUS[:3], holdings, wants, now=9)
    assert result.preempt == {"/b#1": "its time slice (5 s) is up; /w/a waits",
                              "/b#3": "its time slice (5 s) is up; /w/a waits"}
    assert result.reserved == {"/w/a": ("G0", "G2")}


def test_time_slices_go_oldest_first_to_the_first_request_waiting():
    holdings = [sliced("G0", "/b#1", started=2), sliced("G1", "/b#2", started=1), sliced("G2", "/b#3", started=3)]
    wants = [want("/b#4", "bob", since=1), want("/c#1", "carol", since=2)]
    result = plan(GPUS[:3], holdings, wants, now=10)
    assert result.reserved == {"/c#1": ("G1",), "/b#4": ("G0",)}
    assert sorted(result.preempt) == ["/b#1", "/b#2"]


def test_a_request_already_served_by_a_reservation_does_not_slice():
    holdings = [sliced("G0", "/b#1", started=0)]
    result = plan(("G0", "G1"), holdings, [want("/w/a", "alice", count=2, gpus=()), want("/c#1", "carol")], now=9)
    assert result.reserved == {"/w/a": ("G0", "G1")}
    assert result.preempt == {"/b#1": "its time slice (5 s) is up; /w/a waits"}


def test_a_request_that_preempted_does_not_also_slice():
    holdings = [sliced("G0", "/b#1", started=0, priority=-1), sliced("G1", "/b#2", started=0, priority=1)]
    result = plan(("G0", "G1"), holdings, [want("/a#1", "alice", priority=1, preempt=True)], now=9)
    assert result.preempt == {"/b#1": "for /a#1 of alice (priority 1)"}


def test_the_time_slice_is_written_as_given():
    holdings = [Holding(gpu="G0", user="bob", repo="/bob", key="/b#1", preemptible=True, time_slice=2.5, started=0)]
    assert plan(("G0",), holdings, [want("/b#2", "bob")], now=3).preempt == {
        "/b#1": "its time slice (2.5 s) is up; /b#2 waits"}


# Determinism


def test_the_same_inputs_give_the_same_plan_in_any_order():
    holdings = [sliced("G0", "/b#1", started=0), hold("G1", "carol", "/c#1", preemptible=True)]
    wants = [*sweep("alice", 3, since=1), *sweep("bob", 3, since=1), want("/w/d", "dan", count=2, preempt=True,
                                                                        interactive=True)]
    first = plan(GPUS, holdings, wants, now=9)
    assert first == plan(GPUS, holdings[::-1], wants[::-1], now=9)


# Simulation: runs end, the dispatchers plan again, granted requests start


def simulate(gpus, arrivals: list[tuple[float, Want]], length) -> tuple[dict[str, float], dict[str, float], float]:
    """Start times per request, GPU-time per user and the makespan, stepping the plan at each
    arrival and each end; a preempted run goes back to its queue as a new request."""
    arrivals = sorted(arrivals, key=lambda item: item[0])
    running: dict[str, tuple[Want, tuple[str, ...], float, float]] = {}  # key -> want, GPUs, start, end
    queue: list[Want] = []
    starts: dict[str, float] = {}
    usage: dict[str, float] = {}
    now = 0.0
    for _ in range(10_000):
        for key in [key for key, (_, _, _, end) in running.items() if end <= now]:
            del running[key]
        while arrivals and arrivals[0][0] <= now:
            queue.append(arrivals.pop(0)[1])
        holdings = [Holding(gpu, w.user, w.repo, key, w.priority, started=start)
                    for key, (w, held, start, _) in running.items() for gpu in held]
        result = plan(gpus, holdings, queue, now)
        for key, chosen in result.grants.items():
            started = next(w for w in queue if w.key == key)
            queue.remove(started)
            starts.setdefault(key, now)
            running[key] = (started, chosen, now, now + length(started))
        events = [end for (_, _, _, end) in running.values()] + [when for when, _ in arrivals[:1]]
        if not events:
            assert not queue, result.waits
            return starts, usage, now
        upcoming = min(events)
        for w, held, _, _ in running.values():
            usage[w.user] = usage.get(w.user, 0.0) + len(held) * (upcoming - now)
        now = upcoming
    raise AssertionError("the simulation did not end")


def two_sweeps() -> list[tuple[float, Want]]:
    return [(0.0, w) for w in sweep("alice", 12, since=0.0)] + [(0.5, w) for w in sweep("bob", 12, since=0.5)]


def test_two_sweeps_started_together_share_four_gpus_evenly():
    starts, usage, makespan = simulate(GPUS, two_sweeps(), lambda w: 1.0)
    assert makespan == 6.0
    for user in ("alice", "bob"):
        assert 1 <= usage[user] / makespan <= 3
    # once bob waits too, each user starts two runs per round
    assert sorted(starts[f"/alice#{n:02d}"] for n in range(12))[4:8] == [1, 1, 2, 2]


def test_two_sweeps_of_uneven_runs_share_evenly():
    lengths = (1.0, 1.3, 0.7, 1.1, 0.9)
    _, usage, makespan = simulate(GPUS, two_sweeps(), lambda w: lengths[int(w.key[-2:]) % len(lengths)])
    for user in ("alice", "bob"):
        assert 1.5 <= usage[user] / makespan <= 2.5


@pytest.mark.parametrize("user", ["carol", "alice", "bob"])
@pytest.mark.parametrize("uneven", [False, True])
def test_an_add_for_two_gpus_behind_two_sweeps_starts_within_one_run(user, uneven):
    lengths = (1.0, 1.3, 0.7, 1.1, 0.9) if uneven else (1.0,)
    add = Want(key="/w/x", user=user, repo=f"/{user}", count=2, since=3.5, interactive=True)

    def length(w: Want) -> float:
        return 100.0 if w is add else lengths[int(w.key[-2:]) % len(lengths)]

    starts, _, _ = simulate(GPUS, [*two_sweeps(), (3.5, add)], length)
    assert starts["/w/x"] - 3.5 <= max(lengths)
