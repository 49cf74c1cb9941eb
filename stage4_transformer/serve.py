"""Stage 4 in the web showcase (``python scripts/demo.py``): the Transformer translates English into French (with
its cross-attention drawn as a heatmap) and the encoder classifier gives class probabilities for a sentence.

The registry in ``scripts/showcase.py`` finds this file and loads the first checkpoint that exists with this
stage's loaders. Translation decodes as ``translate.py`` does (greedy or beam search with the key/value cache);
the map is the cross-attention of the **last decoder layer, averaged over its heads**, recomputed by one
teacher-forced pass over the output (``attention_for``; a ``--impl torch`` checkpoint is rebuilt in the scratch
implementation, which keeps its weights). Classification is ``classify.py evaluate --text``.
"""
from __future__ import annotations

import torch

from scripts.cli import UserError
from scripts.showcase import Servable
from stage4_transformer import classify as classifier
from stage4_transformer.translate import check_sentence
from stage4_transformer.utils.checkpoint import load_model
from stage4_transformer.utils.evaluation import attention_for, translate_sentences


def load_translator(path):
    model, tokenizer, ckpt = load_model(path, impl="scratch")
    return model, tokenizer


def translate(loaded, text: str, beam_size: int = 5) -> dict:
    model, tokenizer = loaded
    check_sentence(text, tokenizer)
    out = translate_sentences(model, [text], tokenizer, beam_size=beam_size)[0]
    maps = attention_for(model, tokenizer, out)  # "cross": one (heads, output + <eos>, source) tensor per layer
    last = maps["cross"][-1].mean(0)
    return {"translation": out["text"], "src_tokens": maps["src"], "tgt_tokens": maps["tgt"],
            "attention": [[round(v, 4) for v in row] for row in last.tolist()],
            "attention_note": f"cross-attention of decoder layer {model.cfg.dec_layers}, mean of "
                              f"{model.cfg.n_heads} heads", "unknown": out["unknown"], "truncated": out["truncated"]}


def describe_translator(loaded) -> str:
    model, tokenizer = loaded
    c = model.cfg
    return f"{c.enc_layers}+{c.dec_layers} layers, d_model {c.d_model}, {c.n_heads} heads, BPE {len(tokenizer):,}"


def load_classifier(path):
    cfg, model, tokenizer, names, _ = classifier.load_classifier(path)
    return cfg, model, tokenizer, names


def classify(loaded, text: str) -> dict:
    """What ``classify.py evaluate --text`` prints, as data."""
    cfg, model, tokenizer, names = loaded
    if not text.strip():
        raise UserError("the text is empty; give a text to classify")
    unknown = set(tokenizer.unknown_chars(text))
    if all(c.isspace() or c in unknown for c in text):
        raise UserError(f"the text has only characters the model never saw ({''.join(sorted(unknown))})")
    ids = classifier.encode_texts(tokenizer, [text], cfg.max_len)[0]
    with torch.inference_mode():
        x, keep = classifier.collate_batch([ids], [0])
        probs = torch.softmax(model(x, keep)[0][0].float(), -1).tolist()
    return {"labels": list(names), "probs": probs}


def describe_classifier(loaded) -> str:
    cfg, model, tokenizer, names = loaded
    return (f"{cfg.dataset}, {cfg.n_layers}x{cfg.d_model} encoder ({cfg.pooling} pooling), first {cfg.max_len} "
            f"tokens, classes {', '.join(names)}")


MODELS = [
    Servable(name="transformer", task="translate", title="阶段 4 · Transformer",
             checkpoints=("checkpoints/best_transformer.pt", "checkpoints/quickstart/best_transformer.pt"),
             command="cd stage4_transformer && python quickstart.py", load=load_translator, run=translate,
             describe=describe_translator),
    Servable(name="classifier", task="classify", title="阶段 4 · Transformer 编码器",
             checkpoints=("checkpoints/classify_imdb30/best_classifier.pt", "checkpoints/classify/best_classifier.pt"),
             command="cd stage4_transformer && python classify.py --preset imdb30", load=load_classifier,
             run=classify, describe=describe_classifier),
]
