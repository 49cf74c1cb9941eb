"""Our GPT against a peer implementation: Hugging Face ``transformers``' GPT2LMHeadModel, both directions.

Never online: every HF model here is built from a config or read from a folder in tmp_path (HF_HUB_OFFLINE=1).
"""
import json

import pytest
import torch

from scripts.cli import UserError, run_cli
from stage5_gpt import export_hf
from stage5_gpt.models import GPT, GPTConfig
from stage5_gpt.models.convert import export_hf as export_folder
from stage5_gpt.models.convert import from_hf, hf_config
from stage5_gpt.tokenizer import ByteLevelBPE, CharTokenizer
from stage5_gpt.utils.checkpoint import save_model

transformers = pytest.importorskip("transformers")
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n" * 4


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing here may reach the hub (a hub name is refused before transformers would try)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def bpe():
    return ByteLevelBPE.train(TEXT, 300)


def tiny(vocab_size, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size, block_size=24, n_layer=2, n_head=2, n_embd=16)
    model = GPT(GPTConfig(**{**cfg, **kw})).eval()
    with torch.no_grad():  # away from GPT-2's init, so that zero biases / LN gains of 1 cannot hide a swap
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def hf_greedy(hf, x, n):
    out = hf.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[:, x.size(1):]


@pytest.mark.parametrize("kw", [dict(), dict(bias=False, tie_weights=False)], ids=["gpt2", "no-bias-untied"])
def test_exported_folder_gives_our_logits_and_greedy_tokens(kw, bpe, tmp_path):
    """Catches Conv1D weights not transposed, q/k/v packed in another order, the erf GELU where GPT-2 uses
    gelu_new, a missing final LayerNorm or untied weights exported as tied: the HF model read back from the
    folder gives our logits (1e-5) and, through transformers' own generate(), our greedy tokens."""
    from transformers import AutoModelForCausalLM

    model = tiny(bpe.vocab_size, **kw)
    folder = export_folder(model, bpe, tmp_path / "hf")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["activation_function"] == "gelu_new"
    assert cfg["n_positions"] == 24 and cfg["tie_word_embeddings"] == kw.get("tie_weights", True)
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    x = torch.tensor([bpe.encode("Before we proceed<|endoftext|>All:")])
    with torch.no_grad():
        ours = model(x)[0]
        theirs = hf(x).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    ours_tokens = model.generate(x, 15, temperature=0)[:, x.size(1):]
    assert torch.equal(hf_greedy(hf, x, 15), ours_tokens)


def test_exported_tokenizer_encodes_as_ours(bpe, tmp_path):
    """Catches a tokenizer.json with other merges, a lost <|endoftext|>, or a char vocabulary in another order."""
    from transformers import AutoTokenizer

    text = "Before we proceed, speak!<|endoftext|>All: héllo"
    export_folder(tiny(bpe.vocab_size), bpe, tmp_path / "bpe")
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "bpe")
    assert hf_tok.encode(text) == bpe.encode(text) and hf_tok.eos_token_id == bpe.eot_id
    assert hf_tok.decode(bpe.encode(text)) == text
    char = CharTokenizer.from_text(TEXT)
    export_folder(tiny(char.vocab_size), char, tmp_path / "char")
    hf_char = AutoTokenizer.from_pretrained(tmp_path / "char")
    sample = "All:\nSpeak, speak. Before"
    assert hf_char.encode(sample) == char.encode(sample) and hf_char.decode(char.encode(sample)) == sample


def test_only_gpt2_options_export(bpe, tmp_path):
    with pytest.raises(ValueError, match="only GPT-2 options export.*pos='rope', mlp='swiglu'"):
        export_folder(tiny(bpe.vocab_size, pos="rope", mlp="swiglu"), bpe, tmp_path / "x")


def random_hf_gpt2(folder, **kw):
    """A small randomly initialised GPT2LMHeadModel saved like a downloaded one (save_pretrained)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    cfg = GPT2Config(**{**dict(vocab_size=97, n_positions=20, n_embd=24, n_layer=2, n_head=3), **kw})
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(folder)
    return hf


def test_import_of_a_saved_hf_gpt2_gives_its_logits(tmp_path):
    """Catches an import that forgets to transpose Conv1D weights back, keeps HF's mask buffers as weights, or
    reads the sizes from the wrong config fields: ``from_hf(folder)`` -> our GPT computes HF's logits."""
    hf = random_hf_gpt2(tmp_path / "gpt2")
    config, state = from_hf(tmp_path / "gpt2")
    assert (config.vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd) == (97, 20, 2, 3, 24)
    assert (config.pos, config.norm, config.mlp, config.bias, config.tie_weights) == ("learned", "layernorm", "gelu",
                                                                                      True, True)
    model = GPT(config).eval()
    model.load_state_dict(state)
    x = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], hf(x).logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.generate(x[:, :5], 10, temperature=0)[:, 5:], hf_greedy(hf, x[:, :5], 10))


def test_attention_dropout_travels_both_ways(tmp_path):
    """Catches an export that writes --dropout as attn_pdrop when --attn_dropout differs, or an import that drops
    HF's separate attn_pdrop: the attention-weight rate survives both directions."""
    random_hf_gpt2(tmp_path / "own", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.0)
    random_hf_gpt2(tmp_path / "same", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    own, _ = from_hf(tmp_path / "own")
    same, _ = from_hf(tmp_path / "same")
    assert (own.dropout, own.attn_dropout, own.attn_p) == (0.1, 0.0, 0.0)
    assert (same.dropout, same.attn_dropout, same.attn_p) == (0.1, -1.0, 0.1)
    assert hf_config(own).attn_pdrop == 0.0 and hf_config(same).attn_pdrop == 0.1


def test_import_refuses_what_it_cannot_compute_exactly_and_missing_folders(tmp_path):
    random_hf_gpt2(tmp_path / "erf", activation_function="gelu")
    with pytest.raises(UserError, match="activation_function='gelu'"):
        from_hf(tmp_path / "erf")
    with pytest.raises(UserError, match="no Hugging Face model folder at"):
        from_hf(tmp_path / "nothing")
    with pytest.raises(UserError, match="no Hugging Face model folder at gpt2"):
        from_hf("gpt2")  # a hub name while offline


def test_export_cli(bpe, tmp_path, capsys):
    """export_hf.py as a user runs it: a GPT-2 checkpoint exports and reports a logit difference below 1e-5; a
    RoPE checkpoint is a one-line error with exit code 2."""
    save_model(tmp_path / "best_gpt.pt", tiny(bpe.vocab_size), bpe)
    folder, diff = export_hf.main(["--checkpoint", str(tmp_path / "best_gpt.pt"), "--out", str(tmp_path / "out")])
    assert diff < 1e-5 and (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert "max |logit difference|" in capsys.readouterr().out
    save_model(tmp_path / "rope.pt", tiny(bpe.vocab_size, pos="rope"), bpe)
    with pytest.raises(SystemExit) as e:
        run_cli(export_hf.main, ["--checkpoint", str(tmp_path / "rope.pt"), "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and "pos='rope'" in err and err.count("\n") == 1
