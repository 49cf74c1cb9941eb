"""Translate sentences with a trained Transformer and show where one cross-attention head looked.

    python translate.py --sentence "A man is riding a bike."
    python translate.py --interactive                                  # type English, get French
    python translate.py --sentence "Two dogs play." --layer 1 --head 2 --plot runs/attn.png
    python translate.py --input test.en --output test.hyp.fr           # one line out per line in

The cross-attention of ``--layer``/``--head`` (rows: French subword tokens, columns: English ones;
``#`` >= 0.5, ``+`` >= 0.2, ``.`` >= 0.05) is printed as a text table, or saved as a PNG with ``--plot``.
Translations (and tables) go to stdout; notes (unknown characters, inputs cut at the positional table's
``max_len``) go to stderr. With ``--input``/``--output`` every input line gives exactly one output line (an
empty line stays empty), so ``sacrebleu ref.fr -i test.hyp.fr`` scores the file directly.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.cli import HelpFormatter, UserError, repl_lines, run_cli
from scripts.data import transform_lines
from scripts.device import add_device_args, pick_device
from scripts.flags import add_checkpoint_arg
from stage4_transformer.utils.checkpoint import load_model
from stage4_transformer.utils.evaluation import (
    attention_for,
    attention_text,
    plot_attention,
    prepare,
    translate_sentences,
)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_checkpoint_arg(p, default="checkpoints/best_transformer.pt")
    p.add_argument("--sentence", action="append", default=[], help="a sentence to translate (repeatable)")
    p.add_argument("--interactive", action="store_true",
                   help="read sentences from stdin, one per line (a blank line is skipped; Ctrl-D or :q ends)")
    p.add_argument("--input", default=None, help="translate every line of this UTF-8 file")
    p.add_argument("--output", default=None, help="with --input: write the translations here, one per line "
                                                  "(default: stdout)")
    p.add_argument("--beam_size", type=int, default=5, help="1 = greedy")
    p.add_argument("--len_alpha", type=float, default=1.0, help="length normalisation exponent")
    p.add_argument("--no_cache", action="store_true", help="recompute the whole prefix at every decoding step")
    p.add_argument("--batch_size", type=int, default=64, help="with --input: sentences decoded together")
    p.add_argument("--src_lang", default=None, help="refuse a checkpoint with another source language")
    p.add_argument("--tgt_lang", default=None, help="refuse a checkpoint with another target language")
    p.add_argument("--layer", type=int, default=-1, help="decoder layer of the cross-attention shown (-1 = last)")
    p.add_argument("--head", type=int, default=0, help="attention head shown")
    p.add_argument("--no_attention", action="store_true", help="do not print the attention table")
    p.add_argument("--plot", default=None, help="save the attention heatmap of the (last) sentence to this PNG")
    add_device_args(p, dtype=False)
    return p


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def notes_for(out: dict, limit: int, where: str = "") -> None:
    """The notes about one translated line (on stderr)."""
    if out["truncated"]:
        note(f"{where}input longer than max_len={limit} tokens; only the first {limit} were translated")
    if out["all_unknown"]:
        note(f"{where}every character is unknown to the model's tokenizer; the output is a guess")
    elif out["unknown"]:
        note(f"{where}unknown character(s) {' '.join(out['unknown'])} (not in the training data) read as <unk>")


def check_sentence(sentence: str, tokenizer) -> None:
    if not sentence.strip():
        raise UserError("empty input sentence")
    if prepare([sentence], tokenizer, 1)[0]["all_unknown"]:
        raise UserError(f"every character of {sentence[:40]!r} is unknown to the model's tokenizer "
                        f"(characters never seen in training); nothing to translate")


def translate_one(model, tokenizer, sentence, args, device, show: bool) -> dict:
    """Translate one line, print it (and its attention table); returns the output dict (+ attention)."""
    check_sentence(sentence, tokenizer)
    out = translate_sentences(model, [sentence], tokenizer, beam_size=args.beam_size, len_alpha=args.len_alpha,
                              use_cache=not args.no_cache, device=device)[0]
    notes_for(out, model.cfg.max_len)
    print(out["text"], flush=True)
    maps = attention_for(model, tokenizer, out, device) if (show or args.plot) else None
    out["maps"] = maps
    if show and maps is not None:
        print(f"cross-attention, layer {args.layer % model.cfg.dec_layers}, head {args.head}:")
        print(attention_text(maps["src"], maps["tgt"], maps["cross"][args.layer][args.head]), flush=True)
    return out


def translate_file(model, tokenizer, args, device) -> None:
    """``--input``: one output line per input line, empty lines kept empty (sacreBLEU reads the file as is)."""

    def transform(lines, numbers):
        outs = translate_sentences(model, lines, tokenizer, beam_size=args.beam_size,
                                   len_alpha=args.len_alpha, batch_size=args.batch_size,
                                   use_cache=not args.no_cache, device=device)
        for n, out in zip(numbers, outs):
            notes_for(out, model.cfg.max_len, where=f"{args.input} line {n}: ")
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
    model, tokenizer, ckpt = load_model(args.checkpoint, device, args.src_lang, args.tgt_lang)
    if not -model.cfg.dec_layers <= args.layer < model.cfg.dec_layers or not 0 <= args.head < model.cfg.n_heads:
        raise UserError(f"--layer must be in [-{model.cfg.dec_layers}, {model.cfg.dec_layers - 1}] and --head in "
                        f"[0, {model.cfg.n_heads - 1}] for this model")
    show = not args.no_attention
    if show and model.cfg.impl != "scratch":
        note("attention tables need the scratch implementation; showing translations only")
    last = None
    if args.input:
        translate_file(model, tokenizer, args, device)
    for s in args.sentence:
        last = translate_one(model, tokenizer, s, args, device, show)
    if args.interactive:
        pair = f"{ckpt['config']['train']['src_lang']}->{ckpt['config']['train']['tgt_lang']}"
        for line in repl_lines(f"{pair} Transformer translator"):
            try:
                last = translate_one(model, tokenizer, line, args, device, show)
            except UserError as e:  # one bad line does not end the session
                print(f"error: {e}", file=sys.stderr, flush=True)
    if args.plot:
        if last is None or last.get("maps") is None:
            note("--plot: nothing to plot (no --sentence / interactive line, or the torch implementation)")
        else:
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
            m = last["maps"]
            plot_attention(m["src"], m["tgt"], m["cross"][args.layer][args.head], args.plot,
                           title=f"layer {args.layer % model.cfg.dec_layers} head {args.head}: {last['text'][:70]}")
            note(f"saved {args.plot}")
    return last


if __name__ == "__main__":
    run_cli(main)
