"""Speed figures for one training step's phases, each compared with its naive alternative in one run.

    python bench.py                               # the toy policy on CPU (data/toy)
    python bench.py --shape qwen2-1.5b --dtype bfloat16 --batch 64 --max_new_tokens 1024   # on a GPU
    python bench.py --model DIR --batch 32 --threads 2 --repeats 3   # any local HF directory, e.g. SmolLM2
                                                                     # (python data/smollm2.py --out DIR)
Prints tokens/s of generation (our KV-cache sampler vs transformers' generate, both forced to the full
budget and both stopping at EOS; the calls alternate round by round), of the update (length-sorted
micro-batches vs one padded batch), the verifier's share of a step and peak GPU memory: a JSON record,
then the same figures as sentences.
"""
import argparse
import json
import os
import random
import sys
import time

import torch

import verify as verifier
from model import grpo_loss, load_policy, micro_batches, prompt_ids, response_ids, sample, score_batch

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
    """One forward+backward of the GRPO loss over rows: cut into length-sorted chunks by
    model.micro_batches, as train.py cuts them; micro_batch_tokens 0: one padded batch."""
    chunks = [rows]
    if micro_batch_tokens:
        chunks = [[rows[i] for i in c] for c in micro_batches([len(p) + len(r) for p, r in rows], micro_batch_tokens)]
    T = sum(len(r[1]) for r in rows)
    for c in chunks:
        with autocast():
            logp, _, m = score_batch(model, [r[0] for r in c], [r[1] for r in c], pad_id, device, with_entropy=False)
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
    ap.add_argument("--repeats", type=int, default=1, help="timed generation calls of each kind; the median counts")
    ap.add_argument("--compiled", action="store_true", help="also time model.sample(compiled=True) (torch.compile; "
                    "CUDA graphs on a GPU), after one untimed call that compiles")
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
    from transformers import GenerationConfig
    model.eval()
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (P - len(p)) + p for p in prompts], device=device)
    attn = (torch.arange(P, device=device)[None] >= torch.tensor([P - len(p) for p in prompts], device=device)[:, None]).long()

    def hf_generate(rows, n, stop):
        """transformers' generate at T=1 (no top-k/top-p, whatever the model's generation_config says);
        stop=False forces n new tokens (EOS suppressed), like a full-budget run of ours. Returns new tokens
        (up to and including each row's first EOS when stop)."""
        cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=None if stop else n, do_sample=True, temperature=1.0,
                               top_p=1.0, top_k=0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                               disable_compile=True)
        new = model.generate(input_ids=ids[:rows], attention_mask=attn[:rows], generation_config=cfg)[:, P:].tolist()
        return sum(next((j + 1 for j, x in enumerate(r) if x == tok.eos_token_id), len(r)) if stop else len(r)
                   for r in new)

    seeds = list(range(len(prompts)))
    ours = lambda eos, compiled=False: sample(model, prompts, args.max_new_tokens, eos, tok.pad_token_id,  # noqa: E731
                                              seeds=seeds, compiled=compiled)
    calls = {"ours": lambda: ours(tok.eos_token_id), "full": lambda: ours(-1),  # -1: no EOS, the full budget
             "hf_full": lambda: hf_generate(len(prompts), args.max_new_tokens, stop=False),
             "hf_eos": lambda: hf_generate(len(prompts), args.max_new_tokens, stop=True)}
    with torch.no_grad(), autocast():
        sample(model, prompts[:4], 4, tok.eos_token_id, tok.pad_token_id)  # warm-up
        hf_generate(4, 4, stop=False)                                      # warm-up
        if args.compiled:
            calls["compiled"] = lambda: ours(-1, compiled=True)
            t0 = time.time()
            calls["compiled"]()  # compiles (one graph per batch size)
            res["compile_s"] = time.time() - t0
        # the calls alternate, round after round, so a busy spell of this shared machine hits all of them;
        # like for like: "full" and "hf_full" both run the full budget (each stops when its own longest
        # sample ends otherwise, and the two draw different samples)
        runs = {k: [] for k in calls}
        for _ in range(max(1, args.repeats)):
            for k, fn in calls.items():
                runs[k].append(timed(fn, device))
        med = {k: sorted(t for _, t in v)[len(v) // 2] for k, v in runs.items()}  # median seconds
        out, n_hf_eos = runs["ours"][-1][0], runs["hf_eos"][-1][0]
        n_ours = sum(len(t) for t in out["tokens"])
        t_ours, t_full, t_hf, t_hf_eos = med["ours"], med["full"], med["hf_full"], med["hf_eos"]
        if args.compiled:
            res["compiled_full_budget_s"] = med["compiled"]
    n_full = len(prompts) * args.max_new_tokens
    res.update(gen_tokens=n_ours, gen_tok_s=n_ours / t_ours, gen_s=t_ours, full_budget_s=t_full,
               hf_generate_full_budget_s=t_hf, gen_speedup_vs_hf=t_hf / t_full,
               model=args.model, threads=torch.get_num_threads() if device == "cpu" else None, dtype=args.dtype,
               max_new_tokens=args.max_new_tokens, prompt_tokens_max=P, repeats=max(1, args.repeats),
               full_budget_tok_s=n_full / t_full, hf_generate_full_budget_tok_s=n_full / t_hf,
               hf_generate_tokens=n_hf_eos, hf_generate_s=t_hf_eos, hf_generate_tok_s=n_hf_eos / t_hf_eos)

    # update: rollouts plus teacher trajectories (about twice as long), sorted chunks vs one padded batch
    model.train()
    texts = tok.batch_decode(out["tokens"], skip_special_tokens=True)
    offline = [o["response"] for o in load_offline(args.offline)][:args.batch // 8]
    rows = [(p, t) for p, t in zip(prompts, out["tokens"]) if t] + \
           [(prompts[i], response_ids(tok, o)[:args.max_new_tokens]) for i, o in enumerate(offline)]
    random.Random(0).shuffle(rows)
    update(model, rows[:8], tok.pad_token_id, args.micro_batch_tokens, device, autocast)  # warm-up
    times = {"sorted": [], "padded": []}
    for i in range(max(1, args.repeats // 2)):  # alternating, the median of each
        for k in ("sorted", "padded") if i % 2 == 0 else ("padded", "sorted"):
            mbt = args.micro_batch_tokens if k == "sorted" else 0
            T, t = timed(lambda: update(model, rows, tok.pad_token_id, mbt, device, autocast), device)
            times[k].append(t)
    t_sorted, t_padded = (sorted(times[k])[len(times[k]) // 2] for k in ("sorted", "padded"))
    res.update(update_tokens=T, update_tok_s=T / t_sorted, update_s=t_sorted, update_one_padded_batch_s=t_padded,
               update_speedup_sorted=t_padded / t_sorted)

    # verification: the hot path of every step
    golds = [p["answer"] for p in probs]
    _, t_ver = timed(lambda: [verifier.verify(t, g) for t, g in zip(texts, golds)], "cpu")
    res.update(verify_per_s=len(texts) / t_ver, verify_share_of_step=t_ver / (t_ours + t_sorted + t_ver))
    if device == "cuda":
        res["peak_gpu_mem_GiB"] = torch.cuda.max_memory_allocated() / 2 ** 30
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}, indent=1))
    r = res
    print(f"\n{r['model']} ({r['params_M']:.1f}M parameters, {r['dtype']}, {r['device']}"
          + (f", {r['threads']} thread{'s' * (r['threads'] > 1)}" if r["threads"] else "") + f"), {r['rollouts']} rows, prompts up to "
          f"{r['prompt_tokens_max']} tokens, {r['max_new_tokens']} new tokens at T=1, median of {r['repeats']} call(s):")
    print(f"  generation, forced to the full budget: model.sample {r['full_budget_tok_s']:,.0f} tok/s, "
          f"transformers.generate {r['hf_generate_full_budget_tok_s']:,.0f} tok/s: sample is {r['gen_speedup_vs_hf']:.2f}x")
    if "compiled_full_budget_s" in r:
        print(f"  generation, compiled (compile_decode): {n_full / r['compiled_full_budget_s']:,.0f} tok/s, "
              f"{r['hf_generate_full_budget_s'] / r['compiled_full_budget_s']:.2f}x transformers.generate "
              f"(compiling took {r['compile_s']:.0f} s)")
    print(f"  generation, each row stops at EOS:     model.sample {r['gen_tok_s']:,.0f} tok/s ({r['gen_tokens']} tokens "
          f"in {r['gen_s']:.2f} s), transformers.generate {r['hf_generate_tok_s']:,.0f} tok/s ({r['hf_generate_tokens']} "
          f"tokens in {r['hf_generate_s']:.2f} s; different samples)")
    print(f"  update (GRPO loss forward+backward): {r['update_tok_s']:,.0f} response tok/s ({r['update_tokens']} tokens "
          f"in {r['update_s']:.2f} s); one padded batch takes {r['update_speedup_sorted']:.2f}x as long")


if __name__ == "__main__":
    main()
