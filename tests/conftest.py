"""Shared fixtures: the repo root on sys.path, tiny random Llamas built in-process (never downloaded), and
run_forked (a script as a fork of experiments/run.py's preloaded server)."""
import os
import signal
import subprocess
import sys
import tempfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "experiments")]
from run import forked  # noqa: E402  (experiments/run.py)
# one intra-op thread: tiny models gain nothing from more, and on a busy machine OpenMP's spin-waiting
# makes a 1 ms forward take 250 ms
torch.set_num_threads(1)


def tiny_llama_config(vocab_size=40, **kw):
    """A 2-layer, 2-head, d=32 Llama config; pad 0, bos 1, eos 2 like the toy tokenizer."""
    from transformers import LlamaConfig
    args = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    args.update(kw)
    return LlamaConfig(**args)


@pytest.fixture(scope="session")
def tiny_lm():
    """A tiny random LlamaForCausalLM (vocab 40) in eval mode, float32, seeded."""
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config()).eval()
    with torch.no_grad():  # larger output weights: sharper, more varied next-token distributions
        model.lm_head.weight.mul_(30.0)
    return model


# a Qwen-style chat template: the prompt ends with "<|im_start|>assistant\n", EOS is <|im_end|>
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_chat_tokenizer():
    """A Qwen2 tokenizer with no merges: byte-level BPE over the 256 byte symbols, so one ASCII character
    is one token and a response of c ASCII characters is c + 1 tokens with EOS; Qwen's special tokens
    (pad <|endoftext|> 0, <|im_start|> 1, eos <|im_end|> 2) and a chat template."""
    from transformers import Qwen2Tokenizer
    from tokenizers import pre_tokenizers
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_qwen(path, seed=0, hidden_size=32, num_hidden_layers=2):
    """Save a tiny random Qwen2ForCausalLM and its chat-template tokenizer to `path` (a model directory
    that model.load_policy and encoder.load_encoder read); returns (model, tokenizer)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tok = build_chat_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=num_hidden_layers, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=4096, bos_token_id=None, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).eval()
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return model, tok


def run_forked(script, args, env, timeout):
    """`python script args` with cwd ROOT and environment env, as a fork of the server that imported torch
    and transformers once (experiments/run.py: forked; ~7 s less per run than a fresh interpreter); a
    subprocess.CompletedProcess with its exit code, stdout and stderr. On a timeout its process group is
    killed (helpers included) and subprocess.TimeoutExpired raised."""
    with tempfile.TemporaryDirectory() as d:
        out, err = os.path.join(d, "stdout"), os.path.join(d, "stderr")
        p = forked(script, args, env, out, err)
        p.join(timeout)
        if p.exitcode is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.join()
            raise subprocess.TimeoutExpired([script, *args], timeout)
        return subprocess.CompletedProcess([script, *args], p.exitcode, open(out).read(), open(err).read())
