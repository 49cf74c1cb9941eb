"""Translate sentences with a trained checkpoint and show where the model looked.

    python translate.py --sentence "A man is riding a bike."
    python translate.py --interactive                       # type English, get French + attention
    python translate.py --sentence "Two dogs play." --beam_size 5 --plot runs/attn.png
    python translate.py --input test.en --output test.hyp.fr  # one line out per line in (for sacrebleu)

The attention map is printed as a text table (rows: French tokens, columns: English tokens;
``#`` >= 0.5, ``+`` >= 0.2, ``.`` >= 0.05) and, with ``--plot``, saved as a PNG.
Translations (and the tables) go to stdout; notes (unknown words, cut inputs) go to stderr.
With ``--input``/``--output`` every input line gives exactly one output line (an empty line stays
empty), so ``sacrebleu ref.fr -i test.hyp.fr`` scores the file directly.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.cli import HelpFormatter, UserError, repl_lines, run_cli
from scripts.data import transform_lines
from scripts.device import add_device_args, pick_device
from scripts.flags import add_checkpoint_arg
from stage3_attention_seq2seq.utils.checkpoint import load_model
from stage3_attention_seq2seq.utils.evaluation import MAX_SRC_LEN, attention_text, plot_attention, translate_sentences


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_checkpoint_arg(p, default="checkpoints/best_attention_model.pt")
    p.add_argument("--sentence", action="append", default=[], help="a sentence to translate (repeatable)")
    p.add_argument("--interactive", action="store_true",
                   help="read sentences from stdin, one per line (a blank line is skipped; Ctrl-D or :q ends)")
    p.add_argument("--input", default=None, help="translate every line of this UTF-8 file")
    p.add_argument("--output", default=None, help="with --input: write the translations here, one per line "
                                                  "(default: stdout)")
    p.add_argument("--beam_size", type=int, default=5, help="1 = greedy")
    p.add_argument("--len_alpha", type=float, default=1.0, help="length normalisation exponent")
    p.add_argument("--batch_size", type=int, default=64, help="with --input: sentences decoded together")
    p.add_argument("--src_lang", default=None, help="refuse a checkpoint with another source language")
    p.add_argument("--tgt_lang", default=None, help="refuse a checkpoint with another target language")
    p.add_argument("--no_attention", action="store_true", help="do not print the attention table")
    p.add_argument("--plot", default=None, help="save the attention heatmap of the (last) sentence to this PNG")
    add_device_args(p, dtype=False)
    return p


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def notes_for(out: dict, where: str = "") -> None:
    """The notes about one translated line (on stderr)."""
    if out["truncated"]:
        note(f"{where}input longer than {MAX_SRC_LEN} tokens; only the first {MAX_SRC_LEN} were translated")
    if out["n_unk"] == len(out["src_tokens"]):
        note(f"{where}every word is unknown to the model's vocabulary; the output is a guess")
    elif out["n_unk"]:
        note(f"{where}{out['n_unk']} unknown word(s) in the input")


def translate_one(model, sentence, src_vocab, tgt_vocab, args, device, show_attention=True):
    """Translate one line, print it (and its attention table); returns the output dict."""
    if not sentence.strip():
        raise UserError("empty input sentence")
    out = translate_sentences(model, [sentence], src_vocab, tgt_vocab, beam_size=args.beam_size,
                              len_alpha=args.len_alpha, device=device)[0]
    notes_for(out)
    print(out["text"], flush=True)
    if show_attention and out["attn"] is not None:
        print(attention_text(out["src_tokens"], out["tgt_tokens"], out["attn"]), flush=True)
    return out


def translate_file(model, src_vocab, tgt_vocab, args, device) -> None:
    """``--input``: one output line per input line, empty lines kept empty (sacreBLEU reads the file as is)."""

    def transform(lines, numbers):
        outs = translate_sentences(model, lines, src_vocab, tgt_vocab, beam_size=args.beam_size,
                                   len_alpha=args.len_alpha, batch_size=args.batch_size, device=device)
        for n, out in zip(numbers, outs):
            notes_for(out, where=f"{args.input} line {n}: ")
        return [out["text"] for out in outs]

    transform_lines(args.input, args.output, transform)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.beam_size < 1 or args.batch_size < 1:
        raise UserError("--beam_size and --batch_size must be >= 1")
    if not (args.sentence or args.interactive or args.input):
        raise UserError("give --sentence TEXT, --input FILE or --interactive")
    if args.output and not args.input:
        raise UserError("--output needs --input")
    device = pick_device(args.device)
    model, src_vocab, tgt_vocab, ckpt = load_model(args.checkpoint, device, args.src_lang, args.tgt_lang)
    last = None
    if args.input:
        translate_file(model, src_vocab, tgt_vocab, args, device)
    for s in args.sentence:
        last = translate_one(model, s, src_vocab, tgt_vocab, args, device, not args.no_attention)
    if args.interactive:
        pair = f"{ckpt['config']['train']['src_lang']}->{ckpt['config']['train']['tgt_lang']}"
        for line in repl_lines(f"{pair} translator ({ckpt['config']['model']['attention_type']})"):
            last = translate_one(model, line, src_vocab, tgt_vocab, args, device, not args.no_attention)
    if args.plot:
        if last is None or last["attn"] is None:
            note("--plot: nothing to plot (no --sentence / interactive line, or a model without attention)")
        else:
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
            plot_attention(last["src_tokens"], last["tgt_tokens"], last["attn"], args.plot, title=last["text"][:80])
            note(f"saved {args.plot}")
    return last


if __name__ == "__main__":
    run_cli(main)
