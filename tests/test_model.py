"""model.py: per-token math, padding, the GRPO loss against a per-token loop, and KV-cache sampling
against a naive full-forward loop on a tiny random Llama (built here, never downloaded).

Run: python -m pytest -q tests/test_model.py
"""
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from model import (grpo_loss, invert_cdf, micro_batches, next_tokens, pad_batch, row_uniform, sample, score, token_entropies, token_log_probs,
                   top_p_filter)

PAD, EOS = 0, 2
PROMPTS = [[1, 5, 9, 12, 7, 30], [1, 4], [1, 20, 21, 8]]  # different lengths: exercises left padding


# -----------------------------------------------------------------------------
# per-token math

def test_token_log_probs_equals_naive_log_softmax():
    """token_log_probs equals log_softmax(logits)[target] computed position by position."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g) * 4
    targets = torch.randint(0, 11, (3, 5), generator=g)
    naive = torch.zeros(3, 5)
    for b in range(3):
        for t in range(5):
            naive[b, t] = F.log_softmax(logits[b, t].double(), -1)[targets[b, t]]
    out = token_log_probs(logits, targets)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, naive)


def test_token_log_probs_upcasts_bf16():
    """bf16 logits give float32 log-probs close to the float32 computation."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 9, generator=g)
    targets = torch.randint(0, 9, (2, 4), generator=g)
    out = token_log_probs(logits.bfloat16(), targets)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, token_log_probs(logits.bfloat16().float(), targets))


def test_token_entropies_uniform_is_log_V():
    """Equal logits over V tokens have entropy log V nats."""
    H = token_entropies(torch.zeros(2, 3, 40) + torch.randn(2, 3, 1))  # a per-position shift changes nothing
    torch.testing.assert_close(H, torch.full((2, 3), math.log(40.0)))


def test_token_entropies_one_hot_is_zero():
    """A single dominant logit gives entropy ~0 (and no NaN from 0 * log 0)."""
    logits = torch.full((1, 10), -1e4)
    logits[0, 3] = 1e4
    H = token_entropies(logits)
    assert not torch.isnan(H).any() and H.item() < 1e-6


def test_token_entropies_three_way_hand_computed():
    """p = (1/2, 1/4, 1/4): H = 1.5 * ln 2 nats."""
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]])) + 7.0
    torch.testing.assert_close(token_entropies(logits), torch.tensor([1.5 * math.log(2.0)]))


def naive_top_p_keep(logits, top_p):
    """Set of kept token ids: walk tokens by descending prob, keep until the cumulative mass reaches top_p."""
    p = logits.softmax(-1).tolist()
    keep, cum = set(), 0.0
    for i in sorted(range(len(p)), key=lambda i: -p[i]):
        keep.add(i)
        cum += p[i]
        if cum >= top_p:
            break
    return keep


def test_top_p_filter_keeps_smallest_set_with_crossing_token():
    """p = (.15, .5, .05, .3): top_p 0.7 keeps {.5, .3} (the .3 crosses 0.7); 0.9 adds .15; 0.4 keeps .5."""
    logits = torch.log(torch.tensor([[0.15, 0.5, 0.05, 0.3]]))
    for top_p, kept in [(0.7, {1, 3}), (0.9, {0, 1, 3}), (0.4, {1}), (0.99, {0, 1, 2, 3})]:
        out = top_p_filter(logits, top_p)
        assert {i for i in range(4) if out[0, i] > float("-inf")} == kept, top_p
        assert torch.equal(out[0, list(kept)], logits[0, list(kept)])  # kept logits are untouched


def test_top_p_filter_equals_naive_on_random_rows():
    """top_p_filter keeps exactly the naive nucleus on random rows, for several top_p."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(20, 13, generator=g) * 2
    for top_p in (0.3, 0.6, 0.9):
        out = top_p_filter(logits, top_p)
        for b in range(20):
            assert {i for i in range(13) if out[b, i] > float("-inf")} == naive_top_p_keep(logits[b], top_p)


def test_top_p_one_is_no_op():
    """top_p = 1 returns the logits unchanged."""
    logits = torch.randn(3, 7)
    assert torch.equal(top_p_filter(logits, 1.0), logits)


# -----------------------------------------------------------------------------
# padding and scoring

def test_pad_batch_hand_example():
    """Right padding; resp_mask[b, t] = 1 exactly where ids[b, t + 1] is a response token."""
    ids, attn, m = pad_batch([[1, 5, 6], [1, 7]], [[8, 9, 2], [10, 2]], PAD)
    assert ids.tolist() == [[1, 5, 6, 8, 9, 2], [1, 7, 10, 2, 0, 0]]
    assert attn.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
    assert m.tolist() == [[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]


def test_pad_batch_mask_selects_the_responses():
    """The targets ids[:, 1:] under resp_mask are, row by row, exactly the response tokens."""
    prompts = [[1, 3, 4, 5], [1], [1, 6, 6]]
    responses = [[7, 2], [8, 9, 10, 11, 2], [12]]
    ids, _, m = pad_batch(prompts, responses, PAD)
    for b, r in enumerate(responses):
        assert ids[b, 1:][m[b].bool()].tolist() == r
    assert m.sum().item() == sum(map(len, responses))


def test_score_equals_plain_forward(tiny_lm):
    """score's log-probs equal log_softmax of a plain HF forward at every target, and HF's own loss."""
    ids, attn, m = pad_batch(PROMPTS, [[3, 4, 2], [5, 6, 7, 8, 2], [9]], PAD)
    with torch.no_grad():
        logp, H = score(tiny_lm, ids, attn)
        logits = tiny_lm(input_ids=ids, attention_mask=attn).logits.double()
        labels = torch.where(F.pad(m, (1, 0)).bool(), ids, torch.full_like(ids, -100))
        hf_loss = tiny_lm(input_ids=ids, attention_mask=attn, labels=labels).loss
    B, L = ids.shape
    for b in range(B):
        for t in range(L - 1):
            if attn[b, t + 1]:
                ref = F.log_softmax(logits[b, t], -1)[ids[b, t + 1]].item()
                assert abs(logp[b, t].item() - ref) < 1e-4
                ent = -(F.softmax(logits[b, t], -1) * F.log_softmax(logits[b, t], -1)).sum().item()
                assert abs(H[b, t].item() - ent) < 1e-4
    torch.testing.assert_close((-(logp * m).sum() / m.sum()).double(), hf_loss.double(), atol=1e-5, rtol=1e-5)


def test_score_temperature_scales_logits(tiny_lm):
    """score at temperature tau gives log_softmax(logits / tau) at the targets; entropies stay at T = 1."""
    ids, attn, m = pad_batch(PROMPTS[:2], [[3, 4, 2], [5, 2]], PAD)
    with torch.no_grad():
        logp, H = score(tiny_lm, ids, attn, temperature=0.7)
        _, H1 = score(tiny_lm, ids, attn, temperature=1.0)
        logits = tiny_lm(input_ids=ids, attention_mask=attn).logits[:, :-1]
    torch.testing.assert_close(logp, token_log_probs(logits / 0.7, ids[:, 1:]))
    torch.testing.assert_close(H, H1)


def test_score_padding_invariance(tiny_lm):
    """Per-token log-probs of a sequence in a padded batch equal those of the sequence scored alone."""
    responses = [[3, 4, 2], [5, 6, 7, 8, 9, 10, 2], [11]]
    ids, attn, m = pad_batch(PROMPTS, responses, PAD)
    with torch.no_grad():
        logp, _ = score(tiny_lm, ids, attn)
        for b, (p, r) in enumerate(zip(PROMPTS, responses)):
            ids1, attn1, m1 = pad_batch([p], [r], PAD)
            logp1, _ = score(tiny_lm, ids1, attn1)
            torch.testing.assert_close(logp[b][m[b].bool()], logp1[0][m1[0].bool()], atol=1e-5, rtol=1e-5)


def test_score_skips_prompt_logits(tiny_lm):
    """With first = the shortest prompt's length - 1, the LM head sees only positions first.., the
    response tokens' log-probs, entropies and the loss's gradient equal those of the full forward,
    and the skipped positions read 0; a prompt-only row (a padding chunk) still keeps one position."""
    prompts, responses = PROMPTS, [[3, 4, 2], [5, 6, 7, 8, 2], [9]]
    ids, attn, m = pad_batch(prompts, responses, PAD)
    first = min(map(len, prompts)) - 1
    seen = []
    hook = tiny_lm.lm_head.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
    grads = []
    try:
        for f in (0, first):
            logp, H = score(tiny_lm, ids, attn, temperature=0.7, first=f)
            grpo_loss(logp, logp.detach() - 0.1, torch.tensor([1.0, -0.5, 2.0]), m, m.sum())[0].backward()
            grads.append([p.grad.clone() for p in tiny_lm.parameters()])
            tiny_lm.zero_grad(set_to_none=True)
            if f == 0:
                full_logp, full_H = logp.detach(), H.detach()
        assert seen == [ids.shape[1], ids.shape[1] - first] and first > 0
        assert logp.shape == full_logp.shape and (logp[:, :first] == 0).all() and (H[:, :first] == 0).all()
        torch.testing.assert_close(logp.detach()[:, first:], full_logp[:, first:], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(H.detach()[:, first:], full_H[:, first:], atol=1e-6, rtol=1e-6)
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        seen.clear()
        ids, attn, m = pad_batch([PROMPTS[0]], [[]], PAD)  # L = 6: keeps the last 2 positions, 1 log-prob
        logp, _ = score(tiny_lm, ids, attn, first=len(PROMPTS[0]) - 1)
        assert seen == [2] and logp.shape == (1, 5) and logp.requires_grad
    finally:
        hook.remove()
        tiny_lm.zero_grad(set_to_none=True)


def test_score_batch_pads_and_skips_the_prompts(tiny_lm):
    """score_batch = pad_batch, then score with first = the shortest prompt's length - 1."""
    from model import score_batch
    responses = [[3, 4, 2], [5, 6, 7, 8, 2], [9]]
    ids, attn, m = pad_batch(PROMPTS, responses, PAD)
    with torch.no_grad():
        logp, H, mask = score_batch(tiny_lm, PROMPTS, responses, PAD, temperature=0.7)
        ref_logp, ref_H = score(tiny_lm, ids, attn, temperature=0.7, first=min(map(len, PROMPTS)) - 1)
    assert torch.equal(mask, m) and torch.equal(logp, ref_logp) and torch.equal(H, ref_H)


def test_score_entropy_carries_gradient(tiny_lm):
    """The entropy-bonus term reaches the weights: with A = 0, beta_H > 0 still gives a nonzero gradient."""
    ids, attn, m = pad_batch(PROMPTS[:2], [[3, 4, 2], [5, 2]], PAD)
    tiny_lm.zero_grad(set_to_none=True)
    logp, H = score(tiny_lm, ids, attn, with_entropy=True)
    loss, _ = grpo_loss(logp, logp.detach(), torch.zeros(2), m, m.sum(), H=H, beta_H=0.1)
    loss.backward()
    g = sum(p.grad.abs().sum().item() for p in tiny_lm.parameters() if p.grad is not None)
    tiny_lm.zero_grad(set_to_none=True)
    assert g > 0


# -----------------------------------------------------------------------------
# the GRPO loss (SPEC step 8)

def naive_grpo_loss(logp, logp_old, A, mask, T, eps=0.2, offline=None, luffy=False):
    """-(1/T) sum over masked tokens of min(r A, clip(r) A), or LUFFY's p/(p+0.1) A on offline rows."""
    logp, logp_old, A, mask = (x.tolist() if torch.is_tensor(x) else x for x in (logp, logp_old, A, mask))
    total = 0.0
    for b in range(len(logp)):
        for t in range(len(logp[b])):
            if not mask[b][t]:
                continue
            if luffy and offline is not None and offline[b]:
                p = math.exp(logp[b][t])
                total += p / (p + 0.1) * A[b]
            else:
                r = math.exp(logp[b][t] - logp_old[b][t])
                total += min(r * A[b], min(max(r, 1 - eps), 1 + eps) * A[b])
    return -total / T


def random_batch(seed, B=4, L=6):
    g = torch.Generator().manual_seed(seed)
    logp_old = -torch.rand(B, L, generator=g) * 3
    logp = logp_old + torch.randn(B, L, generator=g) * 0.4   # ratios on both sides of the clip range
    A = torch.randn(B, generator=g)
    mask = (torch.rand(B, L, generator=g) > 0.3).float()
    return logp, logp_old, A, mask


def test_grpo_loss_equals_per_token_loop():
    """grpo_loss equals a per-token Python loop of -min(r A, clip(r, 1-eps, 1+eps) A) / T over masked tokens."""
    for seed in range(3):
        logp, logp_old, A, mask = random_batch(seed)
        loss, _ = grpo_loss(logp, logp_old, A, mask, T=17.0)
        ref = naive_grpo_loss(logp.tolist(), logp_old.tolist(), A.tolist(), mask.tolist(), 17.0)
        assert abs(loss.item() - ref) < 1e-5


def one_token(ratio, A):
    """A single-token batch with ratio r and advantage A; logp is a leaf that requires grad."""
    logp = torch.tensor([[math.log(ratio) - 1.0]], requires_grad=True)
    return logp, torch.tensor([[-1.0]]), torch.tensor([A]), torch.ones(1, 1)


@pytest.mark.parametrize("ratio,A,clipped_value", [(1.5, 1.0, 1.2), (0.5, -1.0, -0.8)])
def test_grpo_loss_clipped_cases_have_no_gradient(ratio, A, clipped_value):
    """r = 1.5 with A > 0 is clipped at 1.2, r = 0.5 with A < 0 at 0.8: the loss is -clip(r) A, gradient 0."""
    logp, logp_old, At, mask = one_token(ratio, A)
    loss, st = grpo_loss(logp, logp_old, At, mask, T=1.0)
    loss.backward()
    assert abs(loss.item() + clipped_value) < 1e-6
    assert logp.grad.item() == 0.0
    assert st["clipped"].item() == 1.0


@pytest.mark.parametrize("ratio,A", [(1.5, -1.0), (0.5, 1.0), (1.1, 1.0), (0.9, -1.0)])
def test_grpo_loss_unclipped_cases_carry_gradient(ratio, A):
    """When min picks the unclipped term the loss is -r A and d loss / d logp = -r A."""
    logp, logp_old, At, mask = one_token(ratio, A)
    loss, st = grpo_loss(logp, logp_old, At, mask, T=1.0)
    loss.backward()
    assert abs(loss.item() + ratio * A) < 1e-6
    assert abs(logp.grad.item() + ratio * A) < 1e-6
    assert st["clipped"].item() == 0.0


def test_grpo_loss_ignores_masked_tokens():
    """Masked tokens contribute neither loss nor gradient, whatever their ratio."""
    logp, logp_old, A, mask = random_batch(3)
    logp = logp.clone().requires_grad_(True)
    loss, _ = grpo_loss(logp, logp_old, A, mask, T=10.0)
    garbage = logp_old + torch.where(mask.bool(), torch.zeros_like(logp), torch.full_like(logp, 50.0))
    loss2, _ = grpo_loss(logp.detach() + (garbage - logp_old) * (1 - mask), logp_old, A, mask, T=10.0)
    loss.backward()
    assert torch.isfinite(loss2) and abs(loss.item() - loss2.item()) < 1e-6
    assert (logp.grad[mask == 0] == 0).all()


def test_grpo_loss_divides_by_given_T():
    """Doubling T halves the loss: the denominator is the caller's global token count, not the mask sum."""
    logp, logp_old, A, mask = random_batch(4)
    l1, _ = grpo_loss(logp, logp_old, A, mask, T=12.0)
    l2, _ = grpo_loss(logp, logp_old, A, mask, T=24.0)
    torch.testing.assert_close(l2, l1 / 2)


def test_grpo_loss_micro_batches_sum_to_whole_batch():
    """Two micro-batches each divided by the global T, summed, give the whole batch's loss and gradient."""
    logp, logp_old, A, mask = random_batch(5, B=6)
    T = mask.sum()
    whole = logp.clone().requires_grad_(True)
    loss, _ = grpo_loss(whole, logp_old, A, mask, T)
    loss.backward()
    split = logp.clone().requires_grad_(True)
    la, _ = grpo_loss(split[:2], logp_old[:2], A[:2], mask[:2], T)
    lb, _ = grpo_loss(split[2:], logp_old[2:], A[2:], mask[2:], T)
    (la + lb).backward()
    torch.testing.assert_close(la + lb, loss)
    torch.testing.assert_close(split.grad, whole.grad)


def test_grpo_loss_luffy_offline_rows():
    """LUFFY mode: offline rows use p/(p+0.1) A and are never clipped; online rows keep the clipped surrogate."""
    logp, logp_old, A, mask = random_batch(6)
    logp_old[1] = logp[1] - math.log(3.0)  # offline row with ratio 3: would be clipped under the surrogate
    A[1] = 1.0
    offline = torch.tensor([False, True, False, True])
    loss, st = grpo_loss(logp, logp_old, A, mask, T=9.0, offline=offline, luffy=True)
    ref = naive_grpo_loss(logp.tolist(), logp_old.tolist(), A.tolist(), mask.tolist(), 9.0,
                          offline=offline.tolist(), luffy=True)
    assert abs(loss.item() - ref) < 1e-5
    _, st_on = grpo_loss(logp[[0, 2]], logp_old[[0, 2]], A[[0, 2]], mask[[0, 2]], T=9.0)
    assert st["clipped"].item() == st_on["clipped"].item()  # no clipped token counted on offline rows


def test_grpo_loss_luffy_gradient_is_shaped():
    """An offline token under LUFFY has d loss / d logp = -A * 0.1 p / (p + 0.1)^2, even at a huge ratio."""
    p = 0.3
    logp = torch.tensor([[math.log(p)]], requires_grad=True)
    loss, _ = grpo_loss(logp, torch.tensor([[math.log(p) - 5.0]]), torch.tensor([2.0]), torch.ones(1, 1),
                        T=1.0, offline=torch.tensor([True]), luffy=True)
    loss.backward()
    assert abs(loss.item() + 2.0 * p / (p + 0.1)) < 1e-6
    assert abs(logp.grad.item() + 2.0 * 0.1 * p / (p + 0.1) ** 2) < 1e-5


def test_grpo_loss_offline_without_luffy_is_on_policy():
    """With luffy=False the offline flag changes nothing: offline tokens get the clipped surrogate."""
    logp, logp_old, A, mask = random_batch(7)
    a, _ = grpo_loss(logp, logp_old, A, mask, T=5.0, offline=torch.tensor([True, False, True, False]))
    b, _ = grpo_loss(logp, logp_old, A, mask, T=5.0)
    torch.testing.assert_close(a, b)


def test_grpo_loss_entropy_bonus():
    """beta_H > 0 subtracts beta_H * sum(H * mask) / T; beta_H = 0 ignores H."""
    logp, logp_old, A, mask = random_batch(8)
    H = torch.rand_like(logp) * 2
    base, _ = grpo_loss(logp, logp_old, A, mask, T=11.0)
    with_h, _ = grpo_loss(logp, logp_old, A, mask, T=11.0, H=H, beta_H=0.05)
    zero, _ = grpo_loss(logp, logp_old, A, mask, T=11.0, H=H, beta_H=0.0)
    torch.testing.assert_close(with_h, base - 0.05 * (H * mask).sum() / 11.0)
    torch.testing.assert_close(zero, base)


def test_grpo_loss_stats():
    """stats: clipped counts masked clipped tokens, approx_kl (k3) >= 0 and 0 at ratio 1, tokens = mask sum."""
    logp, logp_old, A, mask = random_batch(9)
    _, st = grpo_loss(logp, logp_old, A, mask, T=1.0)
    r = torch.exp(logp - logp_old)
    naive_clipped = sum(1 for b in range(4) for t in range(6) if mask[b, t]
                        and r[b, t] * A[b] > r[b, t].clamp(0.8, 1.2) * A[b])
    assert st["clipped"].item() == naive_clipped > 0
    assert st["approx_kl"].item() > 0
    assert st["tokens"].item() == mask.sum().item()
    _, st1 = grpo_loss(logp, logp.clone(), A, mask, T=1.0)
    assert st1["approx_kl"].item() == 0.0 and st1["clipped"].item() == 0.0


def test_grpo_loss_ratio_one_gradient_is_policy_gradient():
    """At ratio 1 (num_iterations = 1) the gradient is -A * mask / T per token: plain policy gradient."""
    logp, _, A, mask = random_batch(10)
    logp = logp.clone().requires_grad_(True)
    loss, _ = grpo_loss(logp, logp.detach(), A, mask, T=7.0)
    loss.backward()
    torch.testing.assert_close(logp.grad, -A[:, None] * mask / 7.0)


# -----------------------------------------------------------------------------
# micro-batches

def test_micro_batches_partition_and_cap():
    """Every row lands in exactly one chunk; no chunk of 2+ rows exceeds max_tokens padded tokens;
    a row longer than the cap gets a chunk of its own."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 80, (150,), generator=g).tolist() + [500]
    chunks = micro_batches(lengths, max_tokens=1000, overhead_tokens=64)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    for c in chunks:
        assert len(c) == 1 or max(lengths[i] for i in c) * len(c) <= 1000
    assert [150] in chunks
    rowcap = micro_batches(lengths, max_tokens=10**6, overhead_tokens=10**6, max_rows=16)
    assert sorted(i for c in rowcap for i in c) == list(range(len(lengths)))
    assert max(map(len, rowcap)) == 16 and len(rowcap) == 10  # 151 rows, at most 16 a chunk: 10 chunks


def brute_force_cost(L, max_tokens, overhead):
    """Least padded tokens + overhead per chunk over every way of cutting the sorted lengths."""
    L, best = sorted(L), None
    for mask in range(1 << (len(L) - 1)):
        cost, start = 0, 0
        for j in range(1, len(L) + 1):
            if j == len(L) or mask >> (j - 1) & 1:
                if L[j - 1] * (j - start) > max_tokens and j - start > 1:
                    cost = None
                    break
                cost += L[j - 1] * (j - start) + overhead
                start = j
        if cost is not None and (best is None or cost < best):
            best = cost
    return best


def test_micro_batches_cost_is_optimal():
    """The chosen cut costs exactly the brute-force optimum over all cuts of the sorted rows (10 rows)."""
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        L = torch.randint(3, 60, (10,), generator=g).tolist()
        chunks = micro_batches(L, max_tokens=200, overhead_tokens=30)
        cost = sum(max(L[i] for i in c) * len(c) + 30 for c in chunks)
        assert cost == brute_force_cost(L, 200, 30)


def test_micro_batches_hand_example():
    """Lengths 10, 10, 10, 100 with overhead 50: the long row gets its own chunk (padded 30 + 100 + 2 x 50)
    rather than padding the short ones to 100 (400 + 50)."""
    assert sorted(map(sorted, micro_batches([10, 100, 10, 10], 10_000, 50))) == [[0, 2, 3], [1]]


# -----------------------------------------------------------------------------
# sampling (SPEC step 2) against a naive full forward without a cache

def naive_greedy(model, prompt, max_new_tokens, eos_id):
    """Greedy decoding by re-running the full forward on the unpadded sequence at every step."""
    seq, out = list(prompt), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            tok = model(input_ids=torch.tensor([seq])).logits[0, -1].argmax().item()
            out.append(tok)
            seq.append(tok)
            if tok == eos_id:
                break
    return out


def full_logits(model, prompt, response):
    """Logits (len(response), V) of the full forward that predicts each response token."""
    with torch.no_grad():
        x = torch.tensor([prompt + response])
        return model(input_ids=x).logits[0, len(prompt) - 1:len(prompt) + len(response) - 1].double()


def test_greedy_equals_naive_full_forward(tiny_lm):
    """Greedy sample() (KV cache, left padding, prompts of different lengths) equals the naive full-forward loop."""
    out = sample(tiny_lm, PROMPTS, max_new_tokens=12, eos_id=-1, pad_id=PAD, temperature=0)
    for p, toks in zip(PROMPTS, out["tokens"]):
        assert toks == naive_greedy(tiny_lm, p, 12, -1)
    assert out["truncated"].all()


def test_rows_stop_at_their_own_eos(tiny_lm):
    """With EOS set to a token one row emits early, that row ends at its first EOS; the others run on."""
    free = sample(tiny_lm, PROMPTS, max_new_tokens=12, eos_id=-1, pad_id=PAD, temperature=0)["tokens"]
    eos = free[0][3]
    out = sample(tiny_lm, PROMPTS, max_new_tokens=12, eos_id=eos, pad_id=PAD, temperature=0)
    for p, f, toks, trunc in zip(PROMPTS, free, out["tokens"], out["truncated"].tolist()):
        assert toks == naive_greedy(tiny_lm, p, 12, eos)
        if eos in f:
            assert toks == f[:f.index(eos) + 1] and not trunc
        else:
            assert toks == f and trunc
    assert len(out["tokens"][0]) <= 4 and out["tokens"][0][-1] == eos


def test_H_last_is_entropy_at_final_token(tiny_lm):
    """H_last and H_mean equal the temperature-1 entropies of the full-forward distributions that emitted the
    final token and every token, in a batch of 24 where finished rows stay in the decode batch until they
    are an eighth of it."""
    free = sample(tiny_lm, PROMPTS, max_new_tokens=10, eos_id=-1, pad_id=PAD, temperature=0)["tokens"]
    eos = free[1][2]
    prompts = PROMPTS * 8
    out = sample(tiny_lm, prompts, max_new_tokens=10, eos_id=eos, pad_id=PAD, temperature=0.8, seeds=list(range(3, 27)))
    assert len({len(t) for t in out["tokens"]}) > 2
    for i, (p, toks) in enumerate(zip(prompts, out["tokens"])):
        logits = full_logits(tiny_lm, p, toks)
        H = token_entropies(logits)
        assert abs(out["H_last"][i].item() - H[-1].item()) < 1e-4
        assert abs(out["H_mean"][i].item() - H.mean().item()) < 1e-4


def test_sampled_logps_equal_full_forward(tiny_lm):
    """Returned logps equal log_softmax(logits / temperature) at the sampled tokens, from a full forward."""
    tau = 0.7
    out = sample(tiny_lm, PROMPTS, max_new_tokens=10, eos_id=EOS, pad_id=PAD, temperature=tau, seeds=[11, 12, 13])
    for p, toks, lp in zip(PROMPTS, out["tokens"], out["logps"]):
        assert len(lp) == len(toks)
        ref = F.log_softmax(full_logits(tiny_lm, p, toks) / tau, -1).gather(-1, torch.tensor(toks)[:, None])[:, 0]
        torch.testing.assert_close(lp.double(), ref, atol=1e-4, rtol=1e-4)


def test_seeded_sampling_is_deterministic(tiny_lm):
    """The same seeds give the same tokens; different seeds give different samples."""
    kw = dict(max_new_tokens=10, eos_id=EOS, pad_id=PAD, temperature=1.0)
    a = sample(tiny_lm, PROMPTS, seeds=[1, 2, 3], **kw)
    b = sample(tiny_lm, PROMPTS, seeds=[1, 2, 3], **kw)
    c = sample(tiny_lm, PROMPTS, seeds=[101, 102, 103], **kw)
    assert a["tokens"] == b["tokens"]
    torch.testing.assert_close(a["H_last"], b["H_last"])
    assert a["tokens"] != c["tokens"]


def test_row_sample_independent_of_batch(tiny_lm):
    """A row's sample depends on its seed alone, not on which other rows share its batch."""
    kw = dict(max_new_tokens=10, eos_id=EOS, pad_id=PAD, temperature=1.0)
    batch = sample(tiny_lm, PROMPTS, seeds=[21, 22, 23], **kw)["tokens"]
    for i, p in enumerate(PROMPTS):
        assert sample(tiny_lm, [p], seeds=[21 + i], **kw)["tokens"][0] == batch[i]


def test_tiny_top_p_sampling_is_greedy(tiny_lm):
    """top_p small enough to keep one token makes sampling equal greedy decoding."""
    greedy = sample(tiny_lm, PROMPTS, max_new_tokens=8, eos_id=-1, pad_id=PAD, temperature=0)["tokens"]
    nucleus = sample(tiny_lm, PROMPTS, max_new_tokens=8, eos_id=-1, pad_id=PAD, temperature=1.0, top_p=1e-6,
                     seeds=[7, 8, 9])["tokens"]
    assert nucleus == greedy


def test_row_uniform_is_a_function_of_seed_and_position():
    """row_uniform lies in (0, 1), repeats for the same (seed, t), differs across seeds and positions,
    is close to uniform over 20000 seeds (mean 1/2, variance 1/12), and a (seeds x positions) grid
    equals its columns drawn one position at a time."""
    seeds = torch.arange(20000, dtype=torch.int64)
    u = row_uniform(seeds, 3)
    assert u.dtype == torch.float64 and (u > 0).all() and (u < 1).all()
    assert torch.equal(u, row_uniform(seeds, 3)) and not torch.equal(u, row_uniform(seeds, 4))
    assert u.unique().numel() > 19990
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    grid = row_uniform(seeds[:50, None], torch.arange(7)[None])  # sample() draws a call's uniforms at once
    assert torch.equal(grid, torch.stack([row_uniform(seeds[:50], t) for t in range(7)], 1))


def test_next_tokens_frequencies_match_softmax():
    """Inverse-CDF sampling at T=1 draws softmax(logits): frequencies over 20000 seeds within 4 sigma."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 20000
    logits = p.log()[None].expand(n, 4).contiguous()
    tok, lp, H = next_tokens(logits, 1.0, 1.0, row_uniform(torch.arange(n), 5))
    freq = torch.bincount(tok, minlength=4).double() / n
    sigma = (p.double() * (1 - p.double()) / n).sqrt()
    assert ((freq - p.double()).abs() < 4 * sigma).all(), freq
    torch.testing.assert_close(lp, p.log()[tok])
    torch.testing.assert_close(H, torch.full((n,), -(p * p.log()).sum().item()))


def test_next_tokens_temperature_and_top_p_match_naive():
    """At T=0.5 with top_p 0.8, frequencies match the renormalised tempered distribution, tokens outside
    the nucleus are never drawn, lp is their log-prob under it and H stays the T=1 entropy."""
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]])
    n = 20000
    tok, lp, H = next_tokens(logits.expand(n, 5).contiguous(), 0.5, 0.8, row_uniform(torch.arange(n), 0))
    z = logits[0] / 0.5
    keep = naive_top_p_keep(z, 0.8)
    q = torch.zeros(5, dtype=torch.float64)
    q[list(keep)] = z[list(keep)].double().softmax(-1)
    freq = torch.bincount(tok, minlength=5).double() / n
    assert set(tok.unique().tolist()) <= keep
    assert ((freq - q).abs() < 4 * (q * (1 - q) / n).sqrt() + 1e-12).all(), (freq, q)
    torch.testing.assert_close(lp.double(), q[tok].log(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(H, token_entropies(logits).expand(n))


def test_next_tokens_never_draws_a_zero_probability_token():
    """A token whose logit is -inf (or whose probability underflows) is never drawn, even at u near 0 or 1."""
    logits = torch.tensor([[-float("inf"), 0.0, -200.0, 1.0, -float("inf")]]).expand(4, 5).contiguous()
    u = torch.tensor([1e-12, 0.5, 1 - 1e-12, 0.999999], dtype=torch.float64)
    tok, lp, H = next_tokens(logits, 1.0, 1.0, u)
    assert set(tok.tolist()) <= {1, 3} and torch.isfinite(lp).all() and torch.isfinite(H).all()


def test_next_tokens_cdf_is_exact_over_a_large_vocabulary():
    """Over a 152k vocabulary the float64 CDF gives the last token exactly its probability mass: the
    uniform range it owns equals p within float32's relative precision."""
    V = 152064
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, V, generator=g) * 3
    logits[0, -1] = -6.0  # a small-probability token at the very end of the CDF
    p_last = logits.double().softmax(-1)[0, -1].item()
    lo = torch.tensor([1 - p_last * 1.0001], dtype=torch.float64)
    hi = torch.tensor([1 - p_last * 0.9999], dtype=torch.float64)
    assert next_tokens(logits, 1.0, 1.0, lo)[0].item() != V - 1
    assert next_tokens(logits, 1.0, 1.0, hi)[0].item() == V - 1


def naive_invert_cdf(p, u):
    """One float64 cumsum over the whole vocabulary, then the first index reaching u * total."""
    cdf = p.double().cumsum(-1)
    return torch.stack([(row >= x * row[-1]).nonzero()[0, 0] for row, x in zip(cdf, u)])


@pytest.mark.parametrize("V", [5, 47, 128, 300, 49152])
def test_invert_cdf_equals_one_float64_cumsum(V):
    """The two-level CDF draws the token one float64 cumsum over V draws, for vocabularies under, at and
    past a block, with zero-probability tokens and u near 0 and 1."""
    g = torch.Generator().manual_seed(V)
    logits = torch.randn(64, V, generator=g) * 4
    logits[:, ::7] = -float("inf")
    p = logits.softmax(-1)
    u = torch.cat([row_uniform(torch.arange(60), V), torch.tensor([1e-15, 1e-9, 1 - 1e-9, 1 - 1e-15], dtype=torch.float64)])
    tok = invert_cdf(p, u)
    assert torch.equal(tok, naive_invert_cdf(p, u))
    assert (p[torch.arange(64), tok] > 0).all()


def test_invert_cdf_block_edges_keep_exact_mass():
    """A tiny-probability token at the end of a block and one at the start of the next own exactly their
    share of the unit interval: u just inside a token's range draws it, just outside draws its neighbour."""
    logits = torch.randn(1, 512, generator=torch.Generator().manual_seed(1)) * 2
    logits[0, 127], logits[0, 128] = -15.0, -14.0                          # p ~ 1e-10: last of block 0, first of 1
    p = logits.softmax(-1)
    cdf = p.double().cumsum(-1)[0].tolist()
    q = p[0].double().tolist()
    assert 1e-11 < q[127] < 1e-9 and 1e-11 < q[128] < 1e-9
    for i in (127, 128):
        lo, hi = cdf[i - 1], cdf[i]
        for x, want in ((lo + 0.01 * q[i], i), (hi - 0.01 * q[i], i), (lo - 0.5 * q[i - 1], i - 1), (hi + 0.5 * q[i + 1], i + 1)):
            assert invert_cdf(p, torch.tensor([x / cdf[-1]], dtype=torch.float64)).item() == want, (i, x)


# -----------------------------------------------------------------------------
# the hand-written decoder (Llama, Qwen2, Qwen3) against the HF forward

def hf_decoded(model, *args, **kw):
    """sample() through the model's own HF forward and cache instead of the static-cache decoder."""
    import model as M
    fast = M.fast_path_ok
    M.fast_path_ok = lambda m: False
    try:
        return sample(model, *args, **kw)
    finally:
        M.fast_path_ok = fast


def tiny_family_model(kind):
    """A tiny random llama / qwen2 (GQA, q/k/v bias) / qwen3 (per-head q/k norm), sharpened output."""
    from transformers import AutoConfig, AutoModelForCausalLM
    kw = dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2 if kind != "llama" else 4, max_position_embeddings=128, pad_token_id=0,
              bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    if kind == "qwen3":
        kw["head_dim"] = 8
    torch.manual_seed(3)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **kw)).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(30.0)
        for p in m.parameters():  # non-zero norms and biases, so a missing one would show
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_decode_step_pieces_are_the_hf_floats(kind):
    """rope() on rope_tables() and rms_norm() give HF's apply_rotary_pos_emb and RMSNorm bit for bit,
    and one decode_forward step gives the HF forward's next-token logits (q|k|v stacked or not)."""
    import importlib
    import model as M
    hf = importlib.import_module(f"transformers.models.{kind}.modeling_{kind}")
    m = tiny_family_model(kind)
    inner, a = m.model, m.model.layers[0].self_attn
    pos = torch.tensor([[0, 1, 2, 7, 30], [3, 4, 5, 6, 9]])
    x = torch.randn(2, 5, 6, a.head_dim)                                    # (b, s, heads, hd)
    cos, sin = inner.rotary_emb(x, pos)
    ref = hf.apply_rotary_pos_emb(x, x, cos, sin, unsqueeze_dim=2)[0]
    c, s = M.rope_tables(inner, x, pos)
    assert torch.equal(M.rope(x, c[:, :, None], s[:, :, None]), ref)
    assert not torch.equal(M.rope(x, cos[:, :, None], sin[:, :, None]), ref)  # sin's first half must be negated
    norm = m.model.layers[0].input_layernorm
    h = torch.randn(3, 4, norm.weight.shape[0])
    assert torch.equal(M.rms_norm(norm, h), norm(h))
    prompt = [1, 5, 9, 12, 7]
    for packed in (False, True):
        e = M.StaticCacheDecoder(m)
        with torch.no_grad():
            e.prefill([prompt], 4, PAD, torch.zeros(2, dtype=torch.long))
            e.packed = e.packed if packed else {}
            assert bool(e.packed) == packed
            logits = e.step(torch.tensor([30, 31]))
            ref = m(torch.tensor([prompt + [30], prompt + [31]])).logits[:, -1]
        torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)


def test_length_dependent_rope_decodes_through_the_hf_forward():
    """A rope whose frequencies grow with the sequence (dynamic NTK) cannot be tabled once per call:
    such a model takes the HF decoder, and past its original context still samples the HF tokens."""
    from transformers import AutoConfig, AutoModelForCausalLM
    import model as M
    kw = dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=8, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    for rope_type, fast in (("dynamic", False), ("linear", True)):
        cfg = AutoConfig.for_model("llama", rope_parameters={"rope_type": rope_type, "factor": 2.0,
                                                             "rope_theta": 10000.0}, **kw)
        torch.manual_seed(0)
        m = AutoModelForCausalLM.from_config(cfg).eval()
        with torch.no_grad():
            m.lm_head.weight.mul_(30.0)
        assert M.fast_path_ok(m) == fast and M.fast_path_ok(m.model) == fast
        kw2 = dict(max_new_tokens=10, eos_id=-1, pad_id=PAD, temperature=1.0, seeds=[5, 6, 7])
        a, b = sample(m, PROMPTS, **kw2), hf_decoded(m, PROMPTS, **kw2)
        assert a["tokens"] == b["tokens"]
        torch.testing.assert_close(torch.cat(a["logps"]), torch.cat(b["logps"]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_static_cache_decoder_equals_hf_forward(kind):
    """Sampled tokens, H_last, H_mean and logps of the static-cache decoder equal those decoded through the
    HF forward and cache, for prompts of different lengths, shared prompts and rows that end early."""
    from model import fast_path_ok
    m = tiny_family_model(kind)
    assert fast_path_ok(m)
    prompts = PROMPTS + [PROMPTS[1]] * 3 + [PROMPTS[0]]
    free = hf_decoded(m, prompts, 12, -1, PAD, temperature=0)["tokens"]
    eos = free[1][4]  # a token some rows emit part-way: their rows leave the batch early
    for temperature, top_p in [(0, 1.0), (1.0, 1.0), (0.7, 0.9)]:
        kw = dict(max_new_tokens=12, eos_id=eos, pad_id=PAD, temperature=temperature, top_p=top_p,
                  seeds=list(range(40, 40 + len(prompts))))
        a, b = sample(m, prompts, **kw), hf_decoded(m, prompts, **kw)
        assert a["tokens"] == b["tokens"], (kind, temperature)
        assert a["truncated"].tolist() == b["truncated"].tolist()
        for key in ("H_last", "H_mean"):
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)
        for x, y in zip(a["logps"], b["logps"]):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    assert any(len(t) < 12 for t in a["tokens"]) and any(len(t) == 12 for t in a["tokens"])


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_shared_prefix_prefilled_once_decodes_what_the_hf_forward_decodes(kind, monkeypatch):
    """Prompts that share an 18-token prefix (one of them is the prefix itself): the prefix is prefilled
    once in a batch of one, then each prompt's rest (17 columns shared: every rest keeps a token), and the
    tokens, log-probs and entropies equal those decoded through the HF forward, which prefills each prompt
    whole. Under min_shared the prompts are prefilled whole."""
    import model as M
    m = tiny_family_model(kind)
    g = torch.Generator().manual_seed(5)
    prefix = torch.randint(3, 40, (18,), generator=g).tolist()
    prompts = [prefix + [7, 8, 9, 10], prefix, prefix + [11], prefix + [7, 8, 9, 10], prefix + [12, 13, 14, 15, 16, 17, 18]]
    calls = []
    forward = M.decoder_forward
    monkeypatch.setattr(M, "decoder_forward", lambda inner, ids, *a, **k: calls.append(tuple(ids.shape)) or forward(inner, ids, *a, **k))
    kw = dict(max_new_tokens=10, eos_id=-1, pad_id=PAD, temperature=1.0, seeds=list(range(len(prompts))))
    a = sample(m, prompts, **kw)
    assert calls[:2] == [(1, 17), (4, 25 - 17)]  # 4 distinct prompts, the longest 25 tokens
    b = hf_decoded(m, prompts, **kw)
    assert a["tokens"] == b["tokens"]
    torch.testing.assert_close(a["H_mean"], b["H_mean"], atol=1e-5, rtol=1e-5)
    for x, y in zip(a["logps"], b["logps"]):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    calls.clear()
    sample(m, [p[4:] for p in prompts], **kw)  # a 13-token shared prefix: under min_shared = 16
    assert calls[0] == (4, 21)


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_sample_reads_the_weights_of_the_call(kind):
    """The decode plan and the stacked weights are made at each sample() call, never kept: after the
    policy's weights change in place (as optimizer.step() changes them: norms, projections, q/k norms,
    the LM head), the next call decodes the HF forward's tokens and log-probs of the new weights."""
    m = tiny_family_model(kind)
    prompts = PROMPTS + [PROMPTS[1]] * 3
    kw = dict(max_new_tokens=12, eos_id=-1, pad_id=PAD, temperature=1.0, seeds=list(range(len(prompts))))
    before = sample(m, prompts, **kw)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * p.abs().mean() * torch.randn(p.shape, generator=g))
    a, b = sample(m, prompts, **kw), hf_decoded(m, prompts, **kw)
    assert a["tokens"] == b["tokens"] and a["tokens"] != before["tokens"]
    for x, y in zip(a["logps"], b["logps"]):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_packed_weights_decode_what_the_hf_forward_decodes(kind, monkeypatch):
    """With every linear layer packed for oneDNN (the threshold lowered to 0 so a tiny model takes the
    path a 135M+ model takes) and q|k|v, gate|up stacked, each projection equals its nn.Linear and
    sample() still decodes the HF forward's tokens and log-probs."""
    import functools
    import model as M
    m = tiny_family_model(kind)
    packed = M.packed_linears(m, 4, min_numel=0)
    assert len(packed) == 2 * 4 + 1 and all(blocked for _, _, blocked in packed.values())
    a, mlp = m.model.layers[1].self_attn, m.model.layers[1].mlp
    for mod in (a.o_proj, mlp.down_proj, m.lm_head):
        x = torch.randn(3, 5, mod.in_features)
        torch.testing.assert_close(M.linear(mod, x, packed), mod(x), atol=1e-5, rtol=1e-5)
    x = torch.randn(3, 5, a.q_proj.in_features)
    for stacked, mods in ((a, (a.q_proj, a.k_proj, a.v_proj)), (mlp, (mlp.gate_proj, mlp.up_proj))):  # qwen2: q, k, v biases
        torch.testing.assert_close(M.linears(x, packed, stacked, *mods), torch.cat([m(x) for m in mods], -1),
                                   atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(M, "packed_linears", functools.partial(M.packed_linears, min_numel=0))
    prompts = PROMPTS + [PROMPTS[1]] * 3
    kw = dict(max_new_tokens=12, eos_id=-1, pad_id=PAD, temperature=1.0, seeds=list(range(len(prompts))))
    a, b = sample(m, prompts, **kw), hf_decoded(m, prompts, **kw)
    assert a["tokens"] == b["tokens"]
    for x, y in zip(a["logps"], b["logps"]):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_packed_weights_only_for_large_float32_layers_on_cpu():
    """Small layers (below 2^18 weights) are stacked but keep the plain F.linear kernel; bf16 autocast
    keeps the modules as they are."""
    import model as M
    m = tiny_family_model("llama")
    packed = M.packed_linears(m, 4)
    assert packed and not any(blocked for _, _, blocked in packed.values())
    a = m.model.layers[0].self_attn
    x = torch.randn(3, 5, a.q_proj.in_features)
    torch.testing.assert_close(M.linears(x, packed, a, a.q_proj, a.k_proj, a.v_proj),
                               torch.cat([a.q_proj(x), a.k_proj(x), a.v_proj(x)], -1), atol=1e-6, rtol=1e-6)
    assert M.linears(x, {}, a, a.q_proj, a.k_proj, a.v_proj).shape == (3, 5, a.q_proj.out_features + 2 * a.k_proj.out_features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert M.packed_linears(m, 4, min_numel=0) == {}


def test_decode_attention_equals_a_naive_masked_softmax():
    """attend() for one query per row (the decode step) against repeat-the-key-heads, mask, softmax."""
    from model import attend
    g = torch.Generator().manual_seed(0)
    b, H, Hkv, S, hd = 3, 6, 2, 7, 8
    q, k, v = torch.randn(b, H, 1, hd, generator=g), torch.randn(b, Hkv, S, hd, generator=g), torch.randn(b, Hkv, S, hd, generator=g)
    mask = torch.rand(b, 1, S, generator=g) > 0.3
    mask[:, :, 0] = True
    K, V = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)    # query head h reads key head h // 3
    w = (q @ K.transpose(-1, -2)) / hd ** 0.5
    ref = w.masked_fill(~mask[:, None], float("-inf")).softmax(-1) @ V
    torch.testing.assert_close(attend(q, k, v, mask), ref, atol=1e-6, rtol=1e-5)


def test_shared_prompts_sample_what_separate_prompts_sample(tiny_lm):
    """A group of N rows with one prompt (prefilled once) samples what N separately prefilled rows do."""
    kw = dict(max_new_tokens=10, eos_id=EOS, pad_id=PAD, temperature=1.0)
    group = sample(tiny_lm, [PROMPTS[0]] * 6, seeds=list(range(6)), **kw)["tokens"]
    alone = [sample(tiny_lm, [PROMPTS[0], PROMPTS[2]], seeds=[i, 99], **kw)["tokens"][0] for i in range(6)]
    assert group == alone and len({tuple(t) for t in group}) > 1


def test_compiled_decoder_samples_what_eager_samples(tiny_lm):
    """The torch.compile decode step (whole static cache, masked) samples exactly the eager tokens."""
    kw = dict(max_new_tokens=10, eos_id=EOS, pad_id=PAD, temperature=1.0, seeds=[5, 6, 7, 8])
    prompts = PROMPTS + [PROMPTS[0]]
    eager = sample(tiny_lm, prompts, **kw)
    compiled = sample(tiny_lm, prompts, compiled=True, **kw)
    assert compiled["tokens"] == eager["tokens"]
    torch.testing.assert_close(compiled["H_last"], eager["H_last"], atol=1e-5, rtol=1e-5)


def test_loads_in_threads_get_real_weights():
    """Policies and encoders loaded by 8 threads at once (experiments/run.py's routes diagnostic) come out
    with real weights: from_pretrained's process-wide set-up is taken one load at a time. In a fresh
    process, as the runs diagnose; without model.LOAD_LOCK nearly every load here hits meta weights."""
    import subprocess
    from conftest import ROOT
    code = """
import concurrent.futures, sys, torch
sys.path.insert(0, %r)
from encoder import load_encoder
from model import load_policy
with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
    futs = [pool.submit(load_policy if i %% 2 else load_encoder, %r) for i in range(24)]
    models = [f.result()[0] for f in futs]
assert all(not p.is_meta for m in models for p in m.parameters())
want = models[1].model.state_dict()
assert all(torch.equal(v, want[k]) for m in models[::2] for k, v in m.state_dict().items())
print("ok")
""" % (ROOT, os.path.join(ROOT, "data", "toy"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-2000:]
