"""Shared fixtures: the repo root on sys.path, and tiny random Llamas built in-process (never downloaded)."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
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
