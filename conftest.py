"""Test-wide settings: never touch the network, keep result files out of the repo."""
import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("MY_LLM_RESULTS", tempfile.mkdtemp(prefix="my_llm_results_"))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
