"""The stage-5 benchmarks (issue 14 targets), as presets. Each writes result files under results/stage5_gpt/;
``--report`` also copies them to results/reported/stage5_gpt/ (what the README tables are built from).

    python benchmark.py nanogpt_cpu --report   # nanoGPT's CPU recipe, 2,000 steps (target val <= 1.90; nanoGPT 1.88)
    python benchmark.py char20 --report        # 20 minutes, char-level (target val <= 1.45, to beat stage 2's LSTM)
    python benchmark.py kv_cache --report      # 512 new tokens at context 512, cached vs recomputed (target >= 6x)
    python benchmark.py bpe --report           # 4,096-token BPE <= 30 s, >= 10x the naive trainer, tokens/byte vs HF
    python benchmark.py ddp --report           # 2 gloo processes vs 1 (same losses), 2-process throughput
    python benchmark.py ablation --report      # pos / norm / mlp options at equal CPU time (--max_minutes each)
    python benchmark.py bf16 --report          # fp32 vs bf16 autocast step time and matmul peak on this CPU
    python benchmark.py dropout --report       # nn.Dropout's masks vs --dropout_impl fast: step time of char20
    python benchmark.py ptb --report           # BPE GPT on PTB, 40 minutes, word-level test ppl (target <= 110)
    python benchmark.py wikitext2 --report     # the same on WikiText-2
    python benchmark.py pretrain --report      # the model finetune.py starts from: IMDb train + WikiText-2, ~60 min
    python benchmark.py ft_imdb_full --report  # fine-tune it on IMDb (also ft_imdb_scratch / _head / _lora,
                                               # ft_imdb_long, ft_ag_full / _scratch,
                                               # ft_translate, ft_multitask)
    python benchmark.py forgetting --report    # the pre-training loss of each fine-tuned model (forgetting)
    python benchmark.py gpu_char --report      # (a CUDA GPU) nanoGPT's GPU char config, bf16 + compile (<= 1.47)

* ``nanogpt_cpu``: :data:`NANOGPT_CPU`, the flags of nanoGPT's README command for the CPU (no compile;
  ``--eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
  --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0``) on top of its ``train_shakespeare_char.py`` config
  (lr 1e-3 to 1e-4, warm-up 100, beta2 0.99, weight decay 0.1, clip 1.0, no biases, eval every 250), trained with
  ``--seeds`` seeds (``--seed``, ``--seed`` + 1, ...; 3 by default, about 100 s each). nanoGPT's 1.88 is the mean
  loss of 20 random 64-character windows, every position scored; its expectation is the loss over *all*
  non-overlapping 64-character windows of the val split (``evaluate.py --stride 64``), which is what is compared
  with it, as the mean over the seeds (one seed's 20-batch estimate is noisy). The sliding-window loss
  (stride 32: every character has at least 32 before it) is reported beside it.
* ``char20``: :data:`CHAR20` for ``--max_minutes 20`` (the step count is fixed after 20 steps, see
  scripts/budget.py), then ``evaluate.py``. Records MFU against the matmul peak measured for bf16 in the same run
  (target >= 35%) and peak RSS (target <= 2 GB).
* ``ptb`` / ``wikitext2``: byte-level BPE (4,096 / 8,192 tokens), :data:`WORD_LM` (+ :data:`WORD_EXTRA`) for
  ``--max_minutes 40``, then
  ``evaluate.py --split test`` with a sliding window (context 128, stride 64): word-level perplexity
  exp(total nats / words) beside stage 2's LSTM (its result files, same test splits).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import torch

from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.device import autocast, describe_device
from scripts.flags import DEFAULT_SEED, HELP, add_checkpoint_arg
from scripts.log import read_metrics
from scripts.results import make_result, report_result, write_result
from scripts.seed import seed_everything
from stage5_gpt import evaluate, train
from stage5_gpt.models.gpt import GPT, GPTConfig
from stage5_gpt.utils.checkpoint import KIND, load_model
from stage5_gpt.utils.data import file_sha256, get_batch, load_split, prepare_dataset, read_splits, source_files
from stage5_gpt.utils.distributed import torchrun_argv
from stage5_gpt.utils.mfu import measure_peak_flops

STAGE = Path(__file__).resolve().parent
CHAR = ["--dataset", "shakespeare_char"]
# nanoGPT README's CPU command on config/train_shakespeare_char.py
NANOGPT_CPU = CHAR + ["--n_layer", "4", "--n_head", "4", "--n_embd", "128", "--block_size", "64", "--batch_size", "12",
                      "--dropout", "0.0", "--no-bias", "--max_steps", "2000", "--lr", "1e-3", "--min_lr", "1e-4",
                      "--lr_schedule", "cosine", "--warmup_steps", "100", "--weight_decay", "0.1", "--beta2", "0.99",
                      "--grad_clip", "1.0", "--eval_every", "250", "--eval_iters", "20", "--log_every", "50"]
NANOGPT_TARGET = 1.90  # issue 14: the mean val loss over the seeds (nanoGPT reports 1.88)
# The one architectural difference from nanoGPT is GELU (ours: the tanh approximation, GPT-2's; nanoGPT: exact).
# Probe with the exact GELU (``nn.GELU(approximate="none")`` in models/gpt.py's MLP for one run, 2026-12-08, not
# reported): mean 1.9052 over the 3 seeds (1.9007 / 1.9118 / 1.9031) against 1.9053 published, so the miss is not
# the activation.
# 20 minutes on 2 cores: a 3.2M-parameter LLaMA-style model (RoPE, RMSNorm, SwiGLU) in bf16 autocast, which on
# this CPU runs about twice the tokens/s of fp32 (see the bf16 preset), i.e. about ten passes over the 1M training
# characters in 20 minutes. Dropout (also on the attention weights) is what keeps it from over-fitting: 0.0
# over-fits, 0.2 under-fits (2026-12-02, not reported); the published 1.4572 (2026-12-02) had 0.05 with nn.Dropout.
# Probes, not reported: ``--attn_dropout 0`` (SDPA's fused kernel) was faster but worse: 1.4722 after 1,659 steps and
# 1.4677 after 1,830 (2026-12-03), and with context 256 / batch 16 as well 1.4659 after 2,239 (2026-12-07);
# ``--dropout 0.1`` with nn.Dropout 1.4626 after 2,059 steps (2026-12-07, a slower machine than 2026-12-02).
# ``--dropout_impl fast`` draws the masks from a quarter of the random numbers (see the dropout preset), so the
# same 20 minutes give more steps; dropout 0.1, since more steps over-fit more: 1.4581 after 2,456 steps with
# min_lr 2e-4 and an evaluation every 250 steps (2026-12-07, replaced), 1.4563 after 2,401 with min_lr 2e-5 and
# every 500 (the published row; the preset since). ``--batch_size 16`` (twice the steps at the same tokens/s;
# 2026-12-08, not reported): 1.4579 after 4,684 of its planned 4,959 steps (the 20 minutes ran out first), no better.
CHAR20 = CHAR + ["--n_layer", "4", "--n_head", "4", "--n_embd", "256", "--block_size", "128", "--batch_size", "32",
                 "--pos", "rope", "--norm", "rmsnorm", "--mlp", "swiglu", "--dropout", "0.1", "--dropout_impl", "fast",
                 "--lr", "2e-3", "--min_lr", "2e-5", "--warmup_steps", "100", "--weight_decay", "0.1", "--beta2",
                 "0.99", "--grad_clip", "1.0", "--dtype", "bfloat16", "--fused", "--eval_every", "500", "--eval_iters",
                 "20", "--log_every", "50"]
CHAR20_MINUTES = 20.0
WORD_LM = ["--n_layer", "4", "--n_head", "4", "--n_embd", "256", "--block_size", "128", "--batch_size", "32",
           "--dropout", "0.2", "--lr", "1e-3", "--min_lr", "1e-4", "--warmup_steps", "200", "--weight_decay", "0.1",
           "--beta2", "0.99", "--grad_clip", "1.0", "--dtype", "bfloat16", "--fused", "--eval_every", "250",
           "--eval_iters", "20", "--log_every", "50"]
WORD_MINUTES = 40.0
# PTB also takes the LLaMA-style options (the ablation's best at char level): 2026-12-03, 40 minutes, 2,426 steps
# (a slower day: the bf16 matmul probe measured about half the GFLOP/s of 2026-12-02), test word perplexity 104.6,
# against 122.0 for the GPT-2-style WORD_LM after 3,353 steps on 2026-12-02. WikiText-2's row is still WORD_LM alone.
WORD_EXTRA = {"ptb": ["--pos", "rope", "--norm", "rmsnorm", "--mlp", "swiglu"], "wikitext2": []}
# nanoGPT's GPU character config (config/train_shakespeare_char.py): val 1.4697 in about 3 minutes on an A100
GPU_CHAR = CHAR + ["--preset", "mini", "--batch_size", "64", "--dropout", "0.2", "--no-bias", "--max_steps", "5000",
                   "--lr", "1e-3", "--min_lr", "1e-4", "--warmup_steps", "100", "--beta2", "0.99", "--weight_decay",
                   "0.1", "--eval_every", "250", "--eval_iters", "200", "--log_every", "100", "--dtype", "bfloat16",
                   "--compile", "--fused", "--device", "cuda"]
# ablation: one small model, each option alone and all three together, the same minutes each
ABLATION_BASE = CHAR + ["--n_layer", "4", "--n_head", "4", "--n_embd", "128", "--block_size", "128", "--batch_size",
                        "16", "--dropout", "0.0", "--lr", "2e-3", "--min_lr", "2e-4", "--warmup_steps", "50",
                        "--eval_every", "200", "--eval_iters", "20", "--log_every", "100"]
ABLATION = {"gpt2": [], "rope": ["--pos", "rope"], "rmsnorm": ["--norm", "rmsnorm"], "swiglu": ["--mlp", "swiglu"],
            "llama": ["--pos", "rope", "--norm", "rmsnorm", "--mlp", "swiglu"]}
KV_MODEL = CHAR + ["--n_layer", "4", "--n_head", "4", "--n_embd", "256", "--block_size", "512", "--batch_size", "8",
                   "--lr", "2e-3", "--warmup_steps", "20", "--max_steps", "100", "--eval_every", "100",
                   "--eval_iters", "5", "--log_every", "20"]
DDP_ARGS = CHAR + ["--preset", "nano", "--max_steps", "50", "--eval_every", "25", "--eval_iters", "10",
                   "--log_every", "1", "--warmup_steps", "10", "--lr", "1e-3"]
# the pre-trained model of finetune.py: IMDb train reviews + WikiText-2 train, BPE 8,192, about 60 CPU minutes
# (a fixed step count, so a loaded machine makes it slower, not different). Deterministic: the 2026-12-07 run on 2
# threads repeated the 2026-12-02 run on 1 thread bit for bit (every logged loss and the val total nats equal).
PRETRAIN = ["--dataset", "imdb_wikitext2", "--n_layer", "4", "--n_head", "4", "--n_embd", "256", "--block_size", "256",
            "--batch_size", "16", "--pos", "rope", "--norm", "rmsnorm", "--mlp", "swiglu", "--dropout", "0.1",
            "--lr", "1e-3", "--min_lr", "1e-4", "--warmup_steps", "200", "--weight_decay", "0.1", "--beta2", "0.99",
            "--grad_clip", "1.0", "--dtype", "bfloat16", "--fused", "--max_steps", "3500", "--eval_every", "250",
            "--eval_iters", "20", "--log_every", "50"]
# finetune.py from the pretrain checkpoint: IMDb (stage 1's splits, full 25,000-review test set) with one epoch of
# 32-review steps over 256 tokens per review, and the same run from random weights (the control); head-only and
# LoRA keep the trunk frozen and take a larger learning rate
FT_IMDB = ["--task", "classify", "--dataset", "imdb", "--max_len", "256", "--pool", "mean", "--batch_size", "32",
           "--epochs", "1", "--lr", "3e-4", "--warmup_steps", "50", "--weight_decay", "0.01", "--dropout", "0.1",
           "--dtype", "bfloat16", "--eval_every", "250", "--log_every", "25"]
FINETUNES = {
    "ft_imdb_full": FT_IMDB,
    "ft_imdb_scratch": FT_IMDB + ["--init_from", "scratch"],
    "ft_imdb_head": FT_IMDB + ["--mode", "head", "--lr", "1e-3"],
    "ft_imdb_lora": FT_IMDB + ["--mode", "lora", "--lora_rank", "8", "--lora_alpha", "16", "--lr", "1e-3"],
    # (nearly) the whole review: 512 tokens (finetune.py logs how many reviews 256 would cut), past the
    # pre-trained context of 256, which RoPE allows (finetune.py --max_len), and two epochs: with one (743 steps,
    # 2026-12-02) the validation accuracy still rose at every evaluation (0.8736, 0.8888, 0.8912) and the test
    # accuracy was 88.64%; two epochs (2026-12-07, 62 minutes on 2 threads) gave 88.89%, from the best validation
    # checkpoint at step 750 of 1,486 (0.9056; 0.9024 at the end)
    "ft_imdb_long": [*FT_IMDB, "--max_len", "512", "--epochs", "2"],
    # AG News by stage 1's ag_news_test_cv protocol (the official train split is not on these machines): fold 0,
    # about 5,800 short news texts, so three epochs; the same from random weights
    "ft_ag_full": [*FT_IMDB, "--dataset", "ag_news", "--protocol", "ag_news_test_cv", "--epochs", "3",
                   "--eval_every", "100"],
    "ft_ag_scratch": [*FT_IMDB, "--dataset", "ag_news", "--protocol", "ag_news_test_cv", "--epochs", "3",
                      "--eval_every", "100", "--init_from", "scratch"],
    "ft_translate": ["--task", "translate", "--batch_size", "32", "--epochs", "2", "--lr", "5e-4", "--warmup_steps",
                     "100", "--dropout", "0.1", "--dtype", "bfloat16", "--beam_size", "5", "--eval_every", "500",
                     "--log_every", "25"],
    # every task of the mixture gets (in expectation) the steps of its single-task preset: 743 = one epoch of
    # ft_imdb_full, 1,814 = two epochs of ft_translate, plus 443 steps of language modelling (the rehearsal), and
    # ft_translate's learning rate. Before 2026-12-07 the preset was classify=1,translate=1,lm=1 for 2,000 steps at
    # 3e-4: translation then had about a third of its single-task steps (BLEU 13.55 against 37.52).
    "ft_multitask": ["--task", "multitask", "--mix", "classify=743,translate=1814,lm=443", "--max_len", "256",
                     "--pool", "mean", "--batch_size", "32", "--max_steps", "3000", "--lr", "5e-4", "--warmup_steps",
                     "100", "--dropout", "0.1", "--dtype", "bfloat16", "--beam_size", "5", "--eval_every", "500",
                     "--log_every", "25"],
}
PRESETS = ("nanogpt_cpu", "char20", "kv_cache", "bpe", "ddp", "ablation", "bf16", "dropout", "ptb", "wikitext2",
           "gpu_char", "pretrain", *FINETUNES, "forgetting")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("preset", choices=PRESETS, help="which benchmark")
    p.add_argument("--max_minutes", type=float, default=0.0,
                   help=HELP["max_minutes"] + " (char20: 20, ptb/wikitext2: 40, ablation: 3 per variant when 0)")
    add_checkpoint_arg(p, default="")
    p.add_argument("--new_tokens", type=int, default=512, help="kv_cache: tokens to generate")
    p.add_argument("--bpe_vocab", type=int, default=4096, help="bpe: vocabulary size of the full training")
    p.add_argument("--naive_chars", type=int, default=100_000, help="bpe: characters of the side-by-side slice")
    p.add_argument("--naive_vocab", type=int, default=1024, help="bpe: vocabulary size on the slice")
    p.add_argument("--repeats", type=int, default=10, help="bf16: timed steps per dtype")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=HELP["seed"])
    p.add_argument("--seeds", type=int, default=3, help="nanogpt_cpu: seeds to train (--seed, --seed + 1, ...)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--report", action="store_true", help=HELP["report"])
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="training presets: more train.py flags")
    return p


def load_note(what: str) -> None:
    print(f"benchmark {what}: load average {os.getloadavg()}, cpus {os.cpu_count()}", flush=True)


def common(args, name: str, seed: int | None = None) -> list[str]:
    threads = ["--threads", str(args.threads)] if args.threads else []
    return ["--seed", str(args.seed if seed is None else seed), "--out_dir", f"checkpoints/bench_{name}",
            "--run_dir", f"runs/bench_{name}", *threads]


def train_then_eval(args, name: str, flags: list[str], eval_flags: list[str]) -> list[dict]:
    load_note(name)
    rec = train.main(flags + common(args, name) + args.extra)
    load_note(f"{name} (after training)")
    ev = evaluate.main(["--checkpoint", rec["checkpoint"], "--name", f"bench_{name}_eval", *eval_flags,
                        *(["--threads", str(args.threads)] if args.threads else [])])
    return [rec, ev]


def bench_nanogpt_cpu(args) -> list[dict]:
    """Train :data:`NANOGPT_CPU` once per seed, score each on the whole val split (non-overlapping windows, and a
    sliding window), and write one summary; the first seed's training record is reported beside it (wall time,
    tokens/s), the per-seed files stay under results/stage5_gpt/."""
    threads = ["--threads", str(args.threads)] if args.threads else []
    per_seed = []
    for seed in range(args.seed, args.seed + args.seeds):
        name = "nanogpt_cpu" if seed == args.seed else f"nanogpt_cpu_seed{seed}"
        load_note(name)
        rec = train.main(NANOGPT_CPU + common(args, name, seed) + args.extra)
        if seed == args.seed:
            first = rec
        ev = {stride: evaluate.main(["--checkpoint", rec["checkpoint"], "--split", "val", "--stride", str(stride),
                                     "--name", f"bench_{name}_eval_stride{stride}", *threads])
              for stride in (64, 32)}
        per_seed.append({"seed": seed, "val_loss": ev[64]["metrics"]["loss"],
                         "val_loss_sliding": ev[32]["metrics"]["loss"], "train_estimate": rec["metrics"]["val_loss"],
                         "train_wall_s": rec["train_wall_s"], "tokens_per_s": rec["metrics"]["tokens_per_s"],
                         "result_files": [r.get("result_file") for r in (rec, ev[64], ev[32])]})
    chunks = [r["val_loss"] for r in per_seed]
    metrics = {"val_loss_mean": statistics.mean(chunks),
               "val_loss_std": statistics.stdev(chunks) if len(chunks) > 1 else 0.0,
               "val_loss_sliding_mean": statistics.mean(r["val_loss_sliding"] for r in per_seed),
               "train_estimate_mean": statistics.mean(r["train_estimate"] for r in per_seed),
               "tokens_per_s": first["metrics"]["tokens_per_s"], "seeds": float(len(per_seed))}
    summary = make_result(KIND, "nanogpt_cpu", "shakespeare_char", "val", metrics, params=first["params"],
                          train_wall_s=first["train_wall_s"], device=first["device"], seed=args.seed,
                          data_sha256=first["data_sha256"], primary_metric="val_loss_mean",
                          target={"val_loss_mean": NANOGPT_TARGET},
                          protocol={"val_loss": "all non-overlapping 64-character windows of val, every position "
                                                "scored (the expectation of nanoGPT's 20-batch estimate)",
                                    "val_loss_sliding": "context 64, stride 32",
                                    "train_estimate": "train.py's 20 random val batches, as nanoGPT"},
                          per_seed=per_seed)
    print("nanogpt_cpu: val loss per seed " + ", ".join(f"{x:.4f}" for x in chunks)
          + f" -> mean {metrics['val_loss_mean']:.4f} (nanoGPT 1.88, target <= {NANOGPT_TARGET}); sliding mean "
          + f"{metrics['val_loss_sliding_mean']:.4f}", flush=True)
    summary["result_file"] = str(write_result(summary, name="bench_nanogpt_cpu"))
    return [first, summary]


def bench_char20(args) -> list[dict]:
    return train_then_eval(args, "char20", CHAR20 + ["--max_minutes", str(args.max_minutes or CHAR20_MINUTES)],
                           ["--split", "val", "--stride", "64", "--dtype", "bfloat16"])


def bench_pretrain(args) -> list[dict]:
    """The checkpoint finetune.py starts from (``checkpoints/bench_pretrain/best_gpt.pt``), and its val loss."""
    return train_then_eval(args, "pretrain", PRETRAIN, ["--split", "val", "--stride", "128", "--dtype", "bfloat16"])


def bench_finetune(args, name: str) -> list[dict]:
    """finetune.py with the preset's flags, from checkpoints/bench_pretrain/best_gpt.pt (unless --extra says)."""
    from stage5_gpt import finetune

    load_note(name)
    threads = ["--threads", str(args.threads)] if args.threads else []
    return [finetune.main(FINETUNES[name] + ["--seed", str(args.seed), "--out_dir", f"checkpoints/bench_{name}",
                                             "--run_dir", f"runs/bench_{name}", *threads, *args.extra])]


FORGETTING = ("ft_imdb_full", "ft_imdb_lora", "ft_imdb_long", "ft_translate", "ft_multitask")


def bench_forgetting(args) -> list[dict]:
    """``finetune.py forgetting``: the pre-training loss of the pre-trained model and of every fine-tuned preset
    that has a checkpoint (``FORGETTING``), on the same validation windows."""
    from stage5_gpt import finetune

    paths = [p for p in [finetune.PRETRAINED, *(f"checkpoints/bench_{n}/best_finetune.pt" for n in FORGETTING)]
             if Path(p).is_file()]
    if len(paths) < 2 or paths[0] != finetune.PRETRAINED:
        raise UserError(f"forgetting needs {finetune.PRETRAINED} and at least one fine-tuned preset's checkpoint "
                        f"(python benchmark.py pretrain, then e.g. ft_imdb_full)")
    threads = ["--threads", str(args.threads)] if args.threads else []
    return [finetune.main(["forgetting", *paths, *threads, *args.extra])]


def bench_word(args, dataset: str) -> list[dict]:
    return train_then_eval(args, dataset, ["--dataset", dataset, *WORD_LM, *WORD_EXTRA[dataset], "--max_minutes",
                                           str(args.max_minutes or WORD_MINUTES)],
                           ["--split", "test", "--stride", "64", "--dtype", "bfloat16"])


def bench_gpu_char(args) -> list[dict]:
    if not torch.cuda.is_available():
        raise UserError("gpu_char needs a CUDA GPU")
    return train_then_eval(args, "gpu_char", GPU_CHAR, ["--split", "val", "--device", "cuda", "--dtype", "bfloat16"])


def bench_kv_cache(args) -> list[dict]:
    """Greedy generation of ``--new_tokens`` tokens from a one-character prompt with a context-512 model, with the
    key/value cache and recomputing the window at every step, in one process; identical tokens are required."""
    ckpt_path = args.checkpoint
    if not ckpt_path:
        rec = train.main(KV_MODEL + common(args, "kv_cache"))
        ckpt_path = rec["checkpoint"]
    model, tok, ckpt = load_model(ckpt_path)
    idx = torch.tensor([tok.encode("\n")])  # (1, 1)
    times, outs = {}, {}
    for use_cache in (True, False, True):  # the first cached run also warms up
        t0 = time.perf_counter()
        outs[use_cache] = model.generate(idx, args.new_tokens, temperature=0.0, use_cache=use_cache)
        times[use_cache] = time.perf_counter() - t0
        print(f"{args.new_tokens} tokens {'with' if use_cache else 'without'} the cache: {times[use_cache]:.2f} s",
              flush=True)
    same = torch.equal(outs[True], outs[False])
    metrics = {"s_cache": times[True], "s_no_cache": times[False], "speedup": times[False] / max(times[True], 1e-9),
               "identical_tokens": same, "tokens_per_s_cache": args.new_tokens / max(times[True], 1e-9),
               "tokens_per_s_no_cache": args.new_tokens / max(times[False], 1e-9)}
    print(f"speed-up from the cache: {metrics['speedup']:.1f}x; identical tokens: {same}")
    cfg = model.config
    rec = make_result(KIND, "kv_cache", (ckpt.get("vocab") or {}).get("dataset", "?"), "generation", metrics,
                      params=model.num_params(), train_wall_s=(ckpt.get("state") or {}).get("train_wall_s"),
                      device=describe_device(torch.device("cpu")), seed=args.seed,
                      data_sha256=ckpt.get("data_sha256"), primary_metric="speedup", new_tokens=args.new_tokens,
                      context=cfg.block_size, checkpoint=str(ckpt_path), model_config=dataclasses.asdict(cfg),
                      sample=tok.decode(outs[True][0].tolist())[:300])
    rec["result_file"] = str(write_result(rec, name="bench_kv_cache"))
    return [rec]


def bench_bpe(args) -> list[dict]:
    """Our BPE on tiny Shakespeare's training split (full vocabulary, timed); ours incremental vs naive on a slice,
    side by side; tokens per byte of the validation text against Hugging Face ``tokenizers`` at the same size."""
    from stage5_gpt.tokenizer.bpe import ByteLevelBPE, hf_reference_tokenizer

    files = source_files("shakespeare_bpe")
    splits = read_splits("shakespeare_bpe", files)
    train_text, val_text = splits["train"][0], splits["val"][0]
    t0 = time.perf_counter()
    ours = ByteLevelBPE.train(train_text, args.bpe_vocab)
    full_s = time.perf_counter() - t0
    print(f"BPE {args.bpe_vocab} on {len(train_text):,} characters: {full_s:.1f} s", flush=True)
    part = train_text[:args.naive_chars]
    t0 = time.perf_counter()
    fast = ByteLevelBPE.train(part, args.naive_vocab)
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = ByteLevelBPE.train_naive(part, args.naive_vocab)
    naive_s = time.perf_counter() - t0
    print(f"slice of {len(part):,} characters, vocabulary {args.naive_vocab}: incremental {fast_s:.2f} s, naive "
          f"{naive_s:.2f} s ({naive_s / max(fast_s, 1e-9):.1f}x)", flush=True)
    t0 = time.perf_counter()
    hf = hf_reference_tokenizer(train_text, args.bpe_vocab)
    hf_s = time.perf_counter() - t0
    n_bytes = len(val_text.encode("utf-8"))
    ours_tpb = len(ours.encode(val_text)) / n_bytes
    hf_tpb = len(hf.encode(val_text).ids) / n_bytes
    metrics = {"train_s": full_s, "speedup_vs_naive": naive_s / max(fast_s, 1e-9), "incremental_s_slice": fast_s,
               "naive_s_slice": naive_s, "same_merges_as_naive": fast.to_dict() == naive.to_dict(),
               "tokens_per_byte": ours_tpb, "hf_tokens_per_byte": hf_tpb,
               "tokens_per_byte_rel_diff": abs(ours_tpb - hf_tpb) / hf_tpb, "hf_train_s": hf_s}
    print(f"val tokens/byte: ours {ours_tpb:.4f}, Hugging Face tokenizers {hf_tpb:.4f} "
          f"({100 * metrics['tokens_per_byte_rel_diff']:.2f}% apart); HF trains in {hf_s:.1f} s")
    rec = make_result(KIND, "bpe", "shakespeare_bpe", "train", metrics, params=None, train_wall_s=full_s,
                      device=describe_device(torch.device("cpu")), seed=None,
                      data_sha256=file_sha256(next(iter(files.values()))), primary_metric="train_s",
                      vocab_size=args.bpe_vocab, naive_slice_chars=len(part), naive_vocab=args.naive_vocab)
    rec["result_file"] = str(write_result(rec, name="bench_bpe"))
    return [rec]


def _losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(Path(run_dir) / "metrics.jsonl", kind="train")]


def bench_ddp(args) -> list[dict]:
    """1 process with batch 24, 1 process with 2 accumulation steps of 12, 2 gloo processes with 12 each (torchrun,
    one thread per process): the same losses; tokens/s of each."""
    load_note("ddp")
    runs = {"1proc_b24": ([], ["--batch_size", "24"]), "1proc_b12x2": ([], ["--batch_size", "12", "--grad_accum", "2"]),
            "2proc_b12": (["torchrun"], ["--batch_size", "12", "--threads", "1"])}
    records = {}
    for name, (how, flags) in runs.items():
        argv = DDP_ARGS + flags + common(args, f"ddp_{name}")
        if how:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
            r = subprocess.run(torchrun_argv(2, str(STAGE / "train.py"), argv), env=env, capture_output=True, text=True)
            if r.returncode:
                raise UserError(f"torchrun failed: {r.stderr[-1500:]}")
            from scripts.results import parse_result_lines

            (records[name],) = parse_result_lines(r.stdout)
        else:
            records[name] = train.main(argv)
    curves = {name: _losses(f"runs/bench_ddp_{name}") for name in runs}
    ref = curves["1proc_b24"]
    diffs = {name: max(abs(a - b) for a, b in zip(ref, c)) for name, c in curves.items() if name != "1proc_b24"}
    metrics = {"max_loss_diff_accum": diffs["1proc_b12x2"], "max_loss_diff_2proc": diffs["2proc_b12"],
               **{f"tokens_per_s_{n}": r["metrics"]["tokens_per_s"] for n, r in records.items()},
               "steps": len(ref)}
    print(json.dumps(metrics, indent=1))
    rec = make_result(KIND, "ddp", "shakespeare_char", "train", metrics, params=records["1proc_b24"]["params"],
                      train_wall_s=records["2proc_b12"]["train_wall_s"],
                      device=describe_device(torch.device("cpu")), seed=args.seed,
                      data_sha256=records["1proc_b24"]["data_sha256"], primary_metric="max_loss_diff_2proc",
                      loss_curves=curves, runs={n: r.get("result_file") or r["command"] for n, r in records.items()})
    rec["result_file"] = str(write_result(rec, name="bench_ddp"))
    return [rec]


def bench_ablation(args) -> list[dict]:
    minutes = args.max_minutes or 3.0
    records, table = [], {}
    for name, flags in ABLATION.items():
        load_note(f"ablation {name}")
        rec = train.main(ABLATION_BASE + flags + ["--max_minutes", str(minutes)] + common(args, f"ablation_{name}")
                         + args.extra)
        records.append(rec)
        table[name] = {"val_loss": rec["metrics"]["val_loss"], "steps": rec["metrics"]["steps"],
                       "tokens_per_s": rec["metrics"]["tokens_per_s"], "params": rec["params"]}
    for name, row in table.items():
        print(f"{name:8s} val {row['val_loss']:.4f}  {int(row['steps'])} steps  {row['tokens_per_s']:.0f} tok/s")
    metrics = {f"val_loss_{n}": r["val_loss"] for n, r in table.items()}
    summary = make_result(KIND, "ablation", "shakespeare_char", "val", metrics, params=records[0]["params"],
                          train_wall_s=sum(r["train_wall_s"] for r in records),
                          device=records[0]["device"], seed=args.seed, data_sha256=records[0]["data_sha256"],
                          primary_metric="val_loss_llama", minutes_each=minutes, table=table,
                          variants={n: f for n, f in ABLATION.items()}, base=ABLATION_BASE)
    summary["result_file"] = str(write_result(summary, name="bench_ablation"))
    return records + [summary]


def char20_batch(seed: int, extra: list[str] = ()) -> tuple[GPTConfig, torch.Tensor, torch.Tensor]:
    """The char20 preset's model config (``extra`` train.py flags on top) and one real training batch (B, T)."""
    flags = vars(train.build_parser().parse_args([*CHAR20, *extra]))
    cfg = GPTConfig(vocab_size=65, **{f.name: flags[f.name] for f in train.model_fields()})
    folder = prepare_dataset("shakespeare_char")  # real windows of the training split, as train.py draws them
    x, y = get_batch(load_split(folder, "train"), flags["batch_size"], cfg.block_size,
                     torch.Generator().manual_seed(seed))  # (B, T) each
    return cfg, x, y


def median_step_s(cfg: GPTConfig, x: torch.Tensor, y: torch.Tensor, dtype: str, repeats: int, seed: int) -> float:
    """The median time of ``repeats`` training steps (forward, backward, fused AdamW) after 2 warm-up steps."""
    device = torch.device("cpu")
    seed_everything(seed)
    model = GPT(cfg)
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), fused=True)
    times = []
    for i in range(repeats + 2):  # 2 warm-up steps
        t0 = time.perf_counter()
        with autocast(device, dtype):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_bf16(args) -> list[dict]:
    """Median fwd+bwd+AdamW step of the char20 model, float32 vs bfloat16 autocast, and each dtype's matmul peak."""
    cfg, x, y = char20_batch(args.seed)
    B, T = x.shape
    metrics, device, fpt = {}, torch.device("cpu"), GPT(cfg).flops_per_token(T)
    for dtype in ("float32", "bfloat16"):
        step = median_step_s(cfg, x, y, dtype, args.repeats, args.seed)
        peak = measure_peak_flops(device, dtype)
        tok_s = B * T / step
        metrics.update({f"ms_per_step_{dtype}": 1000 * step, f"tokens_per_s_{dtype}": tok_s,
                        f"peak_flops_{dtype}": peak, f"mfu_{dtype}": fpt * tok_s / peak})
        print(f"{dtype:9s}: {1000 * step:.0f} ms/step, {tok_s:.0f} tokens/s, matmul peak {peak / 1e9:.0f} GFLOP/s, "
              f"MFU {100 * metrics[f'mfu_{dtype}']:.1f}%", flush=True)
    metrics["speedup_bf16"] = metrics["ms_per_step_float32"] / metrics["ms_per_step_bfloat16"]
    print(f"bf16 autocast is {metrics['speedup_bf16']:.2f}x the float32 step")
    rec = make_result(KIND, "bf16", "shakespeare_char", "train", metrics, params=GPT(cfg).num_params(),
                      train_wall_s=None, device=describe_device(device), seed=args.seed,
                      data_sha256=file_sha256(source_files("shakespeare_char")["all"]), primary_metric="speedup_bf16",
                      model_config=dataclasses.asdict(cfg), batch=[B, T])
    rec["result_file"] = str(write_result(rec, name="bench_bf16"))
    return [rec]


def bench_dropout(args) -> list[dict]:
    """Median training step of the char20 model (bf16 autocast) with ``nn.Dropout``'s masks and with
    ``--dropout_impl fast``, alternated in one process (``--repeats`` steps each, three rounds); the ratio is the
    speed-up, and the MFU of each against the bf16 matmul peak measured in the same process."""
    device = torch.device("cpu")
    setups = {name: char20_batch(args.seed, ["--dropout_impl", name, *args.extra]) for name in ("torch", "fast")}
    times = {name: [] for name in setups}
    for _ in range(3):  # alternate, so that a slower minute of a shared machine hits both
        for name, (cfg, x, y) in setups.items():
            times[name].append(median_step_s(cfg, x, y, "bfloat16", args.repeats, args.seed))
    peak = measure_peak_flops(device, "bfloat16")
    B, T = x.shape
    model = GPT(cfg)
    fpt = model.flops_per_token(T)
    metrics = {}
    for name in setups:
        step = statistics.median(times[name])
        metrics.update({f"ms_per_step_{name}": 1000 * step, f"mfu_{name}": fpt * B * T / step / peak})
        print(f"dropout masks {name:5s}: {1000 * step:.0f} ms/step, MFU {100 * metrics[f'mfu_{name}']:.1f}%",
              flush=True)
    metrics["speedup_fast"] = metrics["ms_per_step_torch"] / metrics["ms_per_step_fast"]
    metrics["peak_flops_bfloat16"] = peak
    print(f"--dropout_impl fast: {metrics['speedup_fast']:.2f}x the nn.Dropout step "
          f"(dropout {cfg.dropout}, attention weights {cfg.attn_p})")
    rec = make_result(KIND, "dropout_speed", "shakespeare_char", "train", metrics, params=model.num_params(),
                      train_wall_s=None, device=describe_device(device), seed=args.seed,
                      data_sha256=file_sha256(source_files("shakespeare_char")["all"]), primary_metric="speedup_fast",
                      model_config=dataclasses.asdict(cfg), batch=[B, T], extra_flags=args.extra,
                      rounds={k: [1000 * t for t in v] for k, v in times.items()})
    rec["result_file"] = str(write_result(rec, name="bench_dropout"))
    return [rec]


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.max_minutes < 0 or args.new_tokens < 1 or args.repeats < 1 or args.seeds < 1:
        raise UserError("--max_minutes must be >= 0, --new_tokens, --repeats and --seeds >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    run = {"nanogpt_cpu": bench_nanogpt_cpu, "char20": bench_char20, "kv_cache": bench_kv_cache, "bpe": bench_bpe,
           "ddp": bench_ddp, "ablation": bench_ablation, "bf16": bench_bf16, "dropout": bench_dropout,
           "ptb": lambda a: bench_word(a, "ptb"), "wikitext2": lambda a: bench_word(a, "wikitext2"),
           "gpu_char": bench_gpu_char, "pretrain": bench_pretrain, "forgetting": bench_forgetting,
           **{name: (lambda a, n=name: bench_finetune(a, n)) for name in FINETUNES}}[args.preset]
    records = run(args)
    if args.report:
        for rec in records:
            if rec.get("result_file"):
                print(f"reported: {report_result(rec['result_file'])}")
    return records


if __name__ == "__main__":
    run_cli(main)
