"""data/build_pool.py: per-teacher table, dropped wrong and over-budget trajectories, the pool written, and its
embeddings cached where train.py looks; a malformed input line stops it before any compute.

Run: python -m pytest -q tests/test_pool.py
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, build_tiny_qwen, run_forked
from data.build_pool import main
from data.formats import load_offline, load_problems
from encoder import cache_key, cached_offline_embeddings, embed, load_encoder
from model import response_ids

BUDGET = 64  # --max_new_tokens; the tokenizer is one token per ASCII character, so a response is len + 1 tokens
PROBLEMS = [
    {"id": "g1", "question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=7\n#### 7"},
    {"id": "g2", "question": "What is 12 * 100?", "answer": "12*100=1,200\n#### 1,200"},
    {"id": "m1", "problem": "Simplify 2/4.", "solution": "Divide by 2: $\\boxed{\\frac{1}{2}}$."},
    {"id": "c1", "question": "Which is a prime?", "choices": ["4", "6", "7", "9"], "answer": 2},
    {"id": "c2", "question": "What melts ice?", "choices": {"text": ["heat", "cold"], "label": ["A", "B"]},
     "answerKey": "A"},
    {"id": "x1", "question": "No teacher wrote this one.", "answer": "#### 3"},
]
ALPHA = [  # {"id", "response"} rows: the teacher is the file's stem; all correct, one over budget
    {"id": "g1", "response": "3+4=7\n#### 7"},
    {"id": "m1", "response": "2/4 = \\boxed{\\dfrac{1}{2}}"},
    {"id": "c1", "response": "7 is prime. The answer is C."},
    {"id": "c2", "response": "Heat melts ice. " * 4 + "\\boxed{A}"},  # 73 characters: over budget
    {"id": "g2", "response": "The total is \\boxed{1200}."},
]
BETA = [  # rows that name their teacher; two of five correct
    {"id": "g1", "teacher": "beta", "response": "#### 8"},
    {"id": "c2", "teacher": "beta", "response": "\\boxed{B}"},
    {"id": "g1", "teacher": "beta", "response": "3 + 4 = 7, so \\boxed{7}"},
    {"id": "m1", "teacher": "beta", "response": "\\boxed{2}"},
    {"id": "c1", "teacher": "beta", "response": "The answer is (C)"},
]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny Qwen2 policy directory, the problems file and two teachers' trajectory files."""
    d = tmp_path_factory.mktemp("pool")
    build_tiny_qwen(d / "policy")
    return {"dir": d, "policy": str(d / "policy"), "problems": write_jsonl(d / "problems.jsonl", PROBLEMS),
            "alpha": write_jsonl(d / "alpha.jsonl", ALPHA), "beta": write_jsonl(d / "beta.jsonl", BETA)}


def args(world, out, *extra):
    return ["--problems", world["problems"], "--teachers", world["alpha"], world["beta"], "--policy", world["policy"],
            "--out", str(out), "--max_new_tokens", str(BUDGET), "--encoder_max_tokens", "16", *extra]


def table_rows(text):
    """{teacher: [samples, mean length, accuracy, over budget, kept]} from the printed markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[1].isdigit():
            rows[cells[0]] = [int(cells[1]), float(cells[2]), float(cells[3].rstrip("%")), int(cells[4]), int(cells[5])]
    return rows


def train_py_cache(pool, world, max_new_tokens, encoder_max_tokens):
    """(cache dir, key, texts) exactly as train.py's offline section builds them for this pool."""
    _, tok = load_encoder(world["policy"])
    offline = {}
    for o in load_offline(pool, known_ids={p["id"] for p in load_problems(world["problems"])}):
        ids = response_ids(tok, o["response"])
        if len(ids) > max_new_tokens:
            continue
        offline.setdefault(o["id"], []).append({"text": o["response"]})
    flat = [(pid, i) for pid in sorted(offline) for i in range(len(offline[pid]))]
    texts = [offline[pid][i]["text"] for pid, i in flat]
    return os.path.join(os.path.dirname(os.path.abspath(pool)), "cache"), \
        cache_key(pool, texts, world["policy"], encoder_max_tokens), texts


def test_build_pool(world, capsys):
    """The table reports samples, mean policy tokens (EOS included) and accuracy per teacher; wrong and
    over-budget trajectories are dropped and counted; the pool keeps problem order; the cache file is train.py's."""
    out = world["dir"] / "run1" / "pool.jsonl"
    res = main(args(world, out))
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    mean = lambda rs: sum(len(r["response"]) + 1 for r in rs) / len(rs)  # noqa: E731
    assert rows["alpha"] == [5, round(mean(ALPHA), 1), 100.0, 1, 4]
    assert rows["beta"] == [5, round(mean(BETA), 1), 40.0, 0, 2]
    assert rows["all"] == [10, round(mean(ALPHA + BETA), 1), 70.0, 1, 6]
    assert f"dropped 1 longer than max_new_tokens={BUDGET} and 3 wrong" in printed
    pool = [json.loads(l) for l in open(out)]
    assert [(o["id"], o["teacher"]) for o in pool] == [("g1", "alpha"), ("g1", "beta"), ("g2", "alpha"),
                                                         ("m1", "alpha"), ("c1", "alpha"), ("c1", "beta")]
    assert pool[1]["response"] == BETA[2]["response"] and set(pool[0]) == {"id", "teacher", "response"}
    # the embedding cache is the file train.py's key names, and it holds Enc of train.py's texts
    cache_dir, key, texts = train_py_cache(str(out), world, BUDGET, 16)
    assert res["cache"] == os.path.join(cache_dir, f"offline-{key}.safetensors") and os.path.exists(res["cache"])
    E, _, hit = cached_offline_embeddings(cache_dir, key, texts, None)
    assert hit and E.shape == (6, 32)
    encoder, enc_tok = load_encoder(world["policy"])
    torch.testing.assert_close(E, embed(encoder, enc_tok, texts, 16))
    # a second run finds the cache; another encoder_max_tokens is another key
    assert main(args(world, out))["hit"]
    assert not main(args(world, out, "--encoder_max_tokens", "8"))["hit"]


def test_cli_keep_wrong(world):
    """As a command from another directory: --keep_wrong keeps the 3 wrong ones (never the over-budget one)."""
    out = world["dir"] / "run2" / "pool.jsonl"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "data", "build_pool.py"), *args(world, out, "--keep_wrong")],
                       cwd=world["dir"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert table_rows(p.stdout)["all"][4] == 9 and "(kept 3 wrong: --keep_wrong)" in p.stdout
    assert len(open(out).readlines()) == 9 and "computed into" in p.stdout
    cache_dir, key, _ = train_py_cache(str(out), world, BUDGET, 16)
    assert os.path.exists(os.path.join(cache_dir, f"offline-{key}.safetensors"))


@pytest.mark.parametrize("line, field", [('{"id": "g1", "teacher": "gamma"}', "'response'"),
                                         ('{"id": "nope", "response": "#### 1"}', "'id'"),
                                         ('{"id": "g1", "response": ', "JSON")])
def test_malformed_line_stops_before_compute(world, line, field):
    """A bad line in a third teacher file exits naming file:line and field; nothing is written."""
    bad = write_jsonl(world["dir"] / "gamma.jsonl", [{"id": "g1", "response": "#### 7"}, line])
    out = world["dir"] / "bad" / "pool.jsonl"
    with pytest.raises(SystemExit) as e:
        a = args(world, out)
        main(a[:5] + [bad] + a[5:])
    assert f"{bad}:2:" in str(e.value.code) and field in str(e.value.code)
    assert not os.path.exists(out.parent)


def test_small_preset_trains_on_the_pool_and_evaluates(world, tmp_path):
    """The real-data path end to end: pool -> 2 steps of the `small` preset (bf16 autocast, gradient
    checkpointing, chat template, sizes shrunk for CPU) -> eval.py on the saved checkpoint."""
    pool = tmp_path / "pool.jsonl"
    main(args(world, pool))
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")  # both commands run as forks of the preloaded server
    p = run_forked(os.path.join(ROOT, "train.py"), ["--config", "small",
                   f"--model={world['policy']}", f"--train_file={world['problems']}",
                   f"--heldout_file={world['problems']}", f"--offline_file={pool}", f"--out_dir={run}",
                   "--problems_per_step=2", "--group_size=2", f"--max_new_tokens={BUDGET}",
                   "--encoder_max_tokens=16", "--max_steps=2", "--micro_batch_tokens=256", "--lr=1e-3"], env, 300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert "compute bfloat16" in out and "of the whole pool loaded from" in out  # autocast on; build_pool's cache
    recs = [json.loads(l) for l in open(run / "metrics.jsonl")]
    assert [r["step"] for r in recs] == [0, 1, 2] and all(r["grad_norm"] == r["grad_norm"] for r in recs[1:])
    res = tmp_path / "eval.json"
    p = run_forked(os.path.join(ROOT, "eval.py"), ["--model", str(run / "ckpt"), "--data", world["problems"],
                   "--max_new_tokens", "16", "--k", "2", "--temperature", "1.0", "--out", str(res)], env, 300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "| all |" in p.stdout.replace("  ", " ") or "all" in p.stdout
    assert json.loads(res.read_text())  # results written
