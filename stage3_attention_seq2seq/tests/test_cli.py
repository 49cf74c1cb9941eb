"""CLI tests on the bundled Multi30k data: train / evaluate / translate as a user runs them, and bad input."""
import gzip
import os
import runpy
import shlex
import sys
import zipfile
from pathlib import Path

import pytest

from scripts.checkpoint import load_checkpoint, save_checkpoint
from scripts.cli import UserError, run_cli
from scripts.log import read_metrics
from scripts.testing import run_script
from stage3_attention_seq2seq import evaluate, train, translate
from stage3_attention_seq2seq.utils.checkpoint import load_model
from stage3_attention_seq2seq.utils.data import BUNDLED, load_corpus
from stage3_attention_seq2seq.utils.evaluation import translate_sentences

STAGE = Path(__file__).resolve().parent.parent
KIND = "stage3_attention_seq2seq"


def cli(main, argv, capsys):
    """Run ``main`` as the command line does (``run_cli``): (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(a) for a in argv])
        sys.exit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def expected_translations(ckpt, sentences, beam_size, one_by_one=True):
    """What translate.py should print: each sentence alone (--sentence, REPL) or all in one call (--input)."""
    model, sv, tv, _ = load_model(ckpt)
    groups = [[s] for s in sentences] if one_by_one else [sentences]
    return [o["text"] for g in groups for o in translate_sentences(model, g, sv, tv, beam_size=beam_size)]


def test_train_end_to_end_and_its_result_file(tiny_ckpt, s3_tmp):
    best, record = tiny_ckpt
    ckpt = load_checkpoint(best, kind=KIND)
    assert ckpt["config"]["model"]["attention_type"] == "bahdanau"
    assert ckpt["vocab"]["src"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    last = load_checkpoint(best.with_name("last_attention_model.pt"), kind=KIND)
    assert last["state"]["epoch"] == 1 and last["state"]["step"] == 8 and last["budget"] is not None
    assert record["primary_metric"] == "val_bleu" and record["tokens_per_s"] > 0 and len(record["data_sha256"]) == 64
    assert record["seed"] == 1337 and record["resumed_at_steps"] == [] and record["peak_rss_mb"] > 0
    assert record["budget"]["steps"] == 8 and record["budget"]["steps_per_epoch"] == 8
    assert record["budget"]["schedule_steps"] == 8 and record["stop_reason"] == "all 1 epochs done"
    (row,) = record["history"]  # one evaluation: the end of the only epoch
    assert row["step"] == 8 and row["tokens"] > 0 and row["wall_s"] > 0
    assert {"train_loss", "val_loss", "val_bleu"} <= row.keys()
    argv = shlex.split(record["reproduce_command"].split(" && ")[-1])
    assert argv[:2] == ["python", "train.py"] and "--resume" not in argv
    again = vars(train.build_parser().parse_args(argv[2:]))  # the command gives this run's config again
    assert {k: again[k] for k in record["config"]["train"]} == record["config"]["train"]
    assert {k: again[k] for k in record["config"]["model"]} == record["config"]["model"]
    losses = [r["loss"] for r in read_metrics(s3_tmp / "run" / "metrics.jsonl", kind="train")]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.15  # the loss falls on real data
    assert list((s3_tmp / "results" / KIND).glob("train_bahdanau_multi30k_en-fr_*.json"))


def test_seed_readme_commands_run(tmp_path, monkeypatch, capsys):
    """The seed README's stage-3 commands, verbatim, plus a small budget and temp folders."""
    monkeypatch.chdir(tmp_path)
    seed_train = "python train.py --attention_type bahdanau --epochs 30"
    seed_eval = "python evaluate.py --model_path checkpoints/best_attention_model.pt"
    small = ["--max_steps", "2", "--limit_train", "32", "--val_sentences", "4", "--eval_every", "2"]
    record = train.main(shlex.split(seed_train)[2:] + small + ["--run_dir", str(tmp_path / "runs")])
    assert record["metrics"]["steps"] == 2 and record["stop_reason"] == "max_steps"
    assert (tmp_path / "checkpoints" / "best_attention_model.pt").is_file()  # the default --out_dir
    code, out, err = cli(evaluate.main, shlex.split(seed_eval)[2:] + ["--limit", "3", "--splits", "test_2016_flickr",
                                                                      "--beam_size", "2", "--heatmaps", "1"], capsys)
    assert code == 0, err
    assert "test_2016_flickr   greedy  BLEU" in out and "tok:13a" in out and "case:mixed" in out
    rec = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    assert '"split": "test_2016_flickr"' in rec and '"steps_trained": 2' in rec
    assert (tmp_path / "runs" / "eval_best_attention_model" / "attention_test_2016_flickr_0.png").is_file()


def test_help_shows_the_shared_flags_not_the_old_spellings(capsys):
    for main in (train.main, evaluate.main, translate.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        text = capsys.readouterr().out
        assert "--time_budget_min" not in text and "--dtype" not in text and "--out " not in text
    args = train.build_parser().parse_args(["--time_budget_min", "45"])  # the recorded benchmark spelling
    assert args.max_minutes == 45.0


def test_translate_pipe_notes_go_to_stderr(tiny_ckpt):
    """A piped session: one stdout line per translated input, notes on stderr, blank lines skipped, :q ends."""
    best, _ = tiny_ckpt
    long = " ".join(["dog"] * 150)
    lines = ["A man is riding a bike.", "", "qqxz vvbn", ":q", "Not translated."]
    r = run_script(STAGE / "translate.py", ["--model_path", best, "--interactive", "--beam_size", "2",
                                            "--no_attention", "--sentence", long],
                   stdin="\n".join(lines) + "\n", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == expected_translations(best, [long, lines[0], lines[2]], beam_size=2)
    assert "note: input longer than 100 tokens; only the first 100 were translated" in r.stderr
    assert "note: every word is unknown to the model's vocabulary" in r.stderr
    assert "note: empty input" in r.stderr


def test_translate_file_round_trip_keeps_empty_lines(tiny_ckpt, tmp_path, capsys):
    best, _ = tiny_ckpt
    src = ["A dog runs.", "", "Two men are talking.", "   ", "A girl with a red hat."]
    (tmp_path / "in.en").write_text("\n".join(src) + "\n", encoding="utf-8")
    out = tmp_path / "new" / "hyp.fr"
    code, stdout, err = cli(translate.main, ["--checkpoint", best, "--input", tmp_path / "in.en", "--output", out,
                                             "--beam_size", "2"], capsys)
    assert code == 0, err
    assert stdout == ""  # notes on stderr; translations in the file
    hyps = out.read_text(encoding="utf-8").split("\n")
    assert hyps[-1] == "" and len(hyps) - 1 == len(src)  # one line out per line in
    want = expected_translations(best, [src[0], src[2], src[4]], beam_size=2, one_by_one=False)
    assert hyps[:-1] == [want[0], "", want[1], "", want[2]]
    code, stdout, _ = cli(translate.main, ["--checkpoint", best, "--input", tmp_path / "in.en", "--beam_size", "2"],
                          capsys)
    assert code == 0 and stdout == out.read_text(encoding="utf-8")  # without --output: the same lines on stdout


def test_translate_plot_into_a_new_folder(tiny_ckpt, tmp_path, capsys):
    best, _ = tiny_ckpt
    plot = tmp_path / "runs" / "newdir" / "attn.png"
    code, out, err = cli(translate.main, ["--checkpoint", best, "--sentence", "A man is riding a bike.",
                                          "--plot", plot], capsys)
    assert code == 0, err
    assert plot.is_file() and plot.stat().st_size > 1000
    assert out.splitlines()[0] == expected_translations(best, ["A man is riding a bike."], beam_size=5)[0]


def test_lstm_encoder_trains_and_translates(tiny, s3_tmp, monkeypatch, capsys):
    out = s3_tmp / "ckpt_lstm"
    train.main(tiny + ["--enc_rnn", "lstm", "--max_steps", "3", "--out_dir", str(out), "--run_dir", str(out)])
    best = out / train.BEST_NAME
    assert load_checkpoint(best, kind=KIND)["config"]["model"]["enc_rnn"] == "lstm"
    sentence = "A man is riding a bike."
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["generate.py", "--checkpoint", str(best), "--sentence", sentence,
                                      "--no_attention"])
    try:  # generate.py is translate.py under the stage-wide name
        runpy.run_path(str(STAGE / "generate.py"), run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None)
    want = expected_translations(best, [sentence], beam_size=5)[0]
    assert want and capsys.readouterr().out.splitlines() == [want]  # the translation itself, nothing echoed


def test_bad_checkpoints(tiny_ckpt, tmp_path, capsys):
    best, _ = tiny_ckpt
    text = tmp_path / "h.pt"
    text.write_text("hello\n")
    other = tmp_path / "other.pt"
    save_checkpoint(other, {"model": {}, "config": {}}, kind="stage2_rnn_lstm")
    for argv, expected in [(["--model_path", tmp_path / "nope.pt"], "error: checkpoint not found"),
                           (["--model_path", text], f"error: {text} is corrupt or not a my_llm checkpoint"),
                           (["--checkpoint", other], f"error: {other} is a stage2_rnn_lstm checkpoint")]:
        code, _, err = cli(evaluate.main, argv, capsys)
        assert code == 2 and err.startswith(expected) and len(err.strip().splitlines()) == 1, err
        assert "weights_only=False" not in err
    code, _, err = cli(translate.main, ["--model_path", text, "--sentence", "hi"], capsys)
    assert code == 2 and err.startswith(f"error: {text} is corrupt") and len(err.strip().splitlines()) == 1
    with pytest.raises(UserError, match="translates en->fr"):
        translate.main(["--model_path", str(best), "--sentence", "hi", "--src_lang", "de"])
    with pytest.raises(UserError, match="^empty input sentence$"):
        translate.main(["--model_path", str(best), "--sentence", "   "])


def _multi30k_copy(folder: Path) -> Path:
    folder.mkdir()
    for f in BUNDLED.glob("*.gz"):
        (folder / f.name).symlink_to(f)
    return folder


@pytest.mark.parametrize("name,damage,message", [
    ("val.fr.gz", "latin1", "not UTF-8 text (byte 0x"),
    ("train.en.gz", "truncate", "the gzip file is truncated"),
    ("test_2016_flickr.en.gz", "not_gzip", "not a valid gzip file"),
])
def test_bad_data_files_are_one_line_errors(name, damage, message, tiny, tmp_path, capsys):
    folder = _multi30k_copy(tmp_path / "multi30k")
    raw = (BUNDLED / name).read_bytes()
    (folder / name).unlink()
    if damage == "latin1":
        data = gzip.compress(gzip.decompress(raw).decode("utf-8").encode("latin-1", errors="replace"))
    elif damage == "truncate":
        data = raw[:len(raw) // 2]
    else:
        data = b"A man is riding a bike.\n"
    (folder / name).write_bytes(data)
    code, _, err = cli(train.main, tiny + ["--data_dir", tmp_path, "--out_dir", tmp_path / "c"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {folder / name}: {message}"), err


@pytest.mark.parametrize("flags,msg", [
    (["--batch_size", "0"], "batch_size"),
    (["--teacher_forcing", "1.5"], "teacher_forcing"),
    (["--attention_type", "luong_dot", "--enc_hidden", "32", "--dec_hidden", "48"], "luong_dot"),
    (["--src_lang", "en", "--tgt_lang", "en"], "must differ"),
    (["--src_lang", "xx"], "no language"),
    (["--grad_clip", "-1"], r"must be >= 0 \(0 = off\): --grad_clip -1.0"),
    (["--max_steps", "-2", "--patience", "-1"], r"--max_steps -2, --patience -1"),
])
def test_train_rejects_impossible_flags(flags, msg, tiny, tmp_path):
    with pytest.raises(UserError, match=msg):
        train.main(tiny + flags + ["--out_dir", str(tmp_path)])


def test_resume_refuses_a_changed_model_and_names_the_flag(tiny_ckpt, tmp_path):
    best, _ = tiny_ckpt
    with pytest.raises(UserError, match=r"--resume: --emb_dim 64 \(saved 16\) would change the model"):
        train.main(["--resume", "--out_dir", str(best.parent), "--emb_dim", "64"])
    with pytest.raises(UserError, match="checkpoint not found"):
        train.main(["--resume", "--out_dir", str(tmp_path)])


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    with pytest.raises(UserError, match="multi30k: --data_dir .* holds neither train.en.gz"):
        load_corpus("multi30k", "en", "fr", data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"eng_fra data not found \(need eng-fra.txt.zip\)"):
        load_corpus("eng_fra", "en", "fr")
    with pytest.raises(UserError, match=r"multi30k data not found \(need train.en.gz, train.de.gz.*Only en and fr "
                                        r"are bundled with the repository; German \(de\) needs"):
        load_corpus("multi30k", "en", "de")
    monkeypatch.setenv("MY_LLM_DATA", str(tmp_path / "nonexistent"))
    with pytest.raises(UserError, match="MY_LLM_DATA=.*nonexistent does not exist"):
        load_corpus("multi30k", "en", "fr")


def test_eng_fra_seeded_split_keeps_sentences_apart(tmp_path):
    """Needs the Tatoeba file in $MY_LLM_DATA (CI sets it: there this test must run, not skip)."""
    src = Path(os.environ.get("MY_LLM_DATA", "/nonexistent")) / "eng_fra" / "eng-fra.txt.zip"
    if not src.is_file():
        pytest.skip("eng_fra data not available (set MY_LLM_DATA)")
    lines = zipfile.ZipFile(src).read("eng-fra.txt").decode("utf-8").split("\n")[:20000]
    (tmp_path / "eng_fra").mkdir()
    with zipfile.ZipFile(tmp_path / "eng_fra" / "eng-fra.txt.zip", "w") as z:
        z.writestr("eng-fra.txt", "\n".join(lines) + "\n")
    c1 = load_corpus("eng_fra", "en", "fr", data_dir=str(tmp_path), seed=3)
    c2 = load_corpus("eng_fra", "en", "fr", data_dir=str(tmp_path), seed=3)
    assert c1.splits == c2.splits
    assert len(set(c1.splits["val"][0])) == 2000 and len(set(c1.splits["test"][0])) == 2000
    assert not set(c1.splits["train"][0]) & set(c1.splits["test"][0])
    assert sum(len(s[0]) for s in c1.splits.values()) == 20000
    rev = load_corpus("eng_fra", "fr", "en", data_dir=str(tmp_path), seed=3)
    assert rev.splits["test"] == (c1.splits["test"][1], c1.splits["test"][0])


def test_benchmark_reports_only_with_report_under_timestamped_names(tmp_path, monkeypatch):
    from scripts.results import make_result, report_result, write_result
    from stage3_attention_seq2seq import benchmark

    calls = {}

    def fake(name):
        def main(argv):
            calls[name] = argv
            rec = make_result(KIND, name, "multi30k", "val", {"bleu": 1.0}, params=1, train_wall_s=1.0,
                              device="cpu", seed=1337, data_sha256="0" * 64, command="python benchmark.py")
            rec["result_file"] = str(write_result(rec, name=name, out_dir=tmp_path / "results", echo=False))
            return rec
        return main

    monkeypatch.setattr(benchmark.train, "main", fake("translation_train"))
    monkeypatch.setattr(benchmark.evaluate, "main", fake("translation"))
    monkeypatch.setattr(benchmark, "report_result", lambda p: report_result(p, reported_root=tmp_path / "reported"))
    benchmark.main(["--time_budget_min", "45"])  # the recorded spelling still works; nothing is reported
    assert calls["translation_train"][calls["translation_train"].index("--max_minutes") + 1] == "45.0"
    assert "checkpoints/bench_bahdanau" in calls["translation_train"]
    assert calls["translation"][:2] == ["--checkpoint", "checkpoints/bench_bahdanau/best_attention_model.pt"]
    assert not (tmp_path / "reported").exists()
    benchmark.main(["--report"])
    reported = sorted(p.name for p in (tmp_path / "reported" / KIND).glob("*.json"))
    assert len(reported) == 2 and all(n.startswith(("translation_train_", "translation_")) for n in reported)
