"""Fixtures of the showcase tests (test_demo.py, test_demo_browser.py): tiny real checkpoints of every stage.

Nothing in ``scripts/`` imports a stage (test_repo.py), so the stages' own command lines are run from their files
(``runpy``, as test_repo.py runs every ``--help``), in-process and on one thread: each trains for a few steps on
the data bundled in the repo and writes its checkpoint where the quick start would, under a temporary root that the
showcase is pointed at (``--root``).
"""
from __future__ import annotations

import os
import runpy

import pytest

from scripts import REPO_ROOT


def stage_main(stage: str, script: str):
    """The ``main`` of ``<stage>/<script>.py``, run from its file (its stage's modules are imported as usual)."""
    return runpy.run_path(str(REPO_ROOT / stage / f"{script}.py"))["main"]


def _tiny_checkpoints(root) -> dict:
    """Train every stage's smallest model into ``root/<stage>/checkpoints/...``; returns the checkpoint paths."""
    s1, s2, s3, s4, s5 = ("stage1_mlp", "stage2_rnn_lstm", "stage3_attention_seq2seq", "stage4_transformer",
                          "stage5_gpt")
    ck = {s: root / s / "checkpoints" for s in (s1, s2, s3, s4, s5)}
    runs = root / "runs"
    stage_main(s1, "train")(["--dataset", "imdb", "--data_dir", str(REPO_ROOT / s1 / "data"), "--limit_train", "400",
                             "--max_features", "3000", "--batch_size", "32", "--epochs", "2", "--patience", "0",
                             "--out_dir", str(ck[s1] / "quickstart"), "--run_dir", str(runs / s1)])
    stage_main(s2, "train")(["--model_type", "lstm", "--vocab_type", "char", "--data_dir", str(REPO_ROOT / s2 / "data"),
                             "--emb_dim", "16", "--hidden_size", "32", "--num_layers", "1", "--dropout", "0",
                             "--batch_size", "8", "--seq_len", "16", "--limit_train", "20000", "--max_steps", "4",
                             "--eval_every", "4", "--out_dir", str(ck[s2] / "quickstart"), "--run_dir", str(runs / s2)])
    stage_main(s3, "train")(["--limit_train", "64", "--batch_size", "16", "--epochs", "1", "--emb_dim", "16",
                             "--enc_hidden", "16", "--dec_hidden", "32", "--attn_dim", "16", "--val_sentences", "4",
                             "--warmup_steps", "2", "--max_steps", "2", "--eval_every", "2",
                             "--out_dir", str(ck[s3] / "quickstart"), "--run_dir", str(runs / s3)])
    stage_main(s4, "train")(["--limit_train", "128", "--vocab_size", "200", "--d_model", "16", "--n_heads", "2",
                             "--enc_layers", "1", "--dec_layers", "2", "--d_ff", "32", "--max_len", "64",
                             "--max_train_len", "60", "--max_tokens", "400", "--val_sentences", "4",
                             "--warmup_steps", "2", "--epochs", "1", "--max_steps", "2", "--eval_every", "2",
                             "--threads", "1", "--out_dir", str(ck[s4] / "quickstart"), "--run_dir", str(runs / s4)])
    stage_main(s4, "classify")(["--data_dir", str(REPO_ROOT / s1 / "data" / "imdb"), "--limit_train", "96",
                                "--max_len", "32", "--vocab_size", "300", "--d_model", "16", "--n_heads", "2",
                                "--d_ff", "32", "--batch_size", "16", "--warmup_steps", "2", "--max_steps", "4",
                                "--eval_every", "4", "--threads", "1", "--out_dir", str(ck[s4] / "classify"),
                                "--run_dir", str(runs / "classify")])
    prepared = root / "prepared" / "shakespeare_char"
    stage_main(s5, "prepare")(["--dataset", "shakespeare_char", "--prepared_dir", str(prepared)])
    stage_main(s5, "train")(["--prepared_dir", str(prepared), "--n_layer", "1", "--n_head", "2", "--n_embd", "32",
                             "--block_size", "32", "--batch_size", "4", "--eval_iters", "1", "--peak_flops", "1e11",
                             "--warmup_steps", "1", "--threads", "1", "--max_steps", "4", "--eval_every", "4",
                             "--out_dir", str(ck[s5] / "quickstart"), "--run_dir", str(runs / s5)])
    # stage 5's fine-tuned classifier and translator start from a tiny byte-level BPE GPT (bundled IMDb sample)
    bpe = root / "prepared" / "imdb300"
    stage_main(s5, "prepare")(["--dataset", "imdb_text", "--vocab_size", "300", "--prepared_dir", str(bpe)])
    stage_main(s5, "train")(["--dataset", "imdb_text", "--prepared_dir", str(bpe), "--n_layer", "1", "--n_head", "2",
                             "--n_embd", "32", "--block_size", "192", "--batch_size", "2", "--eval_iters", "1",
                             "--peak_flops", "1e11", "--warmup_steps", "1", "--threads", "1", "--max_steps", "2",
                             "--eval_every", "2", "--out_dir", str(root / "pre5"), "--run_dir", str(runs / "pre5")])
    for task, out in (("classify", "finetune_classify_full"), ("translate", "finetune_translate_full")):
        stage_main(s5, "finetune")(["--task", task, "--init_from", str(root / "pre5" / "best_gpt.pt"), "--max_len",
                                    "48", "--batch_size", "8", "--limit_train", "32", "--max_steps", "2",
                                    "--val_fraction", "0.02", "--test_limit", "2", "--beam_size", "1", "--threads",
                                    "1", "--out_dir", str(ck[s5] / out), "--run_dir", str(runs / out)])
    return {"classify": {f"{s1}/mlp": ck[s1] / "quickstart" / "best_model.pt",
                         f"{s4}/classifier": ck[s4] / "classify" / "best_classifier.pt",
                         f"{s5}/gpt_classify": ck[s5] / "finetune_classify_full" / "best_finetune.pt"},
            "generate": {f"{s2}/lstm_char": ck[s2] / "quickstart" / "best_lstm_char.pt",
                         f"{s5}/gpt": ck[s5] / "quickstart" / "best_gpt.pt"},
            "translate": {f"{s3}/attention": ck[s3] / "quickstart" / "best_attention_model.pt",
                          f"{s4}/transformer": ck[s4] / "quickstart" / "best_transformer.pt",
                          f"{s5}/gpt_translate": ck[s5] / "finetune_translate_full" / "best_finetune.pt"}}


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """``(root, {task: {model id: checkpoint path}})``: a folder laid out like the repo after the quick start."""
    import torch

    root = tmp_path_factory.mktemp("demo_root")
    threads = torch.get_num_threads()
    mp = pytest.MonkeyPatch()
    mp.setenv("MY_LLM_RESULTS", str(root / "results"))
    mp.setenv("TQDM_DISABLE", "1")
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.delenv("MY_LLM_DATA", raising=False)  # the bundled data, as after the quick start on a fresh clone
    torch.set_num_threads(1)
    cwd = os.getcwd()
    try:
        paths = _tiny_checkpoints(root)
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
        mp.undo()
    for by_model in paths.values():
        for path in by_model.values():
            assert path.is_file(), path
    return root, paths


@pytest.fixture(scope="session")
def stage_cli():
    """``stage_cli(stage, script)`` -> that script's ``main`` (see :func:`stage_main`)."""
    return stage_main
