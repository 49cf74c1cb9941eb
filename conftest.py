"""Test-wide settings: never touch the network, keep result files out of the repo."""
import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("MY_LLM_RESULTS", tempfile.mkdtemp(prefix="my_llm_results_"))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


import pytest  # noqa: E402


@pytest.fixture
def one_thread(monkeypatch, tmp_path_factory):
    """One torch thread (restored afterwards: the suite's other tests keep their own), and result files in this
    session's temporary folder."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("MY_LLM_RESULTS", str(tmp_path_factory.getbasetemp() / "results"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    yield
    torch.set_num_threads(before)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (``CI`` and ``MY_LLM_DATA`` set) a test may not skip for want of data: such a skip is a failure."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and os.environ.get("CI") and os.environ.get("MY_LLM_DATA")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if "data" in reason.lower():
        report.outcome = "failed"
        report.longrepr = f"skipped for want of data although MY_LLM_DATA is set in CI: {reason}"
