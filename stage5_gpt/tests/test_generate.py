"""generate.py end to end on tiny checkpoints written by utils/checkpoint.py, and the checkpoint helpers."""
import io
import sys

import pytest
import torch

from scripts.checkpoint import CheckpointError, save_checkpoint
from scripts.cli import run_cli
from stage5_gpt import generate
from stage5_gpt.models import GPT, GPTConfig
from stage5_gpt.tokenizer import ByteLevelBPE, CharTokenizer
from stage5_gpt.utils.checkpoint import KIND, check_meta, load_model, save_model

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n"


def tiny_checkpoint(path, tokenizer, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16)
    model = GPT(GPTConfig(**{**cfg, **kw})).eval()
    save_model(path, model, tokenizer, {"dataset": "tiny"}, vocab_extra={"dataset": "tiny"}, step=0)
    return model


@pytest.fixture(scope="module")
def char_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "best_gpt.pt"
    tok = CharTokenizer.from_text(TEXT)
    return path, tiny_checkpoint(path, tok), tok


def run(argv, capsys):
    """generate.main through run_cli, as the command line runs it: (exit code, stdout, stderr)."""
    code = 0
    try:
        run_cli(generate.main, [str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def greedy_text(model, tok, prompt, n):
    x = torch.tensor([tok.encode(prompt)])
    return tok.decode(model.generate(x, n, temperature=0)[0, x.size(1):].tolist())


# ----- the checkpoint helpers --------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_its_errors(char_ckpt, tmp_path):
    """Catches a checkpoint that cannot rebuild its model (config or tokenizer not saved, tied weights broken),
    another stage's checkpoint accepted, or weights of another size loaded into the saved config."""
    path, model, tok = char_ckpt
    loaded, tok2, ckpt = load_model(path)
    assert not loaded.training and tok2.to_dict() == tok.to_dict() and ckpt["kind"] == KIND
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt["model"])
    x = torch.tensor([tok.encode("Speak")])
    torch.testing.assert_close(loaded(x)[0], model(x)[0], rtol=0, atol=0)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    save_checkpoint(tmp_path / "other.pt", {"model": {}, "config": {}}, kind="stage4_transformer")
    with pytest.raises(CheckpointError, match="is a stage4_transformer checkpoint, but this is stage5_gpt"):
        load_model(tmp_path / "other.pt")
    bad = dict(ckpt, config={"model": {**ckpt["config"]["model"], "n_embd": 32}, "train": {}})
    save_checkpoint(tmp_path / "bad.pt", bad, kind=KIND)
    with pytest.raises(CheckpointError, match="weights do not fit the saved config"):
        load_model(tmp_path / "bad.pt")
    worse = dict(ckpt, config={"model": {**ckpt["config"]["model"], "n_head": 3}, "train": {}})
    save_checkpoint(tmp_path / "worse.pt", worse, kind=KIND)
    with pytest.raises(CheckpointError, match="invalid model config.*not divisible by n_head=3"):
        load_model(tmp_path / "worse.pt")


def test_compiled_or_ddp_prefixes_never_reach_the_file(tmp_path):
    """Catches a checkpoint saved from a wrapper (``_orig_mod.`` keys) that the plain model cannot load."""
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    wrapper = torch.nn.Module()
    wrapper._orig_mod = model
    save_model(tmp_path / "w.pt", wrapper, tok)
    loaded, _, ckpt = load_model(tmp_path / "w.pt")
    assert set(ckpt["model"]) == set(model.state_dict())


def test_meta_must_use_the_checkpoint_tokenizer(char_ckpt):
    """Catches a prepared dataset of another vocabulary evaluated silently with the checkpoint's model."""
    _, _, ckpt = load_model(char_ckpt[0])
    check_meta(ckpt, {"tokenizer": CharTokenizer.from_text(TEXT).to_dict()})
    with pytest.raises(CheckpointError, match="another char vocabulary than the checkpoint's"):
        check_meta(ckpt, {"tokenizer": CharTokenizer.from_text(TEXT + "Z").to_dict()})
    with pytest.raises(CheckpointError, match="prepared with a bpe tokenizer, the checkpoint a char one"):
        check_meta(ckpt, {"tokenizer": {"kind": "bpe"}})


# ----- generate.py -------------------------------------------------------------------------------------------


def test_greedy_text_is_the_models_and_the_same_without_cache(char_ckpt, capsys):
    """Catches a CLI that prints something else than the model's tokens, or whose --no_cache path differs."""
    path, model, tok = char_ckpt
    want = greedy_text(model, tok, "All:", 40)
    for extra in ([], ["--no_cache"]):
        code, out, err = run(["--checkpoint", path, "--prompt", "All:", "--max_new_tokens", 40,
                              "--temperature", 0, *extra], capsys)
        assert code == 0 and out == "All:" + want + "\n"
        assert ("no cache" if extra else "KV cache") in err and "40 tokens in" in err


def test_seeds_and_several_samples(char_ckpt, capsys):
    path, _, _ = char_ckpt
    argv = ["--checkpoint", path, "--prompt", "Speak", "--max_new_tokens", 30, "--temperature", 1.0, "--top_p",
            0.9, "--num_samples", 3]
    texts = [generate.main([str(a) for a in argv + ["--seed", s]]) for s in (1, 1, 2)]
    capsys.readouterr()
    assert len(texts[0]) == 3 and texts[0] == texts[1] and texts[0] != texts[2]
    assert len(set(texts[0])) == 3  # one generator runs through the samples, so they differ
    code, out, _ = run([*argv, "--seed", 1], capsys)
    assert code == 0 and out.count(generate.SEPARATOR) == 2 and out.count("Speak") >= 3


def test_tokens_are_streamed_one_by_one(char_ckpt, capsys, monkeypatch):
    """Catches output printed only at the end: stdout is written once per generated character."""
    path, model, tok = char_ckpt
    writes = []

    class Recorder(io.StringIO):
        def write(self, s):
            writes.append(s)
            return super().write(s)

    monkeypatch.setattr(sys, "stdout", Recorder())
    generate.main(["--checkpoint", str(path), "--prompt", "All:", "--max_new_tokens", "12", "--temperature", "0"])
    pieces = [w for w in writes if w]
    assert pieces[0] == "All:" and "".join(pieces[1:13]) == greedy_text(model, tok, "All:", 12)
    assert all(len(p) == 1 for p in pieces[1:13])


def test_stream_printer_keeps_multibyte_characters_whole():
    """Catches per-token decoding of a byte-level BPE: a token that ends inside a UTF-8 character would print
    U+FFFD; the printer waits for the rest of the character."""
    tok = ByteLevelBPE.train("hello world " * 5, 260)
    text = "héllo wörld ✓ 日本"
    out = io.StringIO()
    printer = generate.StreamPrinter(tok, out)
    ids = tok.encode(text)
    assert len(ids) > len(text) - 4  # mostly one token per byte: the accents span two tokens
    for i in ids:
        printer.add(i)
        assert "\ufffd" not in out.getvalue()
    assert printer.close() == text and out.getvalue() == text


def test_stops_at_endoftext(tmp_path, capsys):
    """Catches generation that runs on after <|endoftext|> (or prints it): a model that always predicts it
    produces nothing after the prompt and stops after one token."""
    tok = ByteLevelBPE.train(TEXT * 3, 270)
    path = tmp_path / "eot.pt"
    model = tiny_checkpoint(path, tok, tie_weights=False)
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)  # every position's h = (1, ..., 1)
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.eot_id] = 1.0  # so <|endoftext|> has the largest logit
    save_model(path, model, tok)
    code, out, err = run(["--checkpoint", path, "--prompt", "All:", "--temperature", 0], capsys)
    assert code == 0 and out == "All:\n" and "1 tokens in" in err and "stopped at <|endoftext|>" in err
    code, out, _ = run(["--checkpoint", path, "--temperature", 0], capsys)  # no prompt: starts a document
    assert code == 0 and out == "<|endoftext|>\n"


def test_long_prompt_is_cropped_with_a_note(char_ckpt, capsys):
    path, model, tok = char_ckpt
    prompt = (TEXT * 2)[:50]  # 50 characters, context 32
    code, out, err = run(["--checkpoint", path, "--prompt", prompt, "--max_new_tokens", 5, "--temperature", 0],
                         capsys)
    assert code == 0 and "the prompt has 50 tokens, more than the model's context of 32" in err
    assert out == prompt + greedy_text(model, tok, prompt[-32:], 5) + "\n"


def test_prompt_file_and_interactive(char_ckpt, tmp_path, capsys, monkeypatch):
    path, model, tok = char_ckpt
    (tmp_path / "p.txt").write_text("Speak", encoding="utf-8")
    base = ["--checkpoint", path, "--max_new_tokens", 8, "--temperature", 0]
    code, out, _ = run([*base, "--prompt_file", tmp_path / "p.txt"], capsys)
    assert code == 0 and out == "Speak" + greedy_text(model, tok, "Speak", 8) + "\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO("All:\n\nZQ\nSpeak\n:q\nAll:\n"))
    code, out, err = run([*base, "--interactive"], capsys)
    assert code == 0
    assert out == "All:" + greedy_text(model, tok, "All:", 8) + "\nSpeak" + greedy_text(model, tok, "Speak", 8) + "\n"
    assert "note: empty input" in err and "error: 2 character(s) not in the" in err and "'Q', 'Z'" in err


@pytest.mark.parametrize("flags, message", [
    (["--prompt", ""], "error: empty prompt"),
    (["--prompt", "Ωme"], "error: 1 character(s) not in the 30-character vocabulary of the training text: 'Ω'"),
    (["--max_new_tokens", "0"], "error: --max_new_tokens must be >= 1, got 0"),
    (["--max_new_tokens", "-3"], "error: --max_new_tokens must be >= 1, got -3"),
    (["--top_p", "1.5"], r"error: --top_p must be in (0, 1] (1 = off), got 1.5"),
    (["--temperature", "-0.5"], "error: --temperature must be >= 0 (0 = greedy), got -0.5"),
    (["--num_samples", "0"], "error: --num_samples must be >= 1, got 0"),
])
def test_bad_input_is_one_line_exit_2(char_ckpt, capsys, flags, message):
    code, out, err = run(["--checkpoint", char_ckpt[0], "--prompt", "All:", *flags], capsys)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1 and out == ""


def test_bad_files_are_one_line_exit_2(tmp_path, capsys):
    save_checkpoint(tmp_path / "stage4.pt", {"model": {}, "config": {}}, kind="stage4_transformer")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    tok = CharTokenizer.from_text(TEXT)
    tiny_checkpoint(tmp_path / "ok.pt", tok, block_size=8)
    cases = [
        (["--checkpoint", tmp_path / "missing.pt"], "checkpoint not found"),
        (["--checkpoint", tmp_path / "stage4.pt"], "is a stage4_transformer checkpoint, but this is stage5_gpt"),
        (["--checkpoint", tmp_path / "ok.pt", "--prompt_file", tmp_path / "nope.txt"], "prompt file not found"),
        (["--checkpoint", tmp_path / "ok.pt", "--prompt_file", tmp_path / "empty.txt"], "empty.txt is empty"),
    ]
    for argv, message in cases:
        code, out, err = run(argv, capsys)
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, (argv, err)
