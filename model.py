"""The policy: load a local Hugging Face causal LM, sample with a KV cache, score tokens, GRPO loss.

SPEC step 2 (rollouts: response tokens, their log-probs, H_last) and step 8 (the clipped GRPO loss,
no KL, normalised by the global token count). Everything here works on any local
AutoModelForCausalLM directory; the toy policy in data/toy/ is one.
Tested by: python -m pytest -q tests/test_model.py
"""
import inspect
import math
import os
import threading

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _has_arg(model, name):
    """Whether the model's forward takes the argument `name`."""
    return name in inspect.signature(type(model).forward).parameters


def _cache_kw(model):
    """transformers 5.x renamed `past_key_values` to `cache` (argument and output field)."""
    return "cache" if _has_arg(model, "cache") else "past_key_values"


# -----------------------------------------------------------------------------
# loading and prompts

LOAD_LOCK = threading.Lock()  # transformers' lazy imports and from_pretrained's meta-device set-up are
                               # process-wide state: threads that load at once can get empty (meta) weights


def load_policy(path, dtype=torch.float32, device="cpu", attn_implementation="sdpa"):
    """(model, tokenizer) from a local directory (never a hub: local_files_only); one load at a time."""
    with LOAD_LOCK:
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


def response_ids(tokenizer, texts):
    """Token ids of finished responses (offline trajectories): each text, then EOS. texts: a string, or a
    list of them (one tokenizer call for all: 12k toy trajectories take 0.3 s instead of 8)."""
    one = isinstance(texts, str)
    texts = [texts] if one else list(texts)
    ids = [x + [tokenizer.eos_token_id] for x in (tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])]
    return ids[0] if one else ids


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


def row_uniform(seeds, t):
    """One uniform in (0, 1) per row, float64, a pure function of (the row's seed, position t): a row's
    sample never depends on which rows share its batch or its rank. seeds (B,) int64 and t an int -> (B,);
    seeds (B, 1) and t (1, T) broadcast to (B, T)."""
    h = mix32(mix32(seeds * 0x9E3779B1 + t * 0x632BE5AB) ^ 0x27D4EB2F)
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


def next_tokens(logits, temperature, top_p, u):
    """Sample one token per row by inverting the CDF of softmax(top_p(logits / temperature)) at u.

    logits (B, V) float32, u (B,) float64 in (0, 1). One uniform per row instead of V Gumbel draws;
    the CDF is summed in float64 (invert_cdf), so a token's probability keeps float32's relative
    precision even at the end of a 152k vocabulary. temperature 0 is greedy. Returns tok (B,), lp (B,):
    the log-prob of tok under the sampling distribution, and H (B,): the entropy at temperature 1 (nats).
    """
    logp1 = F.log_softmax(logits, -1)
    p1 = logp1.exp()
    H = -(p1 * logp1).nansum(-1)                                            # 0 log 0 = 0 (-inf logits)
    if temperature == 0:
        return logits.argmax(-1), torch.zeros_like(H), H
    logp, p = logp1, p1                                                     # T = 1, no top-p: reuse them
    if temperature != 1 or top_p < 1:
        logp = F.log_softmax(top_p_filter(logits / temperature, top_p), -1)
        p = logp.exp()
    tok = invert_cdf(p, u)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1), H


def invert_cdf(p, u, block=128):
    """The first index i with cumsum(p)[i] >= u * sum(p) in each row; p (B, V) float32 >= 0, u (B,) float64.

    The CDF is float64 in two levels: the sums of blocks of `block` tokens, then the cumsum inside the
    one block each row lands in. Every token owns exactly its share of the unit interval, as with one
    float64 cumsum over V, without that (B, V) float64 buffer: in a SmolLM2 decode step (32 x 49k)
    1.2 ms instead of 10. A zero-probability token is never drawn."""
    B, V = p.shape
    if V <= block:  # one block: one float64 cumsum (u < 1, so u * total never passes the last token)
        cdf = p.double().cumsum(-1)
        return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(-1)
    blocks = (F.pad(p, (0, -V % block)) if V % block else p).view(B, -1, block)  # zeros past V
    cum = F.pad(blocks.sum(-1, dtype=torch.float64).cumsum(-1), (1, 0))    # (B, blocks + 1): mass before each
    target = (u * cum[:, -1])[:, None]                                      # (B, 1)
    j = (torch.searchsorted(cum, target) - 1).clamp(0, blocks.shape[1] - 1)  # cum[j] < target <= cum[j + 1]
    inner = blocks.gather(1, j[..., None].expand(B, 1, block))[:, 0].double().cumsum(-1)  # (B, block)
    k = torch.searchsorted(inner, (target - cum.gather(-1, j)).clamp(max=inner[:, -1:]))  # float64 rounding
    return (j * block + k).squeeze(-1)


# -----------------------------------------------------------------------------
# decoders: a hand-written KV-cache forward for Llama-family models, and the HF forward for the rest

def rope_tables(inner, h, pos):
    """cos, sin (b, s, hd) of the model's rotary embedding at positions pos (b, s), sin's first half
    negated: rope(x) is then x * cos + x.roll(hd / 2) * sin, the same floats as HF's
    x * cos + rotate_half(x) * sin in three kernels instead of six."""
    cos, sin = inner.rotary_emb(h, pos)
    half = sin.shape[-1] // 2
    return cos, torch.cat((-sin[..., :half], sin[..., half:]), -1)


def rope(x, cos, sin):
    """x (b, s, n, hd) rotated by cos, sin (b, s, 1, hd) from rope_tables."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


def rms_norm(norm, x):
    """An HF RMSNorm module (Llama, Qwen2, Qwen3) applied as one fused op: the same floats in float32."""
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)


def fast_path_ok(model):
    """True for unsharded Llama, Qwen2 and Qwen3 models (SiLU MLP, no sliding window, a rope whose
    frequencies do not depend on the sequence's length): those decode with the static cache below; any
    other model (or an FSDP-sharded one) decodes through its HF forward."""
    from torch.distributed.fsdp import FSDPModule
    cfg, rotary = model.config, getattr(getattr(model, "model", model), "rotary_emb", None)
    return (cfg.model_type in ("llama", "qwen2", "qwen3") and getattr(cfg, "hidden_act", "silu") == "silu"
            and not getattr(cfg, "use_sliding_window", False) and not isinstance(model, FSDPModule)
            and getattr(rotary, "rope_type", "default") not in ("dynamic", "longrope"))  # rope_tables: fixed


def packed_linears(model, rows, min_numel=1 << 18):
    """Decode weights of a float32 model on CPU ({} anywhere else): {module: (weight, bias, blocked)},
    made once per sample() call (the policy changes every step) and read at every decode step; model
    is a causal LM or its base model (an encoder: no LM head; min_numel=math.inf stacks only).
    - Each decoder layer's q|k|v and gate|up weights stacked into one, keyed by the attention and the
      MLP module: one matmul instead of three and two (5% off a SmolLM2 decode step, 2% off the toy's).
    - Each weight of 2^18+ entries reordered into oneDNN's blocked layout (blocked=True): 1.2-1.7x
      faster matmuls at decode batch sizes; below that the kernel's fixed cost outweighs the gain.
    rows: the batch size the blocked layout is cut for."""
    if (next(model.parameters()).device.type != "cpu" or torch.is_autocast_enabled("cpu")
            or model.dtype != torch.float32 or not torch.backends.mkldnn.is_available()):
        return {}

    def prep(*mods):  # Llama and Qwen give q, k and v all or none of a bias
        w = torch.cat([m.weight.detach() for m in mods]) if len(mods) > 1 else mods[0].weight.detach()
        b = None if mods[0].bias is None else torch.cat([m.bias.detach() for m in mods])
        blocked = w.numel() >= min_numel
        return torch.ops.mkldnn._reorder_linear_weight(w, rows) if blocked else w, b, blocked
    out = {model.lm_head: prep(model.lm_head)} if hasattr(model, "lm_head") else {}
    for layer in getattr(model, "model", model).layers:
        a, mlp = layer.self_attn, layer.mlp
        out.update({a: prep(a.q_proj, a.k_proj, a.v_proj), a.o_proj: prep(a.o_proj),
                    mlp: prep(mlp.gate_proj, mlp.up_proj), mlp.down_proj: prep(mlp.down_proj)})
    return out


def linear(mod, x, packed=None):
    """mod(x) for an nn.Linear, through its decode weight when `packed` holds one."""
    if not packed or mod not in packed:
        return mod(x)
    w, b, blocked = packed[mod]
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "") if blocked else F.linear(x, w, b)


def linears(x, packed, stacked, *mods):
    """torch.cat([m(x) for m in mods], -1): one matmul when `packed` holds their stacked weight under
    `stacked`."""
    if packed and stacked in packed:
        return linear(stacked, x, packed)
    return torch.cat([linear(m, x, packed) for m in mods], -1)


def attend(q, k, v, mask):
    """Attention of q (b, H, s, hd) over k, v (b, Hkv, S, hd) (grouped-query when Hkv < H); mask (b, s, S)
    bool, or additive (0 / -inf, q's dtype), or None for plain causal attention. A decode step (s = 1)
    runs as two batched matmuls with the H / Hkv query heads of each key head stacked as rows: SDPA's
    CPU kernel, built for long queries, takes 1.2-1.3x as long there."""
    b, H, s, hd = q.shape
    if s > 1 or mask is None:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True, is_causal=mask is None,
                                              attn_mask=None if mask is None else mask[:, None])
    Hkv = k.shape[1]
    w = (q.reshape(b, Hkv, H // Hkv, hd) @ k.transpose(-1, -2)) * hd ** -0.5   # (b, Hkv, H/Hkv, S)
    w = w + mask[:, None] if mask.is_floating_point() else w.masked_fill(~mask[:, None], float("-inf"))
    return (w.softmax(-1) @ v).reshape(b, H, 1, hd)


def decoder_forward(inner, ids, pos, mask, kv=None, col=None, packed=None, tables=None):
    """Hidden states (b, s, d) after the final norm of a Llama-family decoder (`inner`: the base model,
    e.g. LlamaModel), computed from its own modules: the same weights and math as its HF forward,
    none of its per-call bookkeeping.

    ids, pos (b, s); mask (b, s, S) bool or additive: which of the S key columns each query attends to,
    or None for plain causal attention over the new tokens (right-padded rows need no mask: no real
    token attends to a later padding token; SDPA's is_causal path). With a
    cache kv = [(K, V)] per layer, each (b, Hkv, Tmax, hd), the new keys/values are written at columns
    col (s,) long and the queries attend to K[:, :, :S]; without one, S = s and keys are the new tokens.
    packed: packed_linears() of the model, or None. tables: rope_tables() at every position the cache
    holds, (1, Tmax, hd) each, read at pos; None computes them for pos.
    """
    h = inner.embed_tokens(ids)                                             # (b, s, d)
    b, s, _ = h.shape
    cos, sin = rope_tables(inner, h, pos) if tables is None else (t[0][pos] for t in tables)
    cos, sin = cos[:, :, None], sin[:, :, None]                             # (b, s, 1, hd)
    S = mask.shape[-1] if mask is not None else s
    for i, layer in enumerate(inner.layers):
        a, mlp = layer.self_attn, layer.mlp
        x = rms_norm(layer.input_layernorm, h)
        qkv = linears(x, packed, a, a.q_proj, a.k_proj, a.v_proj)
        q, k, v = (t.view(b, s, -1, a.head_dim) for t in qkv.split([a.q_proj.out_features, a.k_proj.out_features,
                                                                     a.v_proj.out_features], -1))
        if hasattr(a, "q_norm"):  # Qwen3 normalises queries and keys per head, before rope
            q, k = rms_norm(a.q_norm, q), rms_norm(a.k_norm, k)
        q, k, v = rope(q, cos, sin).transpose(1, 2), rope(k, cos, sin).transpose(1, 2), v.transpose(1, 2)
        if kv is not None:                                                  # (b, H, s, hd)
            K, V = kv[i]
            K.index_copy_(2, col, k.to(K.dtype))
            V.index_copy_(2, col, v.to(V.dtype))
            k, v = K[:, :, :S], V[:, :, :S]
        o = attend(q, k.to(q.dtype), v.to(q.dtype), mask)                   # (b, H, s, hd)
        h = h + linear(a.o_proj, o.transpose(1, 2).reshape(b, s, -1), packed)
        x = rms_norm(layer.post_attention_layernorm, h)                     # SwiGLU, as LlamaMLP
        gate, up = linears(x, packed, mlp, mlp.gate_proj, mlp.up_proj).chunk(2, -1)
        h = h + linear(mlp.down_proj, F.silu(gate) * up, packed)
    return rms_norm(inner.norm, h)


class StaticCacheDecoder:
    """Prefill once per distinct prompt, then decode one token per row per step into a preallocated
    (static) KV cache; finished rows are dropped from the batch (`keep`)."""

    def __init__(self, model, compiled=False):
        self.model = model
        # compiled: one graph for every step (attention over the whole static cache, masked), so
        # the shapes never change but for the batch; torch.compile (CUDA graphs on a GPU) removes the
        # per-layer launch overhead. Eager: attention over the columns written so far.
        self.step_fn = decode_step_compiled(model) if compiled else decode_forward
        self.compiled = compiled

    def prefill(self, prompts, max_new_tokens, pad_id, rows, min_shared=16):
        """prompts: distinct token lists; rows (B,) long: which prompt each row continues. -> logits (B, V).

        A prefix that all the prompts share (a chat template's system turn: 24 of SmolLM2's 41 tokens
        here) of min_shared+ tokens is prefilled once, in a batch of one, and each prompt's rest after
        it: the same keys and values as prefilling each whole prompt (to float rounding)."""
        m = self.model
        dev, U, P = next(m.parameters()).device, len(prompts), max(len(p) for p in prompts)
        C = min(len(os.path.commonprefix(prompts)), min(map(len, prompts)) - 1) if U > 1 else 0
        C = C if C >= min_shared else 0                                      # columns :C shared
        ids = torch.full((U, P - C), pad_id, dtype=torch.long, device=dev)
        valid = torch.zeros((U, P + max_new_tokens), dtype=torch.bool, device=dev)
        valid[:, :C] = True
        for i, p in enumerate(prompts):  # left padding (after any shared prefix): every row's next token goes to column P
            ids[i, P - len(p):] = torch.tensor(p[C:], device=dev)
            valid[i, P - len(p) + C:P] = True
        pos = (valid[:, :P].long().cumsum(-1) - 1).clamp(min=0)
        eye = torch.eye(P, dtype=torch.bool, device=dev)  # a padding query sees itself: no all-masked row, no NaN
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
        mask = ((causal & valid[:, None, :P]) | eye)[:, C:]                  # (U, P - C, P)
        cfg = m.config
        hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        shape = (U, cfg.num_key_value_heads, P + max_new_tokens, hd)
        dtype = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else m.dtype
        kv = [(torch.zeros(shape, dtype=dtype, device=dev), torch.zeros(shape, dtype=dtype, device=dev))
              for _ in range(cfg.num_hidden_layers)]
        self.packed = {} if self.compiled else packed_linears(m, len(rows))
        self.plan = None if self.compiled else decode_plan(m)
        emb = m.model.embed_tokens.weight                                    # rope at every cache column, once
        self.tables = rope_tables(m.model, emb[None, :1], torch.arange(P + max_new_tokens, device=dev)[None])
        if C:  # the shared prefix, once, then broadcast into every prompt's cache
            kv1 = [(K[:1, :, :C].clone(), V[:1, :, :C].clone()) for K, V in kv]
            decoder_forward(m.model, ids.new_tensor(prompts[0][:C])[None], pos[:1, :C], None, kv1,
                            torch.arange(C, device=dev), self.packed, self.tables)
            for (K, V), (K1, V1) in zip(kv, kv1):
                K[:, :, :C], V[:, :, :C] = K1, V1
        h = decoder_forward(m.model, ids, pos[:, C:], mask, kv, torch.arange(C, P, device=dev), self.packed,
                            self.tables)
        logits = linear(m.lm_head, h[:, -1], self.packed).float()          # (U, V)
        # each distinct prompt's cache, copied to the rows that continue it (SPEC's N rollouts share it)
        self.kv = self._static([(K.index_select(0, rows), V.index_select(0, rows)) for K, V in kv])
        # decode steps add the mask: 0 where a column holds a token, -inf where not
        bias = torch.zeros(valid.shape, dtype=dtype, device=dev).masked_fill_(~valid, float("-inf"))
        self.bias = bias.index_select(0, rows)
        self.pos, self.col = pos[rows, -1] + 1, P
        return logits[rows]

    def step(self, tok):
        """Feed one token per row; returns the next logits (b, V) float32."""
        self.bias[:, self.col] = 0
        logits = self.step_fn(self.model, tok, self.pos, self.bias, self.kv, self.col, self.packed, self.tables,
                              self.plan)
        self.pos, self.col = self.pos + 1, self.col + 1
        return logits

    def keep(self, idx):
        """Keep only rows idx (b',) of the batch (the others have finished)."""
        self.kv = self._static([(K.index_select(0, idx), V.index_select(0, idx)) for K, V in self.kv])
        self.bias, self.pos = self.bias.index_select(0, idx), self.pos.index_select(0, idx)

    def _static(self, kv):
        """Under CUDA graphs the cache must keep its address between replays: mark it static."""
        if self.compiled and kv[0][0].is_cuda:
            for K, V in kv:
                torch._dynamo.mark_static_address(K)
                torch._dynamo.mark_static_address(V)
        return kv


def decode_plan(model):
    """What decode_forward reads of the model's modules, looked up once per sample() call: reading an
    nn.Module's attribute costs 2-4 us on CPU, and a toy decode step made ~70 such reads (0.85x the
    step's time at 1 row without them). Norms are (shape, weight, eps) for F.rms_norm; linears are the
    arguments of linear() or linears() but `packed`, which the step passes (it stays the one place that
    says which weights are stacked). layers: per layer (input norm, q|k|v, (q norm, k norm) or None, o,
    post-attention norm, gate|up, down)."""
    def norm(n):
        return n.weight.shape, n.weight, n.variance_epsilon
    layers = []
    for layer in model.model.layers:
        a, mlp = layer.self_attn, layer.mlp
        layers.append((norm(layer.input_layernorm), (a, a.q_proj, a.k_proj, a.v_proj),
                       (norm(a.q_norm), norm(a.k_norm)) if hasattr(a, "q_norm") else None, a.o_proj,
                       norm(layer.post_attention_layernorm), (mlp, mlp.gate_proj, mlp.up_proj), mlp.down_proj))
    return {"embed": model.model.embed_tokens.weight, "layers": layers, "norm": norm(model.model.norm),
            "head": model.lm_head, "head_dim": model.model.layers[0].self_attn.head_dim}


def decode_forward(model, tok, pos, bias, kv, col, packed, tables, plan=None):
    """One decode step of a Llama-family model: tok, pos (b,) -> logits (b, V) float32.

    decoder_forward's math for one new token per row in fewer ops, which is what a small model's
    decode step costs (the toy policy: 0.8x the time at 1 row, 0.94x at 64, the same floats): (b, d)
    activations, no transposes, and queries and keys rotated in one call on the q|k|v matmul's output.
    bias (b, Tmax): the additive mask. col: the cache column; an int (eager): attention over the
    columns written so far; a (1,) tensor (compiled): over the whole masked cache, so shapes stay fixed.
    tables: rope_tables() at every cache column. plan: decode_plan(model), made here if None."""
    plan, H = plan or decode_plan(model), model.config.num_attention_heads
    if isinstance(col, int):
        S, col = col + 1, torch.full((1,), col, dtype=torch.long, device=tok.device)
    else:
        S = bias.shape[1]
    h = F.embedding(tok, plan["embed"])                                     # (b, d)
    cos, sin = tables[0][0, pos, None], tables[1][0, pos, None]             # (b, 1, hd)
    b, bias = h.shape[0], bias[:, None, :S]
    for (norm1, qkv_proj, qk_norms, o_proj, norm2, gate_up, down), (K, V) in zip(plan["layers"], kv):
        qkv = linears(F.rms_norm(h, *norm1), packed, *qkv_proj).view(b, -1, plan["head_dim"])  # (b, H + 2 Hkv, hd)
        qk, v = qkv[:, :-K.shape[1]], qkv[:, -K.shape[1]:]
        if qk_norms:  # Qwen3 normalises queries and keys per head, before rope
            qk = torch.cat((F.rms_norm(qk[:, :H], *qk_norms[0]), F.rms_norm(qk[:, H:], *qk_norms[1])), 1)
        qk = rope(qk, cos, sin)
        K.index_copy_(2, col, qk[:, H:, None].to(K.dtype))
        V.index_copy_(2, col, v[:, :, None].to(V.dtype))
        o = attend(qk[:, :H, None], K[:, :, :S], V[:, :, :S], bias).view(b, -1)
        h = h + linear(o_proj, o, packed)
        gate, up = linears(F.rms_norm(h, *norm2), packed, *gate_up).chunk(2, -1)  # SwiGLU, as LlamaMLP
        h = h + linear(down, F.silu(gate) * up, packed)
    return linear(plan["head"], F.rms_norm(h, *plan["norm"]), packed).float()


def decode_step_compiled(model):
    """decode_forward under torch.compile: the column is a tensor and attention spans the whole static
    cache (masked), so one graph serves every step; on a GPU, mode reduce-overhead adds CUDA graphs."""
    cuda = next(model.parameters()).is_cuda
    fn = torch.compile(decode_forward, mode="reduce-overhead" if cuda else None, dynamic=None)
    return lambda m, tok, pos, bias, kv, col, packed, tables, plan: fn(  # packed, plan: eager only
        m, tok, pos, bias, kv, torch.tensor([col], device=tok.device), None, tables)


class HFDecoder:
    """The same three calls through the model's own forward and cache, for any causal LM."""

    def __init__(self, model):
        self.model, self.kw = model, _cache_kw(model)

    def prefill(self, prompts, max_new_tokens, pad_id, rows):
        m = self.model
        dev, P = next(m.parameters()).device, max(len(p) for p in prompts)
        prompts = [prompts[r] for r in rows.tolist()]  # no prefix sharing: the HF cache is not copied
        ids = torch.full((len(prompts), P), pad_id, dtype=torch.long, device=dev)
        self.mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, P - len(p):] = torch.tensor(p, device=dev)
            self.mask[i, P - len(p):] = 1
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
        out = m(input_ids=ids, attention_mask=self.mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        self.cache, self.pos = getattr(out, self.kw), pos[:, -1] + 1
        return out.logits[:, -1].float()

    def step(self, tok):
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        out = self.model(input_ids=tok[:, None], attention_mask=self.mask, position_ids=self.pos[:, None],
                         use_cache=True, **{self.kw: self.cache})
        self.cache, self.pos = getattr(out, self.kw), self.pos + 1
        return out.logits[:, -1].float()

    def keep(self, idx):
        self.cache.batch_select_indices(idx)
        self.mask, self.pos = self.mask[idx], self.pos[idx]


# -----------------------------------------------------------------------------
# sampling (SPEC step 2)

def lockstep(done):
    """sample()'s sync under FSDP: all ranks stop generating together, since every forward is a
    collective. done (b,) bool -> whether every rank's rows are done (CPU-GPU sync point)."""
    flag = torch.tensor([float(done.all())], device=done.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


@torch.no_grad()
def sample(model, prompts, max_new_tokens, eos_id, pad_id, temperature=1.0, top_p=1.0,
           seeds=None, sync=None, compiled=False):
    """Sample one response per prompt with a KV cache; each row stops at its own EOS.

    prompts: list of token-id lists. temperature 0 means greedy. seeds: one int per row; a row's
    randomness is a function of its seed alone (one hashed uniform per token), so a rollout is the
    same whether it is sampled on 1 rank or 8, in a batch of 4 or 128. Returns a dict with
    tokens (list of lists, EOS included when emitted), logps (list of float32 tensors: log-prob of
    each sampled token under the temperature-scaled sampling distribution), H_last (B,) entropy at
    temperature 1 where the final token was emitted, H_mean (B,) mean entropy over the response's
    tokens, truncated (B,) bool.
    Identical prompts (a GRPO group) are prefilled once; rows that end leave the decode batch.
    sync(done) -> bool may replace the local all-done test (FSDP ranks must step together).
    compiled: decode steps through torch.compile (Llama-family models only; same samples as eager).
    """
    device = next(model.parameters()).device
    B = len(prompts)
    seeds = torch.tensor(seeds if seeds is not None else range(B), dtype=torch.int64, device=device) & M32
    distinct = {}
    rows = torch.tensor([distinct.setdefault(tuple(p), len(distinct)) for p in prompts], device=device)
    engine = StaticCacheDecoder(model, compiled) if fast_path_ok(model) else HFDecoder(model)
    logits = engine.prefill([list(p) for p in distinct], max_new_tokens, pad_id, rows)   # (B, V)

    # every row's uniforms at once, (B, max_new_tokens); a row writes column t of each buffer while it is
    # in the batch; what a finished row writes past its EOS is cut off by its length at the end
    u = row_uniform(seeds[:, None], torch.arange(max_new_tokens, device=device)[None])
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros((B, max_new_tokens), device=device)
    H = torch.zeros((B, max_new_tokens), device=device)                   # entropy at temperature 1
    active = torch.arange(B, device=device)                                # rows still in the batch
    done = torch.zeros(B, dtype=torch.bool, device=device)                 # of the rows in the batch: emitted EOS
    for t in range(max_new_tokens):
        tok, lp, h = next_tokens(logits, temperature, top_p, u[active, t])
        tokens[active, t], logps[active, t], H[active, t] = tok, lp, h
        done = done | (tok == eos_id)
        n_left = int((~done).sum())                                        # CPU-GPU sync point
        all_done = sync(done) if sync is not None else n_left == 0
        if all_done or t == max_new_tokens - 1:
            break
        # drop finished rows once they are an eighth of the batch (at most ~36 copies of the cache);
        # compiled, keep the batch a power of two (finished rows pad it): a few graphs, not ~36
        size = n_left if not compiled else 1 << max(n_left - 1, 0).bit_length()
        if n_left and (len(active) - size) * 8 >= len(active):
            idx = torch.cat([(~done).nonzero(), done.nonzero()[:size - n_left]]).squeeze(-1).sort().values
            engine.keep(idx)
            active, done, tok = active[idx], done[idx], tok[idx]
        logits = engine.step(tok)
    is_eos = tokens == eos_id
    ended = is_eos.any(-1)
    lengths = torch.where(ended, is_eos.int().argmax(-1) + 1, max_new_tokens)  # up to the first EOS
    H_last = H.gather(1, (lengths - 1)[:, None]).squeeze(1)                # where the final token was emitted
    H_mean = (H * (torch.arange(max_new_tokens, device=device) < lengths[:, None])).sum(-1) / lengths
    lengths, tokens, logps = lengths.tolist(), tokens.tolist(), logps.cpu()
    return {"tokens": [row[:n] for row, n in zip(tokens, lengths)],
            "logps": [logps[i, :n] for i, n in enumerate(lengths)],
            "H_last": H_last.cpu(), "H_mean": H_mean.cpu(), "truncated": ~ended.cpu()}


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


def micro_batches(lengths, max_tokens, overhead_tokens=256, max_rows=None):
    """Row indices cut into forward/backward chunks: rows sorted by length, cut where it minimises
    padded tokens + overhead_tokens per chunk (a forward call's fixed cost), with no chunk over
    max_tokens padded tokens unless it is a single row, nor over max_rows rows. lengths: tokens per
    row -> list of lists. O(rows x rows per chunk)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    L = [lengths[i] for i in order]
    best, cut = [0.0] + [math.inf] * len(L), [0] * (len(L) + 1)           # best[j]: cost of rows :j
    for j in range(1, len(L) + 1):
        for i in range(j - 1, -1, -1):                                     # chunk = sorted rows i..j-1
            if (L[j - 1] * (j - i) > max_tokens and j - i > 1) or (max_rows and j - i > max_rows):
                break
            cost = best[i] + L[j - 1] * (j - i) + overhead_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks, j = [], len(L)
    while j:
        chunks.append(order[cut[j]:j])
        j = cut[j]
    return chunks[::-1]


def score(model, ids, attn, temperature=1.0, with_entropy=True, first=0):
    """Per-token log-probs (B, L-1) of ids[:, 1:] at the sampling temperature, and entropies at T=1.

    first: the targets ids[:, 1:first + 1] are not needed (the prompts': pass the shortest prompt's
    length - 1): no logits are computed for them and their log-probs and entropies read 0. The LM head
    and log-softmax then skip those positions (SmolLM2, 41-token prompts, 60-token responses: the
    update takes 0.78x as long). H keeps its graph: the entropy-bonus baseline (L - beta_H * mean H)
    differentiates through it."""
    L = ids.shape[1]
    first = max(0, min(first, L - 2))                                       # at least one position: a graph
    inner = getattr(model, "module", model)                                 # DDP wraps the model
    keep = {"logits_to_keep": L - first} if first and _has_arg(inner, "logits_to_keep") else {}
    logits = model(input_ids=ids, attention_mask=attn, **keep).logits[:, -(L - first):-1]  # (B, L-1-first, V)
    logp = token_log_probs(logits / temperature if temperature not in (0, 1) else logits, ids[:, first + 1:])
    H = token_entropies(logits) if with_entropy else None
    return F.pad(logp, (first, 0)), (F.pad(H, (first, 0)) if H is not None else None)


def score_batch(model, prompts, responses, pad_id, device="cpu", temperature=1.0, with_entropy=True):
    """score() of prompt + response rows, right-padded (pad_batch), with no logits before the shortest
    prompt ends. Returns logp, H (or None) and the response mask, each (B, L-1)."""
    ids, attn, mask = pad_batch(prompts, responses, pad_id, device)
    logp, H = score(model, ids, attn, temperature, with_entropy, first=min(map(len, prompts)) - 1)
    return logp, H, mask


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
