"""Fine-tune a pre-trained GPT: classification, translation, or a multi-task mixture (full, head-only or LoRA).

    python benchmark.py pretrain                                          # once: the pre-trained model (~60 min)
    python finetune.py --task classify --dataset imdb                     # full fine-tuning, IMDb test at the end
    python finetune.py --task classify --mode lora --lora_rank 8          # LoRA (models/lora.py)
    python finetune.py --task classify --mode head                        # a linear probe: the GPT stays frozen
    python finetune.py --task classify --init_from scratch                # the control: same model, random weights
    python finetune.py --task translate                                   # Multi30k en→fr as a prompt, BLEU at the end
    python finetune.py --task multitask --mix classify=1,translate=1,lm=1 --max_steps 2000
    python finetune.py --resume --out_dir checkpoints/finetune_classify_full   # continue exactly
    python finetune.py evaluate --checkpoint checkpoints/finetune_classify_full/best_finetune.pt --text "Great."
    python finetune.py forgetting PRETRAINED.pt FINETUNED.pt ...          # the pre-training loss after fine-tuning

The model (``models/tasks.py``): the pre-trained GPT of ``--init_from`` (a ``train.py`` checkpoint; by default
``checkpoints/bench_pretrain/best_gpt.pt``, IMDb train reviews + WikiText-2, written by ``benchmark.py pretrain``)
and, for classification, a linear head over the hidden state of the ``<|endoftext|>`` token appended to each
text (``--pool last``) or the mean over the text (``--pool mean``). ``--init_from scratch`` builds the same
architecture with the same tokenizer (both from ``--arch_from``) but random weights: the control run that shows
what pre-training is worth. ``--mode``: ``full`` trains everything, ``head`` only the head (features frozen),
``lora`` the head plus low-rank adapters beside the frozen matrices of every block.

Translation is a decoder-only prompt ``English: <en>\\nFrench: <fr><|endoftext|>`` with the loss on the French
tokens only; the test sets are decoded with beam search over the KV cache and scored with sacreBLEU (cased,
detokenised). The multi-task run draws a task for every step with the ``--mix`` weights (classification,
translation, and language modelling on the pre-training corpus, which measures forgetting), each task with its
own batches; every task is evaluated on its own.

Data and batches are functions of ``(seed, epoch)`` (``utils/tasks_data.py``), so ``--resume`` (``last_finetune.pt``
is written at every evaluation and on Ctrl-C) continues exactly. Model selection uses validation only: accuracy
(classify), loss (translate) or the mean of the tasks' validation losses (multitask); ``best_finetune.pt`` is then
scored once on the test split(s).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `cd stage5_gpt && python finetune.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from scripts import textclass
from scripts.budget import Budget, reproduce_argv, schedule_warmup
from scripts.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, weights_fingerprint
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.config import add_dataclass_args, config_from_dict, dataclass_from_args, explicit_flags, resume_config
from scripts.data import sha256_files
from scripts.device import DTYPES, autocast, describe_device, threads_flag, torch_threads
from scripts.flags import DEFAULT_SEED, add_checkpoint_arg, check_non_negative, shared
from scripts.interrupt import StopRequest
from scripts.log import RunLogger, progress
from scripts.memory import HeapTrimmer
from scripts.results import cd_prefix, make_result, peak_rss_mb, write_result
from scripts.schedule import SCHEDULES, lr_at, set_lr
from scripts.seed import get_rng_state, seed_everything, set_rng_state
from stage5_gpt.models.gpt import GPT, GPTConfig
from stage5_gpt.models.lora import apply_lora, count_trainable, merge_lora
from stage5_gpt.models.tasks import POOLS, TaskModel, beam_search, greedy_translate
from stage5_gpt.utils import tasks_data as td
from stage5_gpt.utils.checkpoint import (
    KIND,
    clean_state_dict,
    config_from_checkpoint,
    load_model,
    tokenizer_from_checkpoint,
)
from stage5_gpt.utils.data import load_meta, load_split

BEST, LAST = "best_finetune.pt", "last_finetune.pt"
PRETRAINED = "checkpoints/bench_pretrain/best_gpt.pt"
TASKS = ("classify", "translate", "multitask")
MIX_TASKS = ("classify", "translate", "lm")
MODES = ("full", "head", "lora")
RESULT_TASK = {"classify": "classification", "translate": "translation", "multitask": "multitask"}
LM_EVAL_BATCHES = 20  # fixed validation windows of the language-modelling task


@dataclass
class FinetuneConfig:
    task: str = field(default="classify", metadata={"choices": list(TASKS), "help": "what to fine-tune for"})
    init_from: str = field(default=PRETRAINED, metadata={
        "help": "a pre-trained train.py checkpoint, or scratch (random weights, the architecture and tokenizer of "
                "--arch_from)"})
    arch_from: str = field(default=PRETRAINED, metadata={
        "help": "with --init_from scratch: the checkpoint whose architecture and tokenizer the model copies"})
    mode: str = field(default="full", metadata={"choices": list(MODES), "help": "full: train everything; head: "
                                                "only the classification head; lora: the head + LoRA adapters"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r (1..min(d_in, d_out))"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scale alpha (the update is alpha/r * B A)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the input of the LoRA branch"})
    pool: str = field(default="last", metadata={"choices": list(POOLS), "help": "classify from the last token "
                                                "(<|endoftext|>) or from the mean over the text"})
    dataset: str = field(default="imdb", metadata={"choices": list(textclass.DATASET_NAMES),
                                                   "help": "classification dataset (stage 1's splits)"})
    protocol: str = field(default="standard", metadata={"choices": list(textclass.PROTOCOLS),
                                                        "help": "stage 1's protocol (ag_news_test_cv: 5-fold CV in "
                                                                "the AG News test split; not the official figure)"})
    fold: int = field(default=0, metadata={"help": "held-out fold 0..4 of --protocol ag_news_test_cv"})
    val_fraction: float = field(default=0.05, metadata={"help": "share of each class held out for validation"})
    max_len: int = field(default=256, metadata={"help": "tokens per text, incl. <|endoftext|> (<= the context; "
                                                         "longer extends a RoPE model's context, classify only)"})
    truncation: str = field(default="head_tail", metadata={"choices": list(td.TRUNCATIONS),
                                                           "help": "which tokens of a longer text are kept"})
    mix: str = field(default="classify=1,translate=1,lm=1", metadata={
        "help": "multitask: task=weight,... (tasks: classify, translate, lm)"})
    lm_dataset: str = field(default="imdb_wikitext2", metadata={
        "help": "multitask lm: the prepared corpus (prepare.py) whose train/val windows are the lm task"})
    prepared_dir: str = field(default="", metadata={"help": "folder of --lm_dataset (default data/prepared/<name>)"})
    beam_size: int = field(default=4, metadata={"help": "translation: beams at test time (1 = greedy)"})
    len_alpha: float = field(default=1.0, metadata={"help": "translation: length normalisation exponent"})
    test_limit: int = field(default=0, metadata={"help": "score only the first N examples of each test set (0 = "
                                                         "all; smoke runs; recorded in the result file)"})
    data_dir: str = field(default="", metadata=shared("data_dir"))
    limit_train: int = field(default=0, metadata=shared("limit_train"))
    batch_size: int = field(default=32, metadata={"help": "examples (or lm windows) per step"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate (AdamW)"})
    lr_schedule: str = field(default="cosine", metadata={"choices": list(SCHEDULES), "help": "after the warm-up"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warm-up steps"})
    min_lr: float = field(default=0.0, metadata={"help": "final learning rate of cosine/linear"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (matrices only)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout of the GPT (replaces the pre-training value) "
                                                          "and before the head"})
    grad_clip: float = field(default=1.0, metadata=shared("grad_clip"))
    epochs: int = field(default=1, metadata=shared("epochs"))
    max_steps: int = field(default=0, metadata=shared("max_steps"))
    max_minutes: float = field(default=0.0, metadata=shared("max_minutes"))
    schedule_steps: int = field(default=0, metadata=shared("schedule_steps"))
    eval_every: int = field(default=0, metadata=shared("eval_every"))
    log_every: int = field(default=20, metadata=shared("log_every"))
    patience: int = field(default=0, metadata=shared("patience"))
    seed: int = field(default=DEFAULT_SEED, metadata=shared("seed"))
    dtype: str = field(default="float32", metadata={"choices": list(DTYPES), "help": "autocast precision"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    out_dir: str = field(default="", metadata=shared("out_dir", help="checkpoint folder (default: "
                                                     "checkpoints/finetune_<task>_<mode>[_scratch])"))
    run_dir: str = field(default="", metadata=shared("run_dir", help="log folder (default: runs/<as out_dir>)"))
    resume: bool = field(default=False, metadata=shared("resume"))

    def tag(self) -> str:
        return f"finetune_{self.task}_{self.mode}" + ("_scratch" if self.init_from == "scratch" else "")

    def fill_dirs(self) -> None:
        self.out_dir = self.out_dir or f"checkpoints/{self.tag()}"
        self.run_dir = self.run_dir or f"runs/{Path(self.out_dir).name}"

    def mixture(self) -> tuple[list[str], list[float]]:
        """The tasks and weights of this run (one task unless multitask)."""
        if self.task != "multitask":
            return [self.task], [1.0]
        tasks, weights = [], []
        for part in filter(None, (p.strip() for p in self.mix.split(","))):
            name, _, w = part.partition("=")
            if name not in MIX_TASKS:
                raise UserError(f"--mix: unknown task {name!r}; the tasks are {', '.join(MIX_TASKS)}")
            try:
                weight = float(w) if w else 1.0
            except ValueError:
                raise UserError(f"--mix: weight of {name} must be a number, got {w!r}") from None
            if not weight > 0 or name in tasks:
                raise UserError(f"--mix: each task once, with a weight > 0 (got {part!r})")
            tasks.append(name)
            weights.append(weight)
        if not tasks:
            raise UserError("--mix names no task; e.g. --mix classify=1,translate=1,lm=1")
        return tasks, weights

    def check(self) -> None:
        check_non_negative({k: getattr(self, k) for k in (
            "fold", "limit_train", "epochs", "max_steps", "max_minutes", "schedule_steps", "eval_every", "patience",
            "grad_clip", "warmup_steps", "weight_decay", "threads", "min_lr", "test_limit", "lora_dropout")})
        for name in ("batch_size", "max_len", "log_every", "beam_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.dropout < 1 or not self.lora_dropout < 1:
            raise UserError("--dropout and --lora_dropout must be in [0, 1)")
        if self.max_len < 2:
            raise UserError(f"--max_len must be >= 2 (a token and <|endoftext|>), got {self.max_len}")
        if not (self.epochs or self.max_steps or self.max_minutes):
            raise UserError("no budget: give --epochs, --max_steps or --max_minutes")
        tasks, _ = self.mixture()
        if self.task == "multitask" and not (self.max_steps or self.max_minutes):
            raise UserError("--task multitask counts steps, not epochs: give --max_steps or --max_minutes")
        if self.mode == "head" and "classify" not in tasks:
            raise UserError("--mode head trains only the classification head: it needs classify among the tasks")
        if self.mode == "lora" and self.lora_rank < 1:
            raise UserError(f"--lora_rank must be >= 1 for --mode lora, got {self.lora_rank}")


# ----- the tasks: batches, loss, validation, test --------------------------------------------------------------

class ClassifyTask:
    name = "classify"

    def __init__(self, cfg: FinetuneConfig, tok, log):
        self.cfg, self.tok = cfg, tok
        self.data = textclass.load_classification(cfg.dataset, cfg.protocol, cfg.fold, val_fraction=cfg.val_fraction,
                                                  seed=cfg.seed, limit_train=cfg.limit_train,
                                                  data_dir=cfg.data_dir or None)
        self.names = list(self.data.train.label_names)
        t0 = time.perf_counter()
        self.train_ids = td.encode_for_classification(tok, self.data.train.texts, cfg.max_len, cfg.truncation)
        self.val_ids = td.encode_for_classification(tok, self.data.val.texts, cfg.max_len, cfg.truncation)
        self.lens = [len(r) for r in self.train_ids]
        self.steps_per_epoch = math.ceil(len(self.train_ids) / cfg.batch_size)
        self.files = self.data.train.files + (self.data.test.files if self.data.test is not None else [])
        log(f"classify {cfg.dataset} ({cfg.protocol}): {len(self.train_ids):,} train / {len(self.val_ids):,} val "
            f"texts, "
            f"mean {np.mean(self.lens):.0f} tokens ({np.mean([n >= cfg.max_len for n in self.lens]):.0%} cut to "
            f"{cfg.max_len}, {cfg.truncation}), encoded in {time.perf_counter() - t0:.1f}s")
        if self.data.protocol_note:
            log(f"note: {self.data.protocol_note}")

    def batch(self, cursor: int):
        epoch, pos = divmod(cursor, self.steps_per_epoch)
        idx = textclass.bucketed_batches(self.lens, self.cfg.batch_size, self.cfg.seed, epoch)[pos]
        x, lengths = td.pad_right([self.train_ids[i] for i in idx], self.tok.eot_id)
        return x, lengths, torch.as_tensor(self.data.train.labels[idx])

    def loss(self, model: TaskModel, batch) -> torch.Tensor:
        return model.classify(*batch)[1]

    @torch.no_grad()
    def logits(self, model: TaskModel, ids: list[list[int]], batch_size: int = 64) -> np.ndarray:
        model.eval()
        order = np.argsort([len(r) for r in ids], kind="stable")
        out = np.zeros((len(ids), model.n_classes), dtype=np.float32)
        for s in range(0, len(ids), batch_size):
            idx = order[s:s + batch_size].tolist()
            x, lengths = td.pad_right([ids[i] for i in idx], self.tok.eot_id)
            with autocast(torch.device("cpu"), self.cfg.dtype):
                out[idx] = model.classify(x, lengths)[0].float().numpy()
        return out

    def validate(self, model: TaskModel) -> dict:
        logits = self.logits(model, self.val_ids)
        labels = self.data.val.labels
        return {"classify/val_accuracy": float((logits.argmax(1) == labels).mean()),
                "classify/val_loss": _mean_ce(logits, labels)}

    def test(self, model: TaskModel) -> dict:
        split = self.data.test if self.data.test is not None else self.data.val
        name = self.data.test_name if self.data.test is not None else "val"
        texts, labels = split.texts, split.labels
        if self.cfg.test_limit:
            texts, labels = texts[:self.cfg.test_limit], labels[:self.cfg.test_limit]
        t0 = time.perf_counter()
        ids = td.encode_for_classification(self.tok, texts, self.cfg.max_len, self.cfg.truncation)
        logits = self.logits(model, ids)
        dt = time.perf_counter() - t0
        m = textclass.classification_metrics(labels, logits.argmax(1), self.names)
        lat = []  # batch-1 latency from raw text, as stages 1, 2 and 4 record it: at least 10 texts, about 1 second
        for text in texts[:200]:
            if len(lat) >= 10 and sum(lat) > 1.0:
                break
            s = time.perf_counter()
            self.logits(model, td.encode_for_classification(self.tok, [text], self.cfg.max_len, self.cfg.truncation))
            lat.append(time.perf_counter() - s)
        return {"split": name, "metrics": {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                                           "loss": _mean_ce(logits, labels)},
                "per_class": m["per_class"], "confusion_matrix": m["confusion_matrix"], "n_examples": len(texts),
                "samples_per_s": len(texts) / dt, "ms_per_sample": 1000 * dt / len(texts),
                "latency_ms_batch1": 1000 * float(np.mean(lat)), "throughput_batch_size": 64,
                "label_names": self.names, "sample": split.sample}


class TranslateTask:
    name = "translate"

    def __init__(self, cfg: FinetuneConfig, tok, log, block_size: int):
        self.cfg, self.tok = cfg, tok
        splits, self.files = td.load_multi30k(cfg.data_dir or None)
        src, tgt = splits["train"]
        if cfg.limit_train:
            src, tgt = src[:cfg.limit_train], tgt[:cfg.limit_train]
        train = td.encode_pairs(tok, src, tgt)
        too_long = [i for i in range(len(train)) if len(train.prompt[i]) + len(train.target[i]) - 1 > block_size]
        if len(too_long) > 0.05 * len(train):  # a few outliers are left out (logged); more means a wrong model
            raise UserError(f"{len(too_long):,} of {len(train):,} training pairs are longer than the model's context "
                            f"({block_size} tokens): use a checkpoint with a longer --block_size")
        keep = [i for i in range(len(train)) if i not in set(too_long)]
        self.train = td.Pairs([train.src[i] for i in keep], [train.tgt[i] for i in keep],
                              [train.prompt[i] for i in keep], [train.target[i] for i in keep])
        self.val = td.encode_pairs(tok, *splits["val"])
        self.val.prompt, self.val.target = zip(*[(p, t[:block_size + 1 - len(p)]) for p, t in
                                                 zip(self.val.prompt, self.val.target)])
        self.tests = {s: splits[s] for s in td.MULTI30K_TESTS}
        self.lens = [len(p) + len(t) for p, t in zip(self.train.prompt, self.train.target)]
        self.steps_per_epoch = math.ceil(len(self.train) / cfg.batch_size)
        log(f"translate multi30k en→fr: {len(self.train):,} train pairs ({len(too_long)} longer than the context "
            f"left out), {len(self.val):,} val; mean {np.mean(self.lens):.0f} tokens per pair")

    def batch(self, cursor: int):
        epoch, pos = divmod(cursor, self.steps_per_epoch)
        idx = textclass.bucketed_batches(self.lens, self.cfg.batch_size, self.cfg.seed, epoch)[pos]
        return td.translation_batch(self.train, idx, self.tok.eot_id)

    def loss(self, model: TaskModel, batch) -> torch.Tensor:
        return model.lm_loss(*batch)

    @torch.no_grad()
    def validate(self, model: TaskModel) -> dict:
        model.eval()
        total, count = 0.0, 0
        order = np.argsort([len(p) + len(t) for p, t in zip(self.val.prompt, self.val.target)])
        for s in range(0, len(order), 64):
            idx = order[s:s + 64].tolist()
            x, y = td.translation_batch(self.val, idx, self.tok.eot_id)
            n = int((y >= 0).sum())
            with autocast(torch.device("cpu"), self.cfg.dtype):
                total += float(model.lm_loss(x, y)) * n
            count += n
        return {"translate/val_loss": total / count}

    def decode(self, model: TaskModel, src: list[str], beam_size: int) -> list[str]:
        model.eval()
        out = []
        for s in src:
            prompt = self.tok.encode(td.prompt_text(s))
            max_new = td.max_new_tokens(len(prompt))
            with autocast(torch.device("cpu"), self.cfg.dtype):
                ids = greedy_translate(model.gpt, prompt, max_new, self.tok.eot_id) if beam_size == 1 else \
                    beam_search(model.gpt, prompt, beam_size, max_new, self.tok.eot_id, self.cfg.len_alpha)
            out.append(self.tok.decode(ids).strip())
        return out

    def test(self, model: TaskModel) -> dict:
        import sacrebleu

        metrics, examples = {}, {}
        for split, (src, ref) in self.tests.items():
            if self.cfg.test_limit:
                src, ref = src[:self.cfg.test_limit], ref[:self.cfg.test_limit]
            for beam in sorted({1, self.cfg.beam_size}):
                t0 = time.perf_counter()
                hyp = self.decode(model, src, beam)
                dt = time.perf_counter() - t0
                sfx = "" if beam == self.cfg.beam_size else "_greedy"
                bleu, chrf = sacrebleu.corpus_bleu(hyp, [ref]), sacrebleu.corpus_chrf(hyp, [ref])
                metrics[f"{split}/bleu{sfx}"], metrics[f"{split}/chrf{sfx}"] = bleu.score, chrf.score
                metrics[f"{split}/decode_s{sfx}"] = dt
                if beam == self.cfg.beam_size:
                    examples[split] = [{"en": s, "ref": r, "hyp": h} for s, r, h in list(zip(src, ref, hyp))[:5]]
                    signature = str(bleu.format(signature=True)).split(" = ")[0]
        first = td.MULTI30K_TESTS[0]
        metrics.update(bleu=metrics[f"{first}/bleu"], chrf=metrics[f"{first}/chrf"],
                       decode_s=metrics[f"{first}/decode_s"])
        return {"split": first, "metrics": metrics, "examples": examples, "bleu_signature": signature,
                "n_examples": len(self.tests[first][0]) if not self.cfg.test_limit else self.cfg.test_limit,
                "beam_size": self.cfg.beam_size, "len_alpha": self.cfg.len_alpha}


class LMTask:
    name = "lm"

    def __init__(self, cfg: FinetuneConfig, tok, log, block_size: int, ckpt_tokenizer: dict):
        from stage5_gpt.train import open_prepared  # the same preparation train.py uses

        self.cfg = cfg
        folder = open_prepared(cfg.lm_dataset, cfg.prepared_dir, cfg.data_dir or None)
        meta = load_meta(folder)
        if meta.get("tokenizer") != ckpt_tokenizer:
            raise UserError(f"--lm_dataset {cfg.lm_dataset} ({folder}) was prepared with another tokenizer than the "
                            f"pre-trained checkpoint's; use the corpus it was trained on")
        self.train_data, self.val_data = load_split(folder, "train", meta), load_split(folder, "val", meta)
        self.block_size = min(block_size, cfg.max_len)
        self.steps_per_epoch = max(1, len(self.train_data) // (cfg.batch_size * self.block_size))
        self.files = [folder / "meta.json"]
        log(f"lm {cfg.lm_dataset}: {len(self.train_data):,} train / {len(self.val_data):,} val tokens, windows of "
            f"{self.block_size}")

    def batch(self, cursor: int):
        return td.lm_batch(self.train_data, self.cfg.batch_size, self.block_size, self.cfg.seed, cursor)

    def loss(self, model: TaskModel, batch) -> torch.Tensor:
        return model.lm_loss(*batch)

    @torch.no_grad()
    def validate(self, model: TaskModel) -> dict:
        model.eval()
        losses = []
        for k in range(LM_EVAL_BATCHES):  # always the same windows (seed 0)
            x, y = td.lm_batch(self.val_data, self.cfg.batch_size, self.block_size, 0, k)
            with autocast(torch.device("cpu"), self.cfg.dtype):
                losses.append(float(model.lm_loss(x, y)))
        return {"lm/val_loss": float(np.mean(losses))}

    def test(self, model: TaskModel) -> dict:
        m = self.validate(model)["lm/val_loss"]
        return {"split": "val", "metrics": {"val_loss": m}, "n_examples": LM_EVAL_BATCHES * self.cfg.batch_size}


def _mean_ce(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def selection_score(task: str, val: dict) -> float:
    """Higher is better: validation accuracy (classify), minus the loss (translate), minus the mean task loss."""
    if task == "classify":
        return val["classify/val_accuracy"]
    if task == "translate":
        return -val["translate/val_loss"]
    return -float(np.mean([v for k, v in val.items() if k.endswith("/val_loss")]))


# ----- the model: pre-trained trunk (or random), head, mode --------------------------------------------------

def load_pretrained(cfg: FinetuneConfig) -> tuple[GPTConfig, dict | None, object, dict]:
    """``(GPTConfig, trunk state_dict or None (scratch), tokenizer, the checkpoint it came from)``."""
    path = cfg.arch_from if cfg.init_from == "scratch" else cfg.init_from
    if not Path(path).is_file():
        hint = " (make it with: python benchmark.py pretrain)" if path == PRETRAINED else ""
        raise UserError(f"{'--arch_from' if cfg.init_from == 'scratch' else '--init_from'} {path} does not "
                        f"exist{hint}")
    ckpt = load_checkpoint(path, kind=KIND)
    if "finetune" in ckpt:
        raise UserError(f"{path} is a fine-tuned checkpoint ({ckpt['finetune'].get('task')}); start from a "
                        f"pre-trained train.py checkpoint")
    gcfg = config_from_checkpoint(ckpt, path)
    tok = tokenizer_from_checkpoint(ckpt, path)
    if tok.eot_id is None:
        raise UserError(f"{path} has a {tok.kind} tokenizer without <|endoftext|>: fine-tuning needs a byte-level BPE "
                        f"checkpoint (e.g. python benchmark.py pretrain)")
    if cfg.max_len > gcfg.block_size:
        if gcfg.pos != "rope" or cfg.task != "classify":
            raise UserError(f"--max_len {cfg.max_len} is longer than the context of {path} ({gcfg.block_size} "
                            f"tokens; only a RoPE model can classify longer texts)")
        # RoPE has no position table: q_m . k_n depends on m - n only, so the same weights run on longer texts
        # (positions < block_size are rotated exactly as in pre-training; the fine-tuning learns the longer
        # distances). A learned table has no row for position block_size and refuses above.
        gcfg = dataclasses.replace(gcfg, block_size=cfg.max_len)
    gcfg = dataclasses.replace(gcfg, dropout=cfg.dropout, attn_dropout=-1.0)  # all of the GPT's dropout is --dropout
    state = None if cfg.init_from == "scratch" else clean_state_dict(ckpt["model"])
    return gcfg, state, tok, ckpt


def build_model(cfg: FinetuneConfig, gcfg: GPTConfig, n_classes: int, trunk_state: dict | None) -> TaskModel:
    """The task model in its training mode: which parameters train (``requires_grad``) follows ``--mode``."""
    gpt = GPT(gcfg)
    if trunk_state is not None:
        try:
            gpt.load_state_dict(trunk_state)
        except RuntimeError as e:
            raise CheckpointError(f"{cfg.init_from}: weights do not fit its config ({str(e).splitlines()[0][:120]})"
                                  ) from None
    model = TaskModel(gpt, n_classes, cfg.pool, cfg.dropout)
    if cfg.mode == "head":
        for p in model.gpt.parameters():
            p.requires_grad = False
    elif cfg.mode == "lora":
        try:
            apply_lora(model.gpt, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout)
        except ValueError as e:
            raise UserError(f"--lora_rank: {e}") from None
    return model


def make_optimizer(model: TaskModel, cfg: FinetuneConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.99))


def set_train_mode(model: TaskModel, cfg: FinetuneConfig) -> None:
    """Training mode, except a frozen trunk (``--mode head``): its features must not change with dropout."""
    model.train()
    if cfg.mode == "head":
        model.gpt.eval()


def save(path: Path, model: TaskModel, cfg: FinetuneConfig, tok, info: dict, **state) -> None:
    save_checkpoint(path, {"model": model.state_dict(), "config": {"model": dataclasses.asdict(model.gpt.config),
                                                                   "train": dataclasses.asdict(cfg)},
                           "vocab": {"tokenizer": tok.to_dict()}, "finetune": info, **state}, KIND)


def load_finetuned(path, ckpt: dict | None = None) -> tuple[FinetuneConfig, TaskModel, object, dict, dict]:
    """``(cfg, model in eval mode, tokenizer, finetune info, checkpoint)``; one-line errors for other files.
    ``ckpt``: the file's contents when the caller has read it already."""
    ckpt = load_checkpoint(path, kind=KIND) if ckpt is None else ckpt
    if "finetune" not in ckpt:
        raise UserError(f"{path} is a pre-trained language model, not a fine-tuned one: use generate.py / "
                        f"evaluate.py for it, or fine-tune it with --init_from {path}")
    info = ckpt["finetune"]
    try:
        cfg = config_from_dict(FinetuneConfig, ckpt["config"]["train"])
        gcfg = config_from_checkpoint(ckpt, path)
        tok = tokenizer_from_checkpoint(ckpt, path)
        model = build_model(cfg, gcfg, int(info["n_classes"]), None)
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise UserError(f"{path}: fine-tuned checkpoint is incomplete or does not match its config "
                        f"({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]})") from None
    model.eval()
    return cfg, model, tok, info, ckpt


# ----- parsing and the run -----------------------------------------------------------------------------------

def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="finetune.py", description=__doc__, formatter_class=HelpFormatter)
    add_dataclass_args(p, FinetuneConfig)
    return p


def resolve_config(argv: list[str]) -> tuple[FinetuneConfig, dict | None]:
    parser = train_parser()
    cfg = dataclass_from_args(FinetuneConfig, parser.parse_args(argv))
    cfg.fill_dirs()
    ckpt = None
    if cfg.resume:
        path = Path(cfg.out_dir) / LAST
        if not path.is_file():
            raise UserError(f"--resume: {path} does not exist (nothing to continue; drop --resume or give --out_dir)")
        ckpt = load_checkpoint(path, kind=KIND)
        if "finetune" not in ckpt:
            raise UserError(f"--resume: {path} is not a fine-tuning checkpoint")
        merged = resume_config(ckpt["config"]["train"], dataclasses.asdict(cfg), explicit_flags(parser, argv), path)
        merged["out_dir"] = cfg.out_dir
        cfg = config_from_dict(FinetuneConfig, merged)
        cfg.resume = True
    cfg.check()
    return cfg, ckpt


def build_tasks(cfg: FinetuneConfig, tok, log, block_size: int, pre_ckpt: dict) -> dict:
    names, _ = cfg.mixture()
    tasks = {}
    for name in names:
        if name == "classify":
            tasks[name] = ClassifyTask(cfg, tok, log)
        elif name == "translate":
            tasks[name] = TranslateTask(cfg, tok, log, block_size)
        else:
            tasks[name] = LMTask(cfg, tok, log, block_size, pre_ckpt["vocab"]["tokenizer"])
    return tasks


def train(argv: list[str]) -> dict:
    cfg, ckpt = resolve_config(argv)
    logger = RunLogger(cfg.run_dir, resume_step=ckpt["step"] if ckpt else None)
    gcfg, trunk_state, tok, pre_ckpt = load_pretrained(cfg)
    tasks = build_tasks(cfg, tok, logger.info, gcfg.block_size, pre_ckpt)
    names, weights = cfg.mixture()
    label_names = tasks["classify"].names if "classify" in tasks else []
    info = {"task": cfg.task, "mode": cfg.mode, "tasks": names, "label_names": label_names,
            "n_classes": len(label_names), "pool": cfg.pool, "init_from": cfg.init_from,
            "lora": {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha} if cfg.mode == "lora" else None}
    if ckpt is not None and list(ckpt["finetune"].get("label_names", [])) != label_names:
        raise UserError(f"--resume: the checkpoint's labels {ckpt['finetune'].get('label_names')} differ from the "
                        f"data's {label_names}")

    gen = seed_everything(cfg.seed)
    model = build_model(cfg, gcfg, len(label_names), trunk_state)
    opt = make_optimizer(model, cfg)
    n_params, n_trainable = model.num_params(), count_trainable(model)
    spe = sum(t.steps_per_epoch for t in tasks.values()) if cfg.task == "multitask" else \
        tasks[names[0]].steps_per_epoch
    step, best, bad, history, resumed_at, wall = 0, -math.inf, 0, [], [], 0.0
    cursors = {n: 0 for n in names}
    budget_state = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, best, bad, history, wall = ckpt["step"], ckpt["best_metric"], ckpt["bad_evals"], \
            list(ckpt["history"]), ckpt["wall_s"]
        resumed_at = list(ckpt["resumed_at_steps"]) + [step]
        cursors, budget_state = dict(ckpt["cursors"]), ckpt["budget"]
        set_rng_state(ckpt["rng"], gen)
    budget = Budget(epochs=cfg.epochs if cfg.task != "multitask" else 0, steps_per_epoch=spe,
                    max_steps=cfg.max_steps, max_minutes=cfg.max_minutes, schedule_steps=cfg.schedule_steps,
                    state=budget_state)
    warmup = schedule_warmup(cfg.lr_schedule, cfg.warmup_steps, cfg.max_minutes)
    eval_every = cfg.eval_every or spe
    out = Path(cfg.out_dir)
    start = "random weights (scratch)" if cfg.init_from == "scratch" else f"pre-trained {cfg.init_from}"
    logger.info(f"GPT {gcfg.n_layer}x{gcfg.n_embd}, context {gcfg.block_size}, from {start}; mode {cfg.mode}: "
                f"{n_trainable:,} of {n_params:,} parameters train; {spe} steps/epoch; eval every {eval_every} steps"
                + (f"; resumed at step {step}" if ckpt else ""))

    def state():
        return {"optimizer": opt.state_dict(), "step": step, "best_metric": best, "bad_evals": bad,
                "history": history, "resumed_at_steps": resumed_at, "wall_s": wall, "budget": budget.state(),
                "rng": get_rng_state(gen), "cursors": dict(cursors)}

    def validate() -> dict:
        out_ = {}
        for t in tasks.values():
            out_.update(t.validate(model))
        return out_

    def lr_of(s: int) -> float:
        return lr_at(s, schedule=cfg.lr_schedule, lr=cfg.lr, total_steps=budget.total_steps(), warmup_steps=warmup,
                     min_lr=cfg.min_lr)

    def finished(steps: int, patience: bool = True) -> str | None:
        if cfg.task != "multitask" and cfg.epochs and steps >= cfg.epochs * spe:
            return "epochs"
        if patience and cfg.patience and bad >= cfg.patience:
            return "patience"
        return budget.stop_reason(steps, wall)

    eval_s = None
    win = {"loss": 0.0, "n": 0, "t": 0.0, "tokens": 0}

    def evaluate_and_save(lr: float) -> None:
        nonlocal wall, eval_s, best, bad
        t = time.perf_counter()
        val = validate()
        eval_s = time.perf_counter() - t
        wall += eval_s
        score = selection_score(cfg.task, val)
        history.append({"step": step, "wall_s": round(wall, 2), **val, "score": score, "lr": lr})
        logger.log(step, prefix="eval", **val)
        if score > best:
            best, bad = score, 0
            save(out / BEST, model, cfg, tok, info, **state())
        else:
            bad += 1
        save(out / LAST, model, cfg, tok, info, **state())

    bar = progress(total=budget.step_limit(), initial=step, desc=cfg.tag())
    stop_reason = None
    heap = HeapTrimmer()
    with StopRequest() as stop:
        while True:
            stop_reason = finished(step)
            if stop_reason:
                break
            name = td.task_of_step(cfg.seed, step, names, weights) if len(names) > 1 else names[0]
            task = tasks[name]
            t_step = time.perf_counter()
            set_train_mode(model, cfg)
            batch = task.batch(cursors[name])
            lr = lr_of(step)
            set_lr(opt, lr)
            with autocast(torch.device("cpu"), cfg.dtype):
                loss = task.loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
            opt.step()
            step, cursors[name] = step + 1, cursors[name] + 1
            dt = time.perf_counter() - t_step
            wall += dt
            bar.update(1)
            win["loss"], win["n"], win["t"] = win["loss"] + loss.item(), win["n"] + 1, win["t"] + dt
            win["tokens"] += int(batch[0].numel())
            heap.step()  # batches change shape every step: without this the heap only grows
            if budget.needs_calibration(step) and eval_s is None:  # one timed validation for a time budget's plan
                t = time.perf_counter()
                validate()
                eval_s = time.perf_counter() - t
                wall += eval_s
            budget.observe(step, wall, dt, eval_s_per_step=(eval_s or 0.0) / eval_every)
            if step % cfg.log_every == 0:
                logger.log(step, loss=win["loss"] / win["n"], lr=lr, **{
                    "tok/s": win["tokens"] / win["t"], "ms/step": 1000 * win["t"] / win["n"]})
                win.update(loss=0.0, n=0, t=0.0, tokens=0)
            if step % eval_every == 0 or finished(step, patience=False):
                evaluate_and_save(lr)
            if stop.requested:
                stop.save_and_stop(lambda: save(out / LAST, model, cfg, tok, info, **state()), out / LAST, step,
                                   logger.info, bar)
        if step and (not history or history[-1]["step"] != step):
            evaluate_and_save(lr_of(step - 1))
    bar.close()
    logger.info(f"stopped ({stop_reason}) at step {step}, {wall / 60:.1f} min; best validation score {best:.4f}; "
                f"free heap memory returned to the system {heap.trims} times ({heap.seconds:.1f} s)")
    if not history:
        raise UserError(f"the run ended at step {step} without an evaluation (budget already spent?)")
    return final_result(cfg, tasks, argv, step, wall, budget, warmup, history, resumed_at, n_params, n_trainable,
                        stop_reason, pre_ckpt, cursors)


def model_label(cfg: FinetuneConfig, gcfg: GPTConfig) -> str:
    how = {"full": "fine-tuned", "head": "head only", "lora": f"LoRA r={cfg.lora_rank}"}[cfg.mode]
    start = "from scratch" if cfg.init_from == "scratch" else "pre-trained"
    return f"GPT {gcfg.n_layer}x{gcfg.n_embd} {start}, {how}"


def final_result(cfg, tasks, argv, step, wall, budget, warmup, history, resumed_at, n_params, n_trainable,
                 stop_reason, pre_ckpt, cursors) -> dict:
    """Score ``best_finetune.pt`` on every task's test split and write one result file (with the steps each task
    trained, so a multi-task run can be read against its single-task models)."""
    _, model, _, info, _ = load_finetuned(Path(cfg.out_dir) / BEST)
    if info.get("lora"):
        merge_lora(model)  # W + (alpha/r) B A: the same outputs at plain-matrix speed
    scored = {name: t.test(model) for name, t in tasks.items()}
    if cfg.task == "multitask":
        metrics = {f"{name}/{k}": v for name, s in scored.items() for k, v in s["metrics"].items()
                   if "/" not in k or k.startswith("test_2016")}
        split, primary = "test", None
    else:
        s = scored[cfg.task]
        metrics, split = dict(s["metrics"]), s["split"]
        primary = "accuracy" if cfg.task == "classify" else "bleu"
    files = sorted({str(f) for t in tasks.values() for f in t.files})
    gcfg = model.gpt.config
    rep = reproduce_argv(argv, step, budget.total_steps(), cfg.max_minutes,
                         warmup_steps=warmup if cfg.max_minutes else None)
    extra = {}
    if cfg.task == "classify":
        extra = {k: v for k, v in scored["classify"].items() if k not in ("metrics", "split")}
        extra.update(protocol=cfg.protocol, truncation=f"{cfg.max_len} BPE tokens ({cfg.truncation})",
                     pretrained_context=pre_ckpt["config"]["model"]["block_size"])
        if cfg.protocol == "ag_news_test_cv":
            extra.update(fold=cfg.fold, protocol_note=textclass.CV_NOTE)
    elif cfg.task == "translate":
        extra = {k: v for k, v in scored["translate"].items() if k not in ("metrics", "split")}
        extra.update(language_pair="en-fr")
    else:
        extra = {"per_task": {n: {k: v for k, v in s.items() if k not in ("per_class", "confusion_matrix")}
                              for n, s in scored.items()}, "mix": cfg.mix}
    dataset = {"classify": cfg.dataset + ("_sample" if scored.get("classify", {}).get("sample") else ""),
               "translate": "multi30k", "multitask": "+".join(tasks)}[cfg.task]
    record = make_result(
        KIND, RESULT_TASK[cfg.task], dataset, split, metrics, params=n_params, train_wall_s=round(wall, 2),
        device=describe_device(torch.device("cpu")), seed=cfg.seed, data_sha256=sha256_files(files),
        primary_metric=primary, model=model_label(cfg, gcfg), init=("scratch" if cfg.init_from == "scratch"
                                                                    else "pretrained"),
        mode=cfg.mode, trainable_params=n_trainable, pretrained_from=cfg.init_from if cfg.init_from != "scratch"
        else None, pretrained_data_sha256=pre_ckpt.get("data_sha256"), arch_from=cfg.arch_from,
        pretrained_weights=None if cfg.init_from == "scratch" else weights_fingerprint(
            clean_state_dict(pre_ckpt["model"])),
        **extra, history=history, resumed_at_steps=resumed_at, peak_rss_mb=peak_rss_mb(),
        reproduce_command=cd_prefix() + "python finetune.py " + " ".join(rep), budget=budget.summary(step),
        stop_reason=stop_reason, steps=step, steps_per_task=dict(cursors), checkpoint=str(Path(cfg.out_dir) / BEST),
        config=dataclasses.asdict(cfg), model_config=dataclasses.asdict(gcfg))
    print_summary(record)
    record["result_file"] = str(write_result(record, name=f"{cfg.tag()}_{dataset}"))
    return record


def print_summary(r: dict) -> None:
    print(f"{r['task']} {r['dataset']} {r['split']}: {r['model']} ({r['trainable_params']:,} of {r['params']:,} "
          f"parameters trained)")
    for k, v in r["metrics"].items():
        if isinstance(v, float) and not k.endswith("decode_s"):
            print(f"  {k:32s} {v:.4f}")
    sys.stdout.flush()


# ----- evaluate: one text ------------------------------------------------------------------------------------

def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="finetune.py evaluate", formatter_class=HelpFormatter,
                                description="Classify or translate one --text with a fine-tuned checkpoint. A "
                                            "multi-task model takes the task as a prefix: 'classify: ...' or "
                                            "'translate: ...'.")
    add_checkpoint_arg(p, f"checkpoints/finetune_classify_full/{BEST}")
    p.add_argument("--text", required=True, help="the input text")
    return p


def run_text(model: TaskModel, tok, info: dict, cfg: FinetuneConfig, text: str) -> dict:
    """Plain data for one input: ``{"task": "classify", "probabilities": {...}}`` or ``{"translation": ...}``."""
    if not text.strip():
        raise UserError("the text is empty; give a sentence")
    tasks = [t for t in info.get("tasks", [info["task"]]) if t != "lm"]
    task = tasks[0]
    if len(tasks) > 1:
        prefix, sep, rest = text.partition(":")
        if not sep or prefix.strip() not in tasks:
            raise UserError(f"unknown task prefix {prefix.strip()!r}: start the text with one of "
                            f"{', '.join(t + ':' for t in tasks)}")
        task, text = prefix.strip(), rest.strip()
        if not text:
            raise UserError("the text after the task prefix is empty")
    with torch.no_grad():
        if task == "classify":
            ids = td.encode_for_classification(tok, [text], cfg.max_len, cfg.truncation)
            x, lengths = td.pad_right(ids, tok.eot_id)
            probs = torch.softmax(model.classify(x, lengths)[0][0].float(), -1).tolist()
            return {"task": task, "probabilities": dict(zip(info["label_names"], probs)),
                    "prediction": info["label_names"][int(np.argmax(probs))]}
        prompt = tok.encode(td.prompt_text(text))
        if len(prompt) >= model.gpt.config.block_size:
            raise UserError(f"the sentence has {len(prompt)} tokens, more than the model's context allows")
        ids = beam_search(model.gpt, prompt, cfg.beam_size, td.max_new_tokens(len(prompt)), tok.eot_id,
                          cfg.len_alpha)
        return {"task": task, "translation": tok.decode(ids).strip()}


def evaluate(argv: list[str]) -> dict:
    args = eval_parser().parse_args(argv)
    cfg, model, tok, info, _ = load_finetuned(args.checkpoint)
    out = run_text(model, tok, info, cfg, args.text)
    if "translation" in out:
        print(out["translation"])
    else:
        print(f"prediction: {out['prediction']}")
        for n, p in sorted(out["probabilities"].items(), key=lambda kv: -kv[1]):
            print(f"  {n:>10s}  {p:.4f}")
    return out


# ----- forgetting: the pre-training objective after fine-tuning ---------------------------------------------

def forgetting_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="finetune.py forgetting", formatter_class=HelpFormatter,
                                description="Catastrophic forgetting, measured: the language-modelling loss on the "
                                            "pre-training corpus's validation windows (the multi-task run's lm task) "
                                            "of a pre-trained checkpoint and of models fine-tuned from it.")
    p.add_argument("checkpoints", nargs="+", help="train.py and/or finetune.py checkpoints, the pre-trained one "
                                                  "first")
    p.add_argument("--lm_dataset", default="imdb_wikitext2", help="the prepared pre-training corpus (prepare.py)")
    p.add_argument("--prepared_dir", default="", help="its folder (default data/prepared/<name>)")
    p.add_argument("--batch_size", type=int, default=32, help="windows per batch (x %d batches)" % LM_EVAL_BATCHES)
    p.add_argument("--dtype", choices=list(DTYPES), default="bfloat16", help="autocast precision")
    p.add_argument("--data_dir", default="", help=shared("data_dir")["help"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    return p


def load_any(path: str) -> tuple[TaskModel, object, dict, str]:
    """``(model, tokenizer, its checkpoint, what it is)`` for a pre-trained or a fine-tuned checkpoint."""
    if not Path(path).is_file():
        raise UserError(f"{path} does not exist")
    ckpt = load_checkpoint(path, kind=KIND)
    if "finetune" in ckpt:
        _, model, tok, info, ckpt = load_finetuned(path, ckpt)
        if info.get("lora"):
            merge_lora(model)
        return model, tok, ckpt, f"fine-tuned: {'+'.join(info.get('tasks', [info['task']]))}"
    gpt, tok, ckpt = load_model(path, ckpt=ckpt)
    return TaskModel(gpt).eval(), tok, ckpt, "pre-trained"


def forgetting(argv: list[str]) -> dict:
    args = forgetting_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    cfg = FinetuneConfig(lm_dataset=args.lm_dataset, prepared_dir=args.prepared_dir, batch_size=args.batch_size,
                         dtype=args.dtype, data_dir=args.data_dir)
    rows, lm = [], None
    for path in args.checkpoints:
        model, tok, ckpt, what = load_any(path)
        if lm is None:  # the windows of the first checkpoint's context and tokenizer, for every model
            first_tok = ckpt["vocab"]["tokenizer"]
            lm = LMTask(cfg, tok, print, ckpt["config"]["model"]["block_size"], first_tok)
        elif ckpt["vocab"]["tokenizer"] != first_tok:
            raise UserError(f"{path} has another tokenizer than {rows[0]['checkpoint']}: its losses are not "
                            f"comparable")
        loss = lm.validate(model)["lm/val_loss"]
        rows.append({"checkpoint": path, "kind": what, "lm_val_loss": loss,
                     "weights": weights_fingerprint(clean_state_dict(ckpt["model"]))})
        print(f"{loss:.4f} nats/token  {what:28s} {path}", flush=True)
    base = rows[0]["lm_val_loss"]
    for r in rows:
        r["increase_over_first"] = r["lm_val_loss"] - base
    record = make_result(KIND, "forgetting", args.lm_dataset, "val", {"lm_val_loss_first": base}, params=None,
                         train_wall_s=None, device=describe_device(torch.device("cpu")), seed=0,
                         data_sha256=sha256_files(lm.files), models=rows, windows=LM_EVAL_BATCHES * args.batch_size,
                         window_tokens=lm.block_size,
                         reproduce_command=cd_prefix() + "python finetune.py forgetting " + " ".join(argv))
    record["result_file"] = str(write_result(record, name=f"forgetting_{args.lm_dataset}"))
    return record


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = "train"
    if argv and argv[0] in ("train", "evaluate", "forgetting"):
        mode, argv = argv[0], argv[1:]
    with torch_threads(threads_flag(argv)):
        return {"evaluate": evaluate, "forgetting": forgetting, "train": train}[mode](argv)


if __name__ == "__main__":
    run_cli(main)

