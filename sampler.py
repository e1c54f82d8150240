"""Hybrid sampling: which online rollouts an offline trajectory replaces (SPEC step 5).

replace: the num_replace rollouts with the smallest D_i (most teacher-like; ties: lowest index)
         are replaced by offline trajectories of the same problem, drawn uniformly (seeded).
mix:     the offline trajectories are appended to the group instead (the pure-mixing ablation).
fixed:   the last num_replace slots are replaced, whatever their D (the LUFFY-like baseline).
none:    the group keeps its N online rollouts (vanilla GRPO).
A problem with no offline trajectory keeps its N online rollouts in every mode.
Tested by: python -m pytest -q tests/test_sampler.py
"""
import random

MODES = ("replace", "mix", "fixed", "none")


def replaced_slots(D, k):
    """Indices of the k smallest D (ties: lowest index), ascending by D; D is a sequence of floats."""
    return sorted(range(len(D)), key=lambda i: (float(D[i]), i))[:k]


def draw_offline(M, k, rng):
    """k indices into M offline trajectories, uniformly at random: distinct when M >= k."""
    return rng.sample(range(M), k) if M >= k else [rng.randrange(M) for _ in range(k)]


def compose_group(online, offline, D, mode="replace", num_replace=1, rng=None):
    """The training group: a list of (item, is_offline, replaced_index) after hybrid sampling.

    online: N rollouts; offline: the M trajectories of the same problem; D: (N,) divergences.
    replaced_index is the online slot an offline item took (None otherwise). Group size stays N,
    except in "mix" where it is N + num_replace.
    """
    assert mode in MODES, f"replace_mode must be one of {MODES}, got {mode!r}"
    group = [(x, False, None) for x in online]
    if mode == "none" or not offline or num_replace == 0:
        return group
    rng = rng or random.Random(0)
    k = min(num_replace, len(online))
    picks = [offline[j] for j in draw_offline(len(offline), k, rng)]
    if mode == "mix":
        return group + [(x, True, None) for x in picks]
    slots = replaced_slots(D, k) if mode == "replace" else list(range(len(online) - k, len(online)))
    for slot, x in zip(slots, picks):
        group[slot] = (x, True, slot)
    return group
