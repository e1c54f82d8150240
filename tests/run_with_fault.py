"""Run train.py with one function made faulty on one rank (tests only): the stand-in for a bad row or an OOM.

    FAULT=model:score FAULT_RANK=1 FAULT_CALL=3 python tests/run_with_fault.py [train.py arguments]
On rank FAULT_RANK (0 without torchrun), call number FAULT_CALL of module.function raises RuntimeError;
with FAULT_SCALE=x it returns the real result times x instead (its first element if a tuple), e.g. an
inf loss. Every other call runs the real function. train.py knows nothing of this: the patch is in
place before train.py imports the function.
"""
import importlib
import os
import runpy
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
module_name, name = os.environ["FAULT"].split(":")
module = importlib.import_module(module_name)
real, calls = getattr(module, name), [0]


def faulty(*args, **kwargs):
    calls[0] += 1
    if int(os.environ.get("RANK", 0)) != int(os.environ["FAULT_RANK"]) or calls[0] != int(os.environ["FAULT_CALL"]):
        return real(*args, **kwargs)
    if "FAULT_SCALE" in os.environ:
        out, scale = real(*args, **kwargs), float(os.environ["FAULT_SCALE"])
        return (out[0] * scale, *out[1:]) if isinstance(out, tuple) else out * scale
    print(f"fault injected at {time.time()}", file=sys.stderr, flush=True)
    raise RuntimeError(f"injected fault: {module_name}.{name} on rank {os.environ.get('RANK', 0)}")


setattr(module, name, faulty)
sys.argv = [os.path.join(ROOT, "train.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
