"""Evaluate a translation checkpoint: sacreBLEU and chrF, greedy and beam, on every test set.

    python evaluate.py --model_path checkpoints/best_attention_model.pt
    python evaluate.py --checkpoint checkpoints/best_attention_model.pt --beam_size 10 --splits test_2016_flickr

BLEU is sacreBLEU's corpus BLEU (13a tokenisation, cased) of the *detokenised* output against the
raw references; the signature is printed so the number can be compared with published ones.
A few attention heatmaps (PNG) are saved next to the run, and one ``RESULT`` line / result file
is written (headline: beam BLEU on the first test split, ``test_2016_flickr`` for Multi30k).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.data import sha256_files
from scripts.device import add_device_args, describe_device, pick_device
from scripts.flags import HELP, add_checkpoint_arg, check_non_negative
from scripts.results import make_result, write_result
from stage3_attention_seq2seq.utils.checkpoint import KIND, load_model
from stage3_attention_seq2seq.utils.data import load_corpus
from stage3_attention_seq2seq.utils.evaluation import evaluate_split, plot_attention


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_checkpoint_arg(p, default="checkpoints/best_attention_model.pt")
    p.add_argument("--data_dir", default=None, help=HELP["data_dir"])
    p.add_argument("--splits", nargs="+", default=None, help="test splits (default: all of the dataset's)")
    p.add_argument("--beam_size", type=int, default=5,
                   help="beam width for the beam-search scores (greedy is always run too)")
    p.add_argument("--len_alpha", type=float, default=1.0, help="length normalisation: score / length**alpha")
    p.add_argument("--batch_size", type=int, default=128, help="sentences decoded together")
    p.add_argument("--limit", type=int, default=0, help="only the first N sentences of each split (0 = all)")
    p.add_argument("--no_unk_replace", action="store_true",
                   help="keep <unk> in the output instead of copying the attended source word")
    p.add_argument("--heatmaps", type=int, default=3, help="save attention heatmaps for this many sentences")
    p.add_argument("--run_dir", default=None,
                   help=HELP["run_dir"] + "; here the attention heatmaps (default: runs/eval_<checkpoint name>)")
    p.add_argument("--name", default=None, help="result file name (default: eval_<attention>_<dataset>_<pair>)")
    p.add_argument("--quiet", action="store_true", help="no example translations")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    add_device_args(p, dtype=False)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.beam_size < 1 or args.batch_size < 1:
        raise UserError("--beam_size and --batch_size must be >= 1")
    check_non_negative({"limit": args.limit, "heatmaps": args.heatmaps, "threads": args.threads})
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, src_vocab, tgt_vocab, ckpt = load_model(args.checkpoint, device)
    tcfg = ckpt["config"]["train"]
    corpus = load_corpus(tcfg["dataset"], tcfg["src_lang"], tcfg["tgt_lang"], args.data_dir, seed=tcfg["seed"])
    splits = args.splits or corpus.test_splits
    unknown = [s for s in splits if s not in corpus.splits]
    if unknown:
        raise UserError(f"unknown split(s) {unknown}; {corpus.name} has {', '.join(corpus.splits)}")
    attn_type = ckpt["config"]["model"]["attention_type"]
    print(f"{args.checkpoint}: {attn_type}, {corpus.name} {tcfg['src_lang']}->{tcfg['tgt_lang']}, "
          f"{model.num_params():,} parameters, trained {ckpt['state']['epoch']} epochs")
    head, metrics, signature, primary_outs = {}, {}, None, None
    for i, split in enumerate(splits):
        src, ref = corpus.splits[split]
        if args.limit:
            src, ref = src[:args.limit], ref[:args.limit]
        for beam in ([1, args.beam_size] if args.beam_size > 1 else [1]):
            scores, outs, secs = evaluate_split(model, src, ref, src_vocab, tgt_vocab, beam_size=beam,
                                                len_alpha=args.len_alpha, batch_size=args.batch_size,
                                                device=device, unk_replace=not args.no_unk_replace)
            tag = "greedy" if beam == 1 else f"beam{beam}"
            metrics[f"{split}/bleu_{tag}"] = scores["bleu"]
            metrics[f"{split}/chrf_{tag}"] = scores["chrf"]
            metrics[f"{split}/decode_s_{tag}"] = secs
            signature = scores["bleu_signature"]
            print(f"{split:18s} {tag:7s} BLEU {scores['bleu']:6.2f}  chrF {scores['chrf']:6.2f}  "
                  f"({len(src)} sentences decoded in {secs:.1f} s)")
            if i == 0:
                primary_outs = (src, ref, outs)
                head["bleu" if beam > 1 or args.beam_size == 1 else "bleu_greedy"] = scores["bleu"]
                head["chrf" if beam > 1 or args.beam_size == 1 else "chrf_greedy"] = scores["chrf"]
                if beam == args.beam_size:
                    head["beam_decode_s"] = secs
    print(f"sacreBLEU signature: {signature}")
    headline = ("bleu", "bleu_greedy", "beam_decode_s", "chrf", "chrf_greedy")
    metrics = {k: head[k] for k in headline if k in head} | metrics

    src, ref, outs = primary_outs
    if not args.quiet:
        for s, r, o in list(zip(src, ref, outs))[:3]:
            print(f"  src: {s}\n  ref: {r}\n  hyp: {o['text']}")
    out_dir = Path(args.run_dir or Path("runs") / f"eval_{Path(args.checkpoint).stem}")
    saved = []
    if attn_type != "none" and args.heatmaps:
        out_dir.mkdir(parents=True, exist_ok=True)
        for j, o in enumerate(outs[:args.heatmaps]):
            if o["attn"] is not None:
                path = out_dir / f"attention_{splits[0]}_{j}.png"
                plot_attention(o["src_tokens"], o["tgt_tokens"], o["attn"], path, title=o["text"][:80])
                saved.append(str(path))
        print(f"attention heatmaps: {', '.join(saved)}")
    decode_s = metrics.get("beam_decode_s", metrics[f"{splits[0]}/decode_s_greedy"])
    record = make_result(KIND, "translation", corpus.name, splits[0], metrics, params=model.num_params(),
                         train_wall_s=ckpt["state"].get("train_wall_s"), device=describe_device(device),
                         seed=tcfg["seed"], data_sha256=sha256_files(corpus.files), primary_metric="bleu",
                         samples_per_s=len(src) / max(decode_s, 1e-9),
                         bleu_signature=signature, language_pair=f"{tcfg['src_lang']}-{tcfg['tgt_lang']}",
                         model=f"{attn_type} beam {args.beam_size}", attention_type=attn_type,
                         beam_size=args.beam_size, len_alpha=args.len_alpha, config=ckpt["config"],
                         checkpoint=str(args.checkpoint), epochs_trained=ckpt["state"]["epoch"],
                         steps_trained=ckpt["state"]["step"])
    default_name = f"eval_{attn_type}_{corpus.name}_{tcfg['src_lang']}-{tcfg['tgt_lang']}"
    path = write_result(record, name=args.name or default_name)
    record["result_file"] = str(path)
    return record


if __name__ == "__main__":
    run_cli(main)
