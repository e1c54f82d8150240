"""End-to-end tests of train.py: DDP equals one process, resume loses nothing (even after SIGKILL), bad
input, a bad out_dir, a non-finite loss and a failing rank all stop the run early and clearly.

Each builds a tiny toy world (random ~30k-parameter policy, a few dozen problems) in tmp_path.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "data"))
import make_toy  # noqa: E402
from conftest import run_forked  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A toy world directory: tokenizer, a tiny random Llama, 32 RL problems, 8 held-out, teachers."""
    from transformers import LlamaConfig, LlamaForCausalLM
    d = tmp_path_factory.mktemp("world")
    subprocess.run([sys.executable, os.path.join(ROOT, "data", "make_toy.py"), "--out", str(d), "--data_only",
                    "--n_train", "32", "--n_heldout", "8"], check=True, capture_output=True)
    tok = make_toy.build_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def run(world, out, *args, nproc=1, check=True, timeout=300, fault=None):
    """Run train.py on the tiny world (through tests/run_with_fault.py with the FAULT* variables of `fault`);
    returns the completed process. One process: conftest.run_forked (~7 s less per run); torchrun for
    nproc > 1. test_tiny_preset_smoke, the SIGKILL test and the torchrun tests start fresh interpreters."""
    base = [f"--model={world}", f"--train_file={world}/train.jsonl", f"--heldout_file={world}/heldout.jsonl",
            f"--offline_file={world}/offline.jsonl", f"--out_dir={out}", "--problems_per_step=4",
            "--group_size=4", "--max_new_tokens=48", "--eval_every=0", "--sample_every=1", "--lr=1e-2",
            "--save_every=0", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               **(fault or {}))
    script = os.path.join(ROOT, "tests", "run_with_fault.py") if fault else os.path.join(ROOT, "train.py")
    if nproc == 1:
        p = run_forked(script, base, env, timeout)
    else:  # a session of its own: on a timeout (a hang) the whole group goes, torchrun's workers included
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        p = subprocess.Popen(launcher + [script] + base, cwd=ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            raise
        p = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    if check:
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p


def metrics(out):
    return [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]


def params(out):
    from safetensors.torch import load_file
    return load_file(os.path.join(out, "ckpt", "model.safetensors"))


def same_metrics(a, b, skip=("t_", "tokens_per_s")):
    for ra, rb in zip(a, b):
        for k in ra:
            if not k.startswith(skip):
                va, vb = ra[k], rb[k]
                if isinstance(va, float):
                    assert va == pytest.approx(vb, rel=1e-4, abs=1e-6), (ra["step"], k, va, vb)
                else:
                    assert va == vb, (ra["step"], k, va, vb)


def test_two_rank_ddp_equals_one_process(world, tmp_path):
    """2 gloo ranks and 1 process on the same global batch log the same metrics and reach the same weights."""
    run(world, tmp_path / "one", "--max_steps=2")
    run(world, tmp_path / "two", "--max_steps=2", nproc=2)
    m1, m2 = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(m1) == len(m2) == 3
    same_metrics(m1, m2)
    p1, p2 = params(tmp_path / "one"), params(tmp_path / "two")
    start = params_of_world(world)
    moved = max((p1[k] - start[k]).abs().max().item() for k in p1)
    assert moved > 1e-4, "the update must change the weights for this test to mean anything"
    for k in p1:  # float sums in another order; Adam amplifies ~1e-9 gradient noise where g ~ 0
        torch.testing.assert_close(p1[k], p2[k], rtol=1e-3, atol=1e-5)


def params_of_world(world):
    from safetensors.torch import load_file
    return load_file(os.path.join(world, "model.safetensors"))


def test_resume_continues_exactly(world, tmp_path):
    """Stopping after 2 steps and resuming to 4 gives the weights and metrics of 4 straight steps."""
    run(world, tmp_path / "straight", "--max_steps=4")
    run(world, tmp_path / "split", "--max_steps=2")
    run(world, tmp_path / "split", "--max_steps=4", "--resume")
    a, b = metrics(tmp_path / "straight"), metrics(tmp_path / "split")
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    same_metrics(a, b)
    pa, pb = params(tmp_path / "straight"), params(tmp_path / "split")
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-5, atol=1e-7)


def test_checkpoint_is_a_hf_directory(world, tmp_path):
    """The checkpoint loads with from_pretrained and carries the resolved config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    run(world, tmp_path / "r", "--max_steps=1")
    ck = tmp_path / "r" / "ckpt"
    AutoModelForCausalLM.from_pretrained(ck)
    AutoTokenizer.from_pretrained(ck)
    state = torch.load(ck / "trainer_state.pt", weights_only=False)
    assert state["step"] == 1 and state["config"]["group_size"] == 4


@pytest.mark.parametrize("algo", ["grpo", "replace_only", "mix", "luffy", "sft", "entropy"])
def test_every_baseline_runs_through_the_loop(world, tmp_path, algo):
    """Each baseline of SPEC's table runs one step through the same loop and logs a finite grad norm."""
    run(world, tmp_path / algo, f"--algo={algo}", "--max_steps=1", "--sample_every=0")
    rec = metrics(tmp_path / algo)[-1]
    assert rec["step"] == 1 and rec["grad_norm"] == rec["grad_norm"]
    if algo in ("grpo", "replace_only", "sft", "entropy", "luffy"):
        assert rec["R_oger"] == 0.0
    if algo == "grpo":
        assert rec["n_offline"] == 0


def test_offline_embeddings_only_for_visited_problems(world, tmp_path):
    """The run embeds the teacher trajectories of exactly the problems its schedule visits, and every
    logged D equals D recomputed against embeddings of the whole offline pool (one batch)."""
    from encoder import embed, load_encoder
    from model import response_ids
    from reward import divergence
    p = run(world, tmp_path, "--max_steps=3")  # 3 steps x 4 problems of the 32
    shape, n = re.search(r"offline embeddings \((\d+), \d+\) of the (\d+) problems", p.stdout + p.stderr).groups()
    rows = [json.loads(l) for s in sorted(os.listdir(tmp_path / "samples")) for l in open(tmp_path / "samples" / s)]
    seen = {r["id"] for r in rows}
    enc, tok = load_encoder(str(world))
    pool = [json.loads(l) for l in open(os.path.join(world, "offline.jsonl"))]
    pool = [o for o, ids in zip(pool, response_ids(tok, [o["response"] for o in pool])) if len(ids) <= 48]
    assert int(n) == len(seen) == 12 and int(shape) == sum(o["id"] in seen for o in pool) < len(pool)
    E_all = embed(enc, tok, [o["response"] for o in pool], 512)
    online = [r for r in rows if not r["offline"]]
    E_on = embed(enc, tok, [r["response"] for r in online], 512)
    for r, e in zip(online, E_on):
        D = divergence(e[None] @ E_all[[o["id"] == r["id"] for o in pool]].T)
        assert r["D"] == pytest.approx(D.item(), abs=1e-5)


@pytest.mark.parametrize("algo", ["oger", "no_divergence"])
def test_offline_members_never_get_exploration_reward(world, tmp_path, algo):
    """In the dumped rollouts, offline members have R_oger == 0 and R_total == R_m, online ones R_total ==
    R_m + R_oger (no_divergence once showed R_oger = R_m on offline rows: D = 1 for every member)."""
    run(world, tmp_path / "r", "--max_steps=2", f"--algo={algo}")
    rows = [json.loads(l) for f in sorted(os.listdir(tmp_path / "r" / "samples"))
            for l in open(tmp_path / "r" / "samples" / f)]
    off = [r for r in rows if r["offline"]]
    assert off, "replacement must insert offline trajectories"
    for r in rows:
        assert r["R_total"] == pytest.approx(r["R_m"] + (0.0 if r["offline"] else r["R_oger"]))
        if r["offline"]:
            assert r["R_oger"] == 0.0 and r["replaced_slot"] is not None


def test_unknown_key_and_bad_type_fail_before_compute(world, tmp_path):
    """An unknown --key or a badly typed value exits with a message naming the key."""
    p = run(world, tmp_path / "x", "--learning_rate=1", check=False)
    assert p.returncode != 0 and "--learning_rate" in p.stderr
    p = run(world, tmp_path / "x", "--group_size=eight", check=False)
    assert p.returncode != 0 and "--group_size expects int" in p.stderr
    p = run(world, tmp_path / "x", "--problems_per_step=3", nproc=2, check=False)
    assert p.returncode != 0 and "problems_per_step=3" in (p.stderr + p.stdout)


def test_malformed_line_names_file_line_and_field(world, tmp_path):
    """A problem line without 'answer' stops the run with file:line and the field, before training."""
    bad = tmp_path / "bad.jsonl"
    lines = open(os.path.join(world, "train.jsonl")).read().splitlines()
    lines[2] = json.dumps({"id": "rl00002", "prompt": "1+2+3+4"})
    bad.write_text("\n".join(lines) + "\n")
    p = run(world, tmp_path / "x", f"--train_file={bad}", check=False)
    assert p.returncode != 0
    assert f"{bad}:3: field 'answer' is missing" in p.stderr
    assert not os.path.exists(tmp_path / "x" / "metrics.jsonl")


def test_fsdp_update_equals_ddp(world, tmp_path):
    """--fsdp=true (FSDP2 fully_shard, 2 gloo ranks) logs the metrics and reaches the weights of DDP."""
    run(world, tmp_path / "ddp", "--max_steps=2", nproc=2)
    run(world, tmp_path / "fsdp", "--max_steps=2", "--fsdp=true", nproc=2)
    same_metrics(metrics(tmp_path / "ddp"), metrics(tmp_path / "fsdp"))
    pd, pf = params(tmp_path / "ddp"), params(tmp_path / "fsdp")
    assert pd.keys() == pf.keys()
    for k in pd:
        torch.testing.assert_close(pd[k], pf[k], rtol=1e-3, atol=1e-5)


def test_tiny_preset_smoke(tmp_path):
    """The README's main command, shortened: the shipped toy world and base policy, 2 OGER steps, in a fresh
    interpreter; the same command in a fork of the preloaded server (run() and experiments/run.py start
    runs so) logs the same metrics and saves the same weights."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["--max_steps=2", "--eval_problems=32", f"--cache_dir={tmp_path / 'cache'}", "--problems_per_step=4"]
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args, f"--out_dir={tmp_path / 'a'}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "held-out accuracy: before" in p.stdout + p.stderr
    rec = metrics(tmp_path / "a")[-1]
    assert rec["step"] == 2 and rec["n_offline"] > 0 and 0.0 <= rec["D"] <= 1.0 and rec["eval"]["n"] == 32
    # only the 2 x 4 problems the run visits have their 3 teacher trajectories embedded, not all 4,000
    assert "offline embeddings (24, 128) of the 8 problems this run visits" in p.stdout + p.stderr

    f = run_forked(os.path.join(ROOT, "train.py"), [*args, f"--out_dir={tmp_path / 'b'}"], env, 300)
    assert f.returncode == 0, f.stderr[-3000:]
    untimed = lambda out: [{k: v for k, v in r.items() if not k.startswith(("t_", "tokens_per_s"))} for r in metrics(out)]
    assert untimed(tmp_path / "a") == untimed(tmp_path / "b")  # exactly: the same program
    a, b = params(tmp_path / "a"), params(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uneven(world, tmp_path_factory):
    """Train args for 2 problems, the first with one teacher trajectory, the second with none. With one
    row per micro-batch (micro_batch_tokens=1), sft on 2 ranks gives one rank 1 chunk and the other 0, and
    mix + entropy gives groups of 5 and 4 rows: the shorter rank runs padding chunks to stay in step."""
    d = tmp_path_factory.mktemp("uneven")
    train = open(os.path.join(world, "train.jsonl")).read().splitlines()[:2]
    (d / "train.jsonl").write_text("\n".join(train) + "\n")
    first = json.loads(train[0])["id"]
    (d / "offline.jsonl").write_text(next(l for l in open(os.path.join(world, "offline.jsonl"))
                                          if json.loads(l)["id"] == first))
    return [f"--train_file={d}/train.jsonl", f"--offline_file={d}/offline.jsonl", "--problems_per_step=2",
            "--micro_batch_tokens=1", "--max_steps=1"]


@pytest.mark.parametrize("args", [["--algo=sft"], ["--algo=entropy", "--replace_mode=mix", "--fsdp=true",
                                                   "--num_iterations=2"]], ids=["sft", "entropy_fsdp_iters"])
def test_padding_micro_batches_add_nothing(world, tmp_path, uneven, args):
    """A padding micro-batch adds no gradient and no token (sft, entropy bonus), and under FSDP with
    num_iterations=2 the logp_old pass runs it too (else collectives mismatch): 2 ranks equal 1 process."""
    run(world, tmp_path / "one", *uneven, *args)
    run(world, tmp_path / "two", *uneven, *args, nproc=2)
    same_metrics(metrics(tmp_path / "one"), metrics(tmp_path / "two"))
    p1, p2 = params(tmp_path / "one"), params(tmp_path / "two")
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k], rtol=1e-3, atol=1e-5)


# -----------------------------------------------------------------------------
# failure behaviour: stop early and clearly, never hang, never lose or corrupt a checkpoint

def test_resume_without_checkpoint_is_an_error(world, tmp_path):
    """--resume with no checkpoint names the directory and leaves out_dir alone; --resume_if_present starts afresh."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 7}\n')
    p = run(world, out, "--max_steps=1", "--resume", check=False)
    assert p.returncode != 0 and f"--resume: no checkpoint in {out / 'ckpt'}" in p.stderr
    assert (out / "metrics.jsonl").read_text() == '{"step": 7}\n'
    run(world, out, "--max_steps=1", "--resume_if_present=true")
    assert [r["step"] for r in metrics(out)] == [0, 1]


def test_sigkill_and_resume_is_bit_identical(world, tmp_path):
    """A run killed with SIGKILL mid-training, resumed with --resume_if_present, ends with the weights and
    metrics of a run that never stopped, bit for bit; also when killed between save_checkpoint's two
    renames (only ckpt.old/ left)."""
    args = ["--max_steps=6", "--save_every=1"]
    run(world, tmp_path / "straight", *args)
    out = tmp_path / "killed"
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), f"--model={world}", f"--train_file={world}/train.jsonl",
           f"--heldout_file={world}/heldout.jsonl", f"--offline_file={world}/offline.jsonl", f"--out_dir={out}",
           "--problems_per_step=4", "--group_size=4", "--max_new_tokens=48", "--eval_every=0", "--sample_every=1",
           "--lr=1e-2", *args]
    p = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    while not (os.path.exists(out / "metrics.jsonl") and len(metrics(out)) >= 4):  # step 3 logged: ckpt >= 2
        assert p.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    p.kill()  # SIGKILL: no handler, no flush, no cleanup
    p.wait()
    assert p.returncode == -9 and metrics(out)[-1]["step"] < 6
    if os.path.exists(out / "ckpt"):  # (the kill itself may have landed inside save_checkpoint)
        shutil.rmtree(out / "ckpt.old", ignore_errors=True)
        os.replace(out / "ckpt", out / "ckpt.old")  # the state a kill between the renames leaves
    run(world, out, *args, "--resume_if_present=true")
    assert not os.path.exists(out / "ckpt.old")
    a, b = metrics(tmp_path / "straight"), metrics(out)
    assert [r["step"] for r in b] == list(range(7))
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if not k.startswith(("t_", "tokens_per_s"))} == \
            {k: v for k, v in rb.items() if not k.startswith(("t_", "tokens_per_s"))}
    pa, pb = params(tmp_path / "straight"), params(out)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("how", ["lr", "injected"])
def test_non_finite_stops_before_the_update(world, tmp_path, how):
    """A non-finite grad norm (lr 1e30 makes step 2's gradients NaN) or loss (an inf injected into step 2's
    loss) stops the run naming the step and the metric, before the optimizer step: the step-1 checkpoint
    is the last, with finite weights, and no record of step 2 is logged."""
    if how == "lr":
        p = run(world, tmp_path / "r", "--max_steps=4", "--save_every=1", "--lr=1e30", check=False)
        assert "error: step 2: non-finite {'grad_norm': nan}; stopped before the optimizer step" in p.stderr
    else:
        p = run(world, tmp_path / "r", "--max_steps=4", "--save_every=1", check=False,
                fault=dict(FAULT="model:grpo_loss", FAULT_RANK="0", FAULT_CALL="2", FAULT_SCALE="inf"))
        assert re.search(r"error: step 2: non-finite \{'loss': -?inf, 'grad_norm': nan\}", p.stderr)
    assert p.returncode != 0
    assert torch.load(tmp_path / "r" / "ckpt" / "trainer_state.pt", weights_only=False)["step"] == 1
    assert all(torch.isfinite(v).all() for v in params(tmp_path / "r").values())
    assert [r["step"] for r in metrics(tmp_path / "r")] == [0, 1]


def test_a_failing_rank_ends_the_job_within_a_minute(world, tmp_path):
    """A rank that raises mid-run (rank 1, in its 3rd forward of an update) ends the whole 2-rank torchrun job
    within a minute, its error shown: rank 0 is not left waiting in a collective for gloo's 30 minutes."""
    p = run(world, tmp_path / "r", "--max_steps=50", nproc=2, check=False,
            fault=dict(FAULT="model:score", FAULT_RANK="1", FAULT_CALL="3"))
    ended = time.time()
    assert p.returncode != 0 and "RuntimeError: injected fault: model.score on rank 1" in p.stderr
    assert ended - float(re.search(r"fault injected at ([0-9.]+)", p.stderr).group(1)) < 60
    assert len(metrics(tmp_path / "r")) < 51


def test_unwritable_out_dir_fails_at_start(world, tmp_path):
    """An out_dir that takes no file stops the run at start with a message naming it, before any step."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root ignores file modes: sysfs takes no new file from anyone
        ro = "/sys/kernel"
        if not os.path.isdir(ro):
            pytest.skip("running as root without /sys: no unwritable directory to test with")
    p = run(world, os.path.join(ro, "run"), "--max_steps=1", check=False)
    assert p.returncode != 0 and f"error: out_dir={os.path.join(ro, 'run')!r} is not writable" in p.stderr
    assert "step 0 |" not in p.stdout


def test_check_out_dir_disk_space(tmp_path, monkeypatch):
    """check_out_dir exits when the disk has less room than one checkpoint, passes otherwise, and probes
    an existing ckpt/ too (the next save deletes its files)."""
    import shutil
    import config
    (tmp_path / "ckpt").mkdir()
    config.check_out_dir(str(tmp_path), ckpt_bytes=1024)
    assert os.path.isdir(tmp_path / "samples") and sorted(os.listdir(tmp_path / "ckpt")) == []
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * 2**30, 9 * 2**30, 2**30))
    with pytest.raises(SystemExit) as e:
        config.check_out_dir(str(tmp_path), ckpt_bytes=12 * 7 * 10**9)  # a 7B policy: 84 GB
    assert str(e.value) == (f"error: out_dir={str(tmp_path)!r} has 1.00 GiB free; a checkpoint needs about 78.23 GiB "
                            "(float32 weights and AdamW state, 12 bytes per parameter)")
