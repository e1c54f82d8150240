"""The trajectory encoder Enc: response text -> unit vector, and the cosine-similarity matrix (SPEC step 4).

Enc is a frozen copy of the initial policy (default) or any local Hugging Face encoder directory:
mean of the last hidden layer over the response tokens (padding masked out), L2-normalised, in eval
mode under no_grad, reading at most `encoder_max_tokens` tokens from the start of the response.
Offline embeddings are computed once and cached on disk (safetensors), keyed by the bytes of the
offline data file, the tokenizer, the encoder weights and the token budget, so a changed input never
reuses a stale cache.
Tested by: python -m pytest -q tests/test_encoder.py
"""
import functools
import hashlib
import math
import os

import torch
import torch.nn.functional as F

from model import LOAD_LOCK, decoder_forward, fast_path_ok, micro_batches, packed_linears


def load_encoder(path, dtype=torch.float32, device="cpu"):
    """(encoder, tokenizer) from a local directory: the base transformer without its LM head, frozen."""
    with LOAD_LOCK:  # one load at a time in a process (model.LOAD_LOCK)
        from transformers import AutoModel, AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        enc = AutoModel.from_pretrained(path, dtype=dtype, local_files_only=True).to(device)
    enc.eval()  # the encoder never trains; eval() also turns off any dropout
    for p in enc.parameters():
        p.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return enc, tokenizer


@functools.lru_cache(maxsize=2)
def stacked_weights(encoder):
    """The frozen encoder's q|k|v and gate|up weights stacked (packed_linears, stacking only; {} off
    CPU float32), made once per encoder rather than at every step's embed: 0.9x the pass's time."""
    return packed_linears(encoder, 0, min_numel=math.inf)


def mean_pool(hidden, mask):
    """Mean of hidden (B, T, d) over positions where mask (B, T) is 1, L2-normalised -> (B, d) float32."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)                              # (B, T, 1)
    summed = (hidden.float() * mask.float()).sum(1)                         # (B, d)
    mean = summed / mask.float().sum(1).clamp(min=1.0)
    return F.normalize(mean, dim=-1)


@torch.no_grad()
def embed(encoder, tokenizer, texts, max_tokens, batch_size=64, overhead_tokens=128):
    """Unit embeddings (len(texts), d) float32 of response texts.

    Each distinct text is encoded once (a GRPO group often repeats a response), in chunks of similar
    lengths cut by model.micro_batches (padding against a forward call's fixed cost, overhead_tokens;
    at most batch_size texts per chunk); Llama-family encoders run model.decoder_forward, others their HF
    forward."""
    device = next(encoder.parameters()).device
    distinct = list(dict.fromkeys(texts))
    ids = [t[:max_tokens] or [tokenizer.pad_token_id]
           for t in (tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else [])]
    out = [None] * len(ids)
    fast = fast_path_ok(encoder)
    packed = stacked_weights(encoder) if fast else {}
    for chunk in micro_batches([len(i) for i in ids], batch_size * max_tokens, overhead_tokens, batch_size):
        T = max(len(ids[i]) for i in chunk)
        x = torch.full((len(chunk), T), tokenizer.pad_token_id, dtype=torch.long)
        m = torch.zeros((len(chunk), T), dtype=torch.long)
        for row, i in enumerate(chunk):  # right padding; the mask keeps it out of the mean
            x[row, :len(ids[i])] = torch.tensor(ids[i])
            m[row, :len(ids[i])] = 1
        x, m = x.to(device), m.to(device)
        if fast:  # right padding: plain causal attention never lets a real token see a padding one
            pos = torch.arange(T, device=device).expand(len(chunk), T)
            hidden = decoder_forward(encoder, x, pos, None, packed=packed)
        else:
            hidden = encoder(input_ids=x, attention_mask=m).last_hidden_state
        for row, e in zip(chunk, mean_pool(hidden, m).cpu()):
            out[row] = e
    if not texts:
        return torch.zeros((0, encoder.config.hidden_size))
    E = torch.stack(out)                                                    # (distinct, d)
    index = {t: i for i, t in enumerate(distinct)}
    return E[[index[t] for t in texts]]


def cosine_matrix(e_on, e_off):
    """cos(e_i, e_j^off) for unit embeddings: (N, d) x (M, d) -> (N, M)."""
    return e_on.float() @ e_off.float().T


# -----------------------------------------------------------------------------
# the offline embedding cache

def _digest(h, path):
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def cache_keys(offline_file, text_lists, encoder_dir, max_tokens):
    """One key per list of texts: sha256 over max_tokens, the offline data file, the encoder's
    tokenizer/config/weight files (read once for all the lists), then the texts embedded."""
    h = hashlib.sha256(f"max_tokens={max_tokens}".encode())
    _digest(h, offline_file)
    for name in sorted(os.listdir(encoder_dir)):
        full = os.path.join(encoder_dir, name)
        if os.path.isfile(full) and (name.endswith((".json", ".safetensors", ".model", ".txt", ".bin"))):
            h.update(name.encode())
            _digest(h, full)
    keys = []
    for texts in text_lists:
        k = h.copy()
        for t in texts:
            k.update(t.encode() + b"\0")
        keys.append(k.hexdigest()[:16])
    return keys


def cache_key(offline_file, texts, encoder_dir, max_tokens):
    """The key of one list of texts (cache_keys)."""
    return cache_keys(offline_file, [texts], encoder_dir, max_tokens)[0]


def cache_path(cache_dir, key):
    return os.path.join(cache_dir, f"offline-{key}.safetensors")


def offline_selection(offline, visited, offline_file, encoder_dir, max_tokens, cache_dir):
    """(problem ids, cache key) of the offline trajectories to embed: the whole pool's when its cache
    exists (data/build_pool.py writes it), else only the `visited` problems'. offline: {id: [{"text"}]}."""
    whole = sorted(offline)
    keys = cache_keys(offline_file, [[it["text"] for pid in pids for it in offline[pid]] for pids in (whole, visited)],
                      encoder_dir, max_tokens)
    return (whole, keys[0]) if os.path.exists(cache_path(cache_dir, keys[0])) else (visited, keys[1])


def cached_offline_embeddings(cache_dir, key, texts, compute):
    """Embeddings of texts from cache_dir/offline-<key>.safetensors, or compute(texts) and save them."""
    from safetensors.torch import load_file, save_file
    path = cache_path(cache_dir, key)
    if os.path.exists(path):
        E = load_file(path)["E"]
        if E.shape[0] == len(texts):
            return E, path, True
    E = compute(texts)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    save_file({"E": E.contiguous()}, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return E, path, False
