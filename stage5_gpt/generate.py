"""Sample text from a trained GPT, streamed to the terminal token by token.

    python generate.py --prompt "ROMEO:" --max_new_tokens 300
    python generate.py --prompt_file prompt.txt --temperature 0.8 --top_k 50 --num_samples 3
    python generate.py --temperature 0 --prompt "First Citizen:"     # greedy: always the same text
    python generate.py --interactive                                  # each line you type is a prompt
    python generate.py --prompt "ROMEO:" --no_cache                   # recompute the prefix at every step

Without a prompt, a BPE model starts from ``<|endoftext|>`` (the start of a document) and a character model
from a newline. Sampling: ``--temperature`` divides the logits (0 = greedy argmax), ``--top_k`` keeps the k
most likely tokens, ``--top_p`` the smallest set whose probability reaches p (nucleus sampling),
``--repetition_penalty`` > 1 makes tokens already in the text less likely. Generation stops at
``<|endoftext|>`` or after ``--max_new_tokens``. The key/value cache is on by default; a prompt longer than the
model's context is cropped to its last tokens (with a note). Text goes to stdout, notes and timings to stderr.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from scripts.cli import HelpFormatter, UserError, repl_lines, run_cli
from scripts.data import read_text
from scripts.device import add_device_args, pick_device
from scripts.flags import DEFAULT_SEED, HELP, add_checkpoint_arg
from stage5_gpt.models.gpt import check_sampling
from stage5_gpt.utils.checkpoint import BEST_NAME, load_model

SEPARATOR = "-" * 40


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_checkpoint_arg(p, default=f"checkpoints/{BEST_NAME}")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", default=None, help="text to continue (default: the start of a document)")
    src.add_argument("--prompt_file", default=None, help="continue the text of this UTF-8 file")
    src.add_argument("--interactive", action="store_true",
                     help="read prompts from stdin, one per line (a blank line is skipped; Ctrl-D or :q ends)")
    p.add_argument("--max_new_tokens", type=int, default=500, help="tokens to generate per sample")
    p.add_argument("--temperature", type=float, default=0.8, help="divide the logits by this (0 = greedy)")
    p.add_argument("--top_k", type=int, default=200, help="sample among the k most likely tokens (0 = all)")
    p.add_argument("--top_p", type=float, default=1.0, help="nucleus: the most likely tokens whose probability "
                                                             "reaches p (1 = all)")
    p.add_argument("--repetition_penalty", type=float, default=1.0,
                   help="> 1 makes tokens already in the text less likely (CTRL's penalty; 1 = off)")
    p.add_argument("--num_samples", type=int, default=1, help="samples per prompt")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=HELP["seed"] + "; here the sampling: same seed, same text")
    p.add_argument("--no_cache", action="store_true",
                   help="no key/value cache: recompute the whole prefix at every step (for the comparison)")
    add_device_args(p, dtype=False)
    return p


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def check_args(args) -> None:
    try:
        check_sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    except ValueError as e:
        raise UserError(f"--{e}") from None
    if args.num_samples < 1:
        raise UserError(f"--num_samples must be >= 1, got {args.num_samples}")


def default_prompt(tokenizer) -> str:
    """Where unconditional sampling starts: ``<|endoftext|>`` for BPE, a newline (or the first character)."""
    if tokenizer.eot_id is not None:
        return tokenizer.decode([tokenizer.eot_id])
    return "\n" if not tokenizer.unknown_chars("\n") else tokenizer.chars[0]


def encode_prompt(prompt: str, tokenizer, block_size: int) -> list[int]:
    """The prompt's ids; one-line errors for an empty prompt or characters a char tokenizer never saw."""
    if prompt == "":
        raise UserError("empty prompt; give some text (or leave --prompt out to sample from the start)")
    ids = tokenizer.encode(prompt)  # UnknownCharactersError (a UserError) names unseen characters
    if not ids:
        raise UserError(f"the prompt {prompt[:40]!r} encodes to no tokens")
    if len(ids) > block_size:
        note(f"the prompt has {len(ids)} tokens, more than the model's context of {block_size}; it sees only the "
             f"last {block_size}")
    return ids


class StreamPrinter:
    """Print the text of a growing list of ids as it grows. Decoding the whole list and printing the new suffix
    keeps multi-byte characters whole: a BPE token may end inside a UTF-8 character, whose decoded text ends in
    U+FFFD until the next token completes it, so that tail waits."""

    def __init__(self, tokenizer, out=None):
        self.tokenizer, self.out = tokenizer, out or sys.stdout
        self.ids: list[int] = []
        self.printed = ""

    def add(self, token: int) -> None:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if not text.endswith("\ufffd"):
            self.flush_text(text)

    def flush_text(self, text: str) -> None:
        self.out.write(text[len(self.printed):])
        self.out.flush()
        self.printed = text

    def close(self) -> str:
        self.flush_text(self.tokenizer.decode(self.ids))
        return self.printed


def sample(model, tokenizer, prompt: str, args, device, generator) -> list[str]:
    """Generate ``--num_samples`` continuations of ``prompt``, streaming each; returns the continuations."""
    cfg = model.config
    ids = encode_prompt(prompt, tokenizer, cfg.block_size)
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    outputs = []
    for i in range(args.num_samples):
        if i:
            print(f"\n{SEPARATOR}", flush=True)
        sys.stdout.write(prompt)
        printer = StreamPrinter(tokenizer)
        start, n, stopped = time.perf_counter(), 0, False
        for tok in model.generate_stream(idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                         top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                                         use_cache=not args.no_cache, eot_id=tokenizer.eot_id, generator=generator):
            n += 1
            if tokenizer.eot_id is not None and tok.item() == tokenizer.eot_id:
                stopped = True
                break
            printer.add(tok.item())
        outputs.append(printer.close())
        print(flush=True)
        took = time.perf_counter() - start
        how = "no cache" if args.no_cache else "KV cache"
        end = "; stopped at <|endoftext|>" if stopped else ""
        note(f"{n} tokens in {took:.2f} s ({n / max(took, 1e-9):.0f} tokens/s, {how}){end}")
    return outputs


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_args(args)
    device = pick_device(args.device)
    model, tokenizer, _ = load_model(args.checkpoint, device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    if args.interactive:
        results = []
        cfg = model.config
        banner = f"GPT ({cfg.n_layer} layers, {cfg.n_embd}-d, {tokenizer.kind} tokens): type a prompt"
        for line in repl_lines(banner):
            try:
                results += sample(model, tokenizer, line, args, device, generator)
            except UserError as e:  # one bad line does not end the session
                print(f"error: {e}", file=sys.stderr, flush=True)
        return results
    if args.prompt_file is not None:
        if not Path(args.prompt_file).is_file():
            raise UserError(f"prompt file not found: {args.prompt_file}")
        prompt = read_text(args.prompt_file)
        if not prompt.strip():
            raise UserError(f"{args.prompt_file} is empty; put the prompt text in it")
    else:
        prompt = default_prompt(tokenizer) if args.prompt is None else args.prompt
    return sample(model, tokenizer, prompt, args, device, generator)


if __name__ == "__main__":
    run_cli(main)
