"""Shared by train.py, evaluate.py, generate.py and the notebook: evaluation, metrics, sampling, loading.

Metrics (docs/stage2_rnn_lstm.md, section 8): the loss is the mean cross-entropy in nats per token;
perplexity = exp(loss); bits per character = loss / ln 2 (for char models).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from scripts.checkpoint import CheckpointError, load_checkpoint, load_vocab_pickle
from scripts.cli import UserError
from scripts.config import config_from_dict
from stage2_rnn_lstm.models.language_model import LMConfig, RNNLanguageModel
from stage2_rnn_lstm.utils.data import Vocab, batchify, get_batch, num_batches

KIND = "stage2_rnn_lstm"


@torch.inference_mode()
def evaluate_loss(model: RNNLanguageModel, data: torch.Tensor, batch_size: int, seq_len: int,
                  device: torch.device, max_batches: int = 0) -> float:
    """Mean nats/token over a whole split (or its first ``max_batches`` batches), carrying the hidden state
    like training does."""
    was_training = model.training
    model.eval()
    stream = batchify(data, batch_size).to(device)
    total, count, state = 0.0, 0, None
    n = num_batches(stream, seq_len)
    for i in range(min(n, max_batches) if max_batches else n):
        x, y = get_batch(stream, i, seq_len)
        out = model(x, y, state)
        state = out.state
        total += out.loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


def loss_metrics(loss: float, vocab_type: str, prefix: str = "") -> dict:
    """{loss, perplexity[, bpc]} with an optional ``val_``/``test_`` prefix."""
    m = {f"{prefix}loss": loss, f"{prefix}perplexity": math.exp(min(loss, 50.0))}
    if vocab_type == "char":
        m[f"{prefix}bpc"] = loss / math.log(2)
    return m


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> int:
    """Draw one token id from logits (V,): temperature, then top-k, then nucleus (top-p) filtering."""
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token once the mass *before* it already reaches top_p (the first token always stays)
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def model_from_checkpoint(ckpt: dict) -> tuple[RNNLanguageModel, Vocab]:
    """Rebuild the model and vocabulary stored in a stage-2 checkpoint."""
    try:
        config = config_from_dict(LMConfig, ckpt["config"]["model"])
        vocab = Vocab.from_dict(ckpt["vocab"])
        model = RNNLanguageModel(config)
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint does not hold a valid stage-2 model ({type(e).__name__}: {e})") from None
    return model, vocab


def load_model(checkpoint: str | Path, vocab_path: str | Path | None = None, device: torch.device | str = "cpu"):
    """(model in eval mode, vocab, checkpoint dict); checks that ``vocab_path`` matches the checkpoint."""
    ckpt = load_checkpoint(checkpoint, kind=KIND)
    if ckpt.get("task") == "classification":
        raise UserError(f"{checkpoint} is a stage-2 classifier checkpoint (classify.py), not a language model; "
                        f"score it with `python classify.py evaluate --checkpoint {checkpoint}`")
    model, vocab = model_from_checkpoint(ckpt)
    if vocab_path is not None:
        given = Vocab.from_dict(load_vocab_pickle(vocab_path))
        if given.fingerprint != vocab.fingerprint:
            raise UserError(f"vocabulary {vocab_path} does not match checkpoint {checkpoint} "
                            f"(fingerprint {given.fingerprint} vs {vocab.fingerprint}; "
                            f"{len(given)} vs {len(vocab)} {vocab.vocab_type} tokens)")
    return model.to(device).eval(), vocab, ckpt
