"""The training config: one flat typed dataclass, named presets, the ALGOS table, the parser, and the
start-up checks (derived sizes, a writable out_dir with room for a checkpoint).

    python train.py --config tiny|small|base --algo=grpo --key=value ...
Preset first, then the ALGOS entry of --algo, then --key=value overrides (each type-checked; an
unknown key is an error). Every SPEC baseline and ablation is a field of Config.
"""
import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass


@dataclass
class Config:
    # data and models
    model: str = "data/toy"                 # local HF causal-LM directory: the initial policy
    encoder: str = ""                       # local HF encoder directory; "" = frozen copy of the initial policy
    train_file: str = "data/toy/train.jsonl"     # RL prompt pool (problems JSONL)
    heldout_file: str = "data/toy/heldout.jsonl" # held-out problems for evaluation
    offline_file: str = "data/toy/offline.jsonl" # teacher trajectories {"id","teacher","response"}
    instruction: str = ""                   # appended to every question (e.g. a \boxed{} instruction)
    out_dir: str = "runs/tiny"              # metrics.jsonl, samples/, ckpt/ go here
    # algorithm: every SPEC baseline and ablation is one of these fields (ALGOS names common sets)
    algo: str = "oger"                      # shortcut that sets the fields below from ALGOS
    exploration_reward: bool = True         # add R_oger to online rollouts
    use_divergence: bool = True             # False: R_oger uses D_i = 1
    use_entropy: bool = True                # False: R_oger uses exp(alpha * H) = 1
    lam: float = 1.0                        # lambda, scale of R_oger
    alpha: float = -1.0                     # entropy modulation exp(alpha * H_last)
    replace_mode: str = "replace"           # replace | mix | fixed | none (sampler.py)
    num_replace: int = 1                    # offline trajectories per group
    teachers: str = ""                      # comma-separated teachers to keep; "" = all
    offline_loss: str = "onpolicy"          # onpolicy (clipped, ratio 1 at first) | luffy (p/(p+0.1))
    sft_only: bool = False                  # supervised fine-tuning on offline trajectories, no RL
    entropy_coef: float = 0.0               # beta_H: L - beta_H * token-mean entropy
    adv_std: bool = True                    # SPEC step 7 divides by the group std; False: A_i = R_i - mean
    # rollouts
    problems_per_step: int = 8              # B, problems in the global batch
    group_size: int = 8                     # N, rollouts per problem
    max_new_tokens: int = 64                # response budget; longer offline trajectories are dropped
    temperature: float = 1.0
    top_p: float = 1.0
    compile_decode: bool = False            # torch.compile the decode step (CUDA graphs on a GPU); same samples
    # optimisation
    max_steps: int = 100
    lr: float = 1e-4
    lr_schedule: str = "constant"           # constant | cosine (to 10%)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    clip_eps: float = 0.2                   # eps of the clipped ratio
    num_iterations: int = 1                 # optimizer steps per batch of rollouts
    micro_batch_tokens: int = 8192          # padded tokens per forward/backward chunk
    # encoder
    encoder_max_tokens: int = 512           # the encoder reads at most this many response tokens
    cache_dir: str = ""                     # offline-embedding cache; "" = a cache/ folder beside offline_file
    # evaluation, logging, checkpoints
    eval_every: int = 25                    # held-out greedy accuracy every this many steps (0 = only start/end)
    eval_problems: int = 300                # held-out problems used (0 = all)
    sample_every: int = 25                  # dump rollouts to out_dir/samples every this many steps
    save_every: int = 50                    # checkpoint every this many steps (and at the end)
    resume: bool = False                    # continue from out_dir/ckpt; an error when there is none
    resume_if_present: bool = False         # continue from out_dir/ckpt if there is one, else start (preemptible jobs)
    seed: int = 0
    dtype: str = "float32"                  # compute dtype: bfloat16 = autocast (weights, grads, Adam stay float32)
    grad_ckpt: bool = False                 # gradient checkpointing in the update (recompute activations)
    fsdp: bool = False                      # shard parameters, grads and Adam state with FSDP2 (fully_shard)
    threads: int = 0                        # CPU threads per rank (0 = cores / local ranks)


PRESETS = {
    "tiny": {},
    "small": dict(model="", train_file="data/gsm8k_math_train.jsonl", heldout_file="data/math500.jsonl",
                  offline_file="data/offline_pool.jsonl", out_dir="runs/small", problems_per_step=128,
                  group_size=8, max_new_tokens=3000, lr=1e-6, temperature=1.0, max_steps=500,
                  instruction=" Please reason step by step, and put your final answer within \\boxed{}.",
                  micro_batch_tokens=16384, eval_every=50, eval_problems=0, dtype="bfloat16", grad_ckpt=True),
}
# 7B: fp32 weights + grads + Adam are 16 bytes/param = 112 GB, more than one 80 GB GPU: shard them
PRESETS["base"] = dict(PRESETS["small"], out_dir="runs/base", micro_batch_tokens=8192, fsdp=True)

ALGOS = {  # SPEC's table of baselines and ablations, as field settings
    "oger": {},
    "grpo": dict(exploration_reward=False, replace_mode="none"),
    "replace_only": dict(exploration_reward=False),
    "no_divergence": dict(use_divergence=False),
    "no_entropy": dict(use_entropy=False),
    "mix": dict(replace_mode="mix"),
    "sft": dict(sft_only=True, exploration_reward=False, replace_mode="none"),
    "entropy": dict(exploration_reward=False, replace_mode="none", entropy_coef=0.01),
    "luffy": dict(exploration_reward=False, replace_mode="fixed", offline_loss="luffy"),
}  # single teacher: --teachers=NAME


def parse_config(argv):
    """Preset (--config NAME), then the ALGOS entry of --algo, then --key=value overrides (typed)."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    pairs = []
    args = list(argv)
    while args:
        a = args.pop(0)
        if not a.startswith("--"):
            sys.exit(f"error: unexpected argument {a!r} (use --key=value)")
        key, eq, val = a[2:].partition("=")
        if not eq:
            if key in fields and fields[key].type in (bool, "bool") and (not args or args[0].startswith("--")):
                val = "true"
            elif args:
                val = args.pop(0)
            else:
                sys.exit(f"error: --{key} needs a value")
        pairs.append((key, val))
    overrides = {}
    preset = "tiny"
    for key, val in pairs:
        if key == "config":
            if val not in PRESETS:
                sys.exit(f"error: unknown --config {val!r}; presets: {', '.join(PRESETS)}")
            preset = val
            continue
        if key not in fields:
            sys.exit(f"error: unknown config key --{key}; valid keys: {', '.join(fields)}")
        typ = {"bool": bool, "int": int, "float": float, "str": str}.get(fields[key].type, fields[key].type)
        try:
            if typ is bool:
                if val.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(val)
                overrides[key] = val.lower() in ("true", "1")
            else:
                overrides[key] = typ(val)
        except ValueError:
            sys.exit(f"error: --{key} expects {typ.__name__}, got {val!r}")
    algo = overrides.get("algo", PRESETS[preset].get("algo", "oger"))
    if algo not in ALGOS:
        sys.exit(f"error: unknown --algo {algo!r}; choices: {', '.join(ALGOS)}")
    return Config(**{**PRESETS[preset], **ALGOS[algo], **overrides}), preset


def check_config(cfg, world_size):
    """Every derived size is checked here; a failed check exits with the field at fault named."""
    try:
        assert cfg.model, "--model must name a local model directory"
        assert cfg.problems_per_step % world_size == 0, \
            f"problems_per_step={cfg.problems_per_step} must be divisible by the world size {world_size}"
        assert cfg.group_size >= 2, f"group_size={cfg.group_size} must be >= 2 (a group needs a std)"
        assert cfg.replace_mode in ("replace", "mix", "fixed", "none"), f"replace_mode={cfg.replace_mode!r}"
        assert 0 <= cfg.num_replace < cfg.group_size, f"num_replace={cfg.num_replace} must be in [0, group_size)"
        assert cfg.offline_loss in ("onpolicy", "luffy"), f"offline_loss={cfg.offline_loss!r}"
        assert cfg.lr_schedule in ("constant", "cosine"), f"lr_schedule={cfg.lr_schedule!r}"
        assert cfg.dtype in ("float32", "bfloat16"), f"dtype={cfg.dtype!r}"
        assert cfg.num_iterations >= 1, f"num_iterations={cfg.num_iterations} must be >= 1"
    except AssertionError as e:
        sys.exit(f"error: {e}")


def check_out_dir(out_dir, ckpt_bytes):
    """Exit at start, not after an hour of training, when out_dir (or its ckpt/) takes no file or its disk
    has less room than one checkpoint (written beside the previous one, then renamed over it)."""
    try:
        os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
        for d in (out_dir, os.path.join(out_dir, "ckpt")):
            if os.path.isdir(d):  # ckpt/ exists when resuming: the next save deletes its files
                probe = os.path.join(d, ".write_probe")
                with open(probe, "w") as f:
                    f.write("x" * 4096)
                    f.flush()
                    os.fsync(f.fileno())  # a full disk may only say so here
                os.remove(probe)
    except OSError as e:
        sys.exit(f"error: out_dir={out_dir!r} is not writable: {e}")
    free = shutil.disk_usage(out_dir).free
    if free < ckpt_bytes:
        sys.exit(f"error: out_dir={out_dir!r} has {free / 2**30:.2f} GiB free; a checkpoint needs about "
                 f"{ckpt_bytes / 2**30:.2f} GiB (float32 weights and AdamW state, 12 bytes per parameter)")
