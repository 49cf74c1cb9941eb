"""Our GPT <-> Hugging Face ``transformers`` GPT-2 (``GPT2LMHeadModel``): the check against a peer implementation.

Both models use GPT-2's parameter names (``transformer.wte``, ``transformer.h.<i>.attn.c_attn``, ...), so the
conversion is a renaming-free copy with one twist: GPT-2's linear layers are ``Conv1D`` modules that store the
weight as (in, out), the transpose of ``nn.Linear``'s (out, in). Only the GPT-2 options convert (learned position
table, LayerNorm, GELU MLP); GPT-2 has biases everywhere, so a ``bias=False`` model exports zero biases.

GELU: GPT-2 uses the tanh approximation ("gelu_new" in ``transformers``) and so does our MLP, so the exported
model sets ``activation_function="gelu_new"`` and computes the same function (tests/test_hf.py: logits to 1e-5,
the same greedy tokens). An imported model must use a tanh GELU too (``gelu_new`` / ``gelu_pytorch_tanh``).

    export_hf(model, tokenizer, folder)       # config.json + model.safetensors + tokenizer.json (+ its config)
    config, state = from_hf(folder)           # what ``train.py --init_from <folder>`` loads
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from scripts.cli import UserError
from stage5_gpt.models.gpt import GPT, NORM_EPS, GPTConfig

GPT2_OPTIONS = {"pos": "learned", "norm": "layernorm", "mlp": "gelu"}
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # the names transformers gives GELU's tanh approximation
# the Conv1D weights, stored (in, out) by Hugging Face and (out, in) by nn.Linear
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# buffers older transformers versions keep in the state dict (the causal mask); not weights
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")


def check_gpt2_options(config: GPTConfig) -> None:
    """ValueError unless ``config`` uses the options GPT-2 has (learned positions, LayerNorm, GELU)."""
    other = [f"{k}={getattr(config, k)!r}" for k, v in GPT2_OPTIONS.items() if getattr(config, k) != v]
    if other:
        raise ValueError(f"only GPT-2 options export to GPT2LMHeadModel (pos='learned', norm='layernorm', "
                         f"mlp='gelu'); this model has {', '.join(other)}")


def hf_config(config: GPTConfig, eot_id: int | None = None):
    """The ``transformers.GPT2Config`` of the same architecture."""
    from transformers import GPT2Config

    check_gpt2_options(config)
    return GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_head, n_inner=4 * config.n_embd,
                      activation_function="gelu_new", resid_pdrop=config.dropout, embd_pdrop=config.dropout,
                      attn_pdrop=config.attn_p, layer_norm_epsilon=NORM_EPS,
                      tie_word_embeddings=config.tie_weights, bos_token_id=eot_id, eos_token_id=eot_id,
                      pad_token_id=None)


def to_hf_state_dict(model: GPT) -> dict:
    """Our weights under GPT-2's layout: Conv1D weights transposed, zero biases where ``bias=False``."""
    check_gpt2_options(model.config)
    out = {}
    for name, t in model.state_dict().items():
        out[name] = t.t().contiguous() if name.endswith(TRANSPOSED) else t.clone()
    if not model.config.bias:  # GPT-2 has a bias in every Linear/Conv1D and LayerNorm
        for name in list(out):
            if name.endswith(".weight") and (name.endswith(TRANSPOSED) or ".ln_" in name):
                bias = name[: -len("weight")] + "bias"
                width = out[name].shape[-1]
                out[bias] = torch.zeros(width, dtype=out[name].dtype)
    return out


def from_hf_state_dict(state: dict) -> dict:
    """A ``GPT2LMHeadModel`` state dict under our layout (Conv1D weights transposed back, mask buffers dropped)."""
    out = {}
    for name, t in state.items():
        if name.endswith(HF_BUFFERS):
            continue
        out[name] = t.t().contiguous() if name.endswith(TRANSPOSED) else t
    if "lm_head.weight" not in out:  # a tied checkpoint may store the matrix once
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def to_hf_model(model: GPT, eot_id: int | None = None):
    """A ``transformers.GPT2LMHeadModel`` (eval mode) holding our weights."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel(hf_config(model.config, eot_id))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    missing = [k for k in missing if not k.endswith(HF_BUFFERS)]
    if missing or unexpected:
        raise RuntimeError(f"GPT-2 layout mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return hf.eval()


def char_tokenizer_json(tokenizer) -> str:
    """A Hugging Face ``tokenizer.json`` for a character tokenizer: a BPE model with one token per character and
    no merges (and no pre-tokenizer), which splits any text into its characters and gives our ids. Characters
    outside the vocabulary are dropped by it (ours refuses them)."""
    from tokenizers import Tokenizer, decoders, models

    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(tokenizer.chars)}, merges=[]))
    tk.decoder = decoders.Fuse()
    return tk.to_str()


def hf_tokenizer_json(tokenizer) -> str:
    """Our tokenizer as a Hugging Face ``tokenizer.json`` string (byte-level BPE or characters)."""
    if tokenizer.kind == "bpe":
        return tokenizer.to_hf_tokenizer_json()
    if tokenizer.kind == "char":
        return char_tokenizer_json(tokenizer)
    raise ValueError(f"no Hugging Face tokenizer for kind {tokenizer.kind!r}")


def check_same_tokenizer(where, tokenizer) -> None:
    """``--init_from``: the model folder's ``tokenizer.json`` must give the same ids as ``tokenizer`` (the data's),
    or the pre-trained embedding rows would be read for the wrong tokens. One-line error otherwise."""
    path = Path(where) / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"--init_from {where}: no tokenizer.json beside the model, so its token ids cannot be "
                        f"checked against the data's tokenizer (export_hf.py writes one)")
    try:
        theirs = json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a readable tokenizer.json ({type(e).__name__})") from None
    ours = json.loads(hf_tokenizer_json(tokenizer))["model"]["vocab"]
    if theirs != ours:
        raise UserError(f"--init_from {where}: its tokenizer ({len(theirs)} tokens) is not the data's "
                        f"({len(ours)} tokens, {tokenizer.kind}); prepare the data with the model's tokenizer")


def save_hf_tokenizer(tokenizer, folder, model_max_length: int) -> Path:
    """Write ``tokenizer.json`` (+ ``tokenizer_config.json``) so ``AutoTokenizer.from_pretrained(folder)`` works."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    text = hf_tokenizer_json(tokenizer)
    special = {}
    if tokenizer.eot_id is not None:
        eot = tokenizer.decode([tokenizer.eot_id])
        special = dict(bos_token=eot, eos_token=eot)
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(text), model_max_length=model_max_length,
                                   clean_up_tokenization_spaces=False, **special)
    fast.save_pretrained(str(folder))
    return Path(folder) / "tokenizer.json"


def export_hf(model: GPT, tokenizer, folder) -> Path:
    """Write ``folder`` as a Hugging Face model folder: ``GPT2LMHeadModel.save_pretrained`` (config.json,
    model.safetensors, generation_config.json) and the tokenizer (``tokenizer.json``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf = to_hf_model(model, tokenizer.eot_id)
    hf.save_pretrained(str(folder))
    save_hf_tokenizer(tokenizer, folder, model.config.block_size)
    return folder


def check_hf_config(hf_cfg, where: str) -> None:
    """UserError for GPT-2 variants our model does not compute exactly."""
    problems = []
    if hf_cfg.activation_function not in TANH_GELUS:
        problems.append(f"activation_function={hf_cfg.activation_function!r} (ours is the tanh GELU, gelu_new)")
    if hf_cfg.n_inner not in (None, 4 * hf_cfg.n_embd):
        problems.append(f"n_inner={hf_cfg.n_inner} (ours is 4 * n_embd)")
    if abs(hf_cfg.layer_norm_epsilon - NORM_EPS) > 1e-12:
        problems.append(f"layer_norm_epsilon={hf_cfg.layer_norm_epsilon} (ours is {NORM_EPS})")
    if not getattr(hf_cfg, "scale_attn_weights", True) or getattr(hf_cfg, "scale_attn_by_inverse_layer_idx", False):
        problems.append("attention scaling other than 1/sqrt(head size)")
    if problems:
        raise UserError(f"{where}: this GPT-2 variant does not map onto our GPT: {'; '.join(problems)}")


def from_hf(name_or_folder) -> tuple[GPTConfig, dict]:
    """``(GPTConfig, state_dict)`` of a Hugging Face GPT-2 model: a local folder (``save_pretrained``) or, when
    online, a hub name such as ``gpt2``. ``GPT(config).load_state_dict(state)`` then computes the same logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    where = str(name_or_folder)
    local = Path(where).is_dir()
    if not local and (os.sep in where or where.startswith(".") or os.environ.get("HF_HUB_OFFLINE") == "1"):
        raise UserError(f"no Hugging Face model folder at {where} (a folder with config.json and the weights, "
                        f"as written by export_hf.py or save_pretrained)")
    try:
        hf_cfg = GPT2Config.from_pretrained(where)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise UserError(f"{where}: cannot read a GPT-2 config ({str(e).splitlines()[0][:200]})") from None
    if hf_cfg.model_type != "gpt2":
        raise UserError(f"{where} is a {hf_cfg.model_type!r} model; --init_from reads GPT-2 models only")
    check_hf_config(hf_cfg, where)
    try:
        hf = GPT2LMHeadModel.from_pretrained(where)
    except (OSError, ValueError) as e:
        raise UserError(f"{where}: cannot read the GPT-2 weights ({str(e).splitlines()[0][:200]})") from None
    config = GPTConfig(vocab_size=hf_cfg.vocab_size, block_size=hf_cfg.n_positions, n_layer=hf_cfg.n_layer,
                       n_head=hf_cfg.n_head, n_embd=hf_cfg.n_embd, dropout=float(hf_cfg.resid_pdrop), bias=True,
                       attn_dropout=-1.0 if hf_cfg.attn_pdrop == hf_cfg.resid_pdrop else float(hf_cfg.attn_pdrop),
                       tie_weights=bool(getattr(hf_cfg, "tie_word_embeddings", True)))
    state = from_hf_state_dict(hf.state_dict())
    GPT(config).load_state_dict(state)  # fail here, with the names, if the layouts differ
    return config, state
