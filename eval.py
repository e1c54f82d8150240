"""Held-out evaluation of any checkpoint: greedy accuracy and avg@k sampled accuracy, per benchmark.

train.py's periodic evaluation calls `evaluate`; as a command it scores any checkpoint directory,
prints a markdown table (per benchmark: problems, accuracy, mean response tokens, truncation rate)
and writes the same numbers as JSON with --out:
    python eval.py --model runs/tiny/ckpt --data data/toy/heldout.jsonl
    python eval.py --model DIR --data math500.jsonl gsm8k_test.jsonl --max_new_tokens 3000 --dtype bfloat16 \
        --k 8 --temperature 0.6 --top_p 0.95 --out results.json \
        --instruction " Please reason step by step, and put your final answer within \\boxed{}."
    torchrun --nproc_per_node=8 eval.py ...     # problems sharded over ranks, sums all-reduced
The table has one row per benchmark: a row's own "benchmark" field, else the name of its --data file
(mmlu.jsonl and arc_challenge.jsonl are two rows, though both are format "mc"). avg@k is the mean
accuracy of k samples per problem; sample j of problem `id` is seeded by (seed, id, j), so every
number is the same on 1 rank or 8 and for any batch size.
Tested by: python -m pytest -q tests/test_eval.py
"""
import argparse
import json
import math
import os
import sys
import zlib

import torch
import torch.distributed as dist

from data.formats import DataError, load_problems
from model import load_policy, prompt_ids, sample
from verify import verify


def summary(n, responses, correct, tokens, truncated):
    """Accuracy, mean response tokens and truncation rate over the responses of n problems."""
    m = max(responses, 1)
    return {"acc": correct / m, "n": int(n), "mean_len": tokens / m, "trunc": truncated / m}


@torch.no_grad()
def evaluate(model, tokenizer, problems, max_new_tokens, instruction="", batch_size=256,
             rank=0, world_size=1, temperature=0.0, seed=0, k=1, top_p=1.0, sync=None):
    """Accuracy over problems, k responses each (each rank takes problems[rank::world_size]; sums are all-reduced).

    Returns {"acc", "n", "mean_len", "trunc", "per_benchmark": {name: the same four}}: acc is the mean
    over the n * k responses (greedy accuracy with temperature 0 and k = 1, avg@k otherwise), mean_len
    in response tokens (EOS included), trunc the fraction that hit max_new_tokens. sync: as in
    model.sample; with it every rank also runs the same number of batches (FSDP's forward is a collective).
    """
    benchmarks = sorted({p.get("benchmark", "own") for p in problems})  # the same on every rank
    col = {b: i for i, b in enumerate(benchmarks)}
    mine = problems[rank::world_size]
    prompts = [prompt_ids(tokenizer, p["prompt"], instruction) for p in mine]
    rows = sorted(((i, j) for i in range(len(mine)) for j in range(k)), key=lambda r: -len(prompts[r[0]]))
    # longest prompts first: less padding, and running out of memory shows in the first batch
    n_batches = math.ceil(len(rows) / batch_size)
    if sync is not None:  # the rank with the most problems sets the count; the others pad with dummy batches
        n_batches = math.ceil(math.ceil(len(problems) / world_size) * k / batch_size)
    sums = [[0.0] * 5 for _ in benchmarks]  # per benchmark: problems, responses, correct, response tokens, truncated
    for p in mine:
        sums[col[p.get("benchmark", "own")]][0] += 1
    for s in range(0, n_batches * batch_size, batch_size):
        chunk = rows[s:s + batch_size]
        if not chunk:  # nothing left on this rank: a throwaway batch keeps FSDP's collectives in step
            sample(model, [prompt_ids(tokenizer, problems[0]["prompt"], instruction)], max_new_tokens,
                   tokenizer.eos_token_id, tokenizer.pad_token_id, temperature, top_p, seeds=[0], sync=sync)
            continue
        out = sample(model, [prompts[i] for i, _ in chunk], max_new_tokens, tokenizer.eos_token_id,
                     tokenizer.pad_token_id, temperature, top_p, sync=sync,
                     seeds=[zlib.crc32(f"{seed},{mine[i]['id']},{j}".encode()) for i, j in chunk])
        texts = tokenizer.batch_decode(out["tokens"], skip_special_tokens=True)
        for (i, _), text, tokens, truncated in zip(chunk, texts, out["tokens"], out["truncated"].tolist()):
            row = sums[col[mine[i].get("benchmark", "own")]]
            row[1] += 1
            row[2] += verify(text, mine[i]["answer"])
            row[3] += len(tokens)
            row[4] += truncated
    sums = torch.tensor(sums, dtype=torch.float64).reshape(len(benchmarks), 5)
    if world_size > 1:  # on the model's device: NCCL reduces only GPU tensors
        sums = sums.to(next(model.parameters()).device)
        dist.all_reduce(sums)
        sums = sums.cpu()  # CPU-GPU sync point
    res = summary(*sums.sum(0).tolist())
    res["per_benchmark"] = {b: summary(*r) for b, r in zip(benchmarks, sums.tolist())}
    return res


def markdown(greedy, sampled=None, k=0):
    """One row per benchmark and one for all: problems, then accuracy, mean length and truncation per mode."""
    head = "| benchmark | problems | greedy acc | len | trunc |" + (f" avg@{k} acc | len | trunc |" if sampled else "")
    lines = [head, "|---" + "|---:" * (head.count("|") - 2) + "|"]
    rows = [(b, [greedy["per_benchmark"][b]] + ([sampled["per_benchmark"][b]] if sampled else []))
            for b in greedy["per_benchmark"]]
    for name, res in rows + [("all", [greedy] + ([sampled] if sampled else []))]:
        lines.append(f"| {name} | {res[0]['n']} |" + "".join(
            f" {100 * r['acc']:.1f}% | {r['mean_len']:.1f} | {100 * r['trunc']:.1f}% |" for r in res))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint or HF model directory")
    ap.add_argument("--data", required=True, nargs="+", help="problems JSONL files (data/formats.py)")
    ap.add_argument("--max_new_tokens", type=int, default=64, help="response budget (the small preset uses 3000)")
    ap.add_argument("--instruction", default="", help="appended to every question")
    ap.add_argument("--k", type=int, default=0, help="sampled responses per problem for avg@k (0: greedy only)")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for avg@k")
    ap.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling for avg@k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch_size", type=int, default=64, help="sequences per generate call, per rank")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--limit", type=int, default=0, help="first N problems of each file (0: all)")
    ap.add_argument("--out", default="", help="write the results here as JSON")
    args = ap.parse_args(argv)

    # distributed init: torchrun sets RANK; plain `python eval.py` runs one process
    ddp = int(os.environ.get("RANK", -1)) != -1
    if ddp:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    ddp_rank, ddp_world_size = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    master_process = ddp_rank == 0
    if torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    else:
        device = "cpu"  # threads: torch's default; torchrun sets OMP_NUM_THREADS=1 per rank

    try:
        problems = [p for f in args.data  # rows without a "benchmark" field are tagged with their file's name
                    for p in load_problems(f, os.path.splitext(os.path.basename(f))[0])[:args.limit or None]]
    except DataError as e:
        sys.exit(f"error: {e}")
    model, tokenizer = load_policy(args.model, dtype=getattr(torch, args.dtype), device=device)
    model.eval()
    kw = dict(instruction=args.instruction, batch_size=args.batch_size, rank=ddp_rank, world_size=ddp_world_size,
              seed=args.seed)
    greedy = evaluate(model, tokenizer, problems, args.max_new_tokens, temperature=0.0, **kw)
    sampled = evaluate(model, tokenizer, problems, args.max_new_tokens, temperature=args.temperature,
                       top_p=args.top_p, k=args.k, **kw) if args.k else None
    results = {"model": args.model, "data": args.data, "max_new_tokens": args.max_new_tokens,
               "instruction": args.instruction, "k": args.k, "temperature": args.temperature, "top_p": args.top_p,
               "seed": args.seed, "world_size": ddp_world_size, "greedy": greedy, "sampled": sampled}
    if master_process:
        print(markdown(greedy, sampled, args.k))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)
            print(f"wrote {args.out}")
    if ddp:  # leave together: a gloo rank that exits while its peer still talks can abort (SIGABRT)
        dist.barrier()
        dist.destroy_process_group()
    return results


if __name__ == "__main__":
    main()
