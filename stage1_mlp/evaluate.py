"""Evaluate a stage-1 checkpoint, or classify your own sentence (docs/stage1_mlp.md §4).

    python evaluate.py --model_path checkpoints/best_model.pt            # test split of the checkpoint's dataset
    python evaluate.py --checkpoint checkpoints/best_model.pt --split val  # --checkpoint = --model_path
    python evaluate.py --model_path checkpoints/best_model.pt --text "A wonderful, moving film."

Reports accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (PNG in the
run folder), inference latency at batch size 1 and batched throughput: first as a readable summary,
then as one ``RESULT`` line and a result file. Checkpoints trained with ``--protocol ag_news_test_cv``
are scored on their held-out fold (labelled as that protocol, never as the official AG News test figure).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import datetime
from pathlib import Path

from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.data import DataNotFoundError
from scripts.device import add_device_args, describe_device, pick_device
from scripts.flags import HELP, add_checkpoint_arg, check_non_negative
from scripts.results import peak_rss_mb, write_result
from stage1_mlp import engine
from stage1_mlp.datasets.sources import load_for_training, load_split, stratified_split
from stage1_mlp.plots import plot_confusion


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_checkpoint_arg(p, "checkpoints/best_model.pt")
    p.add_argument("--text", default="", help="classify this text and print the class probabilities")
    p.add_argument("--split", default="test", choices=["test", "val"], help="which split to score")
    p.add_argument("--data_dir", default="", help=HELP["data_dir"] + " (default: the one used in training)")
    p.add_argument("--limit", type=int, default=0, help="score only about N examples, stratified (0 = all; smoke runs)")
    p.add_argument("--batch_size", type=int, default=4096, help="batch size for scoring and the throughput figure")
    p.add_argument("--latency_samples", type=int, default=200, help="texts timed one by one for the batch-1 latency")
    p.add_argument("--run_dir", default="", help=HELP["run_dir"] + "; here the confusion-matrix PNG "
                                                 "(default: runs/eval_<dataset>_<time>)")
    p.add_argument("--name", default="", help="result file name (default: eval_<dataset>_<impl>)")
    add_device_args(p)
    args = p.parse_args(argv)
    check_non_negative({"limit": args.limit})
    for flag in ("batch_size", "latency_samples"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    return args


def classify_text(model, vec, names, text: str, device=None, dtype: str = "float32") -> dict[str, float]:
    """Class probabilities for one text."""
    if not text or not text.strip():
        raise UserError("--text is empty; give a sentence to classify")
    x = engine.featurize(vec, [text])
    if x.nnz == 0:
        raise UserError("none of the words/n-grams of --text are in the model's vocabulary; try a longer sentence")
    probs = engine.predict_proba(model, x, device=device, dtype=dtype)[0]
    return {n: float(p) for n, p in zip(names, probs)}


def latency_ms(model, vec, texts: list[str], device=None, dtype: str = "float32") -> tuple[float, float]:
    """(end-to-end ms per text at batch size 1: tokenize + features + forward; model-only ms per text)."""
    total = model_only = 0.0
    for text in texts:
        t0 = time.perf_counter()
        x = engine.featurize(vec, [text])
        t1 = time.perf_counter()
        engine.predict_logits(model, x, device=device, dtype=dtype)
        t2 = time.perf_counter()
        total += t2 - t0
        model_only += t2 - t1
    return 1000 * total / len(texts), 1000 * model_only / len(texts)


def print_summary(result: dict) -> None:
    """What a reader wants first: the metrics, per class, the confusion matrix and the speed."""
    names = result["label_names"]
    m = result["metrics"]
    print(f"{result['dataset']} {result['split']} ({result['protocol']}), {result['n_examples']:,} examples, "
          f"{result['model']} from {result['model_path']}")
    print(f"  accuracy {m['accuracy']:.2%}   macro-F1 {m['macro_f1']:.2%}   loss {m['loss']:.4f}")
    width = max(len(n) for n in names)
    print(f"  {'class':>{width}s}  precision  recall     f1  support")
    for n in names:
        c = result["per_class"][n]
        print(f"  {n:>{width}s}  {c['precision']:9.2%}  {c['recall']:6.2%}  {c['f1']:6.2%}  {c['support']:7d}")
    print(f"  confusion matrix (rows = truth, columns = prediction, order {', '.join(names)}):")
    for row in result["confusion_matrix"]:
        print("    " + " ".join(f"{v:7d}" for v in row))
    print(f"  speed: {result['samples_per_s']:,.0f} samples/s batched (featurized inputs, "
          f"batch {result['throughput_batch_size']}), "
          f"{result['end_to_end_samples_per_s']:,.0f}/s from raw text; batch-1 latency "
          f"{result['latency_ms_batch1']:.2f} ms ({result['latency_ms_batch1_model_only']:.2f} ms model only)")
    print(f"  confusion matrix plot: {result['confusion_png']}", flush=True)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    cfg, model, vec, names, ckpt = engine.load_model_checkpoint(args.checkpoint)
    if cfg.impl == "numpy" and args.dtype != "float32":
        raise UserError(f"--dtype {args.dtype} needs a --impl torch checkpoint (the NumPy MLP computes in float32)")
    device = engine.model_device(cfg, pick_device(args.device))
    model.to(device)

    if args.text:
        probs = classify_text(model, vec, names, args.text, device, args.dtype)
        best = max(probs, key=probs.get)
        print(f"prediction: {best}")
        for n, p in sorted(probs.items(), key=lambda kv: -kv[1]):
            print(f"  {n:>10s}  {p:.4f}")
        return {"prediction": best, "probabilities": probs}
    if "--text" in (argv if argv is not None else sys.argv[1:]):
        raise UserError("--text is empty; give a sentence to classify")

    data_cfg = dataclasses.replace(cfg, data_dir=args.data_dir or cfg.data_dir or "")
    if cfg.protocol == "ag_news_test_cv":
        _, data = load_for_training(cfg.dataset, cfg.protocol, cfg.fold, data_cfg.data_dir or None)
        split = f"test_cv_fold{cfg.fold}"
    elif args.split == "val":
        _, data, _ = engine.train_val_data(data_cfg)
        split = "val"
    else:
        try:
            data = load_split(cfg.dataset, "test", data_cfg.data_dir or None)
        except DataNotFoundError as e:
            raise UserError(f"{e}; or score the validation split carved from train with --split val") from None
        split = "test"
    texts, labels = data.texts, data.labels
    if args.limit and args.limit < len(texts):  # a stratified subset (files are sorted by label)
        keep = stratified_split(labels, args.limit / len(texts), seed=0)[1]
        texts, labels = [texts[i] for i in keep], labels[keep]

    t0 = time.perf_counter()
    x = engine.featurize(vec, texts)
    feat_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    logits = engine.predict_logits(model, x, args.batch_size, device, args.dtype)
    predict_s = time.perf_counter() - t0
    samples_per_s = engine.throughput(model, x, args.batch_size, device=device, dtype=args.dtype)
    lat_e2e, lat_model = latency_ms(model, vec, texts[: args.latency_samples], device, args.dtype)

    run_dir = Path(args.run_dir or f"runs/eval_{cfg.dataset}_{datetime.now():%Y%m%d-%H%M%S}")
    result = engine.make_stage_result(
        cfg, split=split, y_true=labels, logits=logits, label_names=names,
        params=engine.count_params(model), train_wall_s=None, device=describe_device(device),
        files=data.files, sample=data.sample, samples_per_s=samples_per_s,
        extra={"latency_ms_batch1": lat_e2e, "latency_ms_batch1_model_only": lat_model,
               "end_to_end_samples_per_s": len(texts) / (feat_s + predict_s), "featurize_s": feat_s,
               "throughput_batch_size": args.batch_size, "model_path": str(args.checkpoint), "dtype": args.dtype,
               "trained_on": ckpt.get("config", {}).get("dataset"), "peak_rss_mb": peak_rss_mb()})
    png = run_dir / f"confusion_{cfg.dataset}_{split}.png"
    plot_confusion(result["confusion_matrix"], names, f"{cfg.dataset} {split} ({cfg.impl})", png)
    result["confusion_png"] = str(png)
    print_summary(result)
    write_result(result, name=args.name or f"eval_{cfg.dataset}_{cfg.impl}")
    return result


if __name__ == "__main__":
    run_cli(main)
