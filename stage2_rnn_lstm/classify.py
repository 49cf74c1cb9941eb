"""Train and evaluate an LSTM text classifier on IMDb or AG News (stage 1's splits and metrics).

    python classify.py --dataset imdb --max_minutes 20                # train; test accuracy at the end
    python classify.py --preset imdb_cpu --report                     # the benchmark configuration, published
    python classify.py --dataset ag_news --protocol ag_news_test_cv --fold 0
    python classify.py evaluate --checkpoint checkpoints/classify/best_classifier.pt
    python classify.py evaluate --checkpoint checkpoints/classify/best_classifier.pt --text "A fine film."
    python classify.py evaluate --checkpoint checkpoints/classify/best_classifier.pt --interactive

Pipeline: raw texts -> stage 1's word tokens -> a word vocabulary built on the **training part only**
(``--min_freq``, ``--max_vocab``) -> ids of the first ``--max_len`` words, encoded once per run ->
length-bucketed batches of ``--batch_size`` texts padded at the end -> ``LSTMClassifier``: embedding ->
(bi)LSTM over the real words only (packed for ``--impl torch``, masked for ``--impl scratch``) -> pooling
(``--pool last|mean|max``) -> dropout -> linear -> cross-entropy. AdamW with warm-up then cosine
(``scripts.schedule.lr_at``, per optimizer step), gradient clipping; validation accuracy every ``--eval_every``
steps; ``best_classifier.pt`` (best validation accuracy) and ``last_classifier.pt`` (every evaluation and on
Ctrl-C; ``--resume`` continues it exactly). At the end the best weights are scored on the test set: accuracy,
macro-F1, inference ms/sample and samples/s (batched, from raw text), batch-1 latency. ``--report`` copies the
result file to ``results/reported/stage2_rnn_lstm/`` (the README tables are built from those files).

``--protocol ag_news_test_cv`` (no AG News train split on this machine): 5-fold CV inside the 7,600-row
AG News *test* split, as stage 1 does it; those figures are not the official AG News figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `cd stage2_rnn_lstm && python classify.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# OpenMP threads that busy-wait at barriers make LSTM steps several times slower on a shared machine
# (see benchmark.py); must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from scripts import textclass as cd  # noqa: E402
from scripts.budget import Budget, reproduce_argv, schedule_warmup  # noqa: E402
from scripts.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from scripts.cli import HelpFormatter, UserError, repl_lines, run_cli  # noqa: E402
from scripts.config import (  # noqa: E402
    add_dataclass_args,
    config_from_dict,
    dataclass_from_args,
    explicit_flags,
    resume_config,
)
from scripts.data import sha256_files  # noqa: E402
from scripts.device import describe_device, threads_flag, torch_threads  # noqa: E402
from scripts.flags import DEFAULT_SEED, HELP, add_checkpoint_arg, check_non_negative, shared  # noqa: E402
from scripts.interrupt import StopRequest  # noqa: E402
from scripts.log import RunLogger, progress  # noqa: E402
from scripts.results import make_result, peak_rss_mb, report_result, write_result  # noqa: E402
from scripts.schedule import SCHEDULES, lr_at, set_lr  # noqa: E402
from scripts.seed import get_rng_state, seed_everything, set_rng_state  # noqa: E402
from stage2_rnn_lstm.models.classifier import IMPLS, POOLS, ClassifierConfig, LSTMClassifier  # noqa: E402
from stage2_rnn_lstm.utils.classify_data import PAD_ID, WordVocab, collate, encode_texts, tokenize  # noqa: E402

KIND = "stage2_rnn_lstm"
TASK = "classification"
STAGE_DIR = Path(__file__).resolve().parent
BEST, LAST = "best_classifier.pt", "last_classifier.pt"
LATENCY_MAX_S = 1.0  # batch-1 latency: at most --latency_samples texts or this many seconds (at least 10 texts)

# Benchmark presets: `--preset NAME` puts these flags first (later flags on the command line win).
# imdb_cpu (full IMDb, estimated ~20 minutes on 2 idle CPU cores): a 1-layer bidirectional nn.LSTM (128 units per
# direction, max pooling) over the first 400 words (82% of the reviews whole), on the 30,000 most frequent training
# words. A pure step budget (4 epochs = 2,972 steps of 32 reviews, cosine to 0), no clock: the same numbers on any
# machine with the same torch; train_wall_s records how long it took. Measured: ~0.7 s/step on 2 cores shared with
# another benchmark (load average 4; ~40 minutes in all), ~0.2-0.3 s/step for the bare model step on a quieter core.
PRESETS = {
    "imdb_cpu": ["--dataset", "imdb", "--epochs", "4", "--max_minutes", "0", "--max_vocab", "30000",
                 "--min_freq", "2", "--max_len", "400", "--impl", "torch", "--emb_dim", "128", "--hidden_size", "128",
                 "--num_layers", "1", "--bidirectional", "--pool", "max", "--dropout", "0.4", "--batch_size", "32",
                 "--lr", "2e-3", "--lr_schedule", "cosine", "--warmup_steps", "100", "--weight_decay", "0.01",
                 "--grad_clip", "1.0", "--eval_every", "250", "--log_every", "50",
                 "--out_dir", "checkpoints/classify_imdb_cpu", "--run_dir", "runs/classify_imdb_cpu"],
}


@dataclass
class ClassifyConfig:
    # data
    dataset: str = field(default="imdb", metadata={"choices": list(cd.DATASET_NAMES), "help": "which dataset"})
    protocol: str = field(default="standard", metadata={
        "choices": list(cd.PROTOCOLS),
        "help": "standard: train split (validation carved from it) -> test split; ag_news_test_cv: 5-fold CV "
                "inside the AG News test split (no train split offline; not the official figure)"})
    fold: int = field(default=0, metadata={"help": "held-out fold 0..4 of --protocol ag_news_test_cv"})
    val_fraction: float = field(default=0.05, metadata={
        "help": "share of every class of the training pool held out for validation (as stage 1)"})
    data_dir: str = field(default="", metadata=shared("data_dir"))
    limit_train: int = field(default=0, metadata=shared("limit_train"))
    min_freq: int = field(default=2, metadata={"help": "keep training words seen at least this often"})
    max_vocab: int = field(default=30000, metadata={
        "help": "at most this many words, <pad> and <unk> included (the most frequent; 0 = no cap)"})
    max_len: int = field(default=256, metadata={"help": "keep the first N words of each text (truncation)"})
    # model
    impl: str = field(default="torch", metadata={"choices": list(IMPLS),
                                                 "help": "scratch = our masked LSTM cells; torch = nn.LSTM (packed)"})
    emb_dim: int = field(default=128, metadata={"help": "word embedding size"})
    hidden_size: int = field(default=128, metadata={"help": "LSTM units per direction"})
    num_layers: int = field(default=1, metadata={"help": "stacked LSTM layers"})
    bidirectional: bool = field(default=True, metadata={
        "help": "a second LSTM reads each text backwards (--no-bidirectional: forward only)"})
    pool: str = field(default="max", metadata={"choices": list(POOLS), "help": "last states, mean or max over words"})
    dropout: float = field(default=0.3, metadata={"help": "dropout on embeddings, between layers, before the head"})
    # optimisation
    batch_size: int = field(default=32, metadata={"help": "texts per batch (length-bucketed)"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    lr_schedule: str = field(default="cosine", metadata={"choices": list(SCHEDULES),
                                                          "help": "LR schedule after the warm-up"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    min_lr: float = field(default=0.0, metadata={"help": "final LR of cosine/linear"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases, embeddings)"})
    grad_clip: float = field(default=1.0, metadata=shared("grad_clip"))
    # budget, logging, output
    epochs: int = field(default=2, metadata=shared("epochs"))
    max_steps: int = field(default=0, metadata=shared("max_steps"))
    max_minutes: float = field(default=0.0, metadata=shared("max_minutes"))
    schedule_steps: int = field(default=0, metadata=shared("schedule_steps"))
    eval_every: int = field(default=0, metadata=shared("eval_every"))
    log_every: int = field(default=50, metadata=shared("log_every"))
    patience: int = field(default=0, metadata=shared("patience"))
    seed: int = field(default=DEFAULT_SEED, metadata=shared("seed"))
    threads: int = field(default=0, metadata={"help": "CPU threads for torch (0 = torch's default)"})
    out_dir: str = field(default="checkpoints/classify", metadata=shared("out_dir"))
    run_dir: str = field(default="runs/classify", metadata=shared("run_dir"))
    resume: bool = field(default=False, metadata=shared("resume"))
    report: bool = field(default=False, metadata=shared("report"))

    def check(self) -> None:
        check_non_negative({k: getattr(self, k) for k in (
            "fold", "limit_train", "max_vocab", "epochs", "max_steps", "max_minutes", "schedule_steps", "eval_every",
            "patience", "grad_clip", "warmup_steps", "weight_decay", "threads", "min_lr")})
        for name in ("batch_size", "max_len", "log_every", "min_freq"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.max_vocab and self.max_vocab < 3:
            raise UserError(f"--max_vocab must be 0 (no cap) or >= 3 (<pad>, <unk> and a word), got {self.max_vocab}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if not (self.epochs or self.max_steps or self.max_minutes):
            raise UserError("no budget: give --epochs, --max_steps or --max_minutes (0 everywhere = forever)")
        self.model_config(2, 3)  # impossible model configs are one-line errors before any data is read

    def model_config(self, n_classes: int, vocab_size: int) -> ClassifierConfig:
        return ClassifierConfig(vocab_size=vocab_size, n_classes=n_classes, emb_dim=self.emb_dim,
                                hidden_size=self.hidden_size, num_layers=self.num_layers,
                                bidirectional=self.bidirectional, pool=self.pool, dropout=self.dropout,
                                impl=self.impl, pad_id=PAD_ID)


# ----- batches -----------------------------------------------------------------------------------

def train_batch(ids: list[list[int]], labels: np.ndarray, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch: ``(x, y)``."""
    return collate(ids, idx), torch.as_tensor(labels[idx])


@torch.inference_mode()
def predict_logits(model, ids: list[list[int]], batch_size: int = 128) -> np.ndarray:
    """(N, K) logits, batches sorted by length (little padding), returned in the input order."""
    model.eval()
    order = np.argsort([len(r) for r in ids], kind="stable")
    out = np.zeros((len(ids), model.cfg.n_classes), dtype=np.float32)
    for s in range(0, len(ids), batch_size):
        idx = order[s:s + batch_size].tolist()
        out[idx] = model(collate(ids, idx))[0].float().numpy()
    return out


def mean_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


# ----- checkpoints -------------------------------------------------------------------------------

def save(path: Path, model, cfg: ClassifyConfig, vocab: WordVocab, label_names, **state) -> None:
    save_checkpoint(path, {"model": model.state_dict(), "config": dataclasses.asdict(cfg),
                           "model_config": dataclasses.asdict(model.cfg), "vocab": vocab.to_dict(),
                           "label_names": list(label_names), "task": TASK, **state}, KIND)


def check_classifier(ckpt: dict, path) -> None:
    """A stage-2 checkpoint that train.py wrote (a language model) is a one-line error here."""
    if ckpt.get("task") != TASK:
        raise UserError(f"{path} is a stage-2 language-model checkpoint (train.py), not a classifier; pass a "
                        f"{BEST} / {LAST} written by classify.py")


def load_classifier(path) -> tuple[ClassifyConfig, LSTMClassifier, WordVocab, list[str], dict]:
    """``(cfg, model in eval mode, vocabulary, label names, raw checkpoint)``; one-line errors for bad files."""
    ckpt = load_checkpoint(path, kind=KIND)
    check_classifier(ckpt, path)
    try:
        cfg = config_from_dict(ClassifyConfig, ckpt["config"])
        mcfg = config_from_dict(ClassifierConfig, ckpt["model_config"])
        vocab = WordVocab.from_dict(ckpt["vocab"])
        model = LSTMClassifier(mcfg)
        model.load_state_dict(ckpt["model"])
        names = list(ckpt["label_names"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"{path}: classifier checkpoint is incomplete or does not match its config "
                        f"({type(e).__name__}: {first})") from None
    model.eval()
    return cfg, model, vocab, names, ckpt


# ----- parsing -----------------------------------------------------------------------------------

def expand_preset(argv: list[str]) -> list[str]:
    """``--preset NAME`` -> the preset's flags first, then the rest of ``argv`` (later flags win)."""
    if "--preset" not in argv:
        return argv
    i = argv.index("--preset")
    if i + 1 >= len(argv) or argv[i + 1] not in PRESETS:
        raise UserError(f"--preset needs one of: {', '.join(PRESETS)}")
    return PRESETS[argv[i + 1]] + argv[:i] + argv[i + 2:]


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="classify.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), help="benchmark flags put first (later flags win)")
    p.add_argument("--evaluate_only", action="store_true", help="score --checkpoint instead of training "
                   "(the same as `classify.py evaluate ...`)")
    add_dataclass_args(p, ClassifyConfig)
    return p


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="classify.py evaluate", formatter_class=HelpFormatter,
                                description="Score a classifier checkpoint on its test (or validation) split, "
                                            "classify one --text, or read texts one per line (--interactive).")
    add_checkpoint_arg(p, f"checkpoints/classify/{BEST}")
    p.add_argument("--split", default="test", choices=["test", "val"], help="which split to score")
    p.add_argument("--text", default=None, help="classify this one text instead")
    p.add_argument("--interactive", action="store_true",
                   help="read one text per line from stdin and print the class probabilities of each")
    p.add_argument("--data_dir", default="", help=HELP["data_dir"])
    p.add_argument("--batch_size", type=int, default=128, help="texts per inference batch")
    p.add_argument("--latency_samples", type=int, default=200, help="texts timed one at a time")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    return p


# ----- scoring -----------------------------------------------------------------------------------

def score(model, vocab, texts: list[str], labels: np.ndarray, names, max_len: int, batch_size: int = 128,
          latency_samples: int = 200) -> dict:
    """Metrics + speed on one split: accuracy, macro-F1, loss, samples/s and ms/sample batched (from raw
    text: tokenize + forward), model-only samples/s, and batch-1 latency (end to end, mean over the first
    ``latency_samples`` texts or ``LATENCY_MAX_S`` seconds)."""
    t0 = time.perf_counter()
    ids = encode_texts(vocab, texts, max_len)
    t1 = time.perf_counter()
    logits = predict_logits(model, ids, batch_size)
    t2 = time.perf_counter()
    m = cd.classification_metrics(labels, logits.argmax(1), names)
    lat = []
    with torch.inference_mode():
        for text in texts[:latency_samples]:
            if len(lat) >= 10 and sum(lat) > LATENCY_MAX_S:
                break
            s = time.perf_counter()
            model(collate(encode_texts(vocab, [text], max_len), [0]))
            lat.append(time.perf_counter() - s)
    n = len(texts)
    return {"metrics": {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "loss": mean_loss(logits, labels)},
            "per_class": m["per_class"], "confusion_matrix": m["confusion_matrix"], "n_examples": n,
            "samples_per_s": n / (t2 - t0), "ms_per_sample": 1000 * (t2 - t0) / n,
            "model_only_samples_per_s": n / (t2 - t1), "tokenize_s": t1 - t0, "throughput_batch_size": batch_size,
            "latency_ms_batch1": 1000 * float(np.mean(lat)) if lat else None}


def describe_model(cfg: ClassifyConfig) -> str:
    kind = "BiLSTM" if cfg.bidirectional else "LSTM"
    return f"{kind} {cfg.num_layers}x{cfg.hidden_size} ({cfg.pool} pooling, {cfg.impl})"


def result_record(cfg: ClassifyConfig, split: str, scored: dict, data: cd.TextSplit, params: int,
                  train_wall_s, note: str | None, **extra) -> dict:
    protocol = {"protocol": cfg.protocol}
    if cfg.protocol == "ag_news_test_cv":
        protocol.update(fold=cfg.fold, protocol_note=note or cd.CV_NOTE)
    return make_result(
        KIND, TASK, cfg.dataset + ("_sample" if data.sample else ""), split, scored["metrics"], params=params,
        train_wall_s=train_wall_s, device=describe_device(torch.device("cpu")), seed=cfg.seed,
        data_sha256=sha256_files(data.files) if data.files else None, primary_metric="accuracy",
        model=describe_model(cfg), truncation=f"first {cfg.max_len} words", label_names=list(data.label_names),
        **{k: v for k, v in scored.items() if k != "metrics"}, **protocol, config=dataclasses.asdict(cfg), **extra)


def print_summary(r: dict) -> None:
    m = r["metrics"]
    print(f"{r['dataset']} {r['split']} ({r['protocol']}), {r['n_examples']:,} texts, {r['model']}")
    print(f"  accuracy {m['accuracy']:.2%}   macro-F1 {m['macro_f1']:.2%}   loss {m['loss']:.4f}")
    print(f"  speed: {r['samples_per_s']:,.0f} samples/s = {r['ms_per_sample']:.3f} ms/sample batched from raw text "
          f"(batch {r['throughput_batch_size']}; model only {r['model_only_samples_per_s']:,.0f}/s); "
          f"batch-1 latency {r['latency_ms_batch1'] or float('nan'):.2f} ms")
    if r.get("protocol_note"):
        print(f"  note: {r['protocol_note']}")
    sys.stdout.flush()


# ----- training ----------------------------------------------------------------------------------

def make_optimizer(model, cfg: ClassifyConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on the LSTM and head matrices only (not on biases or the embedding table)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("embedding")]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.startswith("embedding"))]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)


def resolve_config(argv: list[str]) -> tuple[ClassifyConfig, dict | None]:
    """The run's config (with ``--resume``: the checkpoint's, see scripts.config.resume_config) and the
    checkpoint to continue (or ``None``)."""
    parser = train_parser()
    args = parser.parse_args(argv)
    cfg = dataclass_from_args(ClassifyConfig, args)
    ckpt = None
    if cfg.resume:
        path = Path(cfg.out_dir) / LAST
        if not path.is_file():
            raise UserError(f"--resume: {path} does not exist (nothing to continue; drop --resume)")
        ckpt = load_checkpoint(path, kind=KIND)
        check_classifier(ckpt, path)
        explicit = explicit_flags(parser, argv) - {"preset", "evaluate_only"}
        merged = resume_config(ckpt["config"], dataclasses.asdict(cfg), explicit, path)
        cfg = config_from_dict(ClassifyConfig, merged)
    cfg.check()
    return cfg, ckpt


def build_vocab(cfg: ClassifyConfig, data: cd.ClassificationData, ckpt: dict | None) -> WordVocab:
    """The word vocabulary: from the training part only (or the one saved in the checkpoint)."""
    if ckpt:
        return WordVocab.from_dict(ckpt["vocab"])
    return WordVocab.build([tokenize(t) for t in data.train.texts], cfg.min_freq, cfg.max_vocab)


def train(argv: list[str]) -> dict:
    cfg, ckpt = resolve_config(argv)
    data = cd.load_classification(cfg.dataset, cfg.protocol, cfg.fold, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                  limit_train=cfg.limit_train, data_dir=cfg.data_dir or None)
    names = data.train.label_names
    t0 = time.perf_counter()
    vocab = build_vocab(cfg, data, ckpt)
    train_ids = encode_texts(vocab, data.train.texts, cfg.max_len)
    val_ids = encode_texts(vocab, data.val.texts, cfg.max_len)
    lens = [len(r) for r in train_ids]
    print(f"{cfg.dataset} ({cfg.protocol}): {len(train_ids):,} train / {len(val_ids):,} val texts, {len(vocab):,} "
          f"words (min freq {cfg.min_freq}), mean length {np.mean(lens):.0f} words (first {cfg.max_len} kept; "
          f"{np.mean([n >= cfg.max_len for n in lens]):.0%} truncated), tokenized in {time.perf_counter() - t0:.1f}s",
          flush=True)
    if data.protocol_note:
        print(f"note: {data.protocol_note}", flush=True)

    gen = seed_everything(cfg.seed)
    model = LSTMClassifier(cfg.model_config(len(names), len(vocab)))
    opt = make_optimizer(model, cfg)
    spe = math.ceil(len(train_ids) / cfg.batch_size)
    step, best, bad, history, resumed_at, wall, ev_loss, ev_n = 0, -1.0, 0, [], [], 0.0, 0.0, 0
    budget_state = None
    if ckpt:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, best, bad = ckpt["step"], ckpt["best_metric"], ckpt["bad_evals"]
        history, wall = list(ckpt["history"]), ckpt["wall_s"]
        resumed_at = list(ckpt["resumed_at_steps"]) + [ckpt["step"]]
        budget_state = ckpt["budget"]
        ev_loss, ev_n = ckpt["eval_window"]
        set_rng_state(ckpt["rng"], gen)
    budget = Budget(epochs=cfg.epochs, steps_per_epoch=spe, max_steps=cfg.max_steps, max_minutes=cfg.max_minutes,
                    schedule_steps=cfg.schedule_steps, state=budget_state)
    warmup = schedule_warmup(cfg.lr_schedule, cfg.warmup_steps, cfg.max_minutes)
    eval_every = cfg.eval_every or spe
    logger = RunLogger(cfg.run_dir, resume_step=step if ckpt else None)
    out = Path(cfg.out_dir)
    n_params = model.num_params()
    logger.info(f"model: {describe_model(cfg)}, {n_params:,} parameters; {spe} steps/epoch; eval every {eval_every} "
                f"steps" + (f"; resumed at step {step}" if ckpt else ""))

    def state():
        return {"optimizer": opt.state_dict(), "step": step, "best_metric": best, "bad_evals": bad,
                "history": history, "resumed_at_steps": resumed_at, "wall_s": wall, "budget": budget.state(),
                "rng": get_rng_state(gen), "eval_window": [ev_loss, ev_n]}

    def seen(steps: int) -> int:
        """Training examples seen after ``steps`` steps."""
        full, part = divmod(steps, spe)
        return full * len(train_ids) + min(part * cfg.batch_size, len(train_ids))

    def validate() -> tuple[float, float]:
        logits = predict_logits(model, val_ids, 2 * cfg.batch_size)
        return float((logits.argmax(1) == data.val.labels).mean()), mean_loss(logits, data.val.labels)

    def finished(steps: int, patience: bool = True) -> str | None:
        """Why no further step may start (``None``: go on)."""
        if cfg.epochs and steps >= cfg.epochs * spe:
            return "epochs"
        if patience and cfg.patience and bad >= cfg.patience:
            return "patience"
        return budget.stop_reason(steps, wall)

    def evaluate_and_save(lr: float) -> None:
        """Validation accuracy; ``best_*`` when it improved, ``last_*`` always; one ``history`` entry."""
        nonlocal wall, eval_s, ev_loss, ev_n, best, bad
        t = time.perf_counter()
        acc, vloss = validate()
        eval_s = time.perf_counter() - t
        wall += eval_s  # the time budget counts evaluations too
        history.append({"step": step, "examples": seen(step), "epoch": round(step / spe, 3),
                        "wall_s": round(wall, 2), "train_loss": ev_loss / max(ev_n, 1), "val_loss": vloss,
                        "val_accuracy": acc})
        ev_loss, ev_n = 0.0, 0
        logger.log(step, prefix="eval", val_loss=vloss, val_accuracy=acc, lr=lr)
        if acc > best:
            best, bad = acc, 0
            save(out / BEST, model, cfg, vocab, names, **state())
        else:
            bad += 1
        save(out / LAST, model, cfg, vocab, names, **state())

    eval_s = None
    stop_reason = None
    batches: dict = {}
    win_loss, win_n, win_t, win_steps = 0.0, 0, 0.0, 0
    bar = progress(total=budget.step_limit(), initial=step, desc="train")
    with StopRequest() as stop:
        while True:
            stop_reason = finished(step)
            if stop_reason:
                break
            epoch, pos = divmod(step, spe)
            t_step = time.perf_counter()
            model.train()
            if epoch not in batches:  # the epoch's batch order: a function of (seed, epoch) only
                batches.clear()
                batches[epoch] = cd.bucketed_batches(lens, cfg.batch_size, cfg.seed, epoch)
            idx = batches[epoch][pos]
            x, y = train_batch(train_ids, data.train.labels, idx)
            lr = lr_at(step, schedule=cfg.lr_schedule, lr=cfg.lr, total_steps=budget.total_steps(),
                       warmup_steps=warmup, min_lr=cfg.min_lr)
            set_lr(opt, lr)
            _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            dt = time.perf_counter() - t_step
            wall += dt
            bar.update(1)
            win_loss, win_n, win_t, win_steps = win_loss + loss.item() * len(idx), win_n + len(idx), win_t + dt, \
                win_steps + 1
            ev_loss, ev_n = ev_loss + loss.item() * len(idx), ev_n + len(idx)
            if budget.needs_calibration(step) and eval_s is None:  # time one validation pass for the plan
                t = time.perf_counter()
                validate()
                eval_s = time.perf_counter() - t
                wall += eval_s
            budget.observe(step, wall, dt, eval_s_per_step=(eval_s or 0.0) / eval_every)
            if step % cfg.log_every == 0:
                logger.log(step, loss=win_loss / win_n, lr=lr, **{"samples/s": win_n / win_t,
                                                                 "ms/step": 1000 * win_t / win_steps})
                win_loss, win_n, win_t, win_steps = 0.0, 0, 0.0, 0
            if step % eval_every == 0 or finished(step, patience=False):
                evaluate_and_save(lr)
            if stop.requested:
                stop.save_and_stop(lambda: save(out / LAST, model, cfg, vocab, names, **state()), out / LAST, step,
                                   logger.info, bar)
        if step and (not history or history[-1]["step"] != step):  # e.g. the wall clock ran out between evals
            evaluate_and_save(lr_at(step - 1, schedule=cfg.lr_schedule, lr=cfg.lr, total_steps=budget.total_steps(),
                                    warmup_steps=warmup, min_lr=cfg.min_lr))
    bar.close()
    logger.info(f"training stopped ({stop_reason}) at step {step}, {wall:.0f}s; best val accuracy {best:.4f}")
    if not history:
        raise UserError(f"the run ended at step {step} without an evaluation (budget already spent?)")
    return final_result(cfg, data, argv, step, wall, budget, warmup, history, resumed_at, n_params, stop_reason)


def final_result(cfg, data: cd.ClassificationData, argv, step, wall, budget, warmup, history, resumed_at, n_params,
                 stop_reason) -> dict:
    """Score the best checkpoint on the test split (validation where there is none) and write the result."""
    _, model, vocab, names, _ = load_classifier(Path(cfg.out_dir) / BEST)
    split_data, split = (data.test, data.test_name) if data.test is not None else (data.val, "val")
    if data.test is None:
        print("note: no test split next to the training data (bundled sample): scoring validation", file=sys.stderr)
    scored = score(model, vocab, split_data.texts, split_data.labels, names, cfg.max_len)
    rep = [a for a in reproduce_argv(argv, step, budget.total_steps(), cfg.max_minutes,
                                     warmup_steps=warmup if cfg.max_minutes else None) if a != "--report"]
    record = result_record(
        cfg, split, scored, split_data, n_params, round(wall, 2), data.protocol_note, history=history,
        resumed_at_steps=resumed_at, reproduce_command="cd stage2_rnn_lstm && python classify.py " + " ".join(rep),
        peak_rss_mb=peak_rss_mb(), budget=budget.summary(step), stop_reason=stop_reason,
        best_val_accuracy=max(h["val_accuracy"] for h in history), train_samples=len(data.train),
        val_samples=len(data.val), checkpoint=str(Path(cfg.out_dir) / BEST), vocab=len(vocab))
    print_summary(record)
    path = write_result(record, name=f"classify_{cfg.dataset}_{split}")
    record["result_file"] = str(path)
    if cfg.report:
        record["reported_file"] = str(report_result(path))
        print(f"reported: {record['reported_file']}", flush=True)
    return record


# ----- evaluation and prediction -----------------------------------------------------------------

def class_probabilities(model, vocab: WordVocab, names: list[str], text: str, max_len: int) -> dict[str, float]:
    with torch.inference_mode():
        probs = torch.softmax(model(collate(encode_texts(vocab, [text], max_len), [0]))[0][0].float(), -1)
    return dict(zip(names, probs.tolist()))


def print_prediction(probs: dict[str, float]) -> str:
    best = max(probs, key=probs.get)
    print(f"prediction: {best}")
    for n, p in sorted(probs.items(), key=lambda kv: -kv[1]):
        print(f"  {n:>10s}  {p:.4f}")
    sys.stdout.flush()
    return best


def unknown_words(vocab: WordVocab, text: str) -> str | None:
    """Why ``text`` cannot be classified (no token, or no word the model knows), else ``None``."""
    toks = tokenize(text)
    if not toks:
        return "has no words"
    if not vocab.known(toks):
        shown = " ".join(toks[:8]) + (" ..." if len(toks) > 8 else "")
        return f"has no word the model knows ({shown}); give a text in the training language"
    return None


def evaluate(argv: list[str]) -> dict:
    args = eval_parser().parse_args(argv)
    check_non_negative({"threads": args.threads, "latency_samples": args.latency_samples})
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.text is not None and args.interactive:
        raise UserError("give either --text or --interactive, not both")
    cfg, model, vocab, names, _ = load_classifier(args.checkpoint)
    if args.text is not None:
        if not args.text.strip():
            raise UserError("--text is empty; give a text to classify")
        why = unknown_words(vocab, args.text)
        if why:
            raise UserError(f"--text {why}")
        probs = class_probabilities(model, vocab, names, args.text, cfg.max_len)
        return {"prediction": print_prediction(probs), "probabilities": probs}
    if args.interactive:
        answers = []
        for text in repl_lines(f"classify ({', '.join(names)}): one text per line"):
            why = unknown_words(vocab, text)
            if why:
                print(f"note: this text {why}", file=sys.stderr, flush=True)
                continue
            probs = class_probabilities(model, vocab, names, text, cfg.max_len)
            answers.append({"prediction": print_prediction(probs), "probabilities": probs})
        return {"answers": answers}
    data = cd.load_classification(cfg.dataset, cfg.protocol, cfg.fold, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                  data_dir=args.data_dir or cfg.data_dir or None, need_test=args.split == "test")
    if args.split == "test" and data.test is None:
        raise UserError(f"no {cfg.dataset} test split next to the training data (the bundled sample has none); "
                        f"pass --data_dir with test.jsonl.gz, or score validation with --split val")
    split_data, split = (data.test, data.test_name) if args.split == "test" else (data.val, "val")
    scored = score(model, vocab, split_data.texts, split_data.labels, names, cfg.max_len, args.batch_size,
                   args.latency_samples)
    record = result_record(cfg, split, scored, split_data, model.num_params(), None, data.protocol_note,
                           model_path=str(args.checkpoint), peak_rss_mb=peak_rss_mb())
    print_summary(record)
    record["result_file"] = str(write_result(record, name=f"eval_classify_{cfg.dataset}_{split}"))
    return record


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = "train"
    if argv and argv[0] in ("train", "evaluate"):
        mode, argv = argv[0], argv[1:]
    if "--evaluate_only" in argv:
        mode, argv = "evaluate", [a for a in argv if a != "--evaluate_only"]
    if mode == "train":
        argv = expand_preset(argv)
    with torch_threads(threads_flag(argv)):
        return evaluate(argv) if mode == "evaluate" else train(argv)


if __name__ == "__main__":
    run_cli(main)
