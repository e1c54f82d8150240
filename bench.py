"""Speed figures for one training step's phases, each compared with its naive alternative in one run.

    python bench.py                               # the toy policy on CPU (data/toy)
    python bench.py --shape qwen2-1.5b --dtype bfloat16 --batch 64 --max_new_tokens 1024   # on a GPU
Prints tokens/s of generation (our KV-cache sampler vs transformers' generate), of the update
(length-sorted micro-batches vs one padded batch), the verifier's share of a step and peak GPU memory.
"""
import argparse
import json
import os
import random
import sys
import time

import torch

import verify as verifier
from model import grpo_loss, load_policy, pad_batch, prompt_ids, response_ids, sample, score

SHAPES = {  # randomly initialised models of real shapes, for GPU throughput and memory checks
    "qwen2-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}


def timed(fn, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.time()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # CPU-GPU sync: time the kernels, not their launch
    return out, time.time() - t0


def update(model, rows, pad_id, micro_batch_tokens, device, autocast):
    """One forward+backward of the GRPO loss over rows, cut into length-sorted chunks."""
    if micro_batch_tokens:
        rows = sorted(rows, key=lambda r: len(r[0]) + len(r[1]))
    chunks, cur = [], []
    for r in rows:
        if cur and micro_batch_tokens and (len(r[0]) + len(r[1])) * (len(cur) + 1) > micro_batch_tokens:
            chunks.append(cur)
            cur = []
        cur.append(r)
    chunks.append(cur)
    T = sum(len(r[1]) for r in rows)
    for c in chunks:
        ids, attn, m = pad_batch([r[0] for r in c], [r[1] for r in c], pad_id, device)
        with autocast():
            logp, _ = score(model, ids, attn, with_entropy=False)
        A = torch.randn(len(c), device=device)
        loss, _ = grpo_loss(logp, logp.detach(), A, m, T)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return T


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="data/toy")
    ap.add_argument("--shape", default="", choices=["", *SHAPES], help="random weights of this shape (--model's tokenizer)")
    ap.add_argument("--problems", default="data/toy/train.jsonl")
    ap.add_argument("--offline", default="data/toy/offline.jsonl")
    ap.add_argument("--batch", type=int, default=128, help="rollouts")
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--micro_batch_tokens", type=int, default=8192)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from data.formats import load_offline, load_problems
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    model, tok = load_policy(args.model, device=device)
    if args.shape:
        from transformers import AutoConfig, AutoModelForCausalLM
        cfg = AutoConfig.for_model("qwen2", **SHAPES[args.shape], eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
        model = AutoModelForCausalLM.from_config(cfg).to(device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    autocast = lambda: torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)  # noqa: E731
    probs = load_problems(args.problems)[:args.batch]
    probs = (probs * (args.batch // len(probs) + 1))[:args.batch]
    prompts = [prompt_ids(tok, p["prompt"]) for p in probs]
    res = {"device": device, "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "rollouts": args.batch}

    # generation: ours vs transformers' generate, same prompts, same budget, sampling at T=1
    model.eval()
    with torch.no_grad(), autocast():
        sample(model, prompts[:4], 4, tok.eos_token_id, tok.pad_token_id)  # warm-up
        out, t_ours = timed(lambda: sample(model, prompts, args.max_new_tokens, tok.eos_token_id, tok.pad_token_id,
                                           seeds=list(range(len(prompts)))), device)
        n_ours = sum(len(t) for t in out["tokens"])
        P = max(len(p) for p in prompts)
        ids = torch.tensor([[tok.pad_token_id] * (P - len(p)) + p for p in prompts], device=device)
        # like for like: both run the full budget (each stops when its own longest sample ends otherwise,
        # and the two draw different samples)
        _, t_full = timed(lambda: sample(model, prompts, args.max_new_tokens, -1, tok.pad_token_id,
                                         seeds=list(range(len(prompts)))), device)
        gen, t_hf = timed(lambda: model.generate(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(),
                                                 max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens,
                                                 do_sample=True, top_k=0, pad_token_id=tok.pad_token_id,
                                                 eos_token_id=tok.eos_token_id), device)
    res.update(gen_tokens=n_ours, gen_tok_s=n_ours / t_ours, gen_s=t_ours, full_budget_s=t_full,
               hf_generate_full_budget_s=t_hf, gen_speedup_vs_hf=t_hf / t_full)

    # update: rollouts plus teacher trajectories (about twice as long), sorted chunks vs one padded batch
    model.train()
    texts = tok.batch_decode(out["tokens"], skip_special_tokens=True)
    offline = [o["response"] for o in load_offline(args.offline)][:args.batch // 8]
    rows = [(p, t) for p, t in zip(prompts, out["tokens"]) if t] + \
           [(prompts[i], response_ids(tok, o)[:args.max_new_tokens]) for i, o in enumerate(offline)]
    random.Random(0).shuffle(rows)
    update(model, rows[:8], tok.pad_token_id, args.micro_batch_tokens, device, autocast)  # warm-up
    T, t_sorted = timed(lambda: update(model, rows, tok.pad_token_id, args.micro_batch_tokens, device, autocast), device)
    _, t_padded = timed(lambda: update(model, rows, tok.pad_token_id, 0, device, autocast), device)
    res.update(update_tokens=T, update_tok_s=T / t_sorted, update_s=t_sorted, update_one_padded_batch_s=t_padded,
               update_speedup_sorted=t_padded / t_sorted)

    # verification: the hot path of every step
    golds = [p["answer"] for p in probs]
    _, t_ver = timed(lambda: [verifier.verify(t, g) for t, g in zip(texts, golds)], "cpu")
    res.update(verify_per_s=len(texts) / t_ver, verify_share_of_step=t_ver / (t_ours + t_sorted + t_ver))
    if device == "cuda":
        res["peak_gpu_mem_GiB"] = torch.cuda.max_memory_allocated() / 2 ** 30
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}, indent=1))


if __name__ == "__main__":
    main()
