"""CLI tests on the bundled Multi30k: train -> evaluate -> translate as a user runs them, and bad input."""
import runpy
import sys
from pathlib import Path

import pytest
import torch

from scripts.checkpoint import load_checkpoint, save_checkpoint
from scripts.cli import run_cli
from scripts.results import parse_result_lines
from scripts.testing import run_script
from stage4_transformer import evaluate, train, translate
from stage4_transformer.utils.checkpoint import load_model
from stage4_transformer.utils.evaluation import bleu_chrf, translate_sentences

STAGE = Path(__file__).resolve().parent.parent
TINY = ["--limit_train", "256", "--vocab_size", "200", "--d_model", "32", "--n_heads", "2", "--enc_layers", "1",
        "--dec_layers", "1", "--d_ff", "64", "--max_len", "64", "--max_train_len", "60", "--max_tokens", "400",
        "--val_sentences", "8", "--warmup_steps", "4", "--lr", "3e-3", "--log_every", "5", "--epochs", "1"]
UNSEEN = "日本"  # characters that are not in the 256 training pairs


pytestmark = pytest.mark.usefixtures("one_thread")  # the root conftest.py's fixture, for every test here


@pytest.fixture(scope="module")
def best(tmp_path_factory):
    """A tiny model (16 steps) shared by the evaluate / translate tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ckpt")
    train.main(TINY + ["--max_steps", "16", "--eval_every", "8", "--out_dir", str(out), "--run_dir", str(out)])
    torch.set_num_threads(before)
    return out / train.BEST_NAME


def cli(main, argv, capsys):
    """Run ``main`` as the command line does (``run_cli``): (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(a) for a in argv])
        sys.exit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def expected(ckpt, sentences, beam_size, one_by_one=True):
    model, tok, _ = load_model(ckpt)
    groups = [[s] for s in sentences] if one_by_one else [sentences]
    return [o["text"] for g in groups for o in translate_sentences(model, g, tok, beam_size=beam_size)]


def test_evaluate_scores_every_split_with_both_bleu_kinds_and_saves_attention(best, tmp_path, capsys):
    code, out, err = cli(evaluate.main, ["--model_path", best, "--limit", "4", "--beam_size", "2", "--batch_size", "3",
                                         "--run_dir", tmp_path / "maps"], capsys)
    assert code == 0, err
    for split in ("test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "val"):
        assert f"{split:18s} greedy  BLEU" in out and f"{split:18s} beam2   BLEU" in out
    assert "signature (bleu, cased detokenised): nrefs:1|case:mixed|eff:no|tok:13a" in out
    assert "signature (bleu_lc_tok, lowercased tokenised; not comparable with bleu): nrefs:1|case:lc" in out
    (rec,) = parse_result_lines(out)
    m = rec["metrics"]
    assert rec["split"] == "test_2016_flickr" and rec["primary_metric"] == "bleu"
    assert rec["steps_trained"] == load_checkpoint(best)["step"]
    assert m["bleu"] == m["test_2016_flickr/bleu_beam2"] and m["bleu_greedy"] == m["test_2016_flickr/bleu_greedy"]
    assert {"bleu_lc_tok", "chrf", "decode_s", "val/bleu_lc_tok_beam2", "test_2017_mscoco/chrf_greedy"} <= m.keys()
    assert rec["bleu_lc_tok_signature"].startswith("nrefs:1|case:lc")
    for kind in ("encoder", "decoder", "cross"):
        png = tmp_path / "maps" / f"attention_{kind}_test_2016_flickr_0.png"
        assert png.is_file() and png.stat().st_size > 1000
    code, _, err = cli(evaluate.main, ["--checkpoint", best, "--splits", "test_2016", "--limit", "1"], capsys)
    assert code == 2 and "unknown split(s) ['test_2016']" in err


def test_lowercased_bleu_is_labelled_and_differs_from_the_cased_one():
    refs = ["Un homme fait du vélo dans la rue .", "Deux chiens jouent dans la neige ."]
    hyps = [r.upper() for r in refs]  # right words, wrong case
    s = bleu_chrf(hyps, refs)
    assert s["bleu_lc_tok"] == pytest.approx(100.0) and s["bleu"] < 5.0
    assert "case:lc" in s["bleu_lc_tok_signature"] and "case:mixed" in s["bleu_signature"]
    assert bleu_chrf(refs, refs)["bleu"] == pytest.approx(100.0)


def test_translate_interactive_pipe_notes_on_stderr(best):
    """A piped session: one stdout line per translated input, notes and errors on stderr, blank lines skipped,
    an input beyond max_len cut with a note, :q ends."""
    long = " ".join(["dog"] * 90)  # more than max_len=64 subword tokens
    lines = ["A man is riding a bike.", "", f"A {UNSEEN} dog.", UNSEEN, ":q", "Not translated."]
    r = run_script(STAGE / "translate.py", ["--model_path", best, "--interactive", "--beam_size", "2",
                                            "--no_attention", "--sentence", long],
                   stdin="\n".join(lines) + "\n", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == expected(best, [long, lines[0], lines[2]], beam_size=2)
    assert "note: input longer than max_len=64 tokens; only the first 64 were translated" in r.stderr
    assert f"note: unknown character(s) {' '.join(sorted(UNSEEN))}" in r.stderr
    assert f"error: every character of '{UNSEEN}' is unknown" in r.stderr  # the session went on
    assert "note: empty input" in r.stderr and "Traceback" not in r.stderr


def test_translate_file_keeps_empty_lines(best, tmp_path, capsys):
    src = ["A dog runs.", "", "Two men are talking.", "   ", "A girl with a red hat."]
    (tmp_path / "in.en").write_text("\n".join(src) + "\n", encoding="utf-8")
    out = tmp_path / "new" / "hyp.fr"
    code, stdout, err = cli(translate.main, ["--checkpoint", best, "--input", tmp_path / "in.en", "--output", out,
                                             "--beam_size", "2"], capsys)
    assert code == 0, err
    assert stdout == "" and "3 line(s) translated, 2 empty line(s) kept empty" in err
    hyps = out.read_text(encoding="utf-8").split("\n")
    assert hyps[-1] == "" and len(hyps) - 1 == len(src)  # one line out per line in
    want = expected(best, [src[0], src[2], src[4]], beam_size=2, one_by_one=False)
    assert hyps[:-1] == [want[0], "", want[1], "", want[2]]
    code, stdout, _ = cli(translate.main, ["--checkpoint", best, "--input", tmp_path / "in.en", "--beam_size", "2"],
                          capsys)
    assert code == 0 and stdout == out.read_text(encoding="utf-8")  # without --output: the same lines on stdout


def test_translate_attention_table_plot_and_generate(best, tmp_path, capsys, monkeypatch):
    sentence = "A man is riding a bike."
    plot = tmp_path / "runs" / "newdir" / "attn.png"
    code, out, err = cli(translate.main, ["--checkpoint", best, "--sentence", sentence, "--layer", "0", "--head", "1",
                                          "--plot", plot, "--no_cache"], capsys)
    assert code == 0, err
    want = expected(best, [sentence], beam_size=5)[0]
    lines = out.splitlines()
    assert lines[0] == want and lines[1] == "cross-attention, layer 0, head 1:"
    assert "▁A" in lines[2] and len(lines) >= 4  # header row of source tokens, one row per output token
    assert plot.is_file() and plot.stat().st_size > 1000 and f"note: saved {plot}" in err
    code, _, err = cli(translate.main, ["--checkpoint", best, "--sentence", sentence, "--head", "2"], capsys)
    assert code == 2 and "--head in [0, 1]" in err
    monkeypatch.setattr(sys, "argv", ["generate.py", "--checkpoint", str(best), "--sentence", sentence,
                                      "--no_attention"])
    capsys.readouterr()
    try:  # generate.py is translate.py under the stage-wide name
        runpy.run_path(str(STAGE / "generate.py"), run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None)
    assert capsys.readouterr().out.splitlines() == [want]


def test_bad_checkpoints_and_sentences(best, tmp_path, capsys):
    text = tmp_path / "h.pt"
    text.write_text("hello\n")
    stage3 = tmp_path / "s3.pt"
    save_checkpoint(stage3, {"model": {}, "config": {}}, kind="stage3_attention_seq2seq")
    cases = [(translate.main, ["--model_path", text, "--sentence", "hi"], f"error: {text} is corrupt"),
             (evaluate.main, ["--checkpoint", stage3], f"error: {stage3} is a stage3_attention_seq2seq checkpoint"),
             (evaluate.main, ["--checkpoint", tmp_path / "nope.pt"], "error: checkpoint not found"),
             (translate.main, ["--checkpoint", best, "--sentence", "hi", "--tgt_lang", "de"],
              f"error: {best} translates en->fr, but target language 'de' was requested"),
             (translate.main, ["--checkpoint", best, "--sentence", "   "], "error: empty input sentence"),
             (translate.main, ["--checkpoint", best, "--sentence", UNSEEN],
              f"error: every character of '{UNSEEN}' is unknown")]
    for main, argv, message in cases:
        code, out, err = cli(main, argv, capsys)
        assert code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1, err
        assert "weights_only=False" not in err and out == ""


@pytest.mark.parametrize("flags,message", [
    (["--d_model", "30", "--n_heads", "4"], "d_model=30 is not divisible by n_heads=4"),
    (["--dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
    (["--vocab_size", "10"], "--vocab_size must be at least 64, got 10"),
    (["--max_steps", "-1", "--max_minutes", "-2"], "must be >= 0 (0 = off): --max_steps -1, --max_minutes -2.0"),
    (["--grad_clip", "-1"], "must be >= 0 (0 = off): --grad_clip -1.0"),
    (["--src_lang", "en", "--tgt_lang", "en"], "--src_lang and --tgt_lang must differ"),
    (["--max_tokens", "20"], "--max_tokens 20 is smaller than the longest training sentence"),
])
def test_train_rejects_impossible_configs(flags, message, tmp_path, capsys):
    code, _, err = cli(train.main, TINY + flags + ["--out_dir", tmp_path, "--run_dir", tmp_path], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / train.LAST_NAME).exists()


def test_missing_data_dir_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    code, _, err = cli(train.main, TINY + ["--data_dir", tmp_path / "empty", "--out_dir", tmp_path], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "multi30k" in err and "--data_dir" in err, err


def test_train_cli_writes_what_evaluate_reads(tmp_path):
    """train.py as a user runs it (a subprocess in the stage folder): exit 0, best_/last_ files, RESULT line."""
    r = run_script(STAGE / "train.py", TINY + ["--max_steps", "2", "--dtype", "bfloat16", "--out_dir", tmp_path,
                                            "--run_dir", tmp_path],
                   env={"OMP_NUM_THREADS": "1", "MY_LLM_RESULTS": str(tmp_path / "results")})
    assert r.returncode == 0, r.stderr
    (rec,) = parse_result_lines(r.stdout)
    assert rec["metrics"]["steps"] == 2 and rec["stage"] == "stage4_transformer"
    assert "step 1 | loss" not in r.stdout  # --log_every 5
    last = load_checkpoint(tmp_path / train.LAST_NAME, kind="stage4_transformer")
    assert last["step"] == 2 and {"optimizer", "rng", "budget"} <= last.keys()
    assert (tmp_path / train.BEST_NAME).is_file() and rec["config"]["train"]["dtype"] == "bfloat16"
    assert all(v.dtype == torch.float32 for v in last["model"].values())  # autocast: the weights stay float32


def test_help_speaks_the_shared_flag_vocabulary(capsys):
    from scripts.flags import HELP, TRAIN_FLAGS

    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in TRAIN_FLAGS + ("data_dir", "schedule_steps"):
        assert f"--{flag}" in text and " ".join(HELP[flag].split()) in text, flag
    assert "--vocab_size" in text and "--pad_id" not in text  # special ids come from the tokenizer
    for main in (evaluate.main, translate.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        text = capsys.readouterr().out
        assert "--checkpoint CHECKPOINT, --model_path CHECKPOINT" in text and "checkpoints/best_transformer.pt" in text


def test_benchmark_reports_only_with_report(tmp_path, monkeypatch):
    from scripts.results import make_result, report_result, write_result
    from stage4_transformer import benchmark

    calls = {}

    def fake(name):
        def main(argv):
            calls[name] = argv
            rec = make_result("stage4_transformer", name, "multi30k", "val", {"bleu": 1.0, "val_bleu": 1.0},
                              params=1, train_wall_s=1.0, device="cpu", seed=1337, data_sha256="0" * 64,
                              command="python benchmark.py")
            rec["checkpoint"], rec["averaged"] = "checkpoints/bench_translate/best_transformer.pt", None
            rec["result_file"] = str(write_result(rec, name=name, out_dir=tmp_path / "results", echo=False))
            return rec
        return main

    monkeypatch.setattr(benchmark.train, "main", fake("translation_train"))
    monkeypatch.setattr(benchmark.evaluate, "main", fake("translation"))
    monkeypatch.setattr(benchmark, "report_result", lambda p: report_result(p, reported_root=tmp_path / "reported"))
    benchmark.main(["translate"])
    argv = calls["translation_train"]
    assert argv[argv.index("--max_minutes") + 1] == "0.0" and "checkpoints/bench_translate" in argv
    assert argv[argv.index("--max_steps") + 1] == "6200"  # the preset is a step budget (~40 min on 2 cores)
    assert calls["translation"][:2] == ["--checkpoint", "checkpoints/bench_translate/best_transformer.pt"]
    assert calls["translation"][calls["translation"].index("--beam_size") + 1] == "5"
    assert not (tmp_path / "reported").exists()
    benchmark.main(["translate", "--report"])
    assert len(list((tmp_path / "reported" / "stage4_transformer").glob("*.json"))) == 2
