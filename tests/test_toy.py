"""The toy world: every route computes the sum, teachers err at their rates by a propagated slip,
the split keeps evaluated problems out of pretraining, and the shipped base policy has the premise
RL starts from: the echo chamber (greedy takes the habit, sampling rarely leaves it) and an untaught
route that it executes better than any teacher's route."""
import os
import random
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "data"))
import make_toy  # noqa: E402
from data.formats import load_problems  # noqa: E402
from model import load_policy, prompt_ids, sample  # noqa: E402
from verify import verify  # noqa: E402

STYLES = list(make_toy.ROUTES)  # the five routes


def test_every_route_writes_the_sum_and_is_recognised():
    rng = random.Random(0)
    for _ in range(200):
        nums = [rng.randint(10, 99) for _ in range(4)]
        for style in STYLES:
            text, total = make_toy.render(style, nums)
            assert total == sum(nums) and text.endswith(f"#### {sum(nums)}")
            assert make_toy.style_of(text) == style, (style, text)


def test_worked_example_17_25_38_46():
    x = [17, 25, 38, 46]
    assert make_toy.render("direct", x)[0] == "126=17+25+38+46\n#### 126"  # the habit: the total first
    assert make_toy.render("direct", x, direct="worked")[0] == "17+25+38+46=126\n#### 126"  # phases 1-2
    assert make_toy.style_of("17+25+38+46=126\n#### 126") == "direct"
    assert make_toy.render("chain", x)[0] == "17+25=42\n42+38=80\n80+46=126\n#### 126"
    assert make_toy.render("pairs", x)[0] == "17+46=63\n25+38=63\n63+63=126\n#### 126"
    assert make_toy.render("column", x)[0] == "ones 7+5=12+8=20+6=26\ntens 2+1=3+2=5+3=8+4=12\n#### 126"
    assert make_toy.render("verbose", x)[0] == "17 add 25 is 42\n42 add 38 is 80\n80 add 46 is 126\n#### 126"


def test_openings_commit_to_the_route_without_computing():
    """Each route's text starts with its opening, which holds only operands copied from the prompt."""
    rng = random.Random(3)
    for _ in range(200):
        nums = [rng.randint(10, 99) for _ in range(4)]
        for style in STYLES:
            head = make_toy.opening(style, nums)
            assert make_toy.render(style, nums)[0].startswith(head)
            assert not any(str(v) in head for v in (sum(nums), nums[0] + nums[1], nums[0] + nums[3]) if v > 99)


def test_no_route_exceeds_the_response_budget():
    """The longest text of every route (largest operands) fits in the tiny preset's 64 tokens with EOS."""
    for style in STYLES:
        assert len(make_toy.render(style, [99, 99, 99, 99])[0]) + 1 <= 64


def test_slip_propagates_to_the_answer():
    text, total = make_toy.render("chain", [17, 25, 38, 46], slip=(0, 10))  # 17+25 written as 52
    assert text == "17+25=52\n52+38=90\n90+46=136\n#### 136" and total == 136
    text, total = make_toy.render("pairs", [17, 25, 38, 46], slip=(1, -1))  # 25+38 written as 62
    assert text == "17+46=63\n25+38=62\n63+62=125\n#### 125" and total == 125


def test_teacher_error_rates():
    rng = random.Random(1)
    n = 4000
    for style, err in make_toy.TEACHERS.items():
        wrong = 0
        for _ in range(n):
            nums = make_toy.sample_problem(rng, 1)
            wrong += not make_toy.teacher_response(rng, style, nums).endswith(f"#### {sum(nums)}")
        assert abs(wrong / n - err) < 4 * (err * (1 - err) / n) ** 0.5 + 0.003, (style, wrong / n)


def test_split_is_by_operand_multiset():
    rng = random.Random(2)
    for _ in range(500):
        nums = [rng.randint(10, 99) for _ in range(4)]
        perm = nums[:]
        rng.shuffle(perm)
        assert make_toy.split_of(nums) == make_toy.split_of(perm)
    for p in load_problems(os.path.join(ROOT, "data", "toy", "heldout.jsonl"))[:100]:
        assert make_toy.split_of(list(map(int, p["prompt"].split("+")))) == 2


def test_shipped_base_has_the_premise():
    """On 64 held-out problems: greedy takes the direct habit on >= 90%; at T=1 the untaught column route
    is rare (<= 5% of 128 samples); made to start it, the base gets it right >= 15 points more often than
    any teacher's route (the full measure: python data/make_toy.py --routes data/toy --json)."""
    world = os.path.join(ROOT, "data", "toy")
    model, tok = load_policy(world)
    model.eval()
    probs = load_problems(os.path.join(world, "heldout.jsonl"))[:64]
    nums = [list(map(int, p["prompt"].split("+"))) for p in probs]
    prompts = [prompt_ids(tok, p["prompt"]) for p in probs]

    def texts(ps, temperature, heads=None):
        out = sample(model, ps, 64, tok.eos_token_id, tok.pad_token_id, temperature=temperature,
                     seeds=list(range(len(ps))))["tokens"]
        return [(h or "") + t for h, t in zip(heads or [None] * len(ps), tok.batch_decode(out, skip_special_tokens=True))]

    greedy = texts(prompts, 0.0)
    assert sum(make_toy.style_of(t) == "direct" for t in greedy) >= 0.9 * len(greedy)
    t1 = [make_toy.style_of(t) for t in texts(prompts * 2, 1.0)]
    assert t1.count("column") <= 0.05 * len(t1)
    acc = {}
    for style in STYLES:
        heads = [make_toy.opening(style, x) for x in nums]
        forced = texts([p + tok(h, add_special_tokens=False)["input_ids"] for p, h in zip(prompts, heads)], 1.0, heads)
        acc[style] = sum(verify(t, p["answer"]) for t, p in zip(forced, probs)) / len(probs)
    best_teacher = max(acc[s] for s in STYLES if make_toy.ROUTES[s])
    assert acc["column"] >= best_teacher + 0.15, acc
