"""Generate text with a trained stage-2 language model, streaming tokens as they are sampled.

    cd stage2_rnn_lstm
    python generate.py --checkpoint checkpoints/best_lstm_char.pt --vocab checkpoints/char_vocabulary.pkl --interactive
    python generate.py --checkpoint checkpoints/best_lstm_char.pt --prompt "ROMEO:" --max_new_tokens 300 \
        --temperature 0.8 --top_k 20 --seed 1

The prompt is run through the network once to build the hidden state; then each step feeds the last
token and carries the state, so one step costs O(1) whatever the length so far (an RNN's advantage
over a Transformer without a KV cache). Sampling: temperature, then top-k, then top-p (nucleus);
see docs/stage2_rnn_lstm.md, section 9. The same ``--seed`` gives the same text.
"""
from __future__ import annotations

import argparse
import sys

import torch

from scripts.cli import HelpFormatter, UserError, repl_lines, run_cli
from scripts.device import add_device_args, pick_device
from scripts.flags import DEFAULT_SEED, HELP, add_checkpoint_arg
from stage2_rnn_lstm.utils.data import EOS, UNK
from stage2_rnn_lstm.utils.engine import load_model, sample_next


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Sample text from a stage-2 RNN/LSTM/GRU language model.",
                                formatter_class=HelpFormatter)
    add_checkpoint_arg(p, "checkpoints/best_lstm_char.pt")
    p.add_argument("--vocab", default=None,
                   help="vocabulary pickle to check against the checkpoint (the checkpoint has its own copy)")
    p.add_argument("--prompt", default=None, help="text to continue (default: start of a line)")
    p.add_argument("--interactive", action="store_true",
                   help="read one prompt per line from stdin; a blank line is skipped, Ctrl-D or :q quits")
    p.add_argument("--max_new_tokens", type=int, default=500, help="characters (or words) to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="> 0; lower is more conservative")
    p.add_argument("--top_k", type=int, default=0, help="sample only among the k most likely tokens (0 = off)")
    p.add_argument("--top_p", type=float, default=1.0,
                   help="nucleus sampling: the smallest set with this much probability mass, in (0, 1] (1 = off)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=HELP["seed"] + "; here the sampling: same seed, same text")
    add_device_args(p, dtype=False)
    p.set_defaults(device="cpu")  # one token at a time: the CPU is usually fast enough
    return p


def check_args(a, vocab_size: int) -> None:
    if a.temperature <= 0:
        raise UserError(f"--temperature must be > 0 (got {a.temperature}); "
                        f"use a small value like 0.1 for near-greedy output")
    if not 0 <= a.top_k <= vocab_size:
        raise UserError(f"--top_k must be between 1 and the vocabulary size {vocab_size}, or 0 = off (got {a.top_k})")
    if not 0 < a.top_p <= 1:
        raise UserError(f"--top_p must be in (0, 1] (got {a.top_p})")
    if a.max_new_tokens < 0:
        raise UserError(f"--max_new_tokens must be >= 0 (got {a.max_new_tokens})")


@torch.inference_mode()
def generate_iter(model, prompt_ids: list[int], max_new_tokens: int, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu"):
    """Yield the ids that continue ``prompt_ids``, one at a time, as they are sampled (for streaming)."""
    model.eval()
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)    # (1, T)
    step = model(idx)                                                      # logits (1, T, V)
    for _ in range(max_new_tokens):
        nxt = sample_next(step.logits[0, -1], temperature, top_k, top_p, generator)
        yield nxt
        step = model(torch.tensor([[nxt]], device=device), state=step.state)  # logits (1, 1, V)


def generate(model, vocab, prompt_ids: list[int], max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu", on_token=None) -> list[int]:
    """Continue ``prompt_ids``; ``on_token(id)`` is called for each new token (streaming)."""
    out = []
    for nxt in generate_iter(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, generator, device):
        out.append(nxt)
        if on_token is not None:
            on_token(nxt)
    return out


def encode_prompt(vocab, text: str, warned: set) -> list[int]:
    """Prompt text -> ids: unknown chars are an error; unknown words become <unk> (said once)."""
    tokens = vocab.split(text)
    if vocab.vocab_type == "word":
        unknown = sorted({t for t in tokens if t not in vocab.stoi} - warned)
        if unknown:
            print(f"note: not in the vocabulary, read as {UNK}: {', '.join(unknown[:10])}", file=sys.stderr)
            warned.update(unknown)
    return vocab.encode(tokens, strict=vocab.vocab_type == "char")


def main(argv=None):
    a = build_parser().parse_args(argv)
    device = pick_device(a.device)
    model, vocab, _ = load_model(a.checkpoint, a.vocab, device)
    check_args(a, len(vocab))
    generator = torch.Generator().manual_seed(a.seed)
    sep = "" if vocab.vocab_type == "char" else " "

    def emit(i: int) -> None:
        tok = vocab.tokens[i]
        sys.stdout.write("\n" if tok == EOS else tok + sep)
        sys.stdout.flush()

    def run(text: str, warned: set, echo: bool = True) -> str:
        ids = encode_prompt(vocab, text, warned)
        if echo:
            sys.stdout.write(text + sep)
        out = generate(model, vocab, ids, a.max_new_tokens, a.temperature, a.top_k, a.top_p, generator, device, emit)
        sys.stdout.write("\n")
        sys.stdout.flush()
        return vocab.decode(out)

    warned: set = set()
    if a.interactive:
        for text in repl_lines(f"{vocab.vocab_type}-level model, {len(vocab)} tokens. Type a prompt"):
            try:
                run(text, warned)
            except UserError as e:  # a bad prompt should not end the session
                print(f"error: {e}", file=sys.stderr, flush=True)
        return None
    if a.prompt is not None and not a.prompt.strip():
        raise UserError("empty prompt; give some text with --prompt, or leave --prompt out to start a new line")
    if a.prompt is None:  # start at a line boundary, without echoing it
        return run("\n" if vocab.vocab_type == "char" else EOS, warned, echo=False)
    return run(a.prompt, warned)


if __name__ == "__main__":
    run_cli(main)
