"""classify.py: train → evaluate on the bundled IMDb sample, exact resume after Ctrl-C, the --resume rule,
stage 1's protocols (same splits, same folds), one-line errors. Tiny models, a few steps, in-process."""
import gzip
import hashlib
import json
import os
import re
import shutil
import signal

import numpy as np
import pytest
import torch

from scripts import textclass as cd
from scripts.checkpoint import save_checkpoint
from scripts.cli import UserError, run_cli
from stage4_transformer import classify

SAMPLE = str(cd.IMDB_BUNDLED)
AG_FIXTURE = cd.REPO_ROOT / "stage1_mlp" / "data" / "ag_news_format_fixture" / "test_rows.csv"
TINY = ["--data_dir", SAMPLE, "--limit_train", "96", "--max_len", "32", "--vocab_size", "300", "--d_model", "16",
        "--n_heads", "2", "--d_ff", "32", "--batch_size", "16", "--warmup_steps", "2", "--log_every", "2",
        "--lr", "3e-3", "--threads", "1"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("MY_LLM_RESULTS", str(tmp_path / "results"))


def run(tmp_path, name, *extra, **kw):
    out = tmp_path / name
    return classify.main([*TINY, "--out_dir", str(out / "ck"), "--run_dir", str(out / "run"), *extra], **kw)


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def cli_error(capsys, argv) -> str:
    """Run like a user: one line 'error: ...' on stderr and exit code 2, no traceback."""
    with pytest.raises(SystemExit) as e:
        run_cli(classify.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 12-step run (mean pooling): the reference for the resume tests, then scored by `evaluate`."""
    tmp = tmp_path_factory.mktemp("trained")
    mp = pytest.MonkeyPatch()
    mp.setenv("TQDM_DISABLE", "1")
    mp.setenv("MY_LLM_RESULTS", str(tmp / "results"))
    try:
        result = run(tmp, "ref", "--max_steps", "12", "--eval_every", "4")
    finally:
        mp.undo()
    return tmp / "ref", result


def test_train_then_evaluate_on_the_bundled_sample(trained, capsys):
    out, r = trained
    assert (out / "ck" / classify.BEST).is_file() and (out / "ck" / classify.LAST).is_file()
    assert r["split"] == "val" and r["dataset"] == "imdb_sample"  # the sample has no test split: said so
    assert [h["step"] for h in r["history"]] == [4, 8, 12] and r["resumed_at_steps"] == []
    assert r["budget"]["steps"] == 12 and r["peak_rss_mb"] > 0 and r["params"] > 0
    assert "--resume" not in r["reproduce_command"] and "--max_steps 12" in r["reproduce_command"]
    for k in ("accuracy", "macro_f1", "loss"):
        assert 0 <= r["metrics"][k] < 10
    assert r["samples_per_s"] > 0 and r["ms_per_sample"] == pytest.approx(1000 / r["samples_per_s"])
    assert r["latency_ms_batch1"] > 0 and r["n_examples"] == 200  # 5% of 4,000 reviews
    # the test/val figure is the best checkpoint's: evaluate gives the same numbers, both spellings
    e1 = classify.main(["evaluate", "--checkpoint", str(out / "ck" / classify.BEST), "--split", "val"])
    e2 = classify.main(["--evaluate_only", "--model_path", str(out / "ck" / classify.BEST), "--split", "val"])
    assert e1["metrics"] == e2["metrics"] == r["metrics"]
    best_val = max(h["val_accuracy"] for h in r["history"])
    assert r["metrics"]["accuracy"] == pytest.approx(best_val)
    p = classify.main(["evaluate", "--checkpoint", str(out / "ck" / classify.BEST), "--text", "A wonderful film."])
    assert set(p["probabilities"]) == {"neg", "pos"} and sum(p["probabilities"].values()) == pytest.approx(1)
    assert "RESULT {" in capsys.readouterr().out


def test_loss_falls_on_real_reviews(trained):
    rows = [json.loads(ln) for ln in (trained[0] / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if row["kind"] == "train"]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.02, losses
    assert all(k in rows[0] for k in ("lr", "samples/s", "ms/step"))


def _sigint_at(n, fn):
    """Wrap ``fn`` so its n-th call sends SIGINT to this process from inside it."""
    calls = [0]

    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGINT)
        return fn(*a, **k)
    return wrapped


@pytest.mark.parametrize("where", ["optimizer_step", "batch_building"])
def test_interrupt_anywhere_then_resume_is_bit_identical(tmp_path, monkeypatch, trained, where):
    ref, _ = trained
    if where == "optimizer_step":
        real = classify.make_optimizer

        def make(model, cfg):
            opt = real(model, cfg)
            opt.step = _sigint_at(3, opt.step)  # inside step 3's weight update
            return opt
        monkeypatch.setattr(classify, "make_optimizer", make)
    else:
        monkeypatch.setattr(classify, "train_batch", _sigint_at(6, classify.train_batch))  # step 6's batch
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut", "--max_steps", "12", "--eval_every", "4")
    monkeypatch.undo()
    last = torch.load(tmp_path / "cut" / "ck" / classify.LAST, weights_only=True)
    stopped = 3 if where == "optimizer_step" else 6
    assert last["step"] == stopped  # the step that was running finished, then the state was saved
    r = run(tmp_path, "cut", "--max_steps", "12", "--eval_every", "4", "--resume")
    assert r["resumed_at_steps"] == [stopped]
    for k, v in weights(ref / "ck" / classify.LAST).items():
        assert torch.equal(v, weights(tmp_path / "cut" / "ck" / classify.LAST)[k]), k
    ref_hist = json.loads(json.dumps(torch.load(ref / "ck" / classify.LAST, weights_only=True)["history"]))
    assert [(h["step"], h["val_accuracy"], h["val_loss"]) for h in r["history"]] == \
        [(h["step"], h["val_accuracy"], h["val_loss"]) for h in ref_hist]
    rows = [json.loads(ln) for ln in (tmp_path / "cut" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if row["kind"] == "train"] == [2, 4, 6, 8, 10, 12]  # its own file, no gaps


def test_the_resume_rule(tmp_path, trained, capsys):
    ref, _ = trained
    shutil.copytree(ref / "ck", tmp_path / "ck")
    base = [*TINY, "--out_dir", str(tmp_path / "ck"), "--run_dir", str(tmp_path / "run")]
    line = cli_error(capsys, [*base, "--max_steps", "14", "--max_len", "48", "--resume"])
    assert "--max_len 48 (saved 32)" in line and "--max_steps 14" not in line
    line = cli_error(capsys, [*base, "--max_steps", "14", "--pooling", "cls", "--resume"])
    assert "--pooling 'cls' (saved 'mean')" in line
    r = classify.main([*base, "--max_steps", "14", "--resume"])  # budget flags may be raised
    assert r["budget"]["steps"] == 14 and r["resumed_at_steps"] == [12]
    line = cli_error(capsys, [*TINY, "--out_dir", str(tmp_path / "none"), "--max_steps", "3", "--resume"])
    assert "last_classifier.pt does not exist" in line


def test_cls_pooling_trains_and_round_trips(tmp_path):
    r = run(tmp_path, "cls", "--pooling", "cls", "--max_steps", "4", "--eval_every", "2", "--impl", "torch")
    cfg, model, tok, names, _ = classify.load_classifier(tmp_path / "cls" / "ck" / classify.BEST)
    assert model.cfg.pooling == "cls" and cfg.impl == "torch" and names == ["neg", "pos"]
    assert model.cls is not None and len(r["history"]) == 2
    classify.set_attention_dropout(model, 0.25)  # --attn_dropout reaches nn.MultiheadAttention as well
    assert [m.dropout for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)] == [0.25]
    ids = classify.encode_texts(tok, ["Great acting.", "Dull, dull, dull plot.", ""], cfg.max_len)
    assert ids[2] == [classify.UNK_ID]  # an empty text is one <unk>, never a crash in pooling
    x, keep = classify.collate_batch(ids, [0, 1, 2])
    alone = [model(*classify.collate_batch(ids, [i]))[0] for i in range(3)]
    torch.testing.assert_close(model(x, keep)[0], torch.cat(alone), rtol=1e-5, atol=1e-5)  # padding changes nothing


def test_limit_train_never_cuts_validation_or_test(tmp_path):
    folder = tmp_path / "imdb"
    folder.mkdir()
    shutil.copy(cd.IMDB_BUNDLED / "train.jsonl.gz", folder / "train.jsonl.gz")
    with gzip.open(cd.IMDB_BUNDLED / "train.jsonl.gz", "rt") as f:
        rows = f.read().splitlines()[::40]  # 100 real reviews stand in for a test split
    with gzip.open(folder / "test.jsonl.gz", "wt") as f:
        f.write("\n".join(rows) + "\n")
    full = cd.load_classification("imdb", "standard", 0, val_fraction=0.05, seed=1337, data_dir=str(folder))
    cut = cd.load_classification("imdb", "standard", 0, val_fraction=0.05, seed=1337, limit_train=50,
                                 data_dir=str(folder))
    assert len(cut.train) == 50 and len(full.train) == 3800 and np.bincount(cut.train.labels).tolist() == [25, 25]
    assert cut.val.texts == full.val.texts and len(full.val) == 200
    assert cut.test.texts == full.test.texts and len(cut.test) == 100
    assert set(cut.train.texts) <= set(full.train.texts)


def test_the_splits_and_folds_are_stage_1s():
    """Pinned outputs of stage 1's stratified_split / stratified_folds (stage1_mlp/datasets/sources.py), so the
    Transformer row is measured on the same validation split and the same AG News CV folds."""
    labels = np.repeat([0, 1], 2000)  # the bundled sample's label counts
    tr, va = cd.stratified_split(labels, 0.05, 1337)
    assert hashlib.sha256(va.tobytes()).hexdigest()[:16] == STAGE1_VAL_SHA
    ag = np.arange(7600) % 4
    folds = cd.stratified_folds(ag)
    assert hashlib.sha256(folds.tobytes()).hexdigest()[:16] == STAGE1_FOLDS_SHA
    assert np.bincount(folds).tolist() == [1520] * 5
    assert (cd.stratified_folds(ag, seed=cd.CV_SEED) == folds).all()


STAGE1_VAL_SHA = "5f6ffd50f15b6089"
STAGE1_FOLDS_SHA = "8d8bd481c83deff3"


def test_ag_news_cv_protocol_runs_and_is_labelled(tmp_path):
    folder = tmp_path / "ag_news"
    folder.mkdir()
    shutil.copy(AG_FIXTURE, folder / "test.csv")  # 20 real rows of the AG News test split
    r = classify.main([*TINY, "--dataset", "ag_news", "--protocol", "ag_news_test_cv", "--fold", "1",
                       "--data_dir", str(tmp_path), "--val_fraction", "0.25", "--vocab_size", "64",
                       "--max_steps", "2", "--out_dir", str(tmp_path / "ck"), "--run_dir", str(tmp_path / "run")])
    assert r["split"] == "test_cv_fold1" and r["n_examples"] == 4 and r["fold"] == 1
    assert "not comparable with the official" in r["protocol_note"]
    assert len(r["label_names"]) == 4 and len(r["confusion_matrix"]) == 4


def test_token_dropout_hides_real_tokens_only_and_never_a_whole_text():
    keep = torch.zeros(400, 50, dtype=torch.bool)
    lengths = torch.arange(400) % 50 + 1
    for b, n in enumerate(lengths):
        keep[b, :n] = True
    assert classify.drop_tokens(keep, 0.0) is keep
    torch.manual_seed(0)
    out = classify.drop_tokens(keep, 0.3)
    assert not (out & ~keep).any()  # padding stays padding
    assert out.any(1).all()  # every text keeps a token (the 1-token texts often depend on the rescue)
    hidden = (keep & ~out).sum().item() / keep.sum().item()
    assert 0.27 < hidden < 0.33, hidden  # about p of the real tokens
    torch.manual_seed(0)
    assert torch.equal(classify.drop_tokens(keep, 0.3), out)  # a function of torch's RNG state (checkpoints save it)


def test_ema_weights_are_the_hand_computed_average_and_resume_exactly(tmp_path, monkeypatch):
    """--ema_decay d: after steps 1, 2 the scored weights are (d*w1 + (1-d)*w2) (the first update copies w1),
    training itself is untouched (its weights equal a run without EMA), and a run cut at step 3 (token
    dropout on, so torch's RNG matters) resumes to the same EMA and training weights."""
    common = ["--eval_every", "1", "--schedule_steps", "6", "--token_dropout", "0.2"]
    run(tmp_path, "w1", "--max_steps", "1", *common)
    run(tmp_path, "w2", "--max_steps", "2", *common)
    r = run(tmp_path, "ema", "--max_steps", "2", "--ema_decay", "0.75", *common)
    w1, w2 = weights(tmp_path / "w1" / "ck" / classify.LAST), weights(tmp_path / "w2" / "ck" / classify.LAST)
    last = torch.load(tmp_path / "ema" / "ck" / classify.LAST, weights_only=True)
    for k in w2:
        assert torch.equal(last["train_model"][k], w2[k]), k  # EMA never feeds back into training
        assert torch.allclose(last["model"][k], 0.75 * w1[k] + 0.25 * w2[k], atol=1e-6), k
    assert any(not torch.equal(w1[k], w2[k]) for k in w2)
    e = classify.main(["evaluate", "--checkpoint", str(tmp_path / "ema" / "ck" / classify.BEST), "--split", "val"])
    assert e["metrics"] == r["metrics"]  # the reported figure is the averaged weights'

    ref = run(tmp_path, "full", "--max_steps", "6", "--ema_decay", "0.75", *common)
    monkeypatch.setattr(classify, "train_batch", _sigint_at(3, classify.train_batch))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut", "--max_steps", "6", "--ema_decay", "0.75", *common)
    monkeypatch.undo()
    r = run(tmp_path, "cut", "--max_steps", "6", "--ema_decay", "0.75", *common, "--resume")
    assert r["resumed_at_steps"] == [3] and r["metrics"] == ref["metrics"]
    a = torch.load(tmp_path / "full" / "ck" / classify.LAST, weights_only=True)
    b = torch.load(tmp_path / "cut" / "ck" / classify.LAST, weights_only=True)
    for part in ("model", "train_model", "ema"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), (part, k)


def test_select_val_loss_keeps_the_lowest_loss_evaluation_not_the_most_accurate(tmp_path):
    """The same 20 steps, two selectors: in this run the most accurate evaluation (step 4) is not the one with
    the lowest loss (step 6), so a selector that ignored --select, or kept the highest loss, would fail."""
    common = ["--max_steps", "20", "--eval_every", "2"]
    by_acc = run(tmp_path, "acc", *common)
    by_loss = run(tmp_path, "loss", *common, "--select", "val_loss")
    h = by_loss["history"]
    assert [x["val_loss"] for x in h] == [x["val_loss"] for x in by_acc["history"]]  # the same training
    low = min(h, key=lambda x: x["val_loss"])
    top = max(h, key=lambda x: x["val_accuracy"])  # the first of equals, as the strict '>' keeps it
    assert (top["step"], low["step"]) == (4, 6)
    for name, want in (("acc", top), ("loss", low)):
        assert torch.load(tmp_path / name / "ck" / classify.BEST, weights_only=True)["step"] == want["step"]
    # the bundled sample scores validation: the reported figures are the selected evaluation's
    assert by_loss["metrics"]["loss"] == pytest.approx(low["val_loss"])
    assert by_acc["metrics"]["accuracy"] == pytest.approx(top["val_accuracy"])


def test_lowercase_and_split_punctuation_are_saved_in_the_tokenizer(tmp_path):
    run(tmp_path, "plain", "--max_steps", "1")
    run(tmp_path, "norm", "--max_steps", "1", "--lowercase", "--split_punctuation")
    _, _, plain, _, _ = classify.load_classifier(tmp_path / "plain" / "ck" / classify.BEST)
    _, _, tok, _, _ = classify.load_classifier(tmp_path / "norm" / "ck" / classify.BEST)
    assert plain.tokens("GREAT film.") != plain.tokens("great film.")  # the default keeps case
    assert tok.tokens("GREAT Film.") == tok.tokens("great film.")  # the loaded checkpoint folds case
    assert tok.tokens("film.")[-1] == "." and tok.tokens("film!")[-1] == "!"  # marks are their own pieces

    def mixed(t):  # vocabulary entries that hold a letter and a punctuation mark, e.g. "s." / upper-case ones
        v = t.tk.get_vocab()
        return [w for w in v if re.search("[a-z]", w, re.I) and re.search("[.,!?]", w)], \
            [w for w in v if re.search("[A-Z]", w)]
    assert all(mixed(plain)) and mixed(tok) == ([], [])  # on these reviews plain BPE learns "s." and "The"


def test_bad_inputs_are_one_line_errors(tmp_path, trained, capsys):
    best = str(trained[0] / "ck" / classify.BEST)
    assert "--text is empty" in cli_error(capsys, ["evaluate", "--checkpoint", best, "--text", "  "])
    assert "only characters the model never saw" in cli_error(capsys, ["evaluate", "--checkpoint", best,
                                                                         "--text", "你好"])
    assert "not divisible by n_heads" in cli_error(capsys, [*TINY, "--d_model", "30", "--n_heads", "4"])
    assert "dropout must be in [0, 1)" in cli_error(capsys, [*TINY, "--dropout", "1.5"])
    assert "--token_dropout must be in [0, 1)" in cli_error(capsys, [*TINY, "--token_dropout", "1"])
    assert "--ema_decay must be in [0, 1)" in cli_error(capsys, [*TINY, "--ema_decay", "1"])
    assert "--vocab_size must be at least 64" in cli_error(capsys, [*TINY, "--vocab_size", "10",
                                                                      "--out_dir", str(tmp_path / "v")])
    assert "must be >= 0" in cli_error(capsys, [*TINY, "--grad_clip", "-1"])
    assert "--fold must be in 0..4" in cli_error(capsys, ["--dataset", "ag_news", "--protocol", "ag_news_test_cv",
                                                          "--fold", "7"])
    assert "needs --dataset ag_news" in cli_error(capsys, [*TINY, "--protocol", "ag_news_test_cv"])
    assert "holds neither" in cli_error(capsys, [*TINY, "--data_dir", str(tmp_path / "nowhere")])
    (tmp_path / "ag_news").mkdir()
    shutil.copy(AG_FIXTURE, tmp_path / "ag_news" / "test.csv")
    line = cli_error(capsys, ["--dataset", "ag_news", "--data_dir", str(tmp_path)])  # no train split
    assert "ag_news_test_cv" in line and "not the official figure" in line
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    assert "not a PyTorch file at all" in cli_error(capsys, ["evaluate", "--checkpoint", str(text)])
    other = tmp_path / "stage1.pt"
    save_checkpoint(other, {"model": {}, "config": {}}, "stage1_mlp")
    assert "is a stage1_mlp checkpoint" in cli_error(capsys, ["evaluate", "--checkpoint", str(other)])
    translation = tmp_path / "best_transformer.pt"  # the layout of train.py's (translation) checkpoints
    save_checkpoint(translation, {"model": {}, "config": {"train": {"src_lang": "en", "tgt_lang": "fr"},
                                                          "model": {"d_model": 16}}, "vocab": {"tokenizer": "{}"}},
                    "stage4_transformer")
    assert "translation checkpoint, not a classifier" in cli_error(capsys, ["evaluate", "--checkpoint",
                                                                             str(translation)])
    assert "test split" in cli_error(capsys, ["evaluate", "--checkpoint", best, "--data_dir", SAMPLE])
    with pytest.raises(UserError, match="--preset needs one of: imdb30"):
        classify.main(["--preset", "nope"])
