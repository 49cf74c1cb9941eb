"""Shared fixtures of the stage-5 tests: the bundled tiny Shakespeare prepared once (char-level) per session, and
a tiny GPT configuration that trains in a few milliseconds per step."""
import pytest

from stage5_gpt.utils.data import prepare_dataset

# 2 layers, 32 wide, context 32, 4 windows per step; a given peak (no 1-second matmul probe in every run)
TINY_MODEL = ["--n_layer", "2", "--n_head", "2", "--n_embd", "32", "--block_size", "32"]
TINY_TRAIN = ["--batch_size", "4", "--eval_iters", "2", "--log_every", "1", "--peak_flops", "1e11",
              "--warmup_steps", "4", "--lr", "3e-3", "--threads", "1"]


@pytest.fixture(scope="session")
def char_data(tmp_path_factory):
    """The char-level tiny Shakespeare (bundled) prepared into a temporary folder."""
    return prepare_dataset("shakespeare_char", out_dir=tmp_path_factory.mktemp("prepared") / "shakespeare_char")


@pytest.fixture(scope="session")
def tiny(char_data):
    """train.py flags for a tiny model on the prepared char data (add --max_steps, --out_dir ...)."""
    return ["--prepared_dir", str(char_data), *TINY_MODEL, *TINY_TRAIN]
