"""sampler.py: which online slots offline trajectories replace, against a naive reference (SPEC step 5).

Run: python -m pytest -q tests/test_sampler.py
"""
import random

import pytest

from sampler import compose_group, draw_offline, replaced_slots


def naive_compose(online, offline, D, mode, k, rng):
    """Reference hybrid sampling written with plain loops; rng draws exactly like draw_offline."""
    group = [(x, False, None) for x in online]
    if mode == "none" or not offline or k == 0:
        return group
    k = min(k, len(online))
    if len(offline) >= k:
        picks = [offline[j] for j in rng.sample(range(len(offline)), k)]
    else:
        picks = [offline[rng.randrange(len(offline))] for _ in range(k)]
    if mode == "mix":
        return group + [(x, True, None) for x in picks]
    if mode == "fixed":
        slots = list(range(len(online) - k, len(online)))
    else:  # repeated argmin, first index wins ties
        slots, left = [], list(range(len(online)))
        for _ in range(k):
            best = left[0]
            for i in left:
                if D[i] < D[best]:
                    best = i
            slots.append(best)
            left.remove(best)
    for slot, x in zip(slots, picks):
        group[slot] = (x, True, slot)
    return group


ONLINE = ["on0", "on1", "on2", "on3", "on4"]
OFFLINE = ["offA", "offB", "offC"]


# -----------------------------------------------------------------------------
# replaced_slots and draw_offline

def test_replaced_slots_argmin():
    """k = 1 picks the index of the smallest D."""
    assert replaced_slots([0.4, 0.1, 0.9, 0.3], 1) == [1]


def test_replaced_slots_ties_go_to_lowest_index():
    """Among equal smallest D, the lowest index is replaced first."""
    assert replaced_slots([0.5, 0.2, 0.7, 0.2, 0.2], 1) == [1]
    assert replaced_slots([0.5, 0.2, 0.7, 0.2, 0.2], 3) == [1, 3, 4]
    assert replaced_slots([0.0, 0.0, 0.0], 2) == [0, 1]


def test_replaced_slots_k_smallest_in_order():
    """k > 1 gives the k smallest D, ascending by D."""
    assert replaced_slots([0.4, 0.1, 0.9, 0.3, 0.05], 3) == [4, 1, 3]


def test_replaced_slots_accepts_tensors():
    """D given as a tensor (e.g. a row of divergence()) gives the same slots as a list of floats."""
    import torch
    D = [0.4, 0.1, 0.9, 0.1]
    assert replaced_slots(torch.tensor(D), 2) == replaced_slots(D, 2) == [1, 3]


def test_replaced_slots_equals_naive_on_random_inputs():
    """replaced_slots equals repeated first-argmin on random D with many ties."""
    rng = random.Random(0)
    for _ in range(200):
        D = [rng.choice([0.0, 0.25, 0.5, 1.0]) for _ in range(rng.randint(1, 8))]
        k = rng.randint(0, len(D))
        ref = [slot for _, _, slot in naive_compose(list(range(len(D))), ["x"] * 8, D, "replace", k,
                                                    random.Random(0)) if slot is not None]
        assert sorted(replaced_slots(D, k)) == sorted(ref)
        assert [D[i] for i in replaced_slots(D, k)] == sorted(D)[:k]


def test_draw_offline_distinct_when_enough():
    """With M >= k, the k draws are distinct indices in range(M)."""
    for seed in range(50):
        picks = draw_offline(5, 3, random.Random(seed))
        assert len(picks) == 3 and len(set(picks)) == 3 and all(0 <= j < 5 for j in picks)


def test_draw_offline_with_repeats_when_too_few():
    """With M < k, draws repeat but stay in range(M)."""
    picks = draw_offline(1, 3, random.Random(0))
    assert picks == [0, 0, 0]


def test_draw_offline_seeded_determinism():
    """The same seed gives the same draws; the draws cover every trajectory over many seeds (uniform)."""
    assert draw_offline(7, 2, random.Random(123)) == draw_offline(7, 2, random.Random(123))
    seen = {draw_offline(4, 1, random.Random(s))[0] for s in range(100)}
    assert seen == {0, 1, 2, 3}


# -----------------------------------------------------------------------------
# compose_group

def test_replace_mode_replaces_min_D_slot():
    """replace: the most teacher-like rollout (min D) is the one swapped out; group size stays N."""
    D = [0.5, 0.6, 0.1, 0.9, 0.3]
    group = compose_group(ONLINE, OFFLINE, D, "replace", 1, random.Random(0))
    assert len(group) == len(ONLINE)
    assert [g[1] for g in group] == [False, False, True, False, False]
    item, is_off, slot = group[2]
    assert item in OFFLINE and slot == 2
    assert [g[0] for i, g in enumerate(group) if i != 2] == ["on0", "on1", "on3", "on4"]
    assert all(g[2] is None for i, g in enumerate(group) if i != 2)


def test_replace_mode_k_smallest():
    """num_replace=k swaps the k smallest-D slots for k distinct offline trajectories."""
    D = [0.5, 0.6, 0.1, 0.9, 0.3]
    group = compose_group(ONLINE, OFFLINE, D, "replace", 2, random.Random(0))
    assert len(group) == 5
    assert {i for i, g in enumerate(group) if g[1]} == {2, 4}
    assert len({group[2][0], group[4][0]}) == 2
    assert group[2][2] == 2 and group[4][2] == 4


def test_no_offline_keeps_all_online():
    """A problem with no offline trajectory keeps its N online rollouts in every mode."""
    for mode in ("replace", "mix", "fixed", "none"):
        group = compose_group(ONLINE, [], [0.0] * 5, mode, 2, random.Random(0))
        assert group == [(x, False, None) for x in ONLINE]


def test_mix_appends():
    """mix: the N online rollouts stay, k offline trajectories are appended (size N + k)."""
    group = compose_group(ONLINE, OFFLINE, [0.1] * 5, "mix", 2, random.Random(0))
    assert len(group) == 7
    assert group[:5] == [(x, False, None) for x in ONLINE]
    assert all(g[1] and g[2] is None and g[0] in OFFLINE for g in group[5:])


def test_fixed_replaces_last_slots_regardless_of_D():
    """fixed: the last k slots are replaced even when their D is the largest in the group."""
    D = [0.0, 0.1, 0.2, 0.9, 1.0]
    group = compose_group(ONLINE, OFFLINE, D, "fixed", 2, random.Random(0))
    assert [g[1] for g in group] == [False, False, False, True, True]
    assert [g[2] for g in group] == [None, None, None, 3, 4]
    assert group[:3] == [(x, False, None) for x in ONLINE[:3]]


def test_none_returns_online_unchanged():
    """none: vanilla GRPO, the group is the online rollouts, untouched."""
    group = compose_group(ONLINE, OFFLINE, [0.0] * 5, "none", 1, random.Random(0))
    assert group == [(x, False, None) for x in ONLINE]


def test_num_replace_zero_is_a_no_op():
    """num_replace=0 keeps every online rollout in every mode."""
    for mode in ("replace", "mix", "fixed"):
        assert compose_group(ONLINE, OFFLINE, [0.0] * 5, mode, 0) == [(x, False, None) for x in ONLINE]


def test_unknown_mode_rejected():
    """An unknown replace_mode is an error, not a silent fallback."""
    with pytest.raises(AssertionError):
        compose_group(ONLINE, OFFLINE, [0.0] * 5, "swap", 1)


def test_same_seed_same_picks():
    """The same rng seed gives the same group; different seeds can pick different trajectories."""
    D = [0.5, 0.6, 0.1, 0.9, 0.3]
    a = compose_group(ONLINE, OFFLINE, D, "replace", 1, random.Random(7))
    b = compose_group(ONLINE, OFFLINE, D, "replace", 1, random.Random(7))
    assert a == b
    picks = {compose_group(ONLINE, OFFLINE, D, "replace", 1, random.Random(s))[2][0] for s in range(40)}
    assert picks == set(OFFLINE)


@pytest.mark.parametrize("mode", ["replace", "mix", "fixed", "none"])
def test_compose_group_equals_naive_reference(mode):
    """compose_group equals the naive reference on random groups, D with ties, M < k and M >= k."""
    rng = random.Random(1)
    for trial in range(150):
        N, M = rng.randint(2, 8), rng.randint(0, 4)
        k = rng.randint(0, N + 1)
        online = [f"on{i}" for i in range(N)]
        offline = [f"off{j}" for j in range(M)]
        D = [rng.choice([0.0, 0.2, 0.2, 0.7, 1.0]) for _ in range(N)]
        got = compose_group(online, offline, D, mode, k, random.Random(trial))
        ref = naive_compose(online, offline, D, mode, k, random.Random(trial))
        assert got == ref, (mode, N, M, k, D)
        assert len(got) == N + (min(k, N) if mode == "mix" and M > 0 else 0)
