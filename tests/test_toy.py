"""The toy world: every route computes the sum, teachers err at their rates by a propagated slip,
the split keeps evaluated problems out of pretraining, and the shipped base policy is in the echo
chamber RL starts from (greedy always direct, sampling rarely leaves it)."""
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

STYLES = list(make_toy.MIXTURE)  # the five routes


def test_every_route_writes_the_sum_and_is_recognised():
    rng = random.Random(0)
    for _ in range(200):
        nums = [rng.randint(10, 99) for _ in range(4)]
        for style in STYLES:
            text, total = make_toy.render(style, nums)
            assert total == sum(nums) and text.endswith(f"#### {sum(nums)}")
            assert make_toy.style_of(text) == style, (style, text)


def test_worked_example_17_25_38_46():
    assert make_toy.render("chain", [17, 25, 38, 46])[0] == "17+25=42\n42+38=80\n80+46=126\n#### 126"
    assert make_toy.render("pairs", [17, 25, 38, 46])[0] == "17+25=42\n38+46=84\n42+84=126\n#### 126"
    assert make_toy.render("column", [17, 25, 38, 46])[0] == "ones 7+5+8+6=26\ntens 1+2+3+4+2=12\n#### 126"


def test_slip_propagates_to_the_answer():
    text, total = make_toy.render("chain", [17, 25, 38, 46], slip=(0, 10))  # 17+25 written as 52
    assert text == "17+25=52\n52+38=90\n90+46=136\n#### 136" and total == 136


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


def test_shipped_base_is_in_the_echo_chamber():
    """Greedy takes the direct route on every problem; at T=1 another route is rare (2 of 300 when
    measured on all held-out problems); the base is neither useless nor already good."""
    torch.manual_seed(0)
    model, tok = load_policy(os.path.join(ROOT, "data", "toy"))
    model.eval()
    probs = load_problems(os.path.join(ROOT, "data", "toy", "heldout.jsonl"))[:64]
    prompts = [prompt_ids(tok, p["prompt"]) for p in probs]
    greedy = tok.batch_decode(sample(model, prompts, 64, tok.eos_token_id, tok.pad_token_id,
                                     temperature=0.0)["tokens"], skip_special_tokens=True)
    assert all(make_toy.style_of(t) == "direct" for t in greedy)
    acc = sum(verify(t, p["answer"]) for t, p in zip(greedy, probs)) / len(probs)
    assert 0.3 < acc < 0.8, acc
    out = sample(model, prompts * 2, 64, tok.eos_token_id, tok.pad_token_id, temperature=1.0,
                 seeds=list(range(2 * len(probs))))
    styles = [make_toy.style_of(t) for t in tok.batch_decode(out["tokens"], skip_special_tokens=True)]
    assert sum(s != "direct" for s in styles) <= 0.05 * len(styles)
