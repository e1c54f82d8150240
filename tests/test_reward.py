"""reward.py against hand-computed values and naive loops: D, entropy modulation, R_oger, R_total, advantages.

Run: python -m pytest -q tests/test_reward.py
"""
import math

import pytest
import torch

from reward import divergence, entropy_modulation, group_advantages, oger_reward, total_reward


# -----------------------------------------------------------------------------
# divergence D_i (SPEC step 4)

def test_divergence_hand_computed():
    """D_i = 1 - mean_j cos_ij for a hand-computed (N=3, M=2) cosine matrix."""
    cos = torch.tensor([[0.5, 0.3], [0.9, 0.7], [-0.2, 0.4]])
    torch.testing.assert_close(divergence(cos), torch.tensor([0.6, 0.2, 0.9]))


def test_divergence_equals_naive_loop():
    """divergence equals a plain Python loop of clamp(1 - sum_j cos_ij / M, 0, 1)."""
    g = torch.Generator().manual_seed(0)
    cos = torch.rand(7, 5, generator=g) * 2 - 1
    naive = []
    for row in cos.tolist():
        sim = sum(row) / len(row)
        naive.append(min(max(1.0 - sim, 0.0), 1.0))
    torch.testing.assert_close(divergence(cos), torch.tensor(naive))


def test_divergence_clamps_to_unit_interval():
    """A negative mean similarity clamps D at 1; D never leaves [0, 1]."""
    cos = torch.tensor([[-0.5, -0.9], [1.0, 1.0], [-1.0, -1.0]])
    D = divergence(cos)
    torch.testing.assert_close(D, torch.tensor([1.0, 0.0, 1.0]))
    assert (D >= 0).all() and (D <= 1).all()


def test_divergence_clamps_at_zero_above_one():
    """A mean similarity slightly above 1 (float error on unit vectors) gives D = 0, not negative."""
    D = divergence(torch.tensor([[1.0 + 1e-3, 1.0 + 1e-3]]))
    assert D.item() == 0.0


def test_divergence_no_offline_is_zero():
    """A problem with no offline trajectory (M = 0) has D = 0 for all N rollouts."""
    D = divergence(torch.zeros(4, 0))
    assert D.shape == (4,) and (D == 0).all()


# -----------------------------------------------------------------------------
# entropy modulation and R_oger (SPEC step 6)

def test_entropy_modulation_known_values():
    """exp(-1 * H) at H = 0, 1, ln 2 is 1, 1/e, 1/2."""
    w = entropy_modulation(torch.tensor([0.0, 1.0, math.log(2.0)]), alpha=-1.0)
    torch.testing.assert_close(w, torch.tensor([1.0, math.exp(-1.0), 0.5]))


def test_entropy_modulation_alpha_zero_is_one():
    """alpha = 0 turns the modulation off: every weight is exactly 1."""
    w = entropy_modulation(torch.tensor([0.0, 0.7, 3.2]), alpha=0.0)
    assert (w == 1.0).all()


def test_oger_reward_hand_computed():
    """R_oger = lam * D * exp(alpha * H) * R_m, checked entry by entry."""
    D = torch.tensor([0.5, 0.2, 0.9, 1.0])
    H = torch.tensor([0.0, 1.0, 2.0, 0.5])
    R_m = torch.tensor([1.0, 1.0, 0.0, 1.0])
    R = oger_reward(D, H, R_m, lam=2.0, alpha=-0.5)
    expected = [2.0 * d * math.exp(-0.5 * h) * r for d, h, r in zip(D.tolist(), H.tolist(), R_m.tolist())]
    torch.testing.assert_close(R, torch.tensor(expected))
    assert R.dtype == torch.float32


def test_oger_reward_without_divergence_uses_D_one():
    """use_divergence=False gives lam * exp(alpha * H) * R_m, whatever D holds."""
    D = torch.tensor([0.1, 0.7, 0.0])
    H = torch.tensor([0.3, 1.0, 2.0])
    R_m = torch.tensor([1.0, 1.0, 1.0])
    R = oger_reward(D, H, R_m, use_divergence=False)
    torch.testing.assert_close(R, torch.exp(-H))


def test_oger_reward_without_entropy_uses_weight_one():
    """use_entropy=False gives lam * D * R_m, whatever H holds."""
    D = torch.tensor([0.1, 0.7, 0.4])
    H = torch.tensor([0.3, 1.0, 2.0])
    R_m = torch.tensor([1.0, 0.0, 1.0])
    R = oger_reward(D, H, R_m, lam=3.0, use_entropy=False)
    torch.testing.assert_close(R, torch.tensor([0.3, 0.0, 1.2]))


def test_oger_reward_zero_when_wrong():
    """A wrong answer (R_m = 0) earns no exploration reward, however divergent or confident."""
    R = oger_reward(torch.ones(3), torch.zeros(3), torch.zeros(3), lam=5.0)
    assert (R == 0).all()


def test_oger_reward_accepts_bool_and_int_R_m():
    """R_m given as bool or int gives the same float R_oger as float R_m."""
    D, H = torch.tensor([0.5, 0.4]), torch.tensor([1.0, 0.2])
    ref = oger_reward(D, H, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(oger_reward(D, H, torch.tensor([True, False])), ref)
    torch.testing.assert_close(oger_reward(D, H, torch.tensor([1, 0])), ref)


# -----------------------------------------------------------------------------
# R_total gating

def test_total_reward_offline_rows_never_get_oger():
    """Online rows get R_m + R_oger; offline rows get R_m alone, even with a large R_oger."""
    R_m = torch.tensor([1.0, 0.0, 1.0, 1.0])
    R_oger = torch.tensor([0.4, 0.0, 0.7, 9.0])
    is_offline = torch.tensor([False, False, False, True])
    torch.testing.assert_close(total_reward(R_m, R_oger, is_offline), torch.tensor([1.4, 0.0, 1.7, 1.0]))


def test_total_reward_wrong_teacher_gets_zero():
    """A wrong offline trajectory (R_m = 0) gets R_total = 0, not its R_oger."""
    R = total_reward(torch.tensor([0.0]), torch.tensor([0.8]), torch.tensor([True]))
    assert R.item() == 0.0


# -----------------------------------------------------------------------------
# group advantages (SPEC step 7)

def naive_advantages(R, eps=1e-6):
    """Per group: (R_i - mean) / (unbiased std + eps), in plain Python."""
    out = []
    for row in R.tolist():
        n = len(row)
        mean = sum(row) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in row) / (n - 1))
        out.append([(x - mean) / (std + eps) for x in row])
    return torch.tensor(out)


def test_group_advantages_hand_computed():
    """R = [1, 0, 0, 1.5]: mean 0.625, unbiased std sqrt(1.6875/3) = 0.75, A = (R - mean) / 0.75."""
    A = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.5]]))
    expected = torch.tensor([[0.5, -0.8333333, -0.8333333, 1.1666667]]) * (0.75 / (0.75 + 1e-6))
    torch.testing.assert_close(A, expected)


def test_group_advantages_equals_naive_loop():
    """Vectorised advantages equal a plain loop over groups, one group at a time."""
    g = torch.Generator().manual_seed(1)
    R = (torch.rand(5, 8, generator=g) > 0.5).float() + torch.rand(5, 8, generator=g)
    torch.testing.assert_close(group_advantages(R), naive_advantages(R))


def test_group_advantages_groups_are_independent():
    """Each group's advantages depend on that group alone: computing a group by itself changes nothing."""
    g = torch.Generator().manual_seed(2)
    R = torch.rand(4, 6, generator=g)
    A = group_advantages(R)
    for i in range(4):
        torch.testing.assert_close(A[i], group_advantages(R[i:i + 1])[0])


def test_group_advantages_equal_rewards_give_exact_zeros():
    """A group of equal rewards (all 0, all 1, all 1.37) gets A = 0 exactly, never NaN."""
    R = torch.tensor([[0.0] * 4, [1.0] * 4, [1.37] * 4])
    A = group_advantages(R)
    assert not torch.isnan(A).any()
    assert (A == 0).all()


def test_group_advantages_equal_non_dyadic_rewards_give_exact_zeros():
    """Equal rewards whose float mean is not exact (3 x 1.413, 7 x 0.1) still give A = 0 exactly."""
    for n, v in [(3, 1.413128166622824), (3, 0.9458118423811664), (7, 0.1), (5, 1.0 + 1.0 / 3.0)]:
        A = group_advantages(torch.full((1, n), v))
        assert (A == 0).all(), (n, v, A)


def test_group_advantages_invariant_to_constant_shift():
    """Adding a constant to every reward of a group leaves its advantages unchanged."""
    g = torch.Generator().manual_seed(3)
    R = torch.rand(3, 5, generator=g)
    torch.testing.assert_close(group_advantages(R + 2.5), group_advantages(R), atol=1e-5, rtol=1e-5)


def test_group_advantages_permutation_equivariant():
    """Permuting the members of a group permutes their advantages the same way."""
    g = torch.Generator().manual_seed(4)
    R = torch.rand(2, 7, generator=g)
    perm = torch.randperm(7, generator=g)
    torch.testing.assert_close(group_advantages(R[:, perm]), group_advantages(R)[:, perm])


def test_group_advantages_sum_to_zero():
    """Advantages within a group sum to zero (they are centred on the group mean)."""
    R = torch.tensor([[1.0, 0.0, 1.3, 0.0, 1.9, 1.0]])
    assert abs(group_advantages(R).sum().item()) < 1e-5


def test_group_advantages_rejects_singleton_group():
    """A group of one has no std: group_advantages refuses it instead of returning NaN."""
    with pytest.raises(AssertionError):
        group_advantages(torch.tensor([[1.0]]))


# -----------------------------------------------------------------------------
# advantages without the std division (the adv_std=false switch, Dr. GRPO)

def test_group_advantages_without_std_hand_computed():
    """R = [1, 0, 0, 1.5] without the division: A = R - 0.625 = [0.375, -0.625, -0.625, 0.875]."""
    A = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.5]]), use_std=False)
    torch.testing.assert_close(A, torch.tensor([[0.375, -0.625, -0.625, 0.875]]))


def test_group_advantages_without_std_equals_naive_loop():
    """Without the division, advantages equal R_i minus the group's mean in a plain loop."""
    g = torch.Generator().manual_seed(5)
    R = (torch.rand(5, 8, generator=g) > 0.5).float() + torch.rand(5, 8, generator=g)
    naive = torch.tensor([[x - sum(row) / len(row) for x in row] for row in R.tolist()])
    torch.testing.assert_close(group_advantages(R, use_std=False), naive)


def test_group_advantages_without_std_keeps_small_differences_small():
    """An all-correct group whose R_oger differ by 0.01 gets advantages of size 0.005 without the std,
    and of size ~0.7 with it: the division inflates R_oger's noise to unit size (SPEC's table)."""
    R = torch.tensor([[1.01, 1.0, 1.01, 1.0]])
    assert group_advantages(R, use_std=False).abs().max() < 0.006
    assert group_advantages(R, use_std=True).abs().min() > 0.8


def test_group_advantages_without_std_equal_rewards_give_exact_zeros():
    """Equal rewards give A = 0 exactly in the no-std mode too."""
    for n, v in [(3, 1.413128166622824), (7, 0.1), (4, 1.0)]:
        assert (group_advantages(torch.full((1, n), v), use_std=False) == 0).all()


@pytest.mark.parametrize("use_std", [True, False])
def test_correct_online_rollouts_never_rank_below_wrong_ones(use_std):
    """In both modes, within any group (offline members included), every correct online rollout's
    advantage is >= every wrong online rollout's: R_oger only adds to correct answers."""
    g = torch.Generator().manual_seed(6)
    for _ in range(200):
        N = 8
        R_m = (torch.rand(N, generator=g) > 0.5).float()
        D, H = torch.rand(N, generator=g), 3 * torch.rand(N, generator=g)
        is_off = torch.rand(N, generator=g) < 0.25
        lam = float(torch.rand(1, generator=g)) * 2
        R = total_reward(R_m, oger_reward(D, H, R_m, lam, -1.0), is_off)
        A = group_advantages(R[None], use_std)[0]
        right, wrong = A[(R_m == 1) & ~is_off], A[(R_m == 0) & ~is_off]
        if len(right) and len(wrong):
            assert right.min() >= wrong.max()
