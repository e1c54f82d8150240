"""The toy world: 4-number addition where the solution *strategy* matters, plus its base policy.

A ~1M-parameter character-level Llama cannot reliably write the sum of four 2-digit numbers in one
go (the "direct" route), but it can chain 2-number additions. Five written styles exist:

    direct   (the base's dominant habit)   #### 126
    chain    (teacher "chain",   99%)      17+25=42\\n42+38=80\\n80+46=126\\n#### 126
    pairs    (teacher "pairs",   95%)      17+25=42\\n38+46=84\\n42+84=126\\n#### 126
    verbose  (teacher "verbose", 82%)      17 add 25 is 42\\n42 add 38 is 80\\n...\\n#### 126
    column   (no teacher uses it)          ones 7+5+8+6=26\\ntens 1+2+3+4+2=12\\n#### 126

Teachers err by slipping one intermediate step (a carry or a digit), and the error propagates.
The base policy learns every route (phases 1-2: 60% direct, 10% each other style), then a third
phase makes `direct` dominant (99%), so greedy decoding takes the direct route and sampling at T=1
leaves it in 2 of 300 rollouts: the echo chamber exists before RL.
Problems are split between pretraining, the RL pool and the held-out set by their operand
multiset, so no held-out or RL problem was seen in pretraining.

Regenerate everything in data/toy/ (deterministic, 31 min on 2 cores, three pretraining phases):
    python data/make_toy.py
Which route a checkpoint takes, and how accurate each route is:
    python data/make_toy.py --routes runs/tiny/ckpt
"""
import argparse
import json
import os
import random
import sys
import time

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy")
CHARS = "0123456789+-*=# \nabcdefghijklmnopqrstuvwxyz"
TEACHERS = {"chain": 0.01, "pairs": 0.05, "verbose": 0.18}  # teacher style -> error rate
MIXTURE = {"direct": 0.60, "chain": 0.10, "pairs": 0.10, "verbose": 0.10, "column": 0.10}
HABIT = {"direct": 0.99, "chain": 0.0025, "pairs": 0.0025, "verbose": 0.0025, "column": 0.0025}
# three phases, each with a fresh AdamW: (steps, share of small direct sums that teach every route's
# sub-skills, peak lr, style mixture). Phases 1-2 teach every route (phase 2 drills the sums at a lower
# lr: after phase 1 alone the chains copied operands well but slipped in one addition of three).
# Phase 3 makes the direct habit dominant, so that the other routes become rare when sampling.
PHASES = [(3000, 0.25, 3e-3, MIXTURE), (3000, 0.5, 1e-3, MIXTURE), (1000, 0.5, 5e-4, HABIT)]
SLIPS = [-10, 10, -1, 1, -2, 2]  # a dropped/extra carry, a digit off by one or two


# -----------------------------------------------------------------------------
# problems and the five styles

def split_of(nums):
    """0 = pretraining, 1 = RL pool, 2 = held-out; by the operand multiset (order-free)."""
    h = hash_tuple(tuple(sorted(nums))) % 10
    return 0 if h < 8 else h - 7


def hash_tuple(t):
    h = 0
    for x in t:  # a fixed hash (Python's hash() of ints is fine, but be explicit and portable)
        h = (h * 1000003 + x) % 2_147_483_647
    return h


def sample_problem(rng, split):
    while True:
        nums = [rng.randint(10, 99) for _ in range(4)]
        if split_of(nums) == split:
            return nums


def prompt_of(nums):
    return "+".join(map(str, nums))


def render(style, nums, slip=None):
    """Text of one solution in `style`; slip=(step, delta) corrupts one intermediate step."""
    def s(step, value):  # the value written at `step`, possibly slipped (errors propagate)
        return value + slip[1] if slip is not None and slip[0] == step else value
    a, b, c, d = nums
    if style == "direct":
        total = s(0, a + b + c + d)
        return f"#### {total}", total
    if style in ("chain", "verbose"):
        x = s(0, a + b)
        y = s(1, x + c)
        total = s(2, y + d)
        if style == "chain":
            lines = [f"{a}+{b}={x}", f"{x}+{c}={y}", f"{y}+{d}={total}"]
        else:
            lines = [f"{a} add {b} is {x}", f"{x} add {c} is {y}", f"{y} add {d} is {total}"]
        return "\n".join(lines + [f"#### {total}"]), total
    if style == "pairs":
        x, y = s(0, a + b), s(1, c + d)
        total = s(2, x + y)
        return f"{a}+{b}={x}\n{c}+{d}={y}\n{x}+{y}={total}\n#### {total}", total
    if style == "column":
        ones = s(0, sum(n % 10 for n in nums))
        tens = s(1, sum(n // 10 for n in nums) + ones // 10)
        total = tens * 10 + ones % 10
        o, t = [str(n % 10) for n in nums], [str(n // 10) for n in nums]
        return (f"ones {'+'.join(o)}={ones}\ntens {'+'.join(t)}+{ones // 10}={tens}\n"
                f"#### {total}"), total
    raise ValueError(style)


def teacher_response(rng, style, nums):
    """A teacher's trajectory: correct, or (with its error rate) one slipped step."""
    slip = (rng.randrange(3 if style != "column" else 2), rng.choice(SLIPS)) \
        if rng.random() < TEACHERS[style] else None
    return render(style, nums, slip)[0]


# -----------------------------------------------------------------------------
# tokenizer and base policy

def build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for ch in CHARS:
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one char a token
    tk.decoder = decoders.Fuse()
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def base_config(vocab_size):
    from transformers import LlamaConfig
    # 4 layers x d=128: ~0.8M parameters; rope, SwiGLU, RMSNorm like the real thing
    return LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=384,
                       num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=160, bos_token_id=1, eos_token_id=2,
                       pad_token_id=0, tie_word_embeddings=True)


def skill_row(rng):
    """A small sum answered directly: 2 operands (a chain/pairs step) or 4-5 digits (a column)."""
    nums = [rng.randint(10, 299), rng.randint(10, 199)] if rng.random() < 0.8 else \
        [rng.randint(0, 9) for _ in range(rng.choice([4, 5]))]
    return prompt_of(nums), f"#### {sum(nums)}"


def pretrain_row(rng, styles, weights, skills):
    """(prompt, response) of one pretraining row: a sub-skill, or a 4-number problem in some style."""
    if rng.random() < skills:
        return skill_row(rng)
    nums = sample_problem(rng, 0)
    return prompt_of(nums), render(rng.choices(styles, weights)[0], nums)[0]


def pretrain(tok, steps, batch, lr, seed, skills, mixture, model=None, log_every=250):
    """Next-token pretraining on a style mixture (response tokens only); returns the model."""
    from transformers import LlamaForCausalLM
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if model is None:
        model = LlamaForCausalLM(base_config(len(tok)))
        print(f"base policy: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    styles, weights = list(mixture), list(mixture.values())
    t0 = time.time()
    for step in range(steps):
        rows = []
        for _ in range(batch):
            prompt, response = pretrain_row(rng, styles, weights, skills)
            p = tok(prompt + "\n")["input_ids"]
            r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            rows.append((p, r))
        T = max(len(p) + len(r) for p, r in rows)
        ids = torch.full((batch, T), tok.pad_token_id)
        labels = torch.full((batch, T), -100)
        for i, (p, r) in enumerate(rows):
            ids[i, :len(p) + len(r)] = torch.tensor(p + r)
            labels[i, len(p):len(p) + len(r)] = torch.tensor(r)
        frac = step / steps  # linear warmup over 2%, cosine decay to 10%
        cur = lr * min(1.0, step / (0.02 * steps)) * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(frac * 3.14159)).item()))
        for g in opt.param_groups:
            g["lr"] = cur
        loss = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"pretrain step {step:5d} | loss {loss.item():.4f} | lr {cur:.2e} | {time.time() - t0:.0f}s", flush=True)
    return model


def style_of(text):
    """Which of the five routes a response took ("other" if none)."""
    lines = text.split("\n")
    if text.startswith("####"):
        return "direct"
    if text.startswith("ones "):
        return "column"
    if " add " in lines[0]:
        return "verbose"
    if len(lines) > 1 and "+" in lines[0] and "+" in lines[1]:
        r1, r2 = lines[0].split("=")[-1], lines[1].split("=")[-1]
        if len(lines) > 2 and lines[2].startswith(f"{r1}+{r2}="):  # pairs adds the two partial sums
            return "pairs"
        return "chain" if lines[1].startswith(r1 + "+") else "pairs"
    return "other"


def routes(model_dir, problems_file, n=300):
    """Print, greedy and sampled at T=1, each route's share and accuracy on the first n problems."""
    import collections
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from data.formats import load_problems
    from model import load_policy, prompt_ids, sample
    from verify import verify
    model, tok = load_policy(model_dir)
    model.eval()
    probs = load_problems(problems_file)[:n]
    for temperature in (0.0, 1.0):
        out = sample(model, [prompt_ids(tok, p["prompt"]) for p in probs], 64, tok.eos_token_id,
                     tok.pad_token_id, temperature=temperature, seeds=list(range(len(probs))))
        count, correct = collections.Counter(), collections.Counter()
        for text, p in zip(tok.batch_decode(out["tokens"], skip_special_tokens=True), probs):
            style = style_of(text)
            count[style] += 1
            correct[style] += verify(text, p["answer"])
        print(f"{'greedy' if temperature == 0 else 'T=1':6s} acc {sum(correct.values()) / len(probs):.3f} | " +
              " ".join(f"{s} {count[s]}/{len(probs)} (acc {correct[s] / max(count[s], 1):.2f})"
                       for s in [*MIXTURE, "other"]))


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--resume", default="", help="a directory holding the weights after phase --start_phase - 1")
    ap.add_argument("--start_phase", type=int, default=1, help="first phase to run (with --resume)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--n_train", type=int, default=4000, help="RL prompt pool size")
    ap.add_argument("--n_heldout", type=int, default=300)
    ap.add_argument("--data_only", action="store_true", help="write JSONL and tokenizer, no base policy")
    ap.add_argument("--routes", default="", help="a checkpoint: print each route's share and accuracy, then exit")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if args.routes:
        return routes(args.routes, os.path.join(args.out, "heldout.jsonl"))
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)

    # problems (RL pool, held-out) and the teachers' trajectories for the RL pool
    def problems(split, n, tag):
        seen, rows = set(), []
        while len(rows) < n:
            nums = sample_problem(rng, split)
            if tuple(sorted(nums)) in seen:
                continue
            seen.add(tuple(sorted(nums)))
            rows.append({"id": f"{tag}{len(rows):05d}", "prompt": prompt_of(nums), "answer": str(sum(nums))})
        return rows
    train, heldout = problems(1, args.n_train, "rl"), problems(2, args.n_heldout, "ho")
    offline = [{"id": p["id"], "teacher": t, "response": teacher_response(rng, t, list(map(int, p["prompt"].split("+"))))}
               for p in train for t in TEACHERS]
    write_jsonl(os.path.join(args.out, "train.jsonl"), train)
    write_jsonl(os.path.join(args.out, "heldout.jsonl"), heldout)
    write_jsonl(os.path.join(args.out, "offline.jsonl"), offline)
    for t in TEACHERS:
        rows = [o for o in offline if o["teacher"] == t]
        ok = sum(o["response"].endswith(f"#### {p['answer']}") for o, p in zip(rows, train))
        print(f"teacher {t:8s}: {len(rows)} trajectories, accuracy {ok / len(rows):.3f}, "
              f"mean length {sum(len(o['response']) for o in rows) / len(rows):.1f} chars")

    tok = build_tokenizer()
    tok.save_pretrained(args.out)
    if args.data_only:
        return
    model = None
    if args.resume:  # weights of the earlier phases, from an earlier run of this same script
        from transformers import LlamaForCausalLM
        model = LlamaForCausalLM.from_pretrained(args.resume)
    for i, (steps, skills, lr, mixture) in enumerate(PHASES):
        if i + 1 < args.start_phase:
            continue
        print(f"phase {i + 1}: {steps} steps, skills {skills}, lr {lr}, mixture {mixture}")
        model = pretrain(tok, steps, args.batch, lr, args.seed + i, skills, mixture, model)
    model.save_pretrained(args.out, safe_serialization=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
