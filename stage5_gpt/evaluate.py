"""Evaluate a GPT checkpoint: loss (nats/token), perplexity, bits per character and word-level perplexity.

    python evaluate.py --checkpoint checkpoints/best_gpt.pt                         # val (and test) of its dataset
    python evaluate.py --checkpoint checkpoints/bench_ptb/best_gpt.pt --split test --stride 128

Every token of the split is scored once, with a **sliding window**: windows of ``--context`` tokens (default: the
model's block_size) start every ``--stride`` tokens (default: half the context); each window scores only the
tokens the previous one did not, so every token but those of the first window is predicted from at least
``context - stride`` tokens before it (stride = context: non-overlapping chunks, cheaper and a little worse).
For a BPE tokenizer the split is preceded by ``<|endoftext|>``, so its first token is scored too; a character
model cannot score the very first character.

- ``loss``: total nats / tokens scored; ``ppl = exp(loss)``, per *token* of this tokenizer: not comparable across
  tokenizers.
- ``nats_per_char`` (= the loss for a char model) and ``bpc = nats_per_char / ln 2``: total nats / characters.
- ``word_ppl = exp(total nats / words)``, words counted as stage 2 does (whitespace tokens plus one ``<eos>`` per
  line): the number that sits beside stage 2's word-level LSTM on PTB / WikiText-2 whatever the tokenizer.

Prints a readable summary (tokenizer, context and stride stated), writes the result file and ends with the
``RESULT`` line.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from scripts.checkpoint import weights_fingerprint
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.device import DTYPES, add_device_args, autocast, describe_device, pick_device
from scripts.flags import HELP, add_checkpoint_arg, check_non_negative
from scripts.results import make_result, write_result
from stage5_gpt.train import open_prepared
from stage5_gpt.utils.checkpoint import BEST_NAME, KIND, check_meta, clean_state_dict, load_model
from stage5_gpt.utils.data import count_words, load_meta, load_split

WORD_DATASETS = ("ptb", "wikitext2")  # word_ppl is their headline number (stage 2's word-level LSTM)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_checkpoint_arg(p, f"checkpoints/{BEST_NAME}")
    p.add_argument("--split", default="all", choices=["val", "test", "all"],
                   help="all = every split the dataset has besides train")
    p.add_argument("--context", type=int, default=0, help="tokens per window (0 = the model's block_size)")
    p.add_argument("--stride", type=int, default=0, help="tokens between window starts (0 = context // 2)")
    p.add_argument("--batch_size", type=int, default=16, help="windows per forward pass")
    p.add_argument("--max_tokens", type=int, default=0, help="score only the first N tokens of each split (0 = all)")
    p.add_argument("--prepared_dir", default="",
                   help="folder with the prepared splits and meta.json (default: the one the checkpoint was "
                        "trained on; prepared again if missing)")
    p.add_argument("--data_dir", default=None, help=HELP["data_dir"] + " (used only to prepare missing data)")
    p.add_argument("--name", default=None, help="result file name (default: eval_gpt_<dataset>)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="autocast precision of the forward pass")
    add_device_args(p, dtype=False)
    return p


def window_plan(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows over a stream of ``n`` tokens: ``(begin, end, first)``: input positions [begin, end) predict tokens
    [begin+1, end+1); positions before ``first`` were scored by an earlier window. Every position in [0, n-1) is
    scored exactly once."""
    plan, done = [], 0
    last = n - 1  # the last position with a next token
    begin = 0
    while done < last:
        end = min(begin + context, last)
        plan.append((begin, end, max(begin, done)))
        done = end
        begin += stride
    return plan


@torch.no_grad()
def sliding_window_nll(model, ids: np.ndarray, context: int, stride: int, batch_size: int, device,
                       dtype: str = "float32") -> tuple[float, int]:
    """``(total nats, tokens scored)`` of the stream ``ids`` under ``model`` (see :func:`window_plan`)."""
    stream = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    plan = window_plan(len(stream), context, stride)
    total, scored = 0.0, 0
    i = 0
    while i < len(plan):
        length = plan[i][1] - plan[i][0]
        group = [plan[i]]
        while i + len(group) < len(plan) and len(group) < batch_size and \
                plan[i + len(group)][1] - plan[i + len(group)][0] == length:
            group.append(plan[i + len(group)])
        i += len(group)
        x = torch.stack([stream[b:e] for b, e, _ in group]).to(device)  # (B, L)
        y = torch.stack([stream[b + 1:e + 1] for b, e, _ in group]).to(device)  # (B, L)
        with autocast(device, dtype):
            logits, _ = model(x)  # (B, L, V)
        nll = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")  # (B, L)
        keep = torch.arange(length, device=device)[None, :] >= torch.tensor([f - b for b, _, f in group],
                                                                           device=device)[:, None]  # (B, L)
        total += float(nll[keep].double().sum())
        scored += int(keep.sum())
    return total, scored


def score_split(model, tokenizer, meta: dict, folder, split: str, args, context: int, stride: int, device) -> dict:
    ids = np.asarray(load_split(folder, split, meta), dtype=np.int64)
    whole = not args.max_tokens or args.max_tokens >= len(ids)
    ids = ids if whole else ids[:args.max_tokens]
    if whole:
        counts = meta["splits"][split]
        chars, words = counts["chars"], counts["words"]
    else:  # a prefix: count what it decodes to
        text = tokenizer.decode(ids.tolist())
        chars, words = len(text), count_words(text)
    eot = tokenizer.eot_id
    stream = np.concatenate([[eot], ids]) if eot is not None else ids
    if len(stream) < 2:
        raise UserError(f"the {split} split has {len(ids)} token(s); nothing to score")
    t0 = time.perf_counter()
    total, scored = sliding_window_nll(model, stream, context, stride, args.batch_size, device, args.dtype)
    secs = time.perf_counter() - t0
    loss = total / scored
    per_char = loss if tokenizer.kind == "char" else total / max(chars, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50)), "nats_per_char": per_char, "bpc": per_char / math.log(2),
            "word_ppl": math.exp(min(total / max(words, 1), 50)), "total_nats": total, "tokens": scored,
            "chars": chars, "words": words, "seconds": secs}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    check_non_negative({"context": args.context, "stride": args.stride, "max_tokens": args.max_tokens,
                        "threads": args.threads})
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, ckpt = load_model(args.checkpoint, device)
    tcfg = ckpt["config"].get("train") or {}
    block = model.config.block_size
    context = args.context or block
    if context > block:
        raise UserError(f"--context {context} is longer than the model's block_size {block}")
    stride = args.stride or max(1, context // 2)
    if stride > context:
        raise UserError(f"--stride {stride} must be <= --context {context} (a larger stride would skip tokens)")
    dataset = (ckpt.get("vocab") or {}).get("dataset") or tcfg.get("dataset")
    if not dataset:
        raise UserError(f"{args.checkpoint} does not say which dataset it was trained on")
    folder = open_prepared(dataset, args.prepared_dir or tcfg.get("prepared_dir") or "",
                           args.data_dir or tcfg.get("data_dir"), tcfg.get("vocab_size") or 0)
    meta = load_meta(folder)
    check_meta(ckpt, meta, where=f"{folder}/meta.json")
    splits = [s for s in ("val", "test") if s in meta["splits"] and args.split in (s, "all")]
    if not splits:
        raise UserError(f"{dataset} has no {args.split} split (it has {', '.join(meta['splits'])})")
    first_token = "preceded by <|endoftext|>, every token scored" if tokenizer.eot_id is not None else \
        "the first character has no context and is not scored"
    print(f"{args.checkpoint}: GPT {model.config.n_layer} layers, n_embd {model.config.n_embd}, "
          f"{model.num_params():,} parameters, {ckpt.get('step', 0)} steps; {dataset}, {tokenizer.kind} tokenizer "
          f"(vocabulary {tokenizer.vocab_size:,}); context {context}, stride {stride} ({first_token})")
    metrics, per_split = {}, {}
    for split in splits:
        r = score_split(model, tokenizer, meta, folder, split, args, context, stride, device)
        per_split[split] = r
        print(f"{split:5s} {r['tokens']:,} tokens: loss {r['loss']:.4f} nats/token (ppl {r['ppl']:.2f}); "
              f"{r['nats_per_char']:.4f} nats/char = {r['bpc']:.4f} bits/char; word-level ppl {r['word_ppl']:.2f} "
              f"({r['words']:,} words); {r['seconds']:.1f} s")
        for k in ("loss", "ppl", "nats_per_char", "bpc", "word_ppl"):
            metrics[f"{split}/{k}"] = r[k]
    head = per_split[splits[-1] if "test" in per_split and args.split != "val" else splits[0]]
    headline = {k: head[k] for k in ("loss", "ppl", "nats_per_char", "bpc", "word_ppl")}
    primary = "word_ppl" if dataset in WORD_DATASETS else ("loss" if tokenizer.kind == "char" else "bpc")
    record = make_result(KIND, "lm_eval", dataset, "test" if head is per_split.get("test") else "val",
                         {**headline, **metrics}, params=model.num_params(),
                         train_wall_s=(ckpt.get("state") or {}).get("train_wall_s"), device=describe_device(device),
                         seed=tcfg.get("seed"), data_sha256=ckpt.get("data_sha256"), primary_metric=primary,
                         steps_trained=ckpt.get("step", 0), checkpoint=str(args.checkpoint),
                         weights=weights_fingerprint(clean_state_dict(ckpt["model"])),
                         protocol=f"{tokenizer.kind} tokenizer, context {context}, stride {stride}",
                         eval_protocol={"tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                                   "context": context, "stride": stride, "first_token": first_token,
                                   "max_tokens": args.max_tokens,
                                   "words": "whitespace tokens + one <eos> per line (stage 2's count)"},
                         counts={s: {k: r[k] for k in ("tokens", "chars", "words", "total_nats")}
                                 for s, r in per_split.items()},
                         config=ckpt.get("config"))
    record["result_file"] = str(write_result(record, name=args.name or f"eval_gpt_{dataset}"))
    return record


if __name__ == "__main__":
    run_cli(main)
