"""Stage 5 in the web showcase (``python scripts/demo.py``): the GPT continues a prompt, streamed token by token.

The registry in ``scripts/showcase.py`` finds this file, loads the first checkpoint that exists (a full run's
``checkpoints/best_gpt.pt`` before the quick start's) with this stage's loader, and iterates :func:`generate`:
``GPT.generate_stream`` with the key/value cache and the sampling of ``generate.py`` (temperature 0 = greedy,
top-k, top-p; it stops at ``<|endoftext|>``), so the same seed gives the same text. The pieces are cut by
``generate.py``'s ``StreamPrinter``: a BPE token that ends inside a UTF-8 character waits for the next one.

Classification and translation use a checkpoint of ``finetune.py`` (``best_finetune.pt``): class probabilities from
the classification head, and the French of the ``English: ... French:`` prompt by beam search over the KV cache. A
decoder-only model has no cross-attention, so the translation's map is the **self-attention of its last layer from
each French token to the tokens of the prompt** (averaged over the heads; one pass over prompt + output with the
written-out attention, which keeps the weights).
"""
from __future__ import annotations

import torch

from scripts.cli import UserError
from scripts.showcase import Servable
from stage5_gpt import finetune
from stage5_gpt.generate import StreamPrinter, default_prompt, encode_prompt
from stage5_gpt.models.gpt import check_sampling
from stage5_gpt.models.tasks import beam_search
from stage5_gpt.utils import tasks_data as td
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


def load_finetuned(path, task: str):
    cfg, model, tokenizer, info, _ = finetune.load_finetuned(path)
    if task not in info.get("tasks", [info.get("task")]):
        raise UserError(f"{path} is a fine-tuned {info.get('task')} model, not one for {task}")
    return cfg, model, tokenizer, info


def classify(loaded, text: str) -> dict:
    cfg, model, tokenizer, info = loaded
    out = finetune.run_text(model, tokenizer, {**info, "tasks": ["classify"]}, cfg, text)
    return {"labels": list(out["probabilities"]), "probs": list(out["probabilities"].values())}


def translate(loaded, text: str, beam_size: int = 5) -> dict:
    cfg, model, tokenizer, _ = loaded
    if not text.strip():
        raise UserError("the sentence is empty; give an English sentence")
    gpt = model.gpt
    prompt = tokenizer.encode(td.prompt_text(text))
    if len(prompt) >= gpt.config.block_size // 2:
        raise UserError(f"the sentence has {len(prompt)} tokens; at most {gpt.config.block_size // 2 - 1} fit")
    with torch.no_grad():
        out = beam_search(gpt, prompt, beam_size, td.max_new_tokens(len(prompt)), tokenizer.eot_id, cfg.len_alpha)
        seq = torch.tensor([prompt + out + [tokenizer.eot_id]])
        att = gpt.attention_maps(seq[:, :-1])[-1][0].mean(0)  # (T, T): last layer, mean over heads
    rows = att[len(prompt) - 1:, :len(prompt)]  # the position before each output token -> the prompt's tokens
    return {"translation": tokenizer.decode(out).strip(),
            "src_tokens": [tokenizer.decode([i]) for i in prompt],
            "tgt_tokens": [tokenizer.decode([i]) for i in out] + ["<|endoftext|>"],
            "attention": [[round(v, 4) for v in row] for row in rows.tolist()],
            "attention_note": f"self-attention of layer {gpt.config.n_layer} (the last) from each French token to "
                              f"the prompt, mean of {gpt.config.n_head} heads"}


def describe_finetuned(loaded) -> str:
    cfg, model, tokenizer, info = loaded
    c = model.gpt.config
    start = "from scratch" if info.get("init_from") == "scratch" else "pre-trained"
    return f"{c.n_layer} layers, {c.n_embd}-d, {start}, {info.get('mode')} fine-tuning, {', '.join(info['tasks'])}"


FINETUNE = "cd stage5_gpt && python benchmark.py pretrain && python benchmark.py {}"

MODELS = [
    Servable(name="gpt", task="generate", title="阶段 5 · GPT",
             checkpoints=("checkpoints/best_gpt.pt", "checkpoints/quickstart/best_gpt.pt"),
             command="cd stage5_gpt && python quickstart.py", load=load, run=generate, describe=describe),
    Servable(name="gpt_classify", task="classify", title="阶段 5 · GPT 微调分类",
             checkpoints=("checkpoints/bench_ft_imdb_long/best_finetune.pt",
                          "checkpoints/bench_ft_imdb_full/best_finetune.pt",
                          "checkpoints/bench_ft_imdb_lora/best_finetune.pt",
                          "checkpoints/finetune_classify_full/best_finetune.pt"),
             command=FINETUNE.format("ft_imdb_full"), load=lambda p: load_finetuned(p, "classify"), run=classify,
             describe=describe_finetuned),
    Servable(name="gpt_translate", task="translate", title="阶段 5 · GPT 微调翻译",
             checkpoints=("checkpoints/bench_ft_translate/best_finetune.pt",
                          "checkpoints/finetune_translate_full/best_finetune.pt"),
             command=FINETUNE.format("ft_translate"), load=lambda p: load_finetuned(p, "translate"), run=translate,
             describe=describe_finetuned),
]
