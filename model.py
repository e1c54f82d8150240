"""The policy: load a local Hugging Face causal LM, sample with a KV cache, score tokens, GRPO loss.

SPEC step 2 (rollouts: response tokens, their log-probs, H_last) and step 8 (the clipped GRPO loss,
no KL, normalised by the global token count). Everything here works on any local
AutoModelForCausalLM directory; the toy policy in data/toy/ is one.
Tested by: python -m pytest -q tests/test_model.py
"""
import inspect

import torch
import torch.nn.functional as F


def _cache_kw(model):
    """transformers 5.x renamed `past_key_values` to `cache` (argument and output field)."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


# -----------------------------------------------------------------------------
# loading and prompts

def load_policy(path, dtype=torch.float32, device="cpu", attn_implementation="sdpa"):
    """(model, tokenizer) from a local directory (never a hub: local_files_only)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                 attn_implementation=attn_implementation).to(device)
    if tokenizer.pad_token_id is None:  # Llama-style tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def prompt_ids(tokenizer, question, instruction=""):
    """Token ids of the prompt: the chat template when the tokenizer has one, `question\\n` otherwise."""
    text = question + instruction
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                             add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]  # the template holds any BOS
    return tokenizer(text + "\n")["input_ids"]


def response_ids(tokenizer, text):
    """Token ids of a finished response (an offline trajectory): the text, then EOS."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


# -----------------------------------------------------------------------------
# per-token math on logits (pure functions, tested against plain formulas)

def token_log_probs(logits, targets):
    """log p(targets) under softmax(logits); logits (B, T, V), targets (B, T) -> (B, T) float32."""
    logits = logits.float()  # log-softmax in float32 even when the model runs in bf16
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_entropies(logits):
    """Entropy in nats of softmax(logits) at every position; (..., V) -> (...) float32."""
    logits = logits.float()
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


M32 = 0xFFFFFFFF


def mix32(x):
    """murmur3's 32-bit finaliser on an int64 tensor of values in [0, 2^32): a counter-based hash."""
    x = x & M32
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & M32  # int64 products wrap, but their low 32 bits are exact
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & M32
    return x ^ (x >> 16)


def row_uniforms(seeds, t, V):
    """Uniforms in (0, 1), shape (B, V), a pure function of (each row's seed, position t, token id):
    a row's samples do not depend on which rows share its batch or its rank."""
    base = mix32(seeds * 0x9E3779B1 + mix32(torch.full_like(seeds, t) + 0x632BE5AB))   # (B,)
    v = torch.arange(V, device=seeds.device, dtype=torch.int64)
    h = mix32(mix32(base[:, None] ^ (v[None, :] * 0x27D4EB2F)) + v[None, :])         # (B, V)
    return (h.double() + 0.5) / 2.0 ** 32


def top_p_filter(logits, top_p):
    """Set logits outside the smallest set with cumulative probability >= top_p to -inf; (B, V)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, idx = logits.sort(dim=-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return logits.scatter(-1, idx, sorted_logits)


# -----------------------------------------------------------------------------
# sampling (SPEC step 2)

@torch.no_grad()
def sample(model, prompts, max_new_tokens, eos_id, pad_id, temperature=1.0, top_p=1.0,
           seeds=None, sync=None):
    """Sample one response per prompt with a KV cache; each row stops at its own EOS.

    prompts: list of token-id lists. temperature 0 means greedy. seeds: one int per row; a row's
    randomness is a function of its seed alone (Gumbel-max over hashed uniforms), so a rollout is the
    same whether it is sampled on 1 rank or 8, in a batch of 4 or 128. Returns a dict with
    tokens (list of lists, EOS included when emitted), logps (list of float32 tensors: log-prob of
    each sampled token under the temperature-scaled sampling distribution), H_last (B,) entropy at
    temperature 1 where the final token was emitted, H_mean (B,) mean entropy over the response's
    tokens, truncated (B,) bool.
    sync(done) -> bool may replace the local all-done test (FSDP ranks must step together).
    """
    device = next(model.parameters()).device
    B, P = len(prompts), max(len(p) for p in prompts)
    seeds = torch.tensor(seeds if seeds is not None else range(B), dtype=torch.int64, device=device) & M32
    # left-pad so every row's next token lands in the same column; positions skip the padding
    ids = torch.full((B, P), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((B, P), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p, device=device)
        mask[i, P - len(p):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    kw = _cache_kw(model)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache, next_pos = getattr(out, kw), pos[:, -1:] + 1
    logits = out.logits[:, -1].float()                                      # (B, V)

    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros((B, max_new_tokens), device=device)
    H_last = torch.zeros(B, device=device)
    H_sum = torch.zeros(B, device=device)  # for the mean token entropy of each response
    done = torch.zeros(B, dtype=torch.bool, device=device)
    lengths = torch.full((B,), max_new_tokens, dtype=torch.long, device=device)
    for t in range(max_new_tokens):
        # H_last is read at temperature 1 from the distribution that emits each row's final token
        H = token_entropies(logits)                                         # (B,)
        if temperature == 0:
            tok = logits.argmax(-1)
            lp = torch.zeros(B, device=device)
        else:
            scaled = top_p_filter(logits / temperature, top_p)
            gumbel = -torch.log(-torch.log(row_uniforms(seeds, t, logits.shape[-1])))   # (B, V)
            tok = (scaled.double() + gumbel).argmax(-1)  # Gumbel-max: an exact sample of softmax(scaled)
            lp = torch.log_softmax(logits / temperature, -1).gather(-1, tok[:, None]).squeeze(-1)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        tokens[:, t], logps[:, t] = tok, lp
        H_last = torch.where(done, H_last, H)
        H_sum = H_sum + torch.where(done, torch.zeros_like(H), H)
        newly = ~done & (tok == eos_id)
        lengths = torch.where(newly, torch.full_like(lengths, t + 1), lengths)
        done = done | newly
        all_done = sync(done) if sync is not None else bool(done.all())   # CPU-GPU sync point
        if all_done or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos,
                    use_cache=True, **{kw: cache})
        cache, next_pos = getattr(out, kw), next_pos + 1
        logits = out.logits[:, -1].float()
    lengths, tokens, logps = lengths.tolist(), tokens.tolist(), logps.cpu()
    return {"tokens": [row[:n] for row, n in zip(tokens, lengths)],
            "logps": [logps[i, :n] for i, n in enumerate(lengths)],
            "H_last": H_last.cpu(),
            "H_mean": H_sum.cpu() / torch.tensor(lengths).clamp(min=1),
            "truncated": ~done.cpu()}


# -----------------------------------------------------------------------------
# scoring a padded batch and the GRPO loss (SPEC step 8)

def pad_batch(prompts, responses, pad_id, device="cpu"):
    """Right-padded (B, L) ids, attention mask, and a response-token mask aligned with the targets
    ids[:, 1:]: resp_mask[b, t] = 1 where ids[b, t + 1] is a response token."""
    B, L = len(prompts), max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    resp_mask = torch.zeros((B, L - 1))
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        attn[i, :len(p) + len(r)] = 1
        resp_mask[i, len(p) - 1:len(p) + len(r) - 1] = 1
    return ids.to(device), attn.to(device), resp_mask.to(device)


def score(model, ids, attn, temperature=1.0, with_entropy=True):
    """Per-token log-probs (B, L-1) of ids[:, 1:] at the sampling temperature, and entropies at T=1.

    H keeps its graph: the entropy-bonus baseline (L - beta_H * mean H) differentiates through it."""
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]      # (B, L-1, V)
    logp = token_log_probs(logits / temperature if temperature not in (0, 1) else logits, ids[:, 1:])
    H = token_entropies(logits) if with_entropy else None
    return logp, H


def grpo_loss(logp, logp_old, A, mask, T, eps=0.2, offline=None, luffy=False, H=None, beta_H=0.0):
    """Clipped GRPO surrogate, summed over tokens and divided by T; no KL, no reference model.

    logp, logp_old, mask: (B, L) float32; A: (B,); T: the token count the caller normalises by
    (the global batch's response tokens, SPEC step 8). offline: (B,) bool; with luffy=True those rows
    use LUFFY's shaped ratio p / (p + 0.1) (teacher probability taken as 1) and are never clipped.
    H: (B, L) token entropies for the entropy-bonus baseline (L - beta_H * token-mean entropy).
    Returns (loss, stats) where stats are sums over tokens, for reduction across ranks.
    """
    A = A[:, None].float()                                                  # (B, 1)
    ratio = torch.exp(logp - logp_old)                                      # (B, L) r_i,t
    surr = torch.minimum(ratio * A, ratio.clamp(1 - eps, 1 + eps) * A)      # (B, L)
    clipped = (ratio * A > ratio.clamp(1 - eps, 1 + eps) * A).float()       # min took the clipped term
    if luffy and offline is not None and bool(offline.any()):
        p = logp.exp()
        shaped = (p / (p + 0.1)) * A                                        # Yan et al. 2025, eq. 6
        off = offline[:, None].expand_as(surr)
        surr = torch.where(off, shaped, surr)
        clipped = torch.where(off, torch.zeros_like(clipped), clipped)
    loss = -(surr * mask).sum() / T
    if beta_H and H is not None:
        loss = loss - beta_H * (H * mask).sum() / T
    with torch.no_grad():
        log_ratio = logp - logp_old
        stats = {"clipped": (clipped * mask).sum(),
                 "approx_kl": (((ratio - 1) - log_ratio) * mask).sum(),     # k3 estimator, >= 0
                 "tokens": mask.sum()}
    return loss, stats
