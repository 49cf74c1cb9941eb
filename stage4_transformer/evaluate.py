"""Evaluate a translation checkpoint: sacreBLEU and chrF, greedy and beam, on the test sets and validation.

    python evaluate.py --checkpoint checkpoints/best_transformer.pt
    python evaluate.py --checkpoint checkpoints/averaged_transformer.pt --beam_size 5 --splits test_2016_flickr

``bleu`` is sacreBLEU's corpus BLEU of the *detokenised, cased* output against the raw references (13a
tokenisation; the signature is printed), the number to compare with stage 3 and with published sacreBLEU scores.
``bleu_lc_tok`` is the *lowercased, tokenised* BLEU much of the Multi30k literature reports; it is labelled as
such and never mixed with ``bleu``. Beam search is batched and uses the key/value cache (``--no_cache``: recompute
the prefix). Attention maps of every layer and head (encoder self-attention, decoder self-attention,
cross-attention) for the first sentences are saved as PNG under ``--run_dir``. One result file and a final
``RESULT`` line (headline: beam BLEU on the first split, test_2016_flickr by default).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.data import sha256_files
from scripts.device import add_device_args, autocast, describe_device, pick_device
from scripts.flags import HELP, add_checkpoint_arg, check_non_negative
from scripts.results import make_result, write_result
from stage4_transformer.utils.checkpoint import KIND, load_model
from stage4_transformer.utils.data import MULTI30K_TESTS, load_multi30k
from stage4_transformer.utils.evaluation import attention_for, evaluate_split, plot_attention_grid

DEFAULT_SPLITS = [*MULTI30K_TESTS, "val"]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_checkpoint_arg(p, default="checkpoints/best_transformer.pt")
    p.add_argument("--data_dir", default=None, help=HELP["data_dir"])
    p.add_argument("--splits", nargs="+", default=DEFAULT_SPLITS, help="splits to score")
    p.add_argument("--beam_size", type=int, default=5, help="beam width of the beam scores (greedy is always run too; "
                                                            "1 = greedy only)")
    p.add_argument("--len_alpha", type=float, default=1.0, help="length normalisation: score / length**alpha")
    p.add_argument("--batch_size", type=int, default=128, help="sentences decoded together")
    p.add_argument("--no_cache", action="store_true", help="recompute the whole prefix at every decoding step")
    p.add_argument("--limit", type=int, default=0, help="only the first N sentences of each split (0 = all)")
    p.add_argument("--heatmaps", type=int, default=1, help="attention maps (PNG) for this many sentences")
    p.add_argument("--run_dir", default=None,
                   help=HELP["run_dir"] + "; here the attention maps (default: runs/eval_<checkpoint name>)")
    p.add_argument("--src_lang", default=None, help="refuse a checkpoint with another source language")
    p.add_argument("--tgt_lang", default=None, help="refuse a checkpoint with another target language")
    p.add_argument("--name", default=None, help="result file name (default: eval_transformer_multi30k_<pair>)")
    p.add_argument("--quiet", action="store_true", help="no example translations")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="autocast precision of decoding")
    add_device_args(p, dtype=False)
    return p


def save_attention_maps(model, tokenizer, outs, split, out_dir: Path, n: int, device) -> list[str]:
    saved = []
    for j, o in enumerate(outs[:n]):
        maps = attention_for(model, tokenizer, o, device)
        if maps is None:
            break
        out_dir.mkdir(parents=True, exist_ok=True)
        for kind, rows, cols in (("encoder", "src", "src"), ("decoder", "tgt", "tgt"), ("cross", "tgt", "src")):
            path = out_dir / f"attention_{kind}_{split}_{j}.png"
            plot_attention_grid(maps[kind], maps[rows], maps[cols], path, title=f"{kind} attention: {o['text'][:80]}")
            saved.append(str(path))
    return saved


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.beam_size < 1 or args.batch_size < 1:
        raise UserError("--beam_size and --batch_size must be >= 1")
    check_non_negative({"limit": args.limit, "heatmaps": args.heatmaps, "threads": args.threads})
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, ckpt = load_model(args.checkpoint, device, args.src_lang, args.tgt_lang)
    tcfg = ckpt["config"]["train"]
    corpus = load_multi30k(tcfg["src_lang"], tcfg["tgt_lang"], args.data_dir)
    unknown = [s for s in args.splits if s not in corpus.splits or s == "train"]
    if unknown:
        choices = ", ".join(s for s in corpus.splits if s != "train")
        raise UserError(f"unknown split(s) {unknown}; choose from {choices}")
    splits = args.splits
    steps = ckpt.get("step", 0)
    print(f"{args.checkpoint}: Transformer {model.cfg.enc_layers}+{model.cfg.dec_layers} layers, d_model "
          f"{model.cfg.d_model}, multi30k {tcfg['src_lang']}->{tcfg['tgt_lang']}, {model.num_params():,} parameters, "
          f"{steps} steps" + (f", average of {len(ckpt['averaged_from'])} snapshots" if "averaged_from" in ckpt
                              else ""))
    head, metrics, sigs, primary_outs = {}, {}, {}, None
    beams = [1, args.beam_size] if args.beam_size > 1 else [1]
    for i, split in enumerate(splits):
        src, ref = corpus.splits[split]
        if args.limit:
            src, ref = src[:args.limit], ref[:args.limit]
        for beam in beams:
            with autocast(device, args.dtype):
                scores, outs, secs = evaluate_split(model, src, ref, tokenizer, beam_size=beam,
                                                    len_alpha=args.len_alpha, batch_size=args.batch_size,
                                                    use_cache=not args.no_cache, device=device)
            tag = "greedy" if beam == 1 else f"beam{beam}"
            for key in ("bleu", "chrf", "bleu_lc_tok"):
                metrics[f"{split}/{key}_{tag}"] = scores[key]
            metrics[f"{split}/decode_s_{tag}"] = secs
            sigs = {k: scores[f"{k}_signature"] for k in ("bleu", "chrf", "bleu_lc_tok")}
            print(f"{split:18s} {tag:7s} BLEU {scores['bleu']:6.2f}  chrF {scores['chrf']:6.2f}  "
                  f"(lowercased tokenised BLEU {scores['bleu_lc_tok']:6.2f})  "
                  f"{len(src)} sentences decoded in {secs:.1f} s")
            if i == 0:
                primary_outs = (src, ref, outs)
                suffix = "" if beam == beams[-1] else "_greedy"
                for key in ("bleu", "chrf", "bleu_lc_tok"):
                    head[key + suffix] = scores[key]
                head["decode_s" + suffix] = secs
    print(f"sacreBLEU signature (bleu, cased detokenised): {sigs['bleu']}")
    print(f"sacreBLEU signature (bleu_lc_tok, lowercased tokenised; not comparable with bleu): {sigs['bleu_lc_tok']}")
    print(f"chrF signature: {sigs['chrf']}")
    headline = ("bleu", "bleu_greedy", "chrf", "chrf_greedy", "bleu_lc_tok", "bleu_lc_tok_greedy", "decode_s",
                "decode_s_greedy")
    metrics = {k: head[k] for k in headline if k in head} | metrics

    src, ref, outs = primary_outs
    if not args.quiet:
        for s, r, o in list(zip(src, ref, outs))[:3]:
            print(f"  src: {s}\n  ref: {r}\n  hyp: {o['text']}")
    out_dir = Path(args.run_dir or Path("runs") / f"eval_{Path(args.checkpoint).stem}")
    saved = save_attention_maps(model, tokenizer, outs, splits[0], out_dir, args.heatmaps, device)
    if saved:
        print(f"attention maps (every layer and head): {', '.join(saved)}")
    record = make_result(KIND, "translation", "multi30k", splits[0], metrics, params=model.num_params(),
                         train_wall_s=ckpt.get("state", {}).get("train_wall_s"), device=describe_device(device),
                         seed=tcfg["seed"], data_sha256=sha256_files(corpus.files), primary_metric="bleu",
                         samples_per_s=len(src) / max(metrics["decode_s"], 1e-9),
                         bleu_signature=sigs["bleu"], bleu_lc_tok_signature=sigs["bleu_lc_tok"],
                         chrf_signature=sigs["chrf"], language_pair=f"{tcfg['src_lang']}-{tcfg['tgt_lang']}",
                         model=f"transformer beam {args.beam_size}", beam_size=args.beam_size,
                         len_alpha=args.len_alpha, use_cache=not args.no_cache, config=ckpt["config"],
                         checkpoint=str(args.checkpoint), steps_trained=steps,
                         averaged_from=ckpt.get("averaged_from"), attention_maps=saved)
    path = write_result(record, name=args.name or f"eval_transformer_multi30k_{tcfg['src_lang']}-{tcfg['tgt_lang']}")
    record["result_file"] = str(path)
    return record


if __name__ == "__main__":
    run_cli(main)
