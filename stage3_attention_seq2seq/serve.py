"""Stage 3 in the web showcase (``python scripts/demo.py``): an RNN encoder-decoder with attention translates
English into French, and the page draws the attention weights as a heatmap.

The registry in ``scripts/showcase.py`` finds this file, loads the first checkpoint that exists (a full run's
``checkpoints/best_attention_model.pt`` before the quick start's) with this stage's loader, and calls
:func:`translate`: the same decoding as ``translate.py`` (greedy or beam search, unknown words copied from the
source word they attend to). Rows of the map are the French tokens (and ``<eos>``), columns the English ones.
"""
from __future__ import annotations

from scripts.cli import UserError
from scripts.showcase import Servable
from stage3_attention_seq2seq.utils.checkpoint import load_model
from stage3_attention_seq2seq.utils.evaluation import translate_sentences


def load(path):
    model, src_vocab, tgt_vocab, ckpt = load_model(path)
    return model, src_vocab, tgt_vocab, ckpt["config"]


def translate(loaded, text: str, beam_size: int = 5) -> dict:
    model, src_vocab, tgt_vocab, _ = loaded
    if not text.strip():
        raise UserError("empty input sentence")
    out = translate_sentences(model, [text], src_vocab, tgt_vocab, beam_size=beam_size)[0]
    src, attn = out["src_tokens"], out["attn"]  # attn: (output tokens + <eos>, source tokens), or None
    rows, attention = out["tgt_tokens"], None
    if attn is not None:
        rows = (out["tgt_tokens"] + ["<eos>"])[:attn.size(0)]
        attention = [[round(v, 4) for v in row[:len(src)]] for row in attn.tolist()]
    return {"translation": out["text"], "src_tokens": src, "tgt_tokens": rows,
            "attention": attention, "unknown_words": out["n_unk"], "truncated": out["truncated"]}


def describe(loaded) -> str:
    model, src_vocab, tgt_vocab, cfg = loaded
    return (f"{cfg['model']['attention_type']} attention, {cfg['train']['src_lang']}->{cfg['train']['tgt_lang']}, "
            f"vocabulary {len(src_vocab):,}/{len(tgt_vocab):,}")


MODELS = [
    Servable(name="attention", task="translate", title="阶段 3 · RNN + 注意力",
             checkpoints=("checkpoints/best_attention_model.pt", "checkpoints/quickstart/best_attention_model.pt"),
             command="cd stage3_attention_seq2seq && python quickstart.py", load=load, run=translate,
             describe=describe),
]
