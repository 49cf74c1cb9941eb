"""Translate sentences with a trained checkpoint and show where the model looked.

    python translate.py --sentence "A man is riding a bike."
    python translate.py --interactive                       # type English, get French + attention
    python translate.py --sentence "Two dogs play." --beam_size 5 --plot runs/attn.png

The attention map is printed as a text table (rows: French tokens, columns: English tokens;
``#`` >= 0.5, ``+`` >= 0.2, ``.`` >= 0.05) and, with ``--plot``, saved as a PNG.
"""
from __future__ import annotations

import argparse
import sys

from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.device import add_device_args, pick_device
from stage3_attention_seq2seq.utils.checkpoint import load_model
from stage3_attention_seq2seq.utils.evaluation import MAX_SRC_LEN, attention_text, plot_attention, translate_sentences


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model_path", default="checkpoints/best_attention_model.pt", help="checkpoint from train.py")
    p.add_argument("--sentence", action="append", default=[], help="a sentence to translate (repeatable)")
    p.add_argument("--interactive", action="store_true", help="read sentences from stdin, one per line")
    p.add_argument("--beam_size", type=int, default=5, help="1 = greedy")
    p.add_argument("--len_alpha", type=float, default=1.0, help="length normalisation exponent")
    p.add_argument("--src_lang", default=None, help="refuse a checkpoint with another source language")
    p.add_argument("--tgt_lang", default=None, help="refuse a checkpoint with another target language")
    p.add_argument("--no_attention", action="store_true", help="do not print the attention table")
    p.add_argument("--plot", default=None, help="save the attention heatmap of the (last) sentence to this PNG")
    add_device_args(p)
    return p


def translate_one(model, sentence, src_vocab, tgt_vocab, args, device, show_attention=True):
    """Translate one line; returns the output dict. Raises UserError for an empty line."""
    if not sentence.strip():
        raise UserError("empty input sentence")
    out = translate_sentences(model, [sentence], src_vocab, tgt_vocab, beam_size=args.beam_size,
                              len_alpha=args.len_alpha, device=device)[0]
    if out["truncated"]:
        print(f"note: input longer than {MAX_SRC_LEN} tokens; only the first {MAX_SRC_LEN} were translated")
    if out["n_unk"] == len(out["src_tokens"]):
        print("note: every word is unknown to the model's vocabulary; the output is a guess")
    elif out["n_unk"]:
        print(f"note: {out['n_unk']} unknown word(s) in the input")
    print(out["text"])
    if show_attention and out["attn"] is not None:
        print(attention_text(out["src_tokens"], out["tgt_tokens"], out["attn"]))
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.beam_size < 1:
        raise UserError(f"--beam_size must be >= 1, got {args.beam_size}")
    if not args.sentence and not args.interactive:
        raise UserError("give --sentence TEXT or --interactive")
    device = pick_device(args.device)
    model, src_vocab, tgt_vocab, ckpt = load_model(args.model_path, device, args.src_lang, args.tgt_lang)
    pair = f"{ckpt['config']['train']['src_lang']}->{ckpt['config']['train']['tgt_lang']}"
    last = None
    for s in args.sentence:
        last = translate_one(model, s, src_vocab, tgt_vocab, args, device, not args.no_attention)
    if args.interactive:
        print(f"{pair} translator ({ckpt['config']['model']['attention_type']}); empty line or Ctrl-D to quit", file=sys.stderr)
        for line in sys.stdin:
            if not line.strip():
                break
            last = translate_one(model, line, src_vocab, tgt_vocab, args, device, not args.no_attention)
    if args.plot and last is not None and last["attn"] is not None:
        plot_attention(last["src_tokens"], last["tgt_tokens"], last["attn"], args.plot, title=last["text"][:80])
        print(f"saved {args.plot}")
    return last


if __name__ == "__main__":
    run_cli(main)
