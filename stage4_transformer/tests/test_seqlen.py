"""benchmark.py seqlen: ms per Transformer training step at each sequence length, reported only with --report."""
from scripts import steptime
from scripts.results import report_result
from scripts.steptime import TASK


def test_seqlen_preset_writes_a_result_per_length_and_reports_only_with_report(tmp_path, monkeypatch):
    from stage4_transformer import benchmark

    monkeypatch.setenv("MY_LLM_RESULTS", str(tmp_path))
    small_ref = steptime.reference_op
    monkeypatch.setattr(steptime, "reference_op", lambda: small_ref(64, 1))  # the shapes are the preset's
    monkeypatch.setattr(benchmark, "WIDTH", 32)
    monkeypatch.setattr(benchmark, "IMPL_MODEL", dict(benchmark.IMPL_MODEL, enc_layers=1, dec_layers=1, d_ff=64))
    monkeypatch.setattr(benchmark, "report_result", lambda p: report_result(p, reported_root=tmp_path / "reported"))
    flags = ["--lengths", "4", "8", "--repeats", "1", "--batch_size", "2"]
    [rec] = benchmark.main(["seqlen", *flags])
    assert rec["task"] == TASK and rec["stage"] == "stage4_transformer"
    assert [p["seq_len"] for p in rec["seqlen"]] == [4, 8]
    assert all(p["ms_per_step"] > 0 and p["ratio"] > 0 for p in rec["seqlen"])
    assert rec["config"]["model"]["d_model"] == 32 and rec["config"]["model"]["max_len"] == 9
    assert not (tmp_path / "reported").exists()
    benchmark.main(["seqlen", *flags, "--report"])
    assert len(list((tmp_path / "reported" / "stage4_transformer").glob("seqlen_*.json"))) == 1
