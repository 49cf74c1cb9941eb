"""Export a GPT checkpoint as a Hugging Face ``transformers`` GPT-2 model folder.

    python export_hf.py --checkpoint checkpoints/best_gpt.pt --out exported/gpt_char
    python -c "from transformers import AutoModelForCausalLM, AutoTokenizer; \\
               m = AutoModelForCausalLM.from_pretrained('exported/gpt_char'); \\
               t = AutoTokenizer.from_pretrained('exported/gpt_char')"

The folder holds ``config.json`` + ``model.safetensors`` (``GPT2LMHeadModel.save_pretrained``) and
``tokenizer.json`` (+ ``tokenizer_config.json``): byte-level BPE with our vocabulary and merges, or, for a
character model, one token per character. Only GPT-2 options export (``--pos learned --norm layernorm --mlp gelu``).
After writing, the exported model is run on a short text and its largest logit difference from ours is printed
(the conversion's check against the peer implementation; tests/test_hf.py asserts it is below 1e-5).
"""
from __future__ import annotations

import argparse

import torch

from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.flags import add_checkpoint_arg
from stage5_gpt.models.convert import check_gpt2_options, export_hf
from stage5_gpt.utils.checkpoint import BEST_NAME, load_model

CHECK_TEXT = "First Citizen:\nBefore we proceed any further, hear me speak."


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_checkpoint_arg(p, default=f"checkpoints/{BEST_NAME}")
    p.add_argument("--out", required=True, help="folder to write the Hugging Face model into (created if missing)")
    return p


def check_ids(tokenizer, block_size: int) -> torch.Tensor:
    """(1, T) ids of a short text the model's tokenizer can encode (its own characters for a char model)."""
    text = CHECK_TEXT
    if tokenizer.kind == "char" and tokenizer.unknown_chars(text):
        text = "".join(tokenizer.chars)
    return torch.tensor([tokenizer.encode(text)[:block_size]])


def main(argv=None):
    args = build_parser().parse_args(argv)
    model, tokenizer, _ = load_model(args.checkpoint)
    try:
        check_gpt2_options(model.config)
    except ValueError as e:
        raise UserError(f"{args.checkpoint}: {e}") from None
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = export_hf(model, tokenizer, args.out)
    hf = GPT2LMHeadModel.from_pretrained(str(folder)).eval()
    x = check_ids(tokenizer, model.config.block_size)
    with torch.no_grad():
        diff = (model(x)[0] - hf(x).logits).abs().max().item()
    cfg = model.config
    print(f"wrote {folder}: GPT2LMHeadModel ({cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd}-d, context "
          f"{cfg.block_size}, vocab {cfg.vocab_size}) + tokenizer.json ({tokenizer.kind})")
    print(f"check: max |logit difference| from our model on {x.size(1)} tokens = {diff:.2e}")
    return folder, diff


if __name__ == "__main__":
    run_cli(main)
