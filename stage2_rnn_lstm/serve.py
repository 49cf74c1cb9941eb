"""Stage 2 in the web showcase (``python scripts/demo.py``): an LSTM language model continues a prompt, and the
page receives each character (or word) as soon as it is sampled.

The registry in ``scripts/showcase.py`` finds this file, loads the first checkpoint that exists (a full run's
``checkpoints/best_lstm_char.pt`` before the quick start's) with this stage's loader, and iterates :func:`generate`:
the same sampler as ``generate.py`` (temperature, then top-k, then top-p), so the same seed gives the same text.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from scripts.cli import UserError
from scripts.showcase import Servable
from stage2_rnn_lstm.generate import check_args, encode_prompt, generate_iter
from stage2_rnn_lstm.utils.data import EOS
from stage2_rnn_lstm.utils.engine import load_model


def load(path):
    model, vocab, ckpt = load_model(path)
    return model, vocab, ckpt["config"]["model"]


def generate(loaded, prompt: str, max_new_tokens: int, temperature: float, top_k: int, top_p: float, seed: int):
    """Yield the text of each new token (a word is followed by a space, ``<eos>`` is a line break)."""
    model, vocab, _ = loaded
    check_args(SimpleNamespace(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens),
               len(vocab))
    if not prompt.strip():  # as generate.py without --prompt: start at a line boundary
        prompt = "\n" if vocab.vocab_type == "char" else EOS
    ids = encode_prompt(vocab, prompt, warned=set())
    if not ids:
        raise UserError("the prompt has no tokens")
    sep = "" if vocab.vocab_type == "char" else " "
    generator = torch.Generator().manual_seed(seed)
    for i in generate_iter(model, ids, max_new_tokens, temperature, top_k, top_p, generator):
        tok = vocab.tokens[i]
        yield "\n" if tok == EOS else tok + sep


def describe(loaded) -> str:
    _, vocab, cfg = loaded
    return (f"{cfg['model_type'].upper()} {cfg['num_layers']}x{cfg['hidden_size']}, {vocab.vocab_type}-level, "
            f"{len(vocab):,} tokens")


MODELS = [
    Servable(name="lstm_char", task="generate", title="阶段 2 · 字符级 LSTM",
             checkpoints=("checkpoints/best_lstm_char.pt", "checkpoints/quickstart/best_lstm_char.pt"),
             command="cd stage2_rnn_lstm && python quickstart.py", load=load, run=generate, describe=describe),
    Servable(name="lstm_word", task="generate", title="阶段 2 · 词级 LSTM",
             checkpoints=("checkpoints/best_lstm_word.pt", "checkpoints/best_lstm_word_*.pt"),
             command="cd stage2_rnn_lstm && python train.py --model_type lstm --vocab_type word --dataset ptb "
                     "--tie_weights --emb_dim 400 --hidden_size 400",
             load=load, run=generate, describe=describe),
]
