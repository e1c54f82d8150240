"""Build the offline pool O(q) from teacher trajectories: verify, report, filter, write, embed.

    python data/build_pool.py --problems P.jsonl --teachers a.jsonl b.jsonl --policy DIR --out pool.jsonl \
        [--max_new_tokens 3000] [--encoder_max_tokens 512] [--keep_wrong] [--encoder DIR] [--cache_dir DIR]

Teacher files hold {"id", "response"} rows (the teacher is the file's stem) or {"id", "teacher",
"response"} rows (one file may hold every teacher). Every trajectory is verified against its
problem's gold answer (SPEC step 3) and measured in policy tokens, EOS included (model.response_ids,
as train.py counts it). The per-teacher table (samples, mean length, accuracy) is printed as
markdown; wrong trajectories are dropped (--keep_wrong keeps them) and so are those longer than
--max_new_tokens (counted: SPEC drops them rather than truncating). The pool is written as
{"id", "teacher", "response"} JSONL, and its embeddings (SPEC step 4) go into the cache that
`python train.py --offline_file=pool.jsonl` reads (cache/ beside the pool), under the key train.py
computes for the same pool, encoder, encoder_max_tokens and max_new_tokens (and no --teachers).
A malformed line in any input stops the command before any compute, naming file:line and field.
Tested by: python -m pytest -q tests/test_pool.py
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `python data/build_pool.py`

import torch  # noqa: E402

from data.formats import DataError, load_offline, load_problems  # noqa: E402
from encoder import cache_key, cached_offline_embeddings, embed, load_encoder  # noqa: E402
from model import response_ids  # noqa: E402
from verify import verify  # noqa: E402


def teacher_table(rows):
    """Markdown table, one line per teacher and a total: samples, mean length, accuracy, over budget, kept.
    rows: dicts with "teacher", "n_tokens", "correct", "over", "kept"."""
    lines = ["| teacher | samples | mean length (tokens) | accuracy | over budget | kept |",
             "|---|---:|---:|---:|---:|---:|"]
    teachers = list(dict.fromkeys(r["teacher"] for r in rows))  # first-seen order
    for name, rs in [(t, [r for r in rows if r["teacher"] == t]) for t in teachers] + [("all", rows)]:
        n = len(rs)
        lines.append(f"| {name} | {n} | {sum(r['n_tokens'] for r in rs) / n:.1f} | "
                     f"{100 * sum(r['correct'] for r in rs) / n:.1f}% | {sum(r['over'] for r in rs)} | "
                     f"{sum(r['kept'] for r in rs)} |")
    return "\n".join(lines)


def pool_texts(pool_file, tokenizer, max_new_tokens, known_ids):
    """The texts train.py embeds for this pool, in its order: over-budget rows dropped, then sorted by
    problem id, file order within a problem (keep in step with train.py's offline section)."""
    offline = {}
    for o in load_offline(pool_file, known_ids=known_ids):
        if len(response_ids(tokenizer, o["response"])) <= max_new_tokens:
            offline.setdefault(o["id"], []).append(o["response"])
    return [t for pid in sorted(offline) for t in offline[pid]]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", required=True, help="problems JSONL (any format data/formats.py reads)")
    ap.add_argument("--teachers", required=True, nargs="+", help="teacher trajectory JSONL files")
    ap.add_argument("--policy", required=True, help="policy directory: its tokenizer measures lengths")
    ap.add_argument("--out", required=True, help="the offline pool JSONL to write")
    ap.add_argument("--max_new_tokens", type=int, default=3000, help="response budget (train.py's max_new_tokens)")
    ap.add_argument("--keep_wrong", action="store_true", help="keep trajectories whose answer is wrong")
    ap.add_argument("--encoder", default="", help="encoder directory (train.py's --encoder); default: --policy")
    ap.add_argument("--encoder_max_tokens", type=int, default=512)
    ap.add_argument("--cache_dir", default="",
                    help="embedding cache (train.py's --cache_dir); default: cache/ beside --out")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="encoder weights")
    ap.add_argument("--batch_size", type=int, default=64, help="texts per encoder forward")
    args = ap.parse_args(argv)

    # ---- read and check every input before any compute
    try:
        problems = load_problems(args.problems)
        answers = {p["id"]: p["answer"] for p in problems}
        trajectories = [o for f in args.teachers
                        for o in load_offline(f, known_ids=answers, teacher=os.path.splitext(os.path.basename(f))[0])]
    except DataError as e:
        sys.exit(f"error: {e}")
    for d in [args.policy] + ([args.encoder] if args.encoder else []):
        if not os.path.isdir(d):
            sys.exit(f"error: {d}: not a model directory")

    # ---- verify and measure (lengths in policy tokens, EOS included, as train.py counts them)
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(args.policy, local_files_only=True)
    for o in trajectories:
        o["n_tokens"] = len(response_ids(tokenizer, o["response"]))
        o["correct"] = verify(o["response"], answers[o["id"]])
        o["over"] = o["n_tokens"] > args.max_new_tokens
        o["kept"] = not o["over"] and (o["correct"] or args.keep_wrong)
    print(teacher_table(trajectories))
    kept = [o for o in trajectories if o["kept"]]
    n_over = sum(o["over"] for o in trajectories)
    n_wrong = sum(not o["over"] and not o["correct"] for o in trajectories)
    print(f"kept {len(kept)} of {len(trajectories)} trajectories: dropped {n_over} longer than "
          f"max_new_tokens={args.max_new_tokens} and {0 if args.keep_wrong else n_wrong} wrong"
          f"{f' (kept {n_wrong} wrong: --keep_wrong)' if args.keep_wrong else ''}")

    # ---- write the pool: problems in file order, then teacher files and lines in the order given
    order = {p["id"]: i for i, p in enumerate(problems)}
    kept.sort(key=lambda o: order[o["id"]])  # stable: teacher and line order kept within a problem
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": o["id"], "teacher": o["teacher"], "response": o["response"]}) + "\n"
                     for o in kept)
    print(f"wrote {args.out}: {len(kept)} trajectories for {len({o['id'] for o in kept})} of {len(problems)} problems")

    # ---- embeddings (SPEC step 4), cached under the key train.py computes for this pool
    texts = pool_texts(args.out, tokenizer, args.max_new_tokens, answers)
    if not texts:
        return {"trajectories": trajectories, "kept": kept, "cache": None}
    enc_dir = args.encoder or args.policy  # train.py: cfg.encoder or cfg.model
    cache_dir = args.cache_dir or os.path.join(os.path.dirname(os.path.abspath(args.out)), "cache")
    key = cache_key(args.out, texts, enc_dir, args.encoder_max_tokens)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def compute(texts):
        encoder, enc_tok = load_encoder(enc_dir, dtype=getattr(torch, args.dtype), device=device)
        return embed(encoder, enc_tok, texts, args.encoder_max_tokens, batch_size=args.batch_size)

    E, path, hit = cached_offline_embeddings(cache_dir, key, texts, compute)
    print(f"offline embeddings {tuple(E.shape)} {'already in' if hit else 'computed into'} {path}")
    print(f"train with: python train.py --model={args.policy} --train_file={args.problems} --offline_file={args.out} "
          f"--max_new_tokens={args.max_new_tokens} --encoder_max_tokens={args.encoder_max_tokens}"
          + (f" --encoder={args.encoder}" if args.encoder else "")
          + (f" --cache_dir={args.cache_dir}" if args.cache_dir else ""))
    return {"trajectories": trajectories, "kept": kept, "cache": path, "hit": hit}


if __name__ == "__main__":
    main()
