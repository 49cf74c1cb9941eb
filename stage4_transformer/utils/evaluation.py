"""Sentence-level translation with a Transformer, BLEU/chrF, attention tables and heatmaps.

Two BLEU kinds, never mixed:

* ``bleu``: sacreBLEU's corpus BLEU of the *detokenised, cased* output against the *raw* references, with
  sacreBLEU's own 13a tokenisation (Post 2018, "A Call for Clarity in Reporting BLEU Scores"); its signature
  (``case:mixed|tok:13a|...``) is printed. This is the stage's headline and the number stage 3 reports.
* ``bleu_lc_tok``: the same corpus BLEU on *lowercased, 13a-tokenised* text (signature ``case:lc``), the kind
  much of the Multi30k literature reports (multi-bleu.perl on lowercased, tokenised files). Usually higher;
  it is labelled everywhere it appears and never compared with ``bleu``.
"""
from __future__ import annotations

import time

import torch

from scripts.cli import UserError
from stage4_transformer.utils.data import collate_translation
from stage4_transformer.utils.tokenizer import EOS_ID, UNK_ID, SubwordTokenizer


def source_limit(model) -> int:
    """Longest source (tokens) the positional table covers."""
    return model.cfg.max_len


def prepare(sentences: list[str], tokenizer: SubwordTokenizer, limit: int) -> list[dict]:
    """Encode raw sentences; each ``{"ids", "truncated", "n_tokens", "unknown": [chars]}``."""
    out = []
    for s in sentences:
        ids = tokenizer.encode(s)
        unknown = tokenizer.unknown_chars(s) if UNK_ID in ids else []
        out.append({"ids": ids[:limit], "truncated": len(ids) > limit, "n_tokens": len(ids), "unknown": unknown,
                    "all_unknown": UNK_ID in ids and all(i == UNK_ID or tokenizer.id_to_token(i) == "▁" for i in ids)})
    return out


@torch.no_grad()
def translate_sentences(model, sentences, tokenizer: SubwordTokenizer, beam_size: int = 1, batch_size: int = 128,
                        len_alpha: float = 1.0, use_cache: bool = True, device="cpu") -> list[dict]:
    """Translate raw sentences, batched (sorted by length). One dict per sentence, in input order::

        {"text": detokenised output, "ids": output ids, "src_ids": [...], "truncated": bool,
         "unknown": [characters the tokenizer maps to <unk>], "all_unknown": bool}

    An empty sentence is a one-line error (check before calling for files with empty lines).
    """
    prepped = prepare(sentences, tokenizer, source_limit(model))
    for i, p in enumerate(prepped):
        if not p["ids"]:
            raise UserError(f"empty input sentence (line {i + 1})" if len(sentences) > 1 else "empty input sentence")
    order = sorted(range(len(prepped)), key=lambda i: len(prepped[i]["ids"]))
    results: list = [None] * len(prepped)
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        b = collate_translation([prepped[i]["ids"] for i in idx], [[EOS_ID]] * len(idx))
        outs = model.translate(b["src"].to(device), b["src_mask"].to(device), beam_size=beam_size,
                               len_alpha=len_alpha, use_cache=use_cache)
        for i, o in zip(idx, outs):
            p = prepped[i]
            results[i] = {"text": tokenizer.decode(o["ids"]), "ids": o["ids"], "src_ids": p["ids"],
                          "truncated": p["truncated"], "unknown": p["unknown"], "all_unknown": p["all_unknown"]}
    return results


def bleu_chrf(hyps: list[str], refs: list[str]) -> dict:
    """Cased detokenised sacreBLEU (13a), chrF, and the lowercased tokenised BLEU (labelled ``bleu_lc_tok``)."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu_metric, chrf_metric = BLEU(), CHRF()  # defaults: 13a tokenisation, cased
    lc_metric = BLEU(lowercase=True, tokenize="13a")
    bleu = bleu_metric.corpus_score(hyps, [refs])
    lc = lc_metric.corpus_score(hyps, [refs])
    chrf = chrf_metric.corpus_score(hyps, [refs])
    return {"bleu": bleu.score, "chrf": chrf.score, "bleu_lc_tok": lc.score,
            "bleu_signature": str(bleu_metric.get_signature()), "chrf_signature": str(chrf_metric.get_signature()),
            "bleu_lc_tok_signature": str(lc_metric.get_signature())}


def evaluate_split(model, src_sents, ref_sents, tokenizer, beam_size=1, len_alpha=1.0, batch_size=128,
                   use_cache=True, device="cpu"):
    """Translate ``src_sents`` and score them; returns ``(scores, translations, seconds)``."""
    t0 = time.perf_counter()
    outs = translate_sentences(model, src_sents, tokenizer, beam_size=beam_size, len_alpha=len_alpha,
                               batch_size=batch_size, use_cache=use_cache, device=device)
    seconds = time.perf_counter() - t0
    return bleu_chrf([o["text"] for o in outs], list(ref_sents)), outs, seconds


def attention_for(model, tokenizer, out: dict, device="cpu") -> dict | None:
    """Every layer's and head's attention for one translation (teacher-forced on its own output):
    ``{"src": tokens, "tgt": tokens + <eos>, "encoder"/"decoder"/"cross": [(h, rows, cols)] per layer}``,
    or None for the torch implementation (nn.MultiheadAttention does not keep its weights here)."""
    if model.cfg.impl != "scratch":
        return None
    ids = out["ids"][:model.cfg.max_len - 1]  # an output cut at max_len has no <eos> row beyond the table
    src = torch.tensor([out["src_ids"]], device=device)
    tgt_in = torch.tensor([[model.cfg.bos_id, *ids]], device=device)
    maps = model.attention_maps(src, None, tgt_in)
    return {"src": [tokenizer.id_to_token(i) for i in out["src_ids"]],
            "tgt": [tokenizer.id_to_token(i) for i in ids] + ["<eos>"],
            **{k: [m[0].float().cpu() for m in v] for k, v in maps.items()}}


def attention_text(src_tokens, tgt_tokens, attn, width: int = 6) -> str:
    """An attention matrix (rows: output tokens, columns: source tokens) as a text table:
    ``#`` >= 0.5, ``+`` >= 0.2, ``.`` >= 0.05."""
    lines = [" " * 14 + "".join(s[:width - 1].ljust(width) for s in src_tokens)]
    for r, name in enumerate(tgt_tokens[:attn.size(0)]):
        cells = "".join(("#" if v >= 0.5 else "+" if v >= 0.2 else "." if v >= 0.05 else " ").ljust(width)
                        for v in attn[r, :len(src_tokens)].tolist())
        lines.append(name[:13].ljust(14) + cells)
    return "\n".join(lines)


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def plot_attention(src_tokens, tgt_tokens, attn, path, title: str | None = None) -> None:
    """One heatmap (rows: output tokens, columns: source tokens) saved as PNG."""
    plt = _plt()
    a = attn[:len(tgt_tokens), :len(src_tokens)].numpy()
    fig, ax = plt.subplots(figsize=(0.45 * len(src_tokens) + 2, 0.4 * a.shape[0] + 1.5))
    ax.imshow(a, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(src_tokens)), src_tokens, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(a.shape[0]), tgt_tokens[:a.shape[0]], fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_attention_grid(maps: list, rows: list, cols: list, path, title: str = "") -> None:
    """Every layer (grid rows) and head (grid columns) of one attention kind, one PNG."""
    plt = _plt()
    n_layers, n_heads = len(maps), maps[0].size(0)
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(2.6 * n_heads + 1, 2.4 * n_layers + 0.8), squeeze=False)
    for li, m in enumerate(maps):
        for h in range(n_heads):
            ax = axes[li][h]
            ax.imshow(m[h, :len(rows), :len(cols)].numpy(), cmap="viridis", aspect="auto", vmin=0, vmax=1)
            ax.set_title(f"layer {li} head {h}", fontsize=8)
            ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=5)
            ax.set_yticks(range(len(rows)), rows, fontsize=5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
