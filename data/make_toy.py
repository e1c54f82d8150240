"""The toy world: 4-number addition where the solution *strategy* matters, plus its base policy.

A ~1M-parameter character-level Llama cannot reliably add four 2-digit numbers in one go, nor add
totals past 100, but it adds a digit to a small running total almost without fail. Five routes:

    direct   (the base's habit)           126=17+25+38+46\n#### 126
    chain    (teacher "chain",   99%)     17+25=42\n42+38=80\n80+46=126\n#### 126
    pairs    (teacher "pairs",   95%)     17+46=63\n25+38=63\n63+63=126\n#### 126
    verbose  (teacher "verbose", 82%)     17 add 25 is 42\n42 add 38 is 80\n80 add 46 is 126\n#### 126
    column   (no teacher writes it)       ones 7+5=12+8=20+6=26\ntens 2+1=3+2=5+3=8+4=12\n#### 126

The teachers' routes carry totals past 100; the column route keeps every addition to a running
total plus one digit, which the base executes best: something better than the teachers exists to be
found. Teachers err by slipping one intermediate step, and the error propagates. The base learns
every route (phases 1-2: 60% direct, 10% each other style, plus drilled small sums), then learns the
habit's form of direct, the total written first, which it rarely gets right (phase 3), and a fourth
phase makes that habit dominant (99%): greedy decoding takes it, and sampling at T=1 rarely leaves it.
Problems are split between pretraining, the RL pool and the held-out set by their operand
multiset, so no held-out or RL problem was seen in pretraining.

Regenerate everything in data/toy/ (deterministic, four pretraining phases, about 75 minutes on one thread):
    python data/make_toy.py
Which route a checkpoint takes, how accurately the base executes each route when made to take it,
and each route's divergence D from the teachers (the last line is JSON with --json):
    python data/make_toy.py --routes runs/tiny/ckpt --json
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
ROUTES = {"direct": False, "chain": True, "pairs": True, "verbose": True, "column": False}  # route -> a teacher writes it
MIXTURE = {"direct": 0.60, "chain": 0.10, "pairs": 0.10, "verbose": 0.10, "column": 0.10}
HABIT = {"direct": 0.99, "chain": 0.0025, "pairs": 0.0025, "verbose": 0.0025, "column": 0.0025}
REHEARSE = {"direct": 0.60, "chain": 0.05, "pairs": 0.05, "verbose": 0.05, "column": 0.25}
# four phases, each with a fresh AdamW: (steps, share of small direct sums that teach every route's
# sub-skills, peak lr, style mixture, how `direct` is written). Phases 1-2 teach every route (phase 2
# drills the sums at a lower lr: after phase 1 alone the chains copied operands well but slipped in one
# addition of three), with direct worked out ("17+25+38+46=126": the operands written first are a
# scratchpad, and the base got 97% of held-out problems right that way). Phase 3 rewrites direct as
# the habit has it, the total first ("126=17+25+38+46"), with no scratchpad before the total, while
# rehearsing the other routes, the untaught column most (the base's own strength; without rehearsal
# the switch of format erased the teacher routes: chain 2% when forced). Phase 4 makes the habit
# dominant, so that the other routes become rare when sampling.
PHASES = [(3000, 0.25, 3e-3, MIXTURE, "worked"), (3000, 0.5, 1e-3, MIXTURE, "worked"),
          (1000, 0.5, 1e-3, REHEARSE, "answer_first"), (300, 0.5, 3e-4, HABIT, "answer_first")]
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


def render(style, nums, slip=None, direct="answer_first"):
    """Text of one solution in `style`, and its answer; slip=(step, delta) corrupts one intermediate
    step, and the error propagates to the answer. `direct` is the direct route's form: the habit
    "answer_first", or "worked" (pretraining phases 1-2 only)."""
    def s(step, value):  # the value written at `step`, possibly slipped
        return value + slip[1] if slip is not None and slip[0] == step else value
    a, b, c, d = nums
    if style == "direct":
        total = s(0, a + b + c + d)
        eq = f"{a}+{b}+{c}+{d}={total}" if direct == "worked" else f"{total}={a}+{b}+{c}+{d}"
        return f"{eq}\n#### {total}", total
    if style in ("chain", "verbose"):
        x = s(0, a + b)
        y = s(1, x + c)
        total = s(2, y + d)
        if style == "chain":
            lines = [f"{a}+{b}={x}", f"{x}+{c}={y}", f"{y}+{d}={total}"]
        else:
            lines = [f"{a} add {b} is {x}", f"{x} add {c} is {y}", f"{y} add {d} is {total}"]
        return "\n".join(lines + [f"#### {total}"]), total
    if style == "pairs":  # the outer pair, the inner pair, then their sum
        x, y = s(0, a + d), s(1, b + c)
        total = s(2, x + y)
        return f"{a}+{d}={x}\n{b}+{c}={y}\n{x}+{y}={total}\n#### {total}", total
    if style == "column":  # running sums, ones then tens (starting from the carry)
        def running(terms, first_step):
            parts, acc = [str(terms[0])], terms[0]
            for k, x in enumerate(terms[1:]):
                acc = s(first_step + k, acc + x)
                parts.append(f"+{x}={acc}")
            return "".join(parts), acc
        ones_text, ones = running([n % 10 for n in nums], 0)
        tens_text, tens = running([ones // 10] + [n // 10 for n in nums], 3)
        total = tens * 10 + ones % 10
        return f"ones {ones_text}\ntens {tens_text}\n#### {total}", total
    raise ValueError(style)


def opening(style, nums):
    """The first characters of a route's solution: they commit to the route and compute nothing. The
    direct habit writes its total first, so its opening is empty (its forced accuracy is plain T=1's)."""
    a, b, c, d = nums
    return {"direct": "", "chain": f"{a}+{b}=", "pairs": f"{a}+{d}=",
            "verbose": f"{a} add ", "column": "ones "}[style]


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
    """A small sum answered directly, the drilled sub-skills: two 2-digit numbers (a first step of
    chain, pairs or verbose) or a running total plus one digit (a step of column). Totals past 100
    plus another number (later teacher steps) are never drilled."""
    nums = [rng.randint(10, 99), rng.randint(10, 99)] if rng.random() < 0.5 else \
        [rng.randint(0, 45), rng.randint(0, 9)]
    return prompt_of(nums), f"#### {sum(nums)}"


def pretrain_row(rng, styles, weights, skills, direct):
    """(prompt, response) of one pretraining row: a sub-skill, or a 4-number problem in some style."""
    if rng.random() < skills:
        return skill_row(rng)
    nums = sample_problem(rng, 0)
    return prompt_of(nums), render(rng.choices(styles, weights)[0], nums, direct=direct)[0]


def pretrain(tok, steps, batch, lr, seed, skills, mixture, direct, model=None, log_every=250):
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
            prompt, response = pretrain_row(rng, styles, weights, skills, direct)
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
    if text.startswith("ones "):
        return "column"
    if " add " in lines[0]:
        return "verbose"
    if lines[0].count("+") == 3:
        return "direct"
    if len(lines) > 1 and lines[0].count("+") == 1 and "=" in lines[0]:
        r1, r2 = lines[0].split("=")[-1], lines[1].split("=")[-1]
        if len(lines) > 2 and lines[2].startswith(f"{r1}+{r2}="):  # pairs adds its two partial sums
            return "pairs"
        return "chain" if lines[1].startswith(r1 + "+") else "pairs"
    return "other"


def routes(model_dir, world_dir, n=300, k=4, as_json=False, shares_only=False, log=None):
    """Measure, on the first n held-out problems, each route's share of greedy responses and of k
    samples per problem at T=1 (with accuracy among those samples), its accuracy at T=1 when the
    response is made to start with the route's opening (`acc_forced`: how well the policy executes the
    route, measured on all n problems however rarely it picks it), and its mean divergence D from the
    teachers under the frozen initial policy of `world_dir` (the default encoder), over the first 100
    RL problems (shares_only: the shares and acc_t1 alone). Prints one line per measure (to log, default
    stdout); with as_json, the last line is one JSON object. Returns {route: measures}."""
    import collections
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from data.formats import load_offline, load_problems
    from encoder import cosine_matrix, embed, load_encoder
    from model import load_policy, prompt_ids, sample
    from reward import divergence
    from verify import verify
    model, tok = load_policy(model_dir)
    model.eval()
    probs = load_problems(os.path.join(world_dir, "heldout.jsonl"))[:n]
    nums = [list(map(int, p["prompt"].split("+"))) for p in probs]
    names = [*ROUTES, "other"]
    res = {r: {"teacher": ROUTES.get(r, False)} for r in names}

    def run(prompts, temperature, seeds, prefixes=None):
        out = sample(model, prompts, 64, tok.eos_token_id, tok.pad_token_id, temperature=temperature, seeds=seeds)
        texts = tok.batch_decode(out["tokens"], skip_special_tokens=True)
        return [a + t for a, t in zip(prefixes, texts)] if prefixes else texts

    base = [prompt_ids(tok, p["prompt"]) for p in probs]
    for name, temperature, reps in (("greedy", 0.0, 1), ("t1", 1.0, k)):
        texts = run([b for b in base for _ in range(reps)], temperature, list(range(len(base) * reps)))
        count, correct = collections.Counter(), collections.Counter()
        for j, text in enumerate(texts):
            route = style_of(text)
            count[route] += 1
            correct[route] += verify(text, probs[j // reps]["answer"])
        for r in names:
            res[r][f"share_{name}"] = count[r] / len(texts)
            if name == "t1":
                res[r]["acc_t1"], res[r]["n_t1"] = (correct[r] / count[r] if count[r] else None), count[r]
        print(f"{name:6s} acc {sum(correct.values()) / len(texts):.3f} | " +
              " ".join(f"{r} {count[r]}/{len(texts)} (acc {correct[r] / max(count[r], 1):.2f})" for r in names), file=log)
    if not shares_only:
        for r in ROUTES:  # the route's opening is given; the policy writes the rest at T=1
            heads = [opening(r, x) for x in nums]
            texts = run([b + tok(h, add_special_tokens=False)["input_ids"] for b, h in zip(base, heads)], 1.0,
                        list(range(len(base))), heads)
            res[r]["acc_forced"] = sum(verify(t, p["answer"]) for t, p in zip(texts, probs)) / len(probs)
        print("forced T=1 acc | " + " ".join(f"{r} {res[r]['acc_forced']:.3f}" for r in ROUTES), file=log)
        # D of each route's correct text against the teachers' trajectories of the same RL problem
        train = load_problems(os.path.join(world_dir, "train.jsonl"))[:100]
        offline = collections.defaultdict(list)
        for o in load_offline(os.path.join(world_dir, "offline.jsonl")):
            offline[o["id"]].append(o["response"])
        enc, enc_tok = load_encoder(world_dir if os.path.exists(os.path.join(world_dir, "config.json")) else model_dir)
        E_off = [embed(enc, enc_tok, offline[p["id"]], 512) for p in train]       # (M, d) each
        for r in ROUTES:
            E = embed(enc, enc_tok, [render(r, list(map(int, p["prompt"].split("+"))))[0] for p in train], 512)
            res[r]["D"] = sum(divergence(cosine_matrix(E[i:i + 1], E_off[i])).item() for i in range(len(train))) / len(train)
        print("mean D (frozen base encoder) | " + " ".join(f"{r} {res[r]['D']:.3f}" for r in ROUTES), file=log)
    if as_json:
        print(json.dumps({"routes": res}), file=log)
    return res


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
    ap.add_argument("--json", action="store_true", help="with --routes: the last line is one JSON object")
    ap.add_argument("--samples", type=int, default=4, help="with --routes: T=1 samples per held-out problem")
    ap.add_argument("--shares_only", action="store_true", help="with --routes: route shares only (no forced runs, no D)")
    ap.add_argument("--save_phases", action="store_true", help="also save the weights after each phase to OUT/phaseN")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads; the weights are bitwise reproducible for a given count")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.routes:
        return routes(args.routes, args.out, k=args.samples, as_json=args.json, shares_only=args.shares_only)
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
    for i, (steps, skills, lr, mixture, direct) in enumerate(PHASES):
        if i + 1 < args.start_phase:
            continue
        print(f"phase {i + 1}: {steps} steps, skills {skills}, lr {lr}, mixture {mixture}, direct {direct}")
        model = pretrain(tok, steps, args.batch, lr, args.seed + i, skills, mixture, direct, model)
        if args.save_phases:
            model.save_pretrained(os.path.join(args.out, f"phase{i + 1}"), safe_serialization=True)
            tok.save_pretrained(os.path.join(args.out, f"phase{i + 1}"))
    model.save_pretrained(args.out, safe_serialization=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
