"""Rewards and advantages: divergence D, entropy modulation, R_oger, gated R_total, group advantages.

SPEC steps 4 (D_i), 6 (reward) and 7 (advantage). Pure functions of tensors: pytest calls them
directly (python -m pytest -q tests/test_reward.py).
"""
import torch


def divergence(cos):
    """D_i = clamp(1 - (1/M) sum_j cos(e_i, e_j^off), 0, 1); cos (N, M) -> D (N,).

    A problem with no offline trajectory (M = 0) has D = 0 for all its rollouts.
    """
    N, M = cos.shape
    if M == 0:
        return torch.zeros(N)
    return (1.0 - cos.float().mean(dim=1)).clamp(0.0, 1.0)


def entropy_modulation(H_last, alpha=-1.0):
    """exp(alpha * H_last): 1 for a confident final token, small for an uncertain one; (N,) -> (N,)."""
    return torch.exp(alpha * H_last.float())


def oger_reward(D, H_last, R_m, lam=1.0, alpha=-1.0, use_divergence=True, use_entropy=True):
    """R_oger,i = lam * D_i * exp(alpha * H_last,i) * R_m,i, with the two ablation switches.

    use_divergence=False uses D_i = 1 ("OGER without divergence"); use_entropy=False uses
    exp(alpha * H) = 1 ("without entropy modulation"). All inputs (N,); returns (N,) float32.
    """
    D = D.float() if use_divergence else torch.ones_like(D, dtype=torch.float32)
    w = entropy_modulation(H_last, alpha) if use_entropy else torch.ones_like(D)
    return lam * D * w * R_m.float()


def total_reward(R_m, R_oger, is_offline):
    """R_total = R_m + R_oger for online rollouts, R_m alone for offline trajectories; (N,) each.

    Offline trajectories never get R_oger: their D would measure a teacher against the teachers,
    and rewarding it would turn the exploration signal into an imitation signal.
    """
    return R_m.float() + torch.where(is_offline, torch.zeros_like(R_oger), R_oger.float())


def group_advantages(R, use_std=True, eps=1e-6):
    """A_i = (R_i - mean_group) / (std_group + eps) along the last dim; R (G, N) -> (G, N).

    std is the unbiased sample std (torch.std, as in DeepSeekMath/TRL). use_std=False gives
    A_i = R_i - mean_group (Dr. GRPO; what LUFFY, ReLIFT and AMPO ship with): without the division a
    group whose R_m are all equal keeps R_oger's differences as small advantages instead of unit ones.
    A group of equal rewards gets A = 0 exactly: it carries no signal and must not produce NaN.
    """
    R = R.float()
    assert R.shape[-1] >= 2, "a group needs at least 2 members for a std (group_size >= 2)"
    mean, std = R.mean(-1, keepdim=True), R.std(-1, keepdim=True)
    # test equality directly: a float mean of equal values can be 1 ulp off, and / (1e-8 + eps) blows it up
    equal = (R == R[..., :1]).all(-1, keepdim=True)                       # (G, 1)
    A = (R - mean) / (std + eps) if use_std else R - mean
    return torch.where(equal, torch.zeros_like(R), A)
