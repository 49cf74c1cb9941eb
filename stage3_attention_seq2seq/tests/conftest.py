"""Stage-3 test settings and shared fixtures (tiny models on the bundled Multi30k data).

Tiny models run faster on one thread (and leave the other core free). ``$MY_LLM_DATA`` is left as
it is (in CI it holds the full data sets, and the eng_fra test needs it); the tests that are about
the bundled copy or missing data unset it themselves.
"""
import os

import pytest
import torch

from stage3_attention_seq2seq import train

# one tiny configuration for every training test: 128 pairs, 8 steps per epoch, 16 validation sentences
TINY = ["--limit_train", "128", "--batch_size", "16", "--epochs", "1", "--emb_dim", "16", "--enc_hidden", "16",
        "--dec_hidden", "32", "--attn_dim", "16", "--val_sentences", "16", "--warmup_steps", "2", "--lr", "5e-3",
        "--log_every", "1"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny():
    """The tiny training flags (use ``tiny + [...]``, never change the list)."""
    return list(TINY)


@pytest.fixture(scope="session")
def s3_tmp(tmp_path_factory):
    """Result files go to a temp folder for the whole session."""
    tmp = tmp_path_factory.mktemp("s3")
    saved = {k: os.environ.get(k) for k in ("MY_LLM_RESULTS", "TQDM_DISABLE")}
    os.environ.update({"MY_LLM_RESULTS": str(tmp / "results"), "TQDM_DISABLE": "1"})
    yield tmp
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_ckpt(s3_tmp):
    """One tiny Bahdanau model (8 steps), shared by the evaluate / translate tests: (best checkpoint, result)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = s3_tmp / "ckpt"
    record = train.main(TINY + ["--out_dir", str(out), "--run_dir", str(s3_tmp / "run")])
    torch.set_num_threads(before)
    return out / train.BEST_NAME, record
