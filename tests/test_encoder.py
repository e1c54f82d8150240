"""encoder.py: mean pooling, padding invariance through a real tiny Llama, cosines, and the offline cache.

Run: python -m pytest -q tests/test_encoder.py
"""
import os
import sys

import pytest
import torch

from conftest import ROOT, tiny_llama_config
from encoder import cache_key, cached_offline_embeddings, cosine_matrix, embed, load_encoder, mean_pool

sys.path.insert(0, os.path.join(ROOT, "data"))
import make_toy  # noqa: E402

TEXTS = ["12+34=46\n#### 46", "ab", "17 add 25 is 42\n42 add 38 is 80\n#### 80", "#### 7", "x"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A local directory holding the toy char tokenizer and a tiny random LlamaForCausalLM (the policy)."""
    from transformers import LlamaForCausalLM
    d = tmp_path_factory.mktemp("enc")
    tok = make_toy.build_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(vocab_size=len(tok))).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def encoder(encoder_dir):
    return load_encoder(str(encoder_dir))


# -----------------------------------------------------------------------------
# mean pooling

def test_mean_pool_equals_naive_loop():
    """mean_pool equals a loop: average the unmasked rows, divide by the Euclidean norm."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    out = mean_pool(hidden, mask)
    for b in range(3):
        rows = [hidden[b, t] for t in range(5) if mask[b, t]]
        mean = sum(rows) / len(rows)
        torch.testing.assert_close(out[b], mean / mean.norm())


def test_mean_pool_ignores_padding_garbage():
    """Extra padded positions holding huge garbage hidden states do not change the embedding."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 4, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    ref = mean_pool(hidden, mask)
    padded = torch.cat([hidden, 1e4 * torch.randn(2, 5, 6, generator=g)], dim=1)
    padded[0, 3], padded[1, 2:4] = 1e4, -1e4
    out = mean_pool(padded, torch.cat([mask, torch.zeros(2, 5, dtype=torch.long)], dim=1))
    torch.testing.assert_close(out, ref)


def test_mean_pool_unit_norm_float32():
    """Embeddings are float32 unit vectors, also from bf16 hidden states."""
    hidden = torch.randn(4, 3, 8).bfloat16() * 5
    out = mean_pool(hidden, torch.ones(4, 3, dtype=torch.long))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))


def test_cosine_matrix_equals_naive_loop():
    """cosine_matrix[i, j] equals the dot product of unit vectors e_i and e_j^off, computed one pair at a time."""
    g = torch.Generator().manual_seed(2)
    e_on = torch.nn.functional.normalize(torch.randn(4, 7, generator=g), dim=-1)
    e_off = torch.nn.functional.normalize(torch.randn(3, 7, generator=g), dim=-1)
    C = cosine_matrix(e_on, e_off)
    assert C.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            ref = sum(a * b for a, b in zip(e_on[i].tolist(), e_off[j].tolist()))
            assert abs(C[i, j].item() - ref) < 1e-6
    torch.testing.assert_close(cosine_matrix(e_on, e_on).diagonal(), torch.ones(4))


# -----------------------------------------------------------------------------
# embed() through a real tiny model

def test_load_encoder_is_frozen_base_of_policy(encoder_dir, encoder):
    """load_encoder on a policy directory gives its base transformer, in eval mode, with no trainable weights."""
    from transformers import LlamaForCausalLM
    enc, tok = encoder
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    policy = LlamaForCausalLM.from_pretrained(encoder_dir).eval()
    x = torch.tensor([tok("12+34=46", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(enc(input_ids=x).last_hidden_state,
                                   policy.model(input_ids=x).last_hidden_state)


def test_embed_equals_naive_mean_of_hidden_states(encoder):
    """embed(text) equals the normalised mean of the encoder's last hidden states over the text's tokens."""
    enc, tok = encoder
    E = embed(enc, tok, TEXTS, max_tokens=64)
    assert E.shape == (len(TEXTS), enc.config.hidden_size) and E.dtype == torch.float32
    with torch.no_grad():
        for i, t in enumerate(TEXTS):
            h = enc(input_ids=torch.tensor([tok(t, add_special_tokens=False)["input_ids"]])).last_hidden_state[0]
            ref = h.mean(0) / h.mean(0).norm()
            torch.testing.assert_close(E[i], ref, atol=1e-5, rtol=1e-5)


def test_embed_padding_invariance(encoder):
    """A text embedded alone equals the same text embedded in a batch with longer texts (right padding masked)."""
    enc, tok = encoder
    batch = embed(enc, tok, TEXTS, max_tokens=64)
    for i, t in enumerate(TEXTS):
        torch.testing.assert_close(embed(enc, tok, [t], max_tokens=64)[0], batch[i], atol=1e-5, rtol=1e-5)


def test_embed_order_and_batch_size_invariance(encoder):
    """Output rows follow input order, whatever the length sort and the batch size."""
    enc, tok = encoder
    a = embed(enc, tok, TEXTS, max_tokens=64, batch_size=2)
    b = embed(enc, tok, TEXTS[::-1], max_tokens=64, batch_size=64)
    torch.testing.assert_close(a, b.flip(0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[0], a[1])  # different texts do get different embeddings


def test_embed_encodes_each_distinct_text_once(encoder, monkeypatch):
    """Repeated texts (a group's identical rollouts) are encoded once and every copy gets that row."""
    import encoder as E
    enc, tok = encoder
    seen = []
    real = E.decoder_forward
    monkeypatch.setattr(E, "decoder_forward", lambda inner, x, *a, **k: seen.append(x.shape[0]) or real(inner, x, *a, **k))
    texts = [TEXTS[1], TEXTS[0], TEXTS[1], TEXTS[1], TEXTS[2], TEXTS[0]]
    out = embed(enc, tok, texts, max_tokens=64)
    assert sum(seen) == 3
    ref = embed(enc, tok, TEXTS[:3], max_tokens=64)
    torch.testing.assert_close(out, ref[[1, 0, 1, 1, 2, 0]])


def test_embed_fast_path_equals_hf_forward(encoder, monkeypatch):
    """The hand-written decoder forward, with q|k|v and gate|up stacked, gives the embeddings of the
    encoder's own HF forward."""
    import encoder as E
    enc, tok = encoder
    packed, real = [], E.decoder_forward
    monkeypatch.setattr(E, "decoder_forward", lambda *a, **k: packed.append(k["packed"]) or real(*a, **k))
    fast = embed(enc, tok, TEXTS, max_tokens=64)
    assert packed and all(len(p) == 4 * len(enc.layers) and not any(b for _, _, b in p.values()) for p in packed)
    monkeypatch.setattr(E, "fast_path_ok", lambda m: False)
    torch.testing.assert_close(fast, embed(enc, tok, TEXTS, max_tokens=64), atol=1e-5, rtol=1e-5)


def test_embed_reads_only_max_tokens(encoder):
    """With a budget of k tokens, a long text embeds like its first k characters (char tokenizer)."""
    enc, tok = encoder
    long = TEXTS[2]
    torch.testing.assert_close(embed(enc, tok, [long], max_tokens=6), embed(enc, tok, [long[:6]], max_tokens=64))
    assert not torch.allclose(embed(enc, tok, [long], max_tokens=6), embed(enc, tok, [long], max_tokens=64))


def test_embed_empty_list(encoder):
    """No texts give a (0, d) tensor, not an error."""
    enc, tok = encoder
    assert embed(enc, tok, [], max_tokens=8).shape == (0, enc.config.hidden_size)


# -----------------------------------------------------------------------------
# the offline embedding cache

def test_cache_key_tracks_every_input(tmp_path, encoder_dir):
    """cache_key is stable, and changes with the offline file bytes, the texts, the encoder files and max_tokens."""
    import shutil
    off = tmp_path / "offline.jsonl"
    off.write_text('{"id": "a", "teacher": "t", "response": "1+1=2"}\n')
    enc_copy = tmp_path / "enc"
    shutil.copytree(encoder_dir, enc_copy)
    texts = ["1+1=2"]
    k = cache_key(str(off), texts, str(enc_copy), 64)
    assert k == cache_key(str(off), list(texts), str(enc_copy), 64)
    assert k != cache_key(str(off), texts, str(enc_copy), 65)
    assert k != cache_key(str(off), texts + ["3"], str(enc_copy), 64)
    assert k != cache_key(str(off), ["1+1=3"], str(enc_copy), 64)
    off.write_text('{"id": "a", "teacher": "t", "response": "1+1=2"} \n')  # one byte more
    k_file = cache_key(str(off), texts, str(enc_copy), 64)
    assert k_file != k
    weights = next(p for p in enc_copy.iterdir() if p.name.endswith(".safetensors"))
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1  # flip one bit of the weights
    weights.write_bytes(bytes(blob))
    k_w = cache_key(str(off), texts, str(enc_copy), 64)
    assert k_w != k_file
    (enc_copy / "tokenizer.json").write_text((enc_copy / "tokenizer.json").read_text() + " ")
    assert cache_key(str(off), texts, str(enc_copy), 64) != k_w


def test_cached_offline_embeddings_computes_once(tmp_path):
    """The first call computes and saves; the second loads without calling compute and returns the same tensor."""
    calls = []

    def compute(texts):
        calls.append(list(texts))
        return torch.randn(len(texts), 5)

    texts = ["a", "bb", "ccc"]
    E1, path, hit1 = cached_offline_embeddings(str(tmp_path / "cache"), "k1", texts, compute)
    E2, path2, hit2 = cached_offline_embeddings(str(tmp_path / "cache"), "k1", texts, compute)
    assert (hit1, hit2) == (False, True) and len(calls) == 1 and path == path2 and os.path.exists(path)
    assert torch.equal(E1, E2)


def test_cached_offline_embeddings_new_key_recomputes(tmp_path):
    """A changed key (changed inputs) ignores the old file and calls compute again."""
    calls = []

    def compute(texts):
        calls.append(1)
        return torch.full((len(texts), 3), float(len(calls)))

    E1, _, _ = cached_offline_embeddings(str(tmp_path), "old", ["a", "b"], compute)
    E2, _, hit = cached_offline_embeddings(str(tmp_path), "new", ["a", "b"], compute)
    assert not hit and len(calls) == 2 and not torch.equal(E1, E2)


def test_cached_offline_embeddings_wrong_row_count_recomputes(tmp_path):
    """A cached file whose row count does not match the texts is recomputed, not returned."""
    cached_offline_embeddings(str(tmp_path), "k", ["a", "b"], lambda t: torch.zeros(len(t), 3))
    E, _, hit = cached_offline_embeddings(str(tmp_path), "k", ["a", "b", "c"], lambda t: torch.ones(len(t), 3))
    assert not hit and E.shape == (3, 3) and (E == 1).all()
