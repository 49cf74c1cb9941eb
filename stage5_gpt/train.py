"""Pre-train a GPT (decoder-only Transformer; Radford et al. 2018/2019) as a causal language model.

    python train.py --dataset shakespeare_char --preset nano --max_steps 2000           # char-level tiny Shakespeare
    python train.py --dataset shakespeare_char --max_minutes 20 --pos rope --norm rmsnorm --mlp swiglu
    python train.py --dataset ptb --vocab_size 4096 --max_minutes 40                    # byte-level BPE
    python train.py --resume                                                            # continue last_gpt.pt exactly
    torchrun --standalone --nproc_per_node=2 train.py --dataset shakespeare_char ...    # 2 processes (gloo / nccl)

The data is a stream of token ids (``prepare.py`` writes ``train.bin``/``val.bin``; missing ones are prepared on the
fly). Each step draws ``--batch_size`` random windows of ``--block_size`` tokens per micro-step and process from a
seeded ``torch.Generator`` (its state is in the checkpoint, so ``--resume`` draws the same windows). The objective
is next-token cross-entropy at every position. AdamW (decay on matrices only, ``--fused``), linear warm-up then
cosine (``scripts.schedule``, applied per optimizer step), ``--grad_accum`` micro-steps per step, gradient clipping,
``--dtype bfloat16`` autocast, ``--compile``. Every ``--eval_every`` steps the loss is estimated on ``--eval_iters``
batches of train and val, always the same windows (a fixed seed), so the numbers are comparable from evaluation
to evaluation and between runs. ``best_gpt.pt`` (lowest val loss) and ``last_gpt.pt`` (resumable: every
evaluation, the end, Ctrl-C / SIGTERM at the next step boundary) are written atomically.

Log lines carry tokens/s, ms/step and MFU: ``flops_per_token`` x tokens/s over the matmul peak measured on this
machine for the run's dtype at start (``utils/mfu.py``; ``--peak_flops`` to give it). Under ``torchrun`` every
process draws the same global batch and trains on its slice (``utils/distributed.py``), so N processes with batch
B give the losses of 1 process with batch N·B; gradients are synchronised only on the last micro-step
(``no_sync``); rank 0 logs and writes. The result file records val loss (nats/token; nats/char and bits/char),
tokens/s, wall time, peak RSS, MFU, the config and the data's sha256.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import shlex
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scripts.budget import Budget, reproduce_argv, schedule_warmup
from scripts.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.config import RESUME_MAY_CHANGE, add_dataclass_args, config_from_dict, explicit_flags, resume_config
from scripts.device import DTYPES, add_device_args, autocast, describe_device, pick_device
from scripts.flags import DEFAULT_SEED, check_non_negative, shared
from scripts.interrupt import StopRequest
from scripts.log import RunLogger, progress
from scripts.results import cd_prefix, make_result, peak_rss_mb, write_result
from scripts.schedule import SCHEDULES, lr_at, set_lr
from scripts.seed import get_rng_state, seed_everything, set_rng_state
from stage5_gpt.models.gpt import GPT, PRESETS, GPTConfig
from stage5_gpt.tokenizer import tokenizer_from_dict
from stage5_gpt.utils import distributed as distrib
from stage5_gpt.utils.checkpoint import BEST_NAME, KIND, LAST_NAME, check_meta
from stage5_gpt.utils.data import default_dir, get_batch, load_meta, load_split, prepare_dataset
from stage5_gpt.utils.mfu import measure_peak_flops, mfu

DATASETS = ("shakespeare_char", "shakespeare_bpe", "ptb", "wikitext2", "imdb_text", "imdb_wikitext2")
EVAL_SEED = 0  # the evaluation windows: the same at every evaluation and in every run
MODEL_FROM_DATA = ("vocab_size",)  # set from the tokenizer, not by a flag
# flags that change neither the model nor the numbers it learns (besides the shared ones)
MAY_CHANGE = RESUME_MAY_CHANGE | {"prepared_dir", "peak_flops", "backend"}
MODEL_HELP = {
    "block_size": "context length in tokens (the window each training example has)",
    "n_layer": "Transformer blocks", "n_head": "attention heads per block", "n_embd": "model width (d_model)",
    "dropout": "dropout on attention weights, residual branches and embeddings (0 = off)",
    "bias": "biases in Linear layers and LayerNorm (GPT-2 has them)",
    "pos": "positions: learned embeddings (GPT-2) or rotary (RoPE, LLaMA)",
    "norm": "LayerNorm (GPT-2) or RMSNorm (LLaMA)", "mlp": "GELU MLP (GPT-2) or SwiGLU (LLaMA)",
    "attn_impl": "attention: sdpa (F.scaled_dot_product_attention, fast) or manual (keeps the weights)",
    "tie_weights": "share the token embedding with the output layer (GPT-2)",
}
MODEL_CHOICES = {"pos": ["learned", "rope"], "norm": ["layernorm", "rmsnorm"], "mlp": ["gelu", "swiglu"],
                 "attn_impl": ["sdpa", "manual"]}


@dataclass
class TrainConfig:
    dataset: str = field(default="shakespeare_char", metadata={"choices": list(DATASETS),
                                                                "help": "corpus and tokenizer (prepare.py)"})
    data_dir: str | None = field(default=None, metadata=shared("data_dir"))
    prepared_dir: str = field(default="", metadata={
        "help": "folder with train.bin/val.bin/meta.json (default: data/prepared/<dataset>; prepared if missing)"})
    vocab_size: int = field(default=0, metadata={"help": "BPE vocabulary size (0 = the dataset's default; "
                                                         "char-level: the characters of the training text)"})
    preset: str = field(default="", metadata={
        "help": f"model size preset ({', '.join(PRESETS)}); model flags typed as well win"})
    init_from: str = field(default="scratch", metadata={
        "help": "scratch, resume (= --resume), a local Hugging Face GPT-2 folder, or gpt2 (the hub, online)"})
    epochs: int = field(default=0, metadata=shared("epochs"))
    max_steps: int = field(default=5000, metadata=shared("max_steps"))
    max_minutes: float = field(default=0.0, metadata=shared("max_minutes"))
    schedule_steps: int = field(default=0, metadata=shared("schedule_steps"))
    batch_size: int = field(default=32, metadata={"help": "windows per micro-step and process"})
    grad_accum: int = field(default=1, metadata={"help": "micro-steps per optimizer step (gradient accumulation)"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    lr_schedule: str = field(default="cosine", metadata={"choices": list(SCHEDULES),
                                                         "help": "learning-rate schedule after the warm-up"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    min_lr: float = field(default=1e-4, metadata={"help": "final learning rate of the cosine/linear/wsd schedule"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (matrices only)"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.99, metadata={"help": "AdamW beta2"})
    grad_clip: float = field(default=1.0, metadata=shared("grad_clip"))
    eval_every: int = field(default=250, metadata=shared("eval_every"))
    eval_iters: int = field(default=50, metadata={
        "help": "global batches per split at each evaluation (the same windows every time)"})
    patience: int = field(default=0, metadata=shared("patience"))
    limit_train: int = field(default=0, metadata=shared("limit_train", help=(
        "use only N training examples (0 = all; smoke runs); validation and test are never cut (here: the first N "
        "training tokens)")))
    log_every: int = field(default=10, metadata=shared("log_every"))
    seed: int = field(default=DEFAULT_SEED, metadata=shared("seed"))
    dtype: str = field(default="float32", metadata={"choices": list(DTYPES),
                                                    "help": "autocast precision of forward and backward"})
    fused: bool = field(default=False, metadata={"help": "fused AdamW kernel"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads per process (0 = torch's default)"})
    peak_flops: float = field(default=0.0, metadata={
        "help": "peak FLOP/s per process for MFU (0 = measure it with a matmul probe at start)"})
    backend: str = field(default="auto", metadata={"choices": ["auto", "gloo", "nccl"],
                                                   "help": "process group under torchrun (auto: nccl on CUDA)"})
    out_dir: str = field(default="checkpoints", metadata=shared("out_dir"))
    run_dir: str = field(default="runs/gpt", metadata=shared("run_dir"))
    resume: bool = field(default=False, metadata=shared("resume"))


def model_fields() -> list:
    return [f for f in dataclasses.fields(GPTConfig) if f.name not in MODEL_FROM_DATA]


@dataclass
class Run:
    """Everything the training loop reads and updates (built once by :func:`build`)."""

    cfg: TrainConfig
    mcfg: GPTConfig
    device: torch.device
    d: distrib.Dist
    log: RunLogger
    meta: dict
    meta_sha: str
    data_sha: str
    train_data: typing.Any  # np.memmap of token ids
    val_data: typing.Any
    model: GPT  # the plain module (what checkpoints store)
    forward: torch.nn.Module  # the module evaluations call (compiled or not)
    train_forward: torch.nn.Module  # the module training calls (DistributedDataParallel under torchrun)
    opt: torch.optim.Optimizer
    budget: Budget
    gen: torch.Generator  # draws the training windows
    warmup: int
    steps_per_epoch: int
    flops_per_token: float
    peak_flops: float  # of the whole group of processes
    state: dict
    t_start: float = 0.0

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.d.world_size * self.mcfg.block_size

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def path(self, name: str) -> Path:
        return Path(self.cfg.out_dir) / name

    def payload(self, rngs: list) -> dict:
        self.state["train_wall_s"] = self.elapsed()
        return {"model": self.model.state_dict(),
                "config": {"train": dataclasses.asdict(self.cfg), "model": dataclasses.asdict(self.mcfg)},
                "vocab": {"tokenizer": self.meta["tokenizer"], "meta_sha256": self.meta_sha,
                          "dataset": self.cfg.dataset},
                "step": self.state["step"], "best_metric": self.state["best_metric"], "data_sha256": self.data_sha,
                "state": dict(self.state), "world_size": self.d.world_size, "optimizer": self.opt.state_dict(),
                "budget": self.budget.state(), "rng": rngs[0], "rank_rng": rngs}

    def save(self, name: str) -> None:
        """Write ``name`` (rank 0); every process calls it, to hand over its RNG state."""
        rngs = distrib.gather_objects(get_rng_state(self.gen), self.d)
        if self.d.is_main:
            save_checkpoint(self.path(name), self.payload(rngs), KIND)

    def save_last(self) -> None:
        self.save(LAST_NAME)


# ----- 1. flags, presets, and the --resume rule --------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_dataclass_args(p, TrainConfig, "training")
    group = p.add_argument_group("model (GPTConfig)")
    hints = typing.get_type_hints(GPTConfig)
    for f in model_fields():
        kwargs = {"default": f.default, "help": f.metadata.get("help") or MODEL_HELP.get(f.name, "")}
        if hints[f.name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = hints[f.name]
            choices = f.metadata.get("choices") or MODEL_CHOICES.get(f.name)
            if choices:
                kwargs["choices"] = choices
        group.add_argument(f"--{f.name}", **kwargs)
    add_device_args(p, dtype=False)  # --dtype is a training field (it changes the numbers)
    return p


def model_config(mvals: dict, vocab_size: int) -> GPTConfig:
    """``GPTConfig`` with an impossible combination (n_embd % n_head, dropout 1.5 ...) as a one-line UserError."""
    try:
        return GPTConfig(**mvals, vocab_size=vocab_size)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None


def check_config(cfg: TrainConfig, mvals: dict) -> None:
    for name in ("batch_size", "grad_accum", "eval_iters", "log_every"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    check_non_negative({k: getattr(cfg, k) for k in (
        "epochs", "max_steps", "max_minutes", "schedule_steps", "eval_every", "patience", "limit_train",
        "warmup_steps", "threads", "grad_clip", "weight_decay", "min_lr", "peak_flops", "vocab_size")})
    if not (cfg.max_steps or cfg.max_minutes or cfg.epochs or cfg.schedule_steps):
        raise UserError("no budget: give --max_steps, --max_minutes or --epochs (0 = no limit on each, but the "
                        "learning-rate schedule needs a length)")
    if cfg.lr <= 0:
        raise UserError(f"--lr must be > 0, got {cfg.lr}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            raise UserError(f"--{name} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.preset and cfg.preset not in PRESETS:
        raise UserError(f"unknown --preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
    if mvals.get("block_size", 1) < 1:
        raise UserError(f"--block_size must be >= 1, got {mvals['block_size']}")
    model_config(mvals, vocab_size=256)


TRAINING_ONLY = ("dropout", "attn_dropout", "dropout_impl")  # model fields that do not change the weights' meaning


# model fields newer than some checkpoints, with the value those checkpoints were trained with
ADDED_LATER = {"dropout_impl": "torch"}


def hf_init(cfg: TrainConfig, mvals: dict, explicit: set) -> tuple[dict, dict | None]:
    """``--init_from <HF GPT-2 folder>|gpt2``: the architecture and weights of that model (``models/convert.py``).
    Model flags typed on the command line must agree with it, except ``--dropout`` and ``--attn_dropout`` (training
    choices: they come from the command line, not from the HF config)."""
    if cfg.init_from in ("scratch", "resume"):
        return mvals, None
    from stage5_gpt.models.convert import from_hf

    try:
        hf_cfg, state = from_hf(cfg.init_from)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"--init_from {cfg.init_from}: cannot load a Hugging Face GPT-2 model ({e})") from None
    hf = dataclasses.asdict(hf_cfg)
    clash = [f"--{k} {mvals[k]!r} (the model has {hf[k]!r})" for k in sorted(explicit & set(mvals))
             if k not in TRAINING_ONLY and k in hf and hf[k] != mvals[k]]
    if clash:
        raise UserError(f"--init_from {cfg.init_from}: {', '.join(clash)}; leave these flags out")
    merged = {k: hf.get(k, v) for k, v in mvals.items()}
    merged.update({k: mvals[k] for k in TRAINING_ONLY})
    merged["_vocab_size"] = hf["vocab_size"]
    return merged, state


def resume_or_start(argv) -> tuple[TrainConfig, dict, argparse.Namespace, dict | None, dict | None]:
    """The run's config, its model flags, and the checkpoint (``--resume``) or HF weights it starts from."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    mvals = {f.name: getattr(args, f.name) for f in model_fields()}
    explicit = explicit_flags(parser, argv)
    if cfg.init_from == "resume":
        cfg.resume = True
    if cfg.preset in PRESETS:  # the preset's sizes, except the model flags typed as well
        mvals.update({k: v for k, v in PRESETS[cfg.preset].items() if k in mvals and k not in explicit})
    ckpt, hf_state = None, None
    if cfg.resume:
        path = Path(cfg.out_dir) / LAST_NAME
        ckpt = load_checkpoint(path, kind=KIND)
        try:  # a config from another version (unknown or missing keys) is a one-line error
            saved_train = dataclasses.asdict(config_from_dict(TrainConfig, ckpt["config"]["train"]))
            saved_model = {k: {**ADDED_LATER, **ckpt["config"]["model"]}[k] for k in mvals}
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: checkpoint config lacks {e} (saved by another version?)") from None
        merged = resume_config({**saved_train, **saved_model}, {**dataclasses.asdict(cfg), **mvals},
                               explicit - {"init_from"}, path, may_change=MAY_CHANGE)
        merged["out_dir"] = cfg.out_dir  # where the checkpoint was found, even if the folder moved
        cfg = TrainConfig(**{f.name: merged[f.name] for f in dataclasses.fields(TrainConfig)})
        cfg.resume = True
        mvals = {k: merged[k] for k in mvals}
    check_config(cfg, mvals)
    if ckpt is None:
        mvals, hf_state = hf_init(cfg, mvals, explicit)
    return cfg, mvals, args, ckpt, hf_state


# ----- 2. data, model, optimizer, budget --------------------------------------------------------------

def data_fingerprint(meta: dict) -> str:
    """sha256 of the source text (the one file's own sha256, or of the sorted {file: sha256} map)."""
    shas = meta.get("source_sha256") or {}
    if len(shas) == 1:
        return next(iter(shas.values()))
    return hashlib.sha256(json.dumps(shas, sort_keys=True).encode()).hexdigest()


def open_prepared(dataset: str, prepared_dir: str = "", data_dir: str | None = None, vocab_size: int = 0) -> Path:
    """The prepared folder of ``dataset``: used as it is when its meta.json is for this dataset and vocabulary size
    (a truncated or damaged ``.bin`` there is then a one-line error, never silently rebuilt), else prepared now."""
    folder = Path(prepared_dir) if prepared_dir else default_dir(dataset)
    if (folder / "meta.json").is_file():
        meta = load_meta(folder)
        settings = meta.get("settings") or {}
        if meta.get("dataset") == dataset and (not vocab_size or settings.get("vocab_size") == vocab_size):
            return folder
    return Path(prepare_dataset(dataset, out_dir=folder, data_dir=data_dir, vocab_size=vocab_size or None))


def load_data(cfg: TrainConfig, d: distrib.Dist) -> tuple[Path, dict, typing.Any, typing.Any]:
    """Prepare the dataset if needed (rank 0 first, the others wait), then map train/val."""
    def prepare():
        return open_prepared(cfg.dataset, cfg.prepared_dir, cfg.data_dir, cfg.vocab_size)

    if d.enabled:
        import torch.distributed as dist

        folder = prepare() if d.is_main else None
        dist.barrier()
        folder = folder or prepare()
    else:
        folder = prepare()
    meta = load_meta(folder)
    train_data, val_data = load_split(folder, "train", meta), load_split(folder, "val", meta)
    if cfg.limit_train:
        train_data = train_data[:cfg.limit_train]
    return folder, meta, train_data, val_data


def build(cfg: TrainConfig, mvals: dict, device: torch.device, ckpt: dict | None, hf_state: dict | None) -> Run:
    """Data, model (fresh, from HF weights or from the checkpoint), optimizer, budget, logger."""
    d = distrib.setup(device, cfg.backend)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    folder, meta, train_data, val_data = load_data(cfg, d)
    if ckpt is not None:
        check_meta(ckpt, meta)
        if ckpt.get("data_sha256") != data_fingerprint(meta):
            raise UserError(f"--resume: the data in {folder} (sha256 {data_fingerprint(meta)[:12]}) is not what "
                            f"{cfg.out_dir}/{LAST_NAME} was trained on ({str(ckpt.get('data_sha256'))[:12]})")
        if ckpt.get("world_size", 1) != d.world_size:
            raise UserError(f"--resume: {cfg.out_dir}/{LAST_NAME} was trained by {ckpt.get('world_size', 1)} "
                            f"process(es), this is {d.world_size}; the global batch would change (start torchrun "
                            f"with --nproc_per_node={ckpt.get('world_size', 1)})")
    if hf_state is not None and Path(cfg.init_from).is_dir():
        from stage5_gpt.models.convert import check_same_tokenizer

        check_same_tokenizer(cfg.init_from, tokenizer_from_dict(meta["tokenizer"]))
    vocab = mvals.pop("_vocab_size", meta["vocab_size"])
    if meta["vocab_size"] > vocab:
        raise UserError(f"--init_from {cfg.init_from}: the model has {vocab} tokens, the data's tokenizer "
                        f"{meta['vocab_size']}")
    mcfg = model_config(mvals, vocab)
    for split, data in (("train", train_data), ("val", val_data)):
        if len(data) <= mcfg.block_size + 1:
            raise UserError(f"the {split} split has {len(data)} tokens, not more than --block_size {mcfg.block_size} "
                            f"+ 1" + (" (raise --limit_train)" if split == "train" and cfg.limit_train else ""))

    gen = seed_everything(cfg.seed)  # the same initial weights and windows on every process
    model = GPT(mcfg)
    if hf_state is not None:
        model.load_state_dict(hf_state)
    model.to(device)
    opt = model.configure_optimizer(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2), fused=cfg.fused)
    torch.manual_seed(cfg.seed + d.rank)  # dropout masks: different on every process
    tokens_per_step = cfg.batch_size * cfg.grad_accum * d.world_size * mcfg.block_size
    steps_per_epoch = max(1, len(train_data) // tokens_per_step)
    warmup = schedule_warmup(cfg.lr_schedule, cfg.warmup_steps, cfg.max_minutes)
    # under --max_minutes the plan is made at the end of the warm-up (whose learning rates do not depend on it):
    # the first few dozen steps are often slower, and a 15-step window planned runs ~10% short (2026-12-03)
    budget = Budget(epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, max_steps=cfg.max_steps,
                    max_minutes=cfg.max_minutes, schedule_steps=cfg.schedule_steps,
                    state=ckpt.get("budget") if ckpt else None,
                    calibrate_until=warmup)
    state = {"step": 0, "tokens": 0, "best_metric": math.inf, "bad_evals": 0, "last_eval_step": 0, "history": [],
             "resumed_at_steps": [], "train_wall_s": 0.0, "train_s": 0.0, "saved_best": False}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])
        state["resumed_at_steps"] = state["resumed_at_steps"] + [state["step"]]
        rngs = ckpt.get("rank_rng") or [ckpt["rng"]]
        set_rng_state(rngs[d.rank], gen)
    forward = torch.compile(model) if cfg.compile else model
    train_forward = forward
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_forward = DistributedDataParallel(forward, device_ids=[d.local_rank] if device.type == "cuda" else None)
    peak = cfg.peak_flops or measure_peak_flops(device, cfg.dtype)
    peak = distrib.mean_over_ranks(peak, d, device) * d.world_size  # measured by all processes at once
    log = RunLogger(cfg.run_dir if d.is_main else None, quiet=not d.is_main,
                    resume_step=state["step"] if ckpt is not None else None)
    run = Run(cfg, mcfg, device, d, log, meta, hashlib.sha256((folder / "meta.json").read_bytes()).hexdigest(),
              data_fingerprint(meta), train_data, val_data, model, forward, train_forward, opt, budget, gen,
              warmup, steps_per_epoch,
              model.flops_per_token(mcfg.block_size), peak, state)
    tok = meta["tokenizer"]
    log.info(f"{cfg.dataset} ({tok.get('kind')} tokenizer, vocabulary {meta['vocab_size']}): train {len(train_data):,} "
             f"tokens, val {len(val_data):,} ({folder})")
    if ckpt is not None:
        log.info(f"resumed from {run.path(LAST_NAME)} at step {state['step']}")
    elif hf_state is not None:
        log.info(f"initialised from the Hugging Face model {cfg.init_from}")
    log.info(f"GPT {mcfg.n_layer} layers, {mcfg.n_head} heads, n_embd {mcfg.n_embd}, context {mcfg.block_size} "
             f"({mcfg.pos}/{mcfg.norm}/{mcfg.mlp}): {model.num_params():,} parameters ({model.num_params(False):,} "
             f"with embeddings) on {describe_device(device)} x {d.world_size} process(es); {tokens_per_step:,} "
             f"tokens per step, {budget.step_limit() or 'no'} steps at most; {run.flops_per_token / 1e6:.1f} "
             f"MFLOPs per token, peak {peak / 1e9:.1f} GFLOP/s ({cfg.dtype}, "
             f"{'given' if cfg.peak_flops else 'measured'})")
    return run


# ----- 3. one step, one evaluation, the stop rule, the loop ---------------------------------------------

def learning_rate(run: Run, step: int) -> float:
    cfg = run.cfg
    return lr_at(step, schedule=cfg.lr_schedule, lr=cfg.lr, total_steps=run.budget.total_steps(),
                 warmup_steps=run.warmup, min_lr=cfg.min_lr)


def train_step(run: Run) -> tuple[float, float]:
    """One optimizer step: ``(mean loss over the global batch, lr)``.

    The global batch (``batch_size * grad_accum * world_size`` windows) is drawn on every process from the same
    generator; this process trains on its ``grad_accum`` slices. Each micro-step's mean loss is divided by
    ``grad_accum`` (and DDP averages over processes), so the gradient is the mean over the whole global batch."""
    cfg, d = run.cfg, run.d
    lr = learning_rate(run, run.state["step"])
    set_lr(run.opt, lr)
    x, y = get_batch(run.train_data, cfg.batch_size * cfg.grad_accum * d.world_size, run.mcfg.block_size, run.gen,
                     run.device)  # (N, T) each
    run.opt.zero_grad(set_to_none=True)
    slices = distrib.micro_slices(cfg.batch_size, cfg.grad_accum, d)
    total = torch.zeros((), device=run.device)
    for i, rows in enumerate(slices):
        last = i == len(slices) - 1  # gradients are all-reduced once, after the last micro-step
        sync = run.train_forward.no_sync() if d.enabled and not last else contextlib.nullcontext()
        with sync:
            with autocast(run.device, cfg.dtype):
                _, loss = run.train_forward(x[rows], y[rows])  # (B, T) windows -> mean cross-entropy
            (loss / cfg.grad_accum).backward()
        total += loss.detach().float()
    if cfg.grad_clip > 0:  # 0 = off
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.opt.step()
    return distrib.mean_over_ranks(float(total) / cfg.grad_accum, d, run.device), lr


@torch.no_grad()
def estimate_loss(run: Run) -> dict:
    """Mean loss on ``--eval_iters`` global batches of each split, always the same windows (``EVAL_SEED``), cut
    into the same slices as training; so 1 process with batch 2B, 2 accumulation steps of B, and 2 processes with
    B all score the same windows. Each process scores its slices and the sums are added up."""
    cfg, d, was = run.cfg, run.d, run.model.training
    run.model.eval()
    out = {}
    slices = distrib.micro_slices(cfg.batch_size, cfg.grad_accum, d)
    for split, data in (("train", run.train_data), ("val", run.val_data)):
        g = torch.Generator().manual_seed(EVAL_SEED)
        total, count = 0.0, 0
        for _ in range(cfg.eval_iters):
            x, y = get_batch(data, cfg.batch_size * cfg.grad_accum * d.world_size, run.mcfg.block_size, g,
                             run.device)  # (N, T) each
            for rows in slices:
                with autocast(run.device, cfg.dtype):
                    _, loss = run.forward(x[rows], y[rows])
                total, count = total + float(loss), count + 1
        total, count = distrib.sum_over_ranks([total, count], d, run.device)
        out[split] = total / count
    run.model.train(was)
    return out


def per_char(run: Run, loss: float, split: str = "val") -> float:
    """nats per character: the loss itself for a char tokenizer, loss x tokens/chars of the split otherwise."""
    if run.meta["tokenizer"].get("kind") == "char":
        return loss
    counts = run.meta.get("splits", {}).get(split, {})
    return loss * counts["tokens"] / counts["chars"] if counts.get("chars") else float("nan")


def evaluate(run: Run) -> dict:
    """Train/val loss estimate; keeps best_gpt.pt (lowest val loss), counts patience, saves last_gpt.pt."""
    st = run.state
    losses = estimate_loss(run)
    val = losses["val"]
    row = {"step": st["step"], "tokens": st["tokens"], "wall_s": round(run.elapsed(), 2),
           "train_loss": losses["train"], "val_loss": val, "val_ppl": math.exp(min(val, 50)),
           "val_nats_per_char": per_char(run, val), "val_bpc": per_char(run, val) / math.log(2),
           "lr": learning_rate(run, max(st["step"] - 1, 0))}
    st["history"].append(row)
    st["last_eval_step"] = st["step"]
    run.log.log(st["step"], prefix="eval", **{k: v for k, v in row.items() if k not in ("step", "lr")})
    if val < st["best_metric"]:
        st["best_metric"], st["bad_evals"], st["saved_best"] = val, 0, True
        run.save(BEST_NAME)
        run.log.info(f"new best val loss {val:.4f} -> {run.path(BEST_NAME)}")
    else:
        st["bad_evals"] += 1
    run.save_last()
    return row


def should_stop(run: Run) -> str | None:
    """Why the next step must not start (``None``: go on)."""
    cfg, st = run.cfg, run.state
    if cfg.patience and st["bad_evals"] >= cfg.patience:
        return f"early stopping ({cfg.patience} evaluations without a better val loss)"
    if cfg.epochs and st["step"] >= cfg.epochs * run.steps_per_epoch:
        return f"all {cfg.epochs} epochs done"
    return run.budget.stop_reason(st["step"], run.elapsed())


def eval_due(run: Run) -> bool:
    return run.state["step"] % (run.cfg.eval_every or run.steps_per_epoch) == 0


def time_one_evaluation(run: Run) -> float:
    """Seconds per training step that evaluations will cost (one timed estimate); used once, to plan a time
    budget, before the clock starts. It draws no training random numbers."""
    t0 = time.perf_counter()
    estimate_loss(run)
    return (time.perf_counter() - t0) / (run.cfg.eval_every or run.steps_per_epoch)


class RankStopRequest(StopRequest):
    """:class:`StopRequest`, where under torchrun a copy of the same signal within ``window`` seconds is not a
    second one: Ctrl-C reaches each process from the terminal and again from torchrun, which forwards it."""

    def __init__(self, window: float = 0.0):
        super().__init__()
        self.window, self._first = window, 0.0

    def _handler(self, signum, frame):
        now = time.monotonic()
        if self.requested and now - self._first < self.window:
            return
        if not self.requested:
            self._first = now
        super()._handler(signum, frame)


def train_loop(run: Run) -> str:
    """Train until :func:`should_stop` says why; Ctrl-C / kill stop at the next step boundary with last_* saved."""
    st, cfg, log, d = run.state, run.cfg, run.log, run.d
    planning = cfg.max_minutes and run.budget.planned is None and not cfg.schedule_steps
    eval_s_per_step = time_one_evaluation(run) if planning else 0.0
    run.t_start = time.perf_counter() - st["train_wall_s"]
    bar = progress(total=run.budget.total_steps(), initial=st["step"], desc="train",
                   **({} if d.is_main else {"disable": True}))
    t_log, step_log, train_s_log = time.perf_counter(), st["step"], 0.0
    run.model.train()
    with RankStopRequest(window=2.0 if d.enabled else 0.0) as stop:
        while True:
            if distrib.any_rank(stop.requested, d, run.device):  # the step boundary: a consistent state to save
                stop.save_and_stop(run.save_last, run.path(LAST_NAME), st["step"], log.info, bar)
            # rank 0 decides (its clock, its plan), so every process stops at the same step with the same schedule
            reason, run.budget.planned = distrib.from_main((should_stop(run), run.budget.planned), d)
            if reason:
                bar.close()
                return reason
            t_step = time.perf_counter()
            loss, lr = train_step(run)
            step_s = time.perf_counter() - t_step
            st["step"], st["tokens"], st["train_s"] = st["step"] + 1, st["tokens"] + run.tokens_per_step, \
                st["train_s"] + step_s
            train_s_log += step_s
            run.budget.observe(st["step"], run.elapsed(), step_s, eval_s_per_step)
            bar.total = run.budget.total_steps()
            bar.update(1)
            if st["step"] % cfg.log_every == 0:
                steps = st["step"] - step_log
                tok_s = steps * run.tokens_per_step / max(train_s_log, 1e-9)
                log.log(st["step"], loss=loss, lr=lr, **{
                    "tok/s": tok_s, "ms/step": 1000 * (time.perf_counter() - t_log) / steps,
                    "mfu": mfu(run.flops_per_token, tok_s, run.peak_flops)})
                t_log, step_log, train_s_log = time.perf_counter(), st["step"], 0.0
            if eval_due(run):
                t_eval = time.perf_counter()
                evaluate(run)
                t_log += time.perf_counter() - t_eval  # ms/step and tok/s count training only


# ----- 4. the result file ---------------------------------------------------------------------------

def config_argv(cfg: TrainConfig, mcfg: GPTConfig) -> list[str]:
    """The flags that give this config from scratch (every value that differs from its default)."""
    out = []
    pairs = [(f, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]
    pairs += [(f, getattr(mcfg, f.name)) for f in model_fields()]
    for f, value in pairs:
        if f.name in ("resume", "init_from") and value in (True, "resume"):
            continue
        if value == f.default or (f.name == "resume" and not value):
            continue
        if isinstance(value, bool):
            out.append(f"--{f.name}" if value else f"--no-{f.name}")
        else:
            out += [f"--{f.name}", str(value)]
    return out


def final_result(run: Run, stop_reason: str) -> dict:
    """Evaluate the final weights (if the last step was not evaluated), write last/best and the result file."""
    st, cfg, mcfg, d = run.state, run.cfg, run.mcfg, run.d
    train_wall = run.elapsed()
    run.log.info(f"stopped: {stop_reason} after {train_wall / 60:.1f} min, step {st['step']}")
    if st["step"] and st["last_eval_step"] != st["step"]:
        evaluate(run)
    if not st["saved_best"]:  # no step at all: keep what we have
        run.save(BEST_NAME)
    run.save_last()
    if not d.is_main:
        return {}
    best = min(st["history"], key=lambda r: r["val_loss"]) if st["history"] else {}
    last = st["history"][-1] if st["history"] else {}
    tok_s = st["tokens"] / max(st["train_s"], 1e-9)
    metrics = {"val_loss": best.get("val_loss", float("nan")), "val_ppl": best.get("val_ppl", float("nan")),
               "val_nats_per_char": best.get("val_nats_per_char", float("nan")),
               "val_bpc": best.get("val_bpc", float("nan")), "best_step": best.get("step", 0),
               "final_val_loss": last.get("val_loss", float("nan")),
               "final_train_loss": last.get("train_loss", float("nan")), "steps": st["step"], "tokens": st["tokens"],
               "tokens_per_s": tok_s, "ms_per_step": 1000 * st["train_s"] / max(st["step"], 1),
               "mfu": mfu(run.flops_per_token, tok_s, run.peak_flops), "peak_flops": run.peak_flops}
    budget = {**run.budget.summary(st["step"]), "steps_per_epoch": run.steps_per_epoch, "stop_reason": stop_reason,
              "epochs": cfg.epochs, "max_steps": cfg.max_steps, "max_minutes": cfg.max_minutes,
              "warmup_steps": run.warmup}
    argv = reproduce_argv(config_argv(cfg, mcfg), st["step"], run.budget.total_steps(), cfg.max_minutes,
                          warmup_steps=run.warmup if cfg.max_minutes else None)
    launcher = ["torchrun", "--standalone", f"--nproc_per_node={d.world_size}"] if d.enabled else ["python"]
    record = make_result(KIND, "lm_train", cfg.dataset, "val", metrics, params=run.model.num_params(),
                         train_wall_s=train_wall, device=describe_device(run.device), seed=cfg.seed,
                         data_sha256=run.data_sha, primary_metric="val_loss", model="gpt",
                         tokens_per_s=tok_s, tokens_per_s_wall=st["tokens"] / max(train_wall, 1e-9),
                         world_size=d.world_size, tokenizer=run.meta["tokenizer"].get("kind"),
                         vocab_size=mcfg.vocab_size, params_with_embeddings=run.model.num_params(False),
                         flops_per_token=run.flops_per_token, stop_reason=stop_reason,
                         config={"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(mcfg)},
                         history=st["history"], resumed_at_steps=st["resumed_at_steps"],
                         reproduce_command=cd_prefix() + shlex.join([*launcher, "train.py", *argv]),
                         peak_rss_mb=peak_rss_mb(), budget=budget, checkpoint=str(run.path(BEST_NAME)))
    path = write_result(record, name=f"train_gpt_{cfg.dataset}")
    record["result_file"] = str(path)
    return record


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, mvals, args, ckpt, hf_state = resume_or_start(argv)
    try:
        run = build(cfg, mvals, pick_device(args.device), ckpt, hf_state)
        reason = train_loop(run)
        return final_result(run, reason)
    finally:
        distrib.teardown()


if __name__ == "__main__":
    run_cli(main)
