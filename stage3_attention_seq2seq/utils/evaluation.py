"""Sentence-level translation helpers, sacreBLEU/chrF, and attention heatmaps.

BLEU is computed the standard way (Post 2018, "A Call for Clarity in Reporting BLEU Scores"):
``sacrebleu.corpus_bleu(hyps, [refs])`` on *detokenised, cased* hypotheses against the *raw*
references, with sacreBLEU's own 13a tokenisation. Scores computed on our own tokens would not be
comparable with anybody else's (docs/stage3_attention.md, "BLEU").
"""
from __future__ import annotations

import time

import torch

from stage3_attention_seq2seq.utils.data import pad_batch
from stage3_attention_seq2seq.utils.tokenizer import SPACE, UNK, UNK_ID, Vocab, detokenize, tokenize

MAX_SRC_LEN = 100  # longer inputs are cut here (the model never saw anything near this long)
MAX_OUT_LEN = 200


def translate_sentences(model, sentences, src_vocab: Vocab, tgt_vocab: Vocab, beam_size: int = 1,
                        batch_size: int = 128, len_alpha: float = 1.0, unk_replace: bool = True,
                        device: torch.device | str = "cpu"):
    """Translate raw sentences. Returns one dict per sentence, in input order::

        {"text": detokenised output, "src_tokens": [...], "tgt_tokens": [...],
         "attn": (T_out + 1, S) tensor or None, "truncated": bool, "n_unk": int}

    With ``unk_replace`` an output ``<unk>`` is replaced by the source token it attends to most
    (Luong et al. 2015, "Addressing the Rare Word Problem"): names and numbers get copied.
    """
    toks = [tokenize(s)[:MAX_SRC_LEN] for s in sentences]
    truncated = [len(tokenize(s)) > MAX_SRC_LEN for s in sentences]
    order = sorted(range(len(toks)), key=lambda i: len(toks[i]))  # similar lengths share a batch
    results = [None] * len(toks)
    for k in range(0, len(order), batch_size):
        idx = [i for i in order[k:k + batch_size]]
        ids = [src_vocab.encode(toks[i]) or [UNK_ID] for i in idx]
        src, src_len = pad_batch(ids)
        out = model.translate(src.to(device), src_len.to(device), beam_size=beam_size, len_alpha=len_alpha,
                              max_len=min(MAX_OUT_LEN, int(src_len.max()) * 2 + 10))
        for i, o in zip(idx, out):
            tgt_tokens = [tgt_vocab.itos[t] for t in o["ids"]]
            if unk_replace and o["attn"] is not None and toks[i]:
                tgt_tokens = [_copy_source(toks[i], o["attn"][j]) if t == UNK else t for j, t in enumerate(tgt_tokens)]
            results[i] = {"text": detokenize(tgt_tokens), "src_tokens": toks[i], "tgt_tokens": tgt_tokens,
                          "attn": o["attn"], "truncated": truncated[i],
                          "n_unk": sum(1 for t in src_vocab.encode(toks[i]) if t == UNK_ID)}
    return results


def _copy_source(src_tokens, attn_row):
    j = int(attn_row[:len(src_tokens)].argmax())
    tok = src_tokens[j]
    return tok if tok.startswith(SPACE) else SPACE + tok


def bleu_chrf(hyps: list[str], refs: list[str]) -> dict:
    """sacreBLEU (13a, cased) and chrF of detokenised hypotheses vs raw references."""
    from sacrebleu.metrics import BLEU, CHRF
    bleu_metric, chrf_metric = BLEU(), CHRF()  # defaults: 13a tokenisation, cased
    bleu = bleu_metric.corpus_score(hyps, [refs])
    chrf = chrf_metric.corpus_score(hyps, [refs])
    return {"bleu": bleu.score, "chrf": chrf.score,
            "bleu_signature": str(bleu_metric.get_signature()), "chrf_signature": str(chrf_metric.get_signature())}


def evaluate_split(model, src_sents, ref_sents, src_vocab, tgt_vocab, beam_size=1, len_alpha=1.0,
                   batch_size=128, device="cpu", unk_replace=True):
    """Translate ``src_sents`` and score them; returns (scores dict, translations, seconds)."""
    t0 = time.perf_counter()
    outs = translate_sentences(model, src_sents, src_vocab, tgt_vocab, beam_size=beam_size, len_alpha=len_alpha,
                               batch_size=batch_size, device=device, unk_replace=unk_replace)
    seconds = time.perf_counter() - t0
    return bleu_chrf([o["text"] for o in outs], list(ref_sents)), outs, seconds


def attention_text(src_tokens, tgt_tokens, attn, width: int = 6) -> str:
    """The attention matrix as a text table (rows: output tokens, columns: source tokens)."""
    src = [t.replace(SPACE, "") for t in src_tokens]
    rows = [t.replace(SPACE, "") for t in tgt_tokens] + ["<eos>"]
    head = " " * 14 + "".join(s[:width - 1].ljust(width) for s in src)
    lines = [head]
    for r, name in enumerate(rows[:attn.size(0)]):
        cells = "".join(("#" if v >= 0.5 else "+" if v >= 0.2 else "." if v >= 0.05 else " ").ljust(width)
                        for v in attn[r, :len(src)].tolist())
        lines.append(name[:13].ljust(14) + cells)
    return "\n".join(lines)


def plot_attention(src_tokens, tgt_tokens, attn, path=None, title: str | None = None, ax=None):
    """A heatmap of ``attn`` (rows: output tokens + <eos>, columns: source tokens); saved if ``path``."""
    import matplotlib
    if path is not None and ax is None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    src = [t.replace(SPACE, "") for t in src_tokens]
    tgt = [t.replace(SPACE, "") for t in tgt_tokens] + ["<eos>"]
    a = attn[:len(tgt), :len(src)].numpy()  # no <eos> row when decoding hit the length cap
    tgt = tgt[:a.shape[0]]
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(0.45 * len(src) + 2, 0.4 * len(tgt) + 1.5))
    ax.imshow(a, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(src)), src, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(tgt)), tgt, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    if own:
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
            plt.close(fig)
    return ax
