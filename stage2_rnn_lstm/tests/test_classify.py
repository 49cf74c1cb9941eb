"""classify.py and the LSTM classifier: padding changes no logit, the scratch (masked) LSTM equals the packed
nn.LSTM (outputs and every gradient), a tiny batch is overfitted, loss falls on the bundled real IMDb sample,
train -> evaluate / --text / --interactive end to end, exact resume after SIGINT, the --resume rule, stage 1's
word rule and protocols, one-line errors. Tiny models, a few steps, in-process."""
import io
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts import textclass as cd
from scripts.checkpoint import save_checkpoint
from scripts.cli import UserError, run_cli
from stage2_rnn_lstm import classify
from stage2_rnn_lstm.models.classifier import (
    POOLS,
    ClassifierConfig,
    LSTMClassifier,
    copy_torch_lstm_to_scratch,
    reverse_within_length,
)
from stage2_rnn_lstm.utils.classify_data import PAD_ID, UNK_ID, WordVocab, collate, encode_texts, tokenize
from stage2_rnn_lstm.utils.engine import load_model

SAMPLE = str(cd.IMDB_BUNDLED)  # stage 1's bundled 4,000-review IMDb train sample, read by path
AG_FIXTURE = cd.REPO_ROOT / "stage1_mlp" / "data" / "ag_news_format_fixture" / "test_rows.csv"
TINY = ["--data_dir", SAMPLE, "--limit_train", "96", "--max_len", "32", "--max_vocab", "2000", "--emb_dim", "16",
        "--hidden_size", "16", "--batch_size", "16", "--warmup_steps", "2", "--log_every", "2", "--lr", "1e-2",
        "--threads", "1"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("MY_LLM_RESULTS", str(tmp_path / "results"))


def run(tmp_path, name, *extra):
    out = tmp_path / name
    return classify.main([*TINY, "--out_dir", str(out / "ck"), "--run_dir", str(out / "run"), *extra])


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def cli_error(capsys, argv) -> str:
    """Run like a user: one line 'error: ...' on stderr and exit code 2, no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(classify.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def tiny_model(impl="torch", pool="max", bidirectional=True, num_layers=2, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return LSTMClassifier(ClassifierConfig(vocab_size=50, n_classes=3, emb_dim=6, hidden_size=5,
                                           num_layers=num_layers, bidirectional=bidirectional, pool=pool,
                                           dropout=dropout, impl=impl))


def ragged_batch(seed=0):
    """Three texts of 7, 2 and 5 ids (never <pad>), padded at the end: (x, the rows unpadded)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(2, 50, (n,), generator=g).tolist() for n in (7, 2, 5)]
    return collate(rows, [0, 1, 2]), rows


# ----- the model ---------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["torch", "scratch"])
@pytest.mark.parametrize("pool", POOLS)
def test_padding_changes_no_logit(impl, pool):
    """Each text's logits are the same alone (no padding), in a ragged batch, and with 9 more <pad> columns:
    the packed nn.LSTM / the masked scratch LSTM never read a pad, and pooling ignores them."""
    model = tiny_model(impl, pool).eval()
    x, rows = ragged_batch()
    alone = torch.cat([model(torch.tensor([r]))[0] for r in rows])
    batched = model(x)[0]
    padded = model(torch.cat([x, torch.full((3, 9), PAD_ID)], dim=1))[0]
    torch.testing.assert_close(batched, alone, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(padded, alone, rtol=1e-6, atol=1e-6)
    # the check has teeth: the same LSTM run over the padding as if it were text gives other logits
    if impl == "torch":
        out, (h_n, _) = model.lstm(model.embedding(torch.cat([x, torch.full((3, 9), PAD_ID)], dim=1)))
        naive = model.head(out.amax(1) if pool == "max" else out.mean(1) if pool == "mean"
                           else h_n[-2:].transpose(0, 1).reshape(3, -1))
        assert (naive - alone).abs().max() > 1e-3


def test_reverse_within_length_keeps_the_padding_in_place():
    x = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]])
    r = reverse_within_length(x, torch.tensor([3, 5]))
    assert r.tolist() == [[3, 2, 1, 0, 0], [8, 7, 6, 5, 4]]
    assert torch.equal(reverse_within_length(r, torch.tensor([3, 5])), x)


@pytest.mark.parametrize("pool", POOLS)
def test_scratch_lstm_equals_nn_lstm_with_copied_weights(pool):
    """2 layers, bidirectional, ragged batch: logits, loss and the gradient of every parameter agree."""
    ref, ours = tiny_model("torch", pool), tiny_model("scratch", pool, seed=1)
    ours.embedding.load_state_dict(ref.embedding.state_dict())
    ours.head.load_state_dict(ref.head.state_dict())
    copy_torch_lstm_to_scratch(ref.lstm, ours.lstm)
    x, _ = ragged_batch(seed=3)
    y = torch.tensor([0, 2, 1])
    (la, loss_a), (lb, loss_b) = ref(x, y), ours(x, y)
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    loss_a.backward()
    loss_b.backward()
    theirs = dict(ref.named_parameters())
    pairs = {"embedding.weight": "embedding.weight", "head.weight": "head.weight", "head.bias": "head.bias"}
    for k in range(2):
        for d in range(2):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                pairs[f"lstm.cells.{2 * k + d}.{name}"] = f"lstm.{name}_l{k}" + ("_reverse" if d else "")
    mine = dict(ours.named_parameters())
    assert set(pairs) == set(mine) and set(pairs.values()) == set(theirs)  # every parameter, both sides
    for a, b in pairs.items():
        torch.testing.assert_close(mine[a].grad, theirs[b].grad, rtol=1e-5, atol=1e-6, msg=a)
        assert theirs[b].grad.abs().sum() > 0 or b == "embedding.weight", b


def test_overfits_a_tiny_batch_of_real_reviews():
    data = cd.load_classification("imdb", "standard", 0, val_fraction=0.05, seed=1337, limit_train=8,
                                  data_dir=SAMPLE)
    vocab = WordVocab.build([tokenize(t) for t in data.train.texts], min_freq=1)
    x = collate(encode_texts(vocab, data.train.texts, 40), range(8))
    y = torch.as_tensor(data.train.labels)
    torch.manual_seed(0)
    model = LSTMClassifier(ClassifierConfig(vocab_size=len(vocab), n_classes=2, emb_dim=16, hidden_size=16,
                                            dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02, loss.item()


# ----- words and vocabulary ----------------------------------------------------------------------

def test_stage_1s_word_rule_and_a_train_only_vocabulary():
    assert tokenize("A <br />GREAT film... isn't it?") == ["a", "great", "film", "...", "isn't", "it", "?"]
    assert tokenize("Stocks fell #36;5 \\ today") == ["stocks", "fell", "$", "5", "today"]
    v = WordVocab.build([["b", "a", "b", "c"], ["a", "b", "d", "c"]], min_freq=2, max_size=4)
    assert v.tokens == ["<pad>", "<unk>", "b", "a"]  # count >= 2, most frequent first (ties: first seen), cap 4
    assert v.encode(["a", "zzz"]) == [3, UNK_ID]
    assert encode_texts(v, ["b a c b", "", "!!!"], 2) == [[2, 3], [UNK_ID], [UNK_ID]]  # truncation, empty text
    assert WordVocab.from_dict(v.to_dict()).tokens == v.tokens


# ----- the CLI -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 12-step run on the bundled sample: the reference for the resume tests, then scored by `evaluate`."""
    tmp = tmp_path_factory.mktemp("trained")
    mp = pytest.MonkeyPatch()
    mp.setenv("TQDM_DISABLE", "1")
    mp.setenv("MY_LLM_RESULTS", str(tmp / "results"))
    try:
        result = run(tmp, "ref", "--max_steps", "12", "--eval_every", "4")
    finally:
        mp.undo()
    return tmp / "ref", result


def test_train_then_evaluate_on_the_bundled_sample(trained, capsys, monkeypatch):
    out, r = trained
    assert (out / "ck" / classify.BEST).is_file() and (out / "ck" / classify.LAST).is_file()
    assert r["split"] == "val" and r["dataset"] == "imdb_sample"  # the sample has no test split: said so
    assert r["stage"] == "stage2_rnn_lstm" and r["task"] == "classification" and r["model"].startswith("BiLSTM")
    assert [h["step"] for h in r["history"]] == [4, 8, 12] and r["resumed_at_steps"] == []
    assert r["budget"]["steps"] == 12 and r["peak_rss_mb"] > 0 and r["params"] > 0 and r["train_wall_s"] > 0
    assert "--resume" not in r["reproduce_command"] and "--max_steps 12" in r["reproduce_command"]
    for k in ("accuracy", "macro_f1", "loss"):  # the metric names of stage 1's and stage 4's result files
        assert 0 <= r["metrics"][k] < 10
    assert r["samples_per_s"] > 0 and r["ms_per_sample"] == pytest.approx(1000 / r["samples_per_s"])
    assert r["latency_ms_batch1"] > 0 and r["n_examples"] == 200  # 5% of 4,000 reviews
    ckpt = torch.load(out / "ck" / classify.BEST, weights_only=True)  # plain data: vocab, optimizer, RNG state
    assert ckpt["kind"] == "stage2_rnn_lstm" and ckpt["task"] == "classification"
    assert ckpt["vocab"]["tokens"][:2] == ["<pad>", "<unk>"] and "optimizer" in ckpt and "rng" in ckpt
    # the val figure is the best checkpoint's: evaluate gives the same numbers, both spellings
    e1 = classify.main(["evaluate", "--checkpoint", str(out / "ck" / classify.BEST), "--split", "val"])
    e2 = classify.main(["--evaluate_only", "--model_path", str(out / "ck" / classify.BEST), "--split", "val"])
    assert e1["metrics"] == e2["metrics"] == r["metrics"]
    assert r["metrics"]["accuracy"] == pytest.approx(max(h["val_accuracy"] for h in r["history"]))
    p = classify.main(["evaluate", "--checkpoint", str(out / "ck" / classify.BEST), "--text", "A wonderful film."])
    assert set(p["probabilities"]) == {"neg", "pos"} and sum(p["probabilities"].values()) == pytest.approx(1)
    assert "RESULT {" in capsys.readouterr().out
    # --interactive: one answer per text line; blank lines and texts without a known word are notes, not errors
    monkeypatch.setattr(sys, "stdin", io.StringIO("A wonderful film.\n\n你好\nDull and boring.\n:q\nnever read\n"))
    a = classify.main(["evaluate", "--checkpoint", str(out / "ck" / classify.BEST), "--interactive"])
    got = capsys.readouterr()
    assert len(a["answers"]) == 2 and got.out.count("prediction: ") == 2
    assert a["answers"][0]["probabilities"] == pytest.approx(p["probabilities"])
    assert "empty input" in got.err and "no word the model knows" in got.err


def test_loss_falls_on_real_reviews(tmp_path):
    """60 steps on 2,000 reviews of the bundled sample: the training loss falls, and so does the loss on the
    200 held-out validation reviews (below ln 2, the loss of a coin flip): it learns, it does not memorise."""
    r = classify.main([*TINY, "--limit_train", "2000", "--max_vocab", "5000", "--max_len", "48", "--emb_dim", "32",
                       "--hidden_size", "32", "--batch_size", "32", "--pool", "mean", "--dropout", "0",
                       "--lr_schedule", "constant", "--max_steps", "60", "--eval_every", "30", "--log_every", "10",
                       "--out_dir", str(tmp_path / "ck"), "--run_dir", str(tmp_path / "run")])
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if row["kind"] == "train"]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.04, losses
    assert all(k in rows[0] for k in ("lr", "samples/s", "ms/step"))
    assert r["history"][-1]["val_loss"] < np.log(2) - 0.03 and r["metrics"]["accuracy"] > 0.6, r["history"]


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
    ref, ref_result = trained
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
    for name in (classify.LAST, classify.BEST):
        theirs, mine = weights(ref / "ck" / name), weights(tmp_path / "cut" / "ck" / name)
        assert all(torch.equal(v, mine[k]) for k, v in theirs.items()), name
    assert [(h["step"], h["val_accuracy"], h["val_loss"], h["train_loss"]) for h in r["history"]] == \
        [(h["step"], h["val_accuracy"], h["val_loss"], h["train_loss"]) for h in ref_result["history"]]
    assert r["metrics"] == ref_result["metrics"]
    rows = [json.loads(ln) for ln in (tmp_path / "cut" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if row["kind"] == "train"] == [2, 4, 6, 8, 10, 12]  # its own file, no gaps


def test_the_resume_rule(tmp_path, trained, capsys):
    ref, _ = trained
    shutil.copytree(ref / "ck", tmp_path / "ck")
    base = [*TINY, "--out_dir", str(tmp_path / "ck"), "--run_dir", str(tmp_path / "run")]
    line = cli_error(capsys, [*base, "--max_steps", "14", "--max_len", "48", "--resume"])
    assert "--max_len 48 (saved 32)" in line and "--max_steps 14" not in line
    line = cli_error(capsys, [*base, "--max_steps", "14", "--pool", "mean", "--resume"])
    assert "--pool 'mean' (saved 'max')" in line
    r = classify.main([*base, "--epochs", "3", "--max_steps", "14", "--resume"])  # budget flags may be raised
    assert r["budget"]["steps"] == 14 and r["config"]["epochs"] == 3 and r["resumed_at_steps"] == [12]
    line = cli_error(capsys, [*TINY, "--out_dir", str(tmp_path / "none"), "--max_steps", "3", "--resume"])
    assert "last_classifier.pt does not exist" in line


def test_scratch_impl_last_pooling_trains_and_round_trips(tmp_path):
    r = run(tmp_path, "s", "--impl", "scratch", "--pool", "last", "--no-bidirectional", "--max_len", "16",
            "--max_steps", "2", "--eval_every", "2")
    cfg, model, vocab, names, _ = classify.load_classifier(tmp_path / "s" / "ck" / classify.BEST)
    assert cfg.impl == "scratch" and model.cfg.pool == "last" and not model.cfg.bidirectional
    assert r["model"] == "LSTM 1x16 (last pooling, scratch)" and names == ["neg", "pos"]


def test_ag_news_cv_protocol_runs_and_is_labelled(tmp_path):
    folder = tmp_path / "ag_news"
    folder.mkdir()
    shutil.copy(AG_FIXTURE, folder / "test.csv")  # 20 real rows of the AG News test split
    r = classify.main([*TINY, "--dataset", "ag_news", "--protocol", "ag_news_test_cv", "--fold", "1",
                       "--data_dir", str(tmp_path), "--val_fraction", "0.25", "--min_freq", "1",
                       "--max_steps", "2", "--out_dir", str(tmp_path / "ck"), "--run_dir", str(tmp_path / "run")])
    assert r["split"] == "test_cv_fold1" and r["n_examples"] == 4 and r["fold"] == 1
    assert r["protocol"] == "ag_news_test_cv" and "not comparable with the official" in r["protocol_note"]
    assert len(r["label_names"]) == 4 and len(r["confusion_matrix"]) == 4


def test_report_publishes_the_result_file(tmp_path, monkeypatch):
    published = []
    monkeypatch.setattr(classify, "report_result", lambda p: published.append(p) or tmp_path / "reported.json")
    r = run(tmp_path, "rep", "--max_steps", "2", "--eval_every", "2", "--report")
    assert published == [Path(r["result_file"])] and "--report" not in r["reproduce_command"]
    assert run(tmp_path, "norep", "--max_steps", "2", "--eval_every", "2") and len(published) == 1


def test_bad_inputs_are_one_line_errors(tmp_path, trained, capsys):
    best = str(trained[0] / "ck" / classify.BEST)
    assert "--text is empty" in cli_error(capsys, ["evaluate", "--checkpoint", best, "--text", "  "])
    assert "no word the model knows" in cli_error(capsys, ["evaluate", "--checkpoint", best, "--text", "你好"])
    assert "--text has no words" in cli_error(capsys, ["evaluate", "--checkpoint", best, "--text", "__"])
    assert "dropout must be in [0, 1)" in cli_error(capsys, [*TINY, "--dropout", "1.5"])
    assert "hidden_size must be >= 1" in cli_error(capsys, [*TINY, "--hidden_size", "0"])
    assert "--max_vocab must be 0 (no cap) or >= 3" in cli_error(capsys, [*TINY, "--max_vocab", "2"])
    assert "--min_freq must be >= 1" in cli_error(capsys, [*TINY, "--min_freq", "0"])
    assert "must be >= 0" in cli_error(capsys, [*TINY, "--grad_clip", "-1"])
    assert "no budget" in cli_error(capsys, [*TINY, "--epochs", "0"])
    assert "--fold must be in 0..4" in cli_error(capsys, ["--dataset", "ag_news", "--protocol", "ag_news_test_cv",
                                                          "--fold", "7"])
    assert "needs --dataset ag_news" in cli_error(capsys, [*TINY, "--protocol", "ag_news_test_cv"])
    assert "holds neither" in cli_error(capsys, [*TINY, "--data_dir", str(tmp_path / "nowhere")])
    (tmp_path / "ag_news").mkdir()
    shutil.copy(AG_FIXTURE, tmp_path / "ag_news" / "test.csv")
    line = cli_error(capsys, ["--dataset", "ag_news", "--data_dir", str(tmp_path)])  # no train split
    assert "ag_news_test_cv" in line and "not the official figure" in line
    empty = tmp_path / "empty" / "imdb"
    empty.mkdir(parents=True)
    (empty / "train.jsonl").write_text("")
    assert "holds no examples" in cli_error(capsys, [*TINY, "--data_dir", str(empty)])
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    assert "not a PyTorch file at all" in cli_error(capsys, ["evaluate", "--checkpoint", str(text)])
    other = tmp_path / "stage4.pt"
    save_checkpoint(other, {"model": {}, "config": {}, "task": "classification"}, "stage4_transformer")
    assert "is a stage4_transformer checkpoint" in cli_error(capsys, ["evaluate", "--checkpoint", str(other)])
    lm = tmp_path / "best_lstm_char.pt"  # the layout of train.py's (language-model) checkpoints
    save_checkpoint(lm, {"model": {}, "config": {"model": {"model_type": "lstm"}, "train": {}},
                         "vocab": {"vocab_type": "char", "tokens": ["a"]}}, "stage2_rnn_lstm")
    assert "language-model checkpoint (train.py), not a classifier" in cli_error(
        capsys, ["evaluate", "--checkpoint", str(lm)])
    (tmp_path / "lmck").mkdir()
    shutil.copy(lm, tmp_path / "lmck" / classify.LAST)
    assert "not a classifier" in cli_error(capsys, [*TINY, "--out_dir", str(tmp_path / "lmck"), "--resume"])
    assert "test split" in cli_error(capsys, ["evaluate", "--checkpoint", best, "--data_dir", SAMPLE])
    with pytest.raises(UserError, match="is a stage-2 classifier checkpoint \\(classify.py\\), not a language model"):
        load_model(best)  # what evaluate.py / generate.py call
    assert "either --text or --interactive" in cli_error(capsys, ["evaluate", "--checkpoint", best, "--text", "a",
                                                                  "--interactive"])
    with pytest.raises(UserError, match="--preset needs one of: imdb_cpu"):
        classify.main(["--preset", "nope"])


def test_the_benchmark_preset_is_a_valid_step_budget():
    argv = classify.expand_preset(["--preset", "imdb_cpu", "--report", "--max_len", "300"])
    cfg, ckpt = classify.resolve_config(argv)
    assert ckpt is None and cfg.report and cfg.max_len == 300  # later flags win
    assert (cfg.dataset, cfg.epochs, cfg.max_minutes, cfg.impl, cfg.bidirectional) == ("imdb", 4, 0, "torch", True)
