"""Stage 5 in the web showcase (``python scripts/demo.py``): the GPT continues a prompt, streamed token by token.

The registry in ``scripts/showcase.py`` finds this file, loads the first checkpoint that exists (a full run's
``checkpoints/best_gpt.pt`` before the quick start's) with this stage's loader, and iterates :func:`generate`:
``GPT.generate_stream`` with the key/value cache and the sampling of ``generate.py`` (temperature 0 = greedy,
top-k, top-p; it stops at ``<|endoftext|>``), so the same seed gives the same text. The pieces are cut by
``generate.py``'s ``StreamPrinter``: a BPE token that ends inside a UTF-8 character waits for the next one.

Classification and translation with a fine-tuned GPT are listed as not yet available (no ``run``): they plug in
here once fine-tuning writes ``checkpoints/finetune_*/best_*.pt``.
"""
from __future__ import annotations

import torch

from scripts.cli import UserError
from scripts.showcase import Servable
from stage5_gpt.generate import StreamPrinter, default_prompt, encode_prompt
from stage5_gpt.models.gpt import check_sampling
from stage5_gpt.utils.checkpoint import load_model


def load(path):
    model, tokenizer, _ = load_model(path)
    return model, tokenizer


class _Pieces:
    """A ``StreamPrinter`` output that keeps what was written until it is taken."""

    def __init__(self):
        self.pieces: list[str] = []

    def write(self, text: str) -> None:
        if text:
            self.pieces.append(text)

    def flush(self) -> None:
        pass

    def take(self) -> list[str]:
        out, self.pieces = self.pieces, []
        return out


def generate(loaded, prompt: str, max_new_tokens: int, temperature: float, top_k: int, top_p: float, seed: int):
    """Yield the new text as it is sampled (the prompt itself is not repeated)."""
    model, tokenizer = loaded
    try:
        check_sampling(max_new_tokens, temperature, top_k, top_p, 1.0)
    except ValueError as e:
        raise UserError(str(e)) from None
    ids = encode_prompt(prompt if prompt.strip() else default_prompt(tokenizer), tokenizer, model.config.block_size)
    idx = torch.tensor([ids], dtype=torch.long)  # (1, T)
    out = _Pieces()
    printer = StreamPrinter(tokenizer, out)
    stream = model.generate_stream(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                   eot_id=tokenizer.eot_id, generator=torch.Generator().manual_seed(seed))
    for tok in stream:
        if tokenizer.eot_id is not None and tok.item() == tokenizer.eot_id:
            break
        printer.add(tok.item())
        yield from out.take()
    printer.close()
    yield from out.take()


def describe(loaded) -> str:
    model, tokenizer = loaded
    c = model.config
    return (f"{c.n_layer} layers, {c.n_head} heads, {c.n_embd}-d, context {c.block_size}, {tokenizer.kind} "
            f"tokenizer ({tokenizer.vocab_size:,})")


FINETUNE = "fine-tune with stage5_gpt/finetune.py (it writes checkpoints/finetune_*/best_*.pt)"

MODELS = [
    Servable(name="gpt", task="generate", title="阶段 5 · GPT",
             checkpoints=("checkpoints/best_gpt.pt", "checkpoints/quickstart/best_gpt.pt"),
             command="cd stage5_gpt && python quickstart.py", load=load, run=generate, describe=describe),
    Servable(name="gpt_classify", task="classify", title="阶段 5 · GPT 微调分类",
             checkpoints=("checkpoints/finetune_*/best_*.pt",), command=FINETUNE),
    Servable(name="gpt_translate", task="translate", title="阶段 5 · GPT 微调翻译",
             checkpoints=("checkpoints/finetune_*/best_*.pt",), command=FINETUNE),
]
