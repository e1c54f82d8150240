"""eval.py: greedy and avg@k accuracy per benchmark on a saved checkpoint, JSON and markdown output,
determinism, and a 2-process torchrun run that gives the numbers of 1 process.

The checkpoint is a tiny Qwen2 turned into a bigram chain (attention and MLP outputs zeroed), so its
greedy answer to every prompt is known: "\\boxed{A}" then EOS, 10 tokens.
Run: python -m pytest -q tests/test_eval.py
"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import eval as evaluation
from conftest import ROOT, build_tiny_qwen
from data.formats import load_problems
from model import load_policy

ANSWER = "\\boxed{A}"
MARGIN = 9.0  # logits of the chain's next token over the rest: p = e^9 / (e^9 + 258) = 0.97 per token at T = 1
FILES = {  # 7 problems (uneven over 2 ranks); the chain's "A" is right for 3 of them
    "gsm8k.jsonl": [{"question": "3 + 4?", "answer": "#### 7"}, {"question": "5 + 7?", "answer": "#### 12"}],
    "mc.jsonl": [{"question": "First?", "choices": ["x", "y"], "answer": 0},
                 {"question": "Third?", "choices": ["x", "y", "z"], "answer": 2},
                 {"question": "Heat?", "choices": {"text": ["hot", "cold"], "label": ["A", "B"]}, "answerKey": "A"}],
    "own.jsonl": [{"id": "o1", "prompt": "Say A.", "answer": "A", "benchmark": "custom"},
                  {"id": "o2", "prompt": "Say B.", "answer": "B"}],
}


def program_bigram(model, tokenizer, text, margin):
    """Make the model write `text` then EOS after the prompt's final newline: with attention and MLP
    outputs zeroed the residual stream is the current token's embedding, so logits are a bigram table.
    Each chain token gets its own basis direction (RMSNorm scales it to sqrt(d)), so the intended next
    token scores exactly `margin` and every other token 0."""
    chain = tokenizer("\n" + text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    d = model.config.hidden_size
    assert len(set(chain[:-1])) == len(chain) - 1 <= d, "each source token needs its own direction"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for i, (a, b) in enumerate(zip(chain, chain[1:])):
            model.model.embed_tokens.weight[a] = torch.eye(d)[i]
            model.lm_head.weight[b] = margin / math.sqrt(d) * torch.eye(d)[i]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A saved bigram-chain checkpoint and the three problem files."""
    d = tmp_path_factory.mktemp("eval")
    model, tok = build_tiny_qwen(d / "ckpt")
    program_bigram(model, tok, ANSWER, MARGIN)
    model.save_pretrained(d / "ckpt")
    for name, rows in FILES.items():
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture(scope="module")
def policy(ckpt):
    model, tok = load_policy(str(ckpt / "ckpt"))
    return model.eval(), tok


def problems_of(ckpt):
    return [p for name in FILES for p in load_problems(str(ckpt / name))]


def test_greedy_per_benchmark(ckpt, policy):
    """Greedy: accuracy per benchmark tag and overall, 10 tokens per response, nothing truncated."""
    res = evaluation.evaluate(*policy, problems_of(ckpt), max_new_tokens=32, instruction=" Answer.")
    acc = {b: (r["acc"], r["n"]) for b, r in res["per_benchmark"].items()}
    assert acc == {"custom": (1.0, 1), "gsm8k": (0.0, 2), "mc": (2 / 3, 3), "own": (0.0, 1)}
    assert (res["acc"], res["n"], res["mean_len"], res["trunc"]) == (3 / 7, 7, 10.0, 0.0)


def test_truncation(ckpt, policy):
    """A budget shorter than the answer: every response truncated at max_new_tokens, none correct."""
    res = evaluation.evaluate(*policy, problems_of(ckpt), max_new_tokens=5)
    assert (res["acc"], res["mean_len"], res["trunc"]) == (0.0, 5.0, 1.0)


def test_avg_at_k_deterministic(ckpt, policy):
    """avg@k is the mean over n * k sampled responses; it is a function of the seed, not of the batch size."""
    probs = problems_of(ckpt)
    a = evaluation.evaluate(*policy, probs, 32, temperature=1.0, k=4, seed=3)
    b = evaluation.evaluate(*policy, probs, 32, temperature=1.0, k=4, seed=3, batch_size=5)
    c = evaluation.evaluate(*policy, probs, 32, temperature=1.0, k=4, seed=4)
    assert a == b and a != c and a["n"] == 7
    assert 0 < a["per_benchmark"]["mc"]["acc"] < 2 / 3  # some samples leave the chain
    assert a["per_benchmark"]["mc"]["acc"] * 12 == round(a["per_benchmark"]["mc"]["acc"] * 12)  # 3 problems x 4


def test_sync_runs_as_many_batches_as_the_largest_shard(ckpt, policy, monkeypatch):
    """With sync (FSDP), rank 1 of 2 (3 problems) still runs 4 batches of 1, like rank 0 (4 problems)."""
    calls = []
    real = evaluation.sample
    monkeypatch.setattr(evaluation, "sample", lambda *a, **kw: calls.append(len(a[1])) or real(*a, **kw))
    monkeypatch.setattr(evaluation.dist, "all_reduce", lambda t: None)
    res = evaluation.evaluate(*policy, problems_of(ckpt), 16, batch_size=1, rank=1, world_size=2,
                              sync=lambda done: bool(done.all()))
    assert calls == [1, 1, 1, 1] and res["n"] == 3


def test_cli_json_markdown_and_two_ranks(ckpt, capsys):
    """The command prints one markdown row per benchmark plus "all" and writes JSON; 2 gloo ranks under
    torchrun give exactly the numbers of 1 process."""
    data = [str(ckpt / name) for name in FILES]
    argv = ["--model", str(ckpt / "ckpt"), "--data", *data, "--max_new_tokens", "32", "--k", "4",
            "--temperature", "1.0", "--top_p", "0.95", "--seed", "1", "--batch_size", "4"]
    one = evaluation.main(argv + ["--out", str(ckpt / "one.json")])
    printed = capsys.readouterr().out
    assert "| benchmark | problems | greedy acc | len | trunc | avg@4 acc | len | trunc |" in printed
    assert "| mc | 3 | 66.7% | 10.0 | 0.0% |" in printed and "| all | 7 | 42.9% | 10.0 | 0.0% |" in printed
    saved = json.load(open(ckpt / "one.json"))
    assert saved["greedy"] == one["greedy"] and saved["sampled"] == one["sampled"] and saved["k"] == 4
    assert set(saved["sampled"]["per_benchmark"]) == {"custom", "gsm8k", "mc", "own"}

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        os.path.join(ROOT, "eval.py"), *argv, "--out", str(ckpt / "two.json")],
                       cwd=ckpt, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    two = json.load(open(ckpt / "two.json"))
    assert two["world_size"] == 2 and two["greedy"] == saved["greedy"] and two["sampled"] == saved["sampled"]
    assert p.stdout.count("| all |") == 1  # only rank 0 prints


def test_mmlu_and_arc_are_separate_benchmarks(ckpt, capsys):
    """MMLU and ARC rows are both format "mc", but the command reports each --data file as its own benchmark
    (the paper reports each); a row's own "benchmark" field still wins."""
    (ckpt / "mmlu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in FILES["mc.jsonl"][:2]))
    (ckpt / "arc.jsonl").write_text(json.dumps(FILES["mc.jsonl"][2]) + "\n"
                                    + json.dumps(dict(FILES["mc.jsonl"][2], benchmark="arc_easy")) + "\n")
    res = evaluation.main(["--model", str(ckpt / "ckpt"), "--data", str(ckpt / "mmlu.jsonl"),
                           str(ckpt / "arc.jsonl"), "--max_new_tokens", "32"])
    acc = {b: (r["acc"], r["n"]) for b, r in res["greedy"]["per_benchmark"].items()}
    assert acc == {"mmlu": (0.5, 2), "arc": (1.0, 1), "arc_easy": (1.0, 1)}
    printed = capsys.readouterr().out
    assert "| mmlu | 2 | 50.0% |" in printed and "| arc | 1 | 100.0% |" in printed
