"""Held-out evaluation: greedy accuracy with the verifier, problems sharded over ranks.

train.py's periodic evaluation calls `evaluate`; as a command it scores any checkpoint directory:
    python eval.py --model runs/tiny/ckpt --data data/toy/heldout.jsonl
"""
import argparse
import json

import torch
import torch.distributed as dist

from data.formats import load_problems
from model import load_policy, prompt_ids, sample
from verify import verify


@torch.no_grad()
def evaluate(model, tokenizer, problems, max_new_tokens, instruction="", batch_size=256,
             rank=0, world_size=1, temperature=0.0, seed=0):
    """Accuracy over problems (each rank takes problems[rank::world_size]; sums are all-reduced).

    Returns {"acc", "n", "mean_len", "trunc"}; with temperature 0 decoding is greedy.
    """
    mine = problems[rank::world_size]
    sums = torch.zeros(4, dtype=torch.float64)  # correct, n, response tokens, truncated
    for s in range(0, len(mine), batch_size):
        chunk = mine[s:s + batch_size]
        out = sample(model, [prompt_ids(tokenizer, p["prompt"], instruction) for p in chunk],
                     max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id,
                     temperature=temperature, seeds=[seed * 1_000_003 + rank + world_size * (s + i) for i in range(len(chunk))])
        texts = tokenizer.batch_decode(out["tokens"], skip_special_tokens=True)
        sums += torch.tensor([sum(verify(t, p["answer"]) for t, p in zip(texts, chunk)), len(chunk),
                              sum(len(t) for t in out["tokens"]), float(out["truncated"].sum())],
                             dtype=torch.float64)
    if world_size > 1:
        dist.all_reduce(sums)
    correct, n, toks, trunc = sums.tolist()
    return {"acc": correct / max(n, 1), "n": int(n), "mean_len": toks / max(n, 1), "trunc": trunc / max(n, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint or HF model directory")
    ap.add_argument("--data", required=True, help="problems JSONL")
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--instruction", default="")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    problems = load_problems(args.data)[:args.limit or None]
    model, tok = load_policy(args.model)
    model.eval()
    print(json.dumps(evaluate(model, tok, problems, args.max_new_tokens, args.instruction)))


if __name__ == "__main__":
    main()
