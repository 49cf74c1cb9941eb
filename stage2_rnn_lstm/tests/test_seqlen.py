"""benchmark.py seqlen: ms per LSTM training step at each sequence length, reported only with --report."""
from scripts import steptime
from scripts.steptime import TASK


def test_seqlen_preset_writes_a_result_per_length_and_reports_only_with_report(tmp_path, monkeypatch):
    from stage2_rnn_lstm import benchmark

    monkeypatch.setenv("MY_LLM_RESULTS", str(tmp_path))
    small_ref = steptime.reference_op
    monkeypatch.setattr(steptime, "reference_op", lambda: small_ref(64, 1))  # the shapes are the preset's
    monkeypatch.setattr(benchmark, "WIDTH", 32)
    flags = ["--lengths", "4", "8", "--repeats", "1", "--batch_size", "2"]
    rec = benchmark.main(["seqlen", *flags])
    assert rec["task"] == TASK and rec["stage"] == "stage2_rnn_lstm" and rec["params"] > 0
    assert [p["seq_len"] for p in rec["seqlen"]] == [4, 8]
    assert all(p["ms_per_step"] > 0 and p["ref_ms"] > 0 and p["ratio"] > 0 for p in rec["seqlen"])
    assert rec["config"]["model"]["hidden_size"] == 32 and rec["batch_size"] == 2
    assert len(list((tmp_path / "stage2_rnn_lstm").glob("seqlen_*.json"))) == 1
    assert not (tmp_path / "reported").exists()
    benchmark.main(["seqlen", *flags, "--report"])
    assert len(list((tmp_path / "reported" / "stage2_rnn_lstm").glob("seqlen_*.json"))) == 1
