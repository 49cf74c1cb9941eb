"""Copy weights between our modules and PyTorch's, exactly (scratch -> torch and torch -> scratch).

Works for a single attention module (ours vs ``nn.MultiheadAttention``), a single layer (ours vs
``nn.TransformerEncoderLayer``/``nn.TransformerDecoderLayer``), a LayerNorm, and whole models
(``impl="scratch"`` vs ``impl="torch"``). The correspondence of names:

    ours                                  PyTorch
    q_proj, k_proj, v_proj (stacked)  <-> in_proj_weight / in_proj_bias   (rows [W^Q; W^K; W^V])
    in_proj.weight / in_proj.bias     <-> in_proj_weight / in_proj_bias   (fused_qkv=True: same layout)
    out_proj                          <-> out_proj
    cross_attn                        <-> multihead_attn
    ffn.linear1 / ffn.linear2         <-> linear1 / linear2
    res1.norm / res2.norm / res3.norm <-> norm1 / norm2 / norm3
    encoder. / decoder. (a model)     <-> the model's TORCH_PREFIXES (e.g. core.encoder. / core.decoder.)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from stage4_transformer.models.attention import MultiHeadAttention

_RENAMES = [(".res1.norm.", ".norm1."), (".res2.norm.", ".norm2."), (".res3.norm.", ".norm3."),
            (".ffn.linear1.", ".linear1."), (".ffn.linear2.", ".linear2."), (".cross_attn.", ".multihead_attn."),
            (".in_proj.weight", ".in_proj_weight"), (".in_proj.bias", ".in_proj_bias")]


def _rename(key: str, prefixes: dict, pairs, reverse: bool) -> str:
    name = "." + key  # a leading dot lets every rule match at the top level too
    for ours, theirs in prefixes.items():
        a, b = (theirs, ours) if reverse else (ours, theirs)
        if name.startswith("." + a):
            name = "." + b + name[len(a) + 1:]
            break
    for ours, theirs in pairs:
        name = name.replace(*((theirs, ours) if reverse else (ours, theirs)))
    return name[1:]


def to_torch_names(tensors: dict, prefixes: dict | None = None) -> dict:
    """Our names (a state_dict, or a dict of gradients) -> PyTorch's; separate Q/K/V rows are stacked."""
    out = {_rename(k, prefixes or {}, _RENAMES, reverse=False): t for k, t in tensors.items()}
    for key in [k for k in out if k.endswith(("q_proj.weight", "q_proj.bias"))]:
        base, kind = key.rsplit("q_proj.", 1)
        out[f"{base}in_proj_{kind}"] = torch.cat([out.pop(f"{base}{r}_proj.{kind}") for r in "qkv"], dim=0)
    return out


def to_scratch_names(tensors: dict, prefixes: dict | None = None, fused_qkv: bool = False) -> dict:
    """PyTorch's names -> ours; ``fused_qkv=False`` splits in_proj into q_proj/k_proj/v_proj."""
    out = {_rename(k, prefixes or {}, _RENAMES, reverse=True): t for k, t in tensors.items()}
    if not fused_qkv:
        for key in [k for k in out if k.endswith(("in_proj.weight", "in_proj.bias"))]:
            base, kind = key.rsplit("in_proj.", 1)
            for r, part in zip("qkv", out.pop(key).chunk(3, dim=0)):
                out[f"{base}{r}_proj.{kind}"] = part
    return out


def is_torch_side(module: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) for m in module.modules())


def is_fused(module: nn.Module) -> bool:
    return any(isinstance(m, MultiHeadAttention) and m.fused_qkv for m in module.modules())


@torch.no_grad()
def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Load ``src``'s weights into ``dst`` (ours -> PyTorch's, PyTorch's -> ours, or like -> like), strictly:
    a missing or unexpected tensor is an error, so nothing is silently left at its initial value."""
    prefixes = getattr(src, "TORCH_PREFIXES", None) or getattr(dst, "TORCH_PREFIXES", None) or {}
    state = src.state_dict()
    src_torch, dst_torch = is_torch_side(src), is_torch_side(dst)
    if src_torch == dst_torch:
        mapped = state
    elif dst_torch:
        mapped = to_torch_names(state, prefixes)
    else:
        mapped = to_scratch_names(state, prefixes, fused_qkv=is_fused(dst))
    dst.load_state_dict({k: v.clone() for k, v in mapped.items()}, strict=True)
