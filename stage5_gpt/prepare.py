"""Turn a corpus into token ids for GPT training: ``train.bin`` / ``val.bin`` (/ ``test.bin``) + ``meta.json``.

    python prepare.py --dataset shakespeare_char                  # bundled tiny Shakespeare, one id per character
    python prepare.py --dataset shakespeare_bpe --vocab_size 4096  # byte-level BPE learned on the train split
    MY_LLM_DATA=/path/to/data python prepare.py --dataset ptb      # also wikitext2, imdb_text

The ids are ``uint16`` (read back as ``np.memmap`` by ``train.py``); ``meta.json`` holds the tokenizer, the
token / character / word / byte counts of every split and the sha256 of each source file. A folder that was
already prepared from the same files with the same settings is reused (``--force`` rebuilds it).
See ``stage5_gpt/utils/data.py`` and ``stage5_gpt/data/README.md``.
"""
from __future__ import annotations

import argparse

from scripts.cli import HelpFormatter, run_cli
from scripts.flags import HELP
from stage5_gpt.utils.data import DATASETS, PREPARED_DIR, load_meta, prepare_dataset


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--dataset", required=True, choices=list(DATASETS), help="corpus and tokenizer")
    p.add_argument("--data_dir", default=None, help=HELP["data_dir"])
    # --prepared_dir as in train.py: --out_dir means a checkpoint folder in every CLI of the repo
    p.add_argument("--prepared_dir", default=None,
                   help=f"folder for the prepared .bin files and meta.json (default: {PREPARED_DIR}/<dataset>)")
    p.add_argument("--vocab_size", type=int, default=0,
                   help="BPE vocabulary size incl. <|endoftext|> (0 = the dataset's default: "
                        + ", ".join(f"{k} {v[4]}" for k, v in DATASETS.items() if v[4]) + ")")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching prepared folder exists")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = prepare_dataset(args.dataset, out_dir=args.prepared_dir, data_dir=args.data_dir,
                          vocab_size=args.vocab_size or None, force=args.force)
    meta = load_meta(out)
    print(f"{args.dataset}: {meta['tokenizer']['kind']} tokenizer, vocab {meta['vocab_size']:,} -> {out}")
    for split, c in meta["splits"].items():
        print(f"  {split:5s} {c['tokens']:>11,} tokens  {c['chars']:>11,} chars  {c['words']:>10,} words  "
              f"{c['tokens'] / max(1, c['bytes']):.3f} tokens/byte")
    return out


if __name__ == "__main__":
    run_cli(main)
