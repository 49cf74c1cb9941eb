"""The stage-2 benchmark runs behind the README's numbers (issue targets, 2 CPU cores).

    cd stage2_rnn_lstm
    python benchmark.py speed        # scratch LSTM vs nn.LSTM, same batch, same process -> ratio
    python benchmark.py char         # char LSTM, tiny Shakespeare, 20-minute budget (target val <= 1.50 nats/char)
    python benchmark.py ptb          # word LSTM, Penn Treebank, 40-minute budget (target test ppl <= 110)
    python benchmark.py wikitext2    # word LSTM + tied adaptive softmax, WikiText-2, 13 epochs, no time limit
                                     # (target test ppl <= 100)
    python benchmark.py seqlen       # ms per training step of an LSTM 2x256 at sequence lengths 32..512 (~1 min;
                                     # scripts/steptime.py, the same shapes as stages 3 and 4)

``char``/``ptb``/``wikitext2`` run ``train.py`` with the preset flags printed below (add more flags
after the preset name to override them, e.g. ``python benchmark.py char --max_minutes 5``; ``--resume``
continues an interrupted run); each writes its result file under ``results/stage2_rnn_lstm/`` like any
training run, and with ``--report`` also copies it to ``results/reported/stage2_rnn_lstm/`` (the files
README tables are built from) under its timestamped name. On a shared machine run one benchmark at a
time, so that timings stay honest.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

# On a shared machine (more runnable threads than cores) OpenMP's default busy-waiting at barriers
# made every LSTM step 4x slower in our measurements; sleeping threads lose little when idle.
# Must be set before torch loads its OpenMP runtime; it is recorded in each result file.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from scripts.cli import HelpFormatter, UserError, run_cli  # noqa: E402
from scripts.device import add_device_args, describe_device, pick_device
from scripts.flags import DEFAULT_SEED, HELP
from scripts.results import make_result, report_result, results_dir, write_result
from scripts.seed import seed_everything
from scripts.steptime import VOCAB, WIDTH, adamw_step, add_seqlen_args, check_seqlen_args, run_seqlen
from stage2_rnn_lstm.models.language_model import LMConfig, RNNLanguageModel, copy_torch_to_scratch
from stage2_rnn_lstm.utils.engine import KIND

PRESETS = {
    "char": ("--model_type lstm --vocab_type char --emb_dim 128 --hidden_size 512 --num_layers 2 --dropout 0.15 "
             "--batch_size 64 --seq_len 128 --lr 3e-3 --weight_decay 0.01 --lr_schedule wsd --decay_frac 0.2 "
             "--min_lr 1e-4 --eval_every 150 --patience 0 --epochs 100 --max_minutes 20 --log_every 25").split(),
    "ptb": ("--model_type lstm --vocab_type word --dataset ptb --emb_dim 400 --hidden_size 400 --num_layers 2 "
            "--tie_weights --dropout 0.35 --batch_size 20 --seq_len 35 --optimizer adamw --lr 2e-3 --weight_decay 0.01 "
            "--lr_schedule wsd --decay_frac 0.3 --min_lr 1e-5 --grad_clip 0.5 --patience 0 --eval_every 1500 "
            "--epochs 100 --max_minutes 40 --log_every 200 --fused").split(),
    # Tied adaptive softmax (models/adaptive.py). No time limit: the LR schedule runs over 13 epochs (hours on 2 CPU
    # cores); the result file reports the wall time. A run stopped with Ctrl-C or kill continues exactly with
    # --resume (train_wall_s keeps adding up).
    "wikitext2": ("--model_type lstm --vocab_type word --dataset wikitext2 --emb_dim 400 --hidden_size 400 "
                  "--num_layers 2 --dropout 0.3 --adaptive_cutoffs 2000 10000 --tie_weights --adaptive_div 2 "
                  "--batch_size 20 --seq_len 35 --optimizer adamw --lr 2e-3 --weight_decay 0.01 --lr_schedule wsd "
                  "--decay_frac 0.3 --min_lr 1e-5 --grad_clip 0.5 --patience 0 --eval_every 1500 --epochs 13 "
                  "--log_every 200 --fused").split(),
}


def time_train_steps(model: RNNLanguageModel, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Seconds per forward+backward+AdamW step on one fixed batch (after one warm-up step)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        loss = model(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def speed(argv) -> dict:
    p = argparse.ArgumentParser(prog="benchmark.py speed", description="scratch LSTM vs nn.LSTM training speed",
                                formatter_class=HelpFormatter)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--hidden_size", type=int, default=512)
    p.add_argument("--num_layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="alternate scratch/torch this many times; report medians")
    add_device_args(p, dtype=False)
    a = p.parse_args(argv)
    if min(a.batch_size, a.seq_len, a.hidden_size, a.num_layers, a.steps, a.rounds) <= 0:
        raise UserError("all sizes must be positive")
    device = pick_device(a.device)
    g = seed_everything(0)
    base = dict(model_type="lstm", vocab_size=65, emb_dim=128, hidden_size=a.hidden_size, num_layers=a.num_layers,
                dropout=0.0)
    models = {impl: RNNLanguageModel(LMConfig(impl=impl, **base)).to(device) for impl in ("torch", "scratch")}
    models["scratch"].load_state_dict(models["torch"].state_dict(), strict=False)  # embedding + head
    copy_torch_to_scratch(models["torch"].rnn, models["scratch"].rnn)
    x = torch.randint(0, 65, (a.batch_size, a.seq_len), generator=g).to(device)  # the same batch for both
    y = torch.randint(0, 65, (a.batch_size, a.seq_len), generator=g).to(device)
    times = {"torch": [], "scratch": []}
    for _ in range(a.rounds):  # interleaved, so background load hits both alike
        for impl in ("torch", "scratch"):
            times[impl].append(time_train_steps(models[impl], x, y, a.steps))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    tok = a.batch_size * a.seq_len
    metrics = {"scratch_over_torch_time": med["scratch"] / med["torch"], "torch_ms_per_step": 1000 * med["torch"],
               "scratch_ms_per_step": 1000 * med["scratch"], "torch_tokens_per_s": tok / med["torch"],
               "scratch_tokens_per_s": tok / med["scratch"]}
    print(f"nn.LSTM {1000 * med['torch']:.0f} ms/step | scratch {1000 * med['scratch']:.0f} ms/step | "
          f"scratch is {metrics['scratch_over_torch_time']:.2f}x slower")
    record = make_result(KIND, "lstm_speed", "random_tokens", "none", metrics, params=models["torch"].num_params(),
                         train_wall_s=None, device=describe_device(device), seed=0, data_sha256=None,
                         primary_metric="scratch_over_torch_time", tokens_per_s=round(tok / med["scratch"], 1),
                         config={**vars(a), "device": str(device), "all_times_s": times})
    return record, write_result(record, name="speed_lstm_scratch_vs_torch")


def seqlen(argv):
    """The LSTM language model (2 layers, 256 units, nn.LSTM) trained one step on random (batch, T) tokens for each
    T: the recurrence runs T steps one after the other, whatever the batch (scripts/steptime.py)."""
    p = argparse.ArgumentParser(prog="benchmark.py seqlen", formatter_class=HelpFormatter,
                                description="ms per LSTM training step against the sequence length")
    add_seqlen_args(p)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=HELP["seed"])
    a = p.parse_args(argv)
    check_seqlen_args(a.lengths, a.batch_size, a.repeats)
    g = seed_everything(a.seed)
    cfg = LMConfig(model_type="lstm", impl="torch", vocab_size=VOCAB, emb_dim=WIDTH, hidden_size=WIDTH, num_layers=2,
                   dropout=0.0)
    model = RNNLanguageModel(cfg)

    def make_step(seq_len):
        x = torch.randint(0, VOCAB, (a.batch_size, seq_len), generator=g)
        y = torch.randint(0, VOCAB, (a.batch_size, seq_len), generator=g)
        return adamw_step(model, lambda: model(x, y).loss)

    return run_seqlen(KIND, f"LSTM 2x{WIDTH} (nn.LSTM)", make_step, lengths=a.lengths, batch_size=a.batch_size,
                      repeats=a.repeats, params=model.num_params(), device=describe_device(torch.device("cpu")),
                      seed=a.seed, config={"model": dataclasses.asdict(cfg), **vars(a)})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("benchmark", choices=["speed", "seqlen", *PRESETS], help="what to run")
    p.add_argument("--report", action="store_true", help=HELP["report"])
    p.add_argument("flags", nargs=argparse.REMAINDER,
                   help="more flags: for a preset, train.py flags that override it; for speed and seqlen, their own "
                        "(speed -h, seqlen -h)")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    report = a.report or "--report" in a.flags  # also accepted after the preset's flags
    rest = [f for f in a.flags if f != "--report"]
    if a.benchmark == "speed":
        record, path = speed(rest)
    elif a.benchmark == "seqlen":
        record, path = seqlen(rest)
    else:
        from stage2_rnn_lstm import train
        flags = PRESETS[a.benchmark] + rest
        print("python train.py " + " ".join(flags), flush=True)
        record, path = train.run(flags)
    if report:
        dest = report_result(path, results_dir() / "reported")
        print(f"reported: {dest}", flush=True)
    return record


if __name__ == "__main__":
    run_cli(main)
