"""Evaluate a stage-1 checkpoint, or classify your own sentence (docs/stage1_mlp.md §4).

    python evaluate.py --model_path checkpoints/best_model.pt            # test split of the checkpoint's dataset
    python evaluate.py --model_path checkpoints/best_model.pt --split val
    python evaluate.py --model_path checkpoints/best_model.pt --text "A wonderful, moving film."

Reports accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (PNG in the
run folder), inference latency at batch size 1 and batched throughput, as a ``RESULT`` line and
a result file. Checkpoints trained with ``--protocol ag_news_test_cv`` are scored on their held-out
fold (labelled as that protocol, never as the official AG News test figure).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.data import DataNotFoundError
from scripts.device import add_device_args, describe_device, pick_device
from scripts.results import write_result
from stage1_mlp import engine
from stage1_mlp.datasets.sources import load_for_training, load_split, stratified_split
from stage1_mlp.models.mlp_numpy import NumpyMLP
from stage1_mlp.plots import plot_confusion


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--model_path", default="checkpoints/best_model.pt", help="checkpoint written by train.py")
    p.add_argument("--text", default=None, help="classify this text and print the class probabilities")
    p.add_argument("--split", default="test", choices=["test", "val"], help="which split to score")
    p.add_argument("--data_dir", default=None, help="folder with <dataset>/ files (default: as in training, then $MY_LLM_DATA ...)")
    p.add_argument("--limit", type=int, default=None, help="score only about N examples, stratified (smoke runs)")
    p.add_argument("--batch_size", type=int, default=4096, help="batch size for scoring and the throughput figure")
    p.add_argument("--latency_samples", type=int, default=200, help="texts timed one by one for the batch-1 latency")
    p.add_argument("--run_dir", default=None, help="where the confusion-matrix PNG goes (default runs/eval_<dataset>_<time>)")
    p.add_argument("--name", default=None, help="result file name (default eval_<dataset>_<impl>)")
    add_device_args(p)
    args = p.parse_args(argv)
    for flag in ("limit", "batch_size", "latency_samples"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise UserError(f"--{flag} must be >= 1, got {v}")
    return args


def classify_text(model, vec, names, text: str, device=None) -> dict[str, float]:
    """Class probabilities for one text."""
    if not text or not text.strip():
        raise UserError("--text is empty; give a sentence to classify")
    x = engine.featurize(vec, [text])
    if x.nnz == 0:
        raise UserError("none of the words/n-grams of --text are in the model's vocabulary; try a longer sentence")
    probs = engine.predict_proba(model, x, device=device)[0]
    return {n: float(p) for n, p in zip(names, probs)}


def latency_ms(model, vec, texts: list[str], device=None) -> tuple[float, float]:
    """(end-to-end ms per text at batch size 1: tokenize + features + forward; model-only ms per text)."""
    total = model_only = 0.0
    for text in texts:
        t0 = time.perf_counter()
        x = engine.featurize(vec, [text])
        t1 = time.perf_counter()
        engine.predict_logits(model, x, device=device)
        t2 = time.perf_counter()
        total += t2 - t0
        model_only += t2 - t1
    return 1000 * total / len(texts), 1000 * model_only / len(texts)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    device = pick_device(args.device)
    cfg, model, vec, names, ckpt = engine.load_model_checkpoint(args.model_path)
    if isinstance(model, NumpyMLP):
        device = torch.device("cpu")
    else:
        model.to(device)

    if args.text is not None:
        probs = classify_text(model, vec, names, args.text, device)
        best = max(probs, key=probs.get)
        print(f"prediction: {best}")
        for n, p in sorted(probs.items(), key=lambda kv: -kv[1]):
            print(f"  {n:>10s}  {p:.4f}")
        return {"prediction": best, "probabilities": probs}

    data_cfg = dataclasses.replace(cfg, data_dir=args.data_dir or cfg.data_dir)
    if cfg.protocol == "ag_news_test_cv":
        _, data = load_for_training(cfg.dataset, cfg.protocol, cfg.fold, data_cfg.data_dir)
        split = f"test_cv_fold{cfg.fold}"
    elif args.split == "val":
        _, data, _ = engine.train_val_data(data_cfg)
        split = "val"
    else:
        try:
            data = load_split(cfg.dataset, "test", data_cfg.data_dir)
        except DataNotFoundError as e:
            raise UserError(f"{e}; or score the validation split carved from train with --split val") from None
        split = "test"
    texts, labels = data.texts, data.labels
    if args.limit is not None and args.limit < len(texts):  # a stratified subset (files are sorted by label)
        keep = stratified_split(labels, args.limit / len(texts), seed=0)[1]
        texts, labels = [texts[i] for i in keep], labels[keep]

    t0 = time.perf_counter()
    x = engine.featurize(vec, texts)
    feat_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    logits = engine.predict_logits(model, x, args.batch_size, device)
    predict_s = time.perf_counter() - t0
    samples_per_s = engine.throughput(model, x, args.batch_size, device=device)
    lat_e2e, lat_model = latency_ms(model, vec, texts[: args.latency_samples], device)

    run_dir = Path(args.run_dir or f"runs/eval_{cfg.dataset}_{datetime.now():%Y%m%d-%H%M%S}")
    result = engine.make_stage_result(
        cfg, split=split, y_true=labels, logits=logits, label_names=names,
        params=engine.count_params(model), train_wall_s=None, device=describe_device(device),
        files=data.files, sample=data.sample, samples_per_s=samples_per_s,
        extra={"latency_ms_batch1": lat_e2e, "latency_ms_batch1_model_only": lat_model,
               "end_to_end_samples_per_s": len(texts) / (feat_s + predict_s), "featurize_s": feat_s,
               "throughput_batch_size": args.batch_size, "model_path": str(args.model_path),
               "trained_on": ckpt.get("config", {}).get("dataset"), "peak_rss_mb": engine.peak_rss_mb()})
    png = run_dir / f"confusion_{cfg.dataset}_{split}.png"
    plot_confusion(result["confusion_matrix"], names, f"{cfg.dataset} {split} ({cfg.impl})", png)
    result["confusion_png"] = str(png)
    write_result(result, name=args.name or f"eval_{cfg.dataset}_{cfg.impl}")
    return result


if __name__ == "__main__":
    run_cli(main)
