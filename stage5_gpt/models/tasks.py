"""One pre-trained GPT, several tasks (GPT-1, Radford et al. 2018, §3.2 "Supervised fine-tuning").

GPT-1's recipe: keep the pre-trained Transformer, feed the task's input as a token sequence, and read the answer
off the final hidden states. :class:`TaskModel` holds the GPT trunk and, for classification, one linear head:

* **classification** (GPT-1 §3.3 "Text classification"): the text, then an ``<|endoftext|>`` token as the
  "extract" token; ``pool="last"`` classifies from the hidden state h_L at that last token (which has attended
  to the whole text, because attention is causal), ``pool="mean"`` from the mean of h_L over the text's
  positions. Padding goes on the *right*: with causal attention a real token never sees a pad after it, so
  padding changes nothing (the tests check it).
* **translation** (GPT-2 §3.7 "Translation", as a prompt): ``English: <source>\\nFrench:`` then the target and
  ``<|endoftext|>``; the language-model loss counts the **target tokens only** (targets of the prompt positions
  are -1, ignored), so the model learns p(French | English), not to reproduce the English.
  :func:`greedy_translate` and :func:`beam_search` decode with the KV cache.
* **language modelling**: the pre-training objective itself (the multi-task mixture keeps some of it).

Shapes: B batch, T positions, C = n_embd, K classes, V vocabulary, k beams.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from stage5_gpt.models.gpt import GPT

POOLS = ("last", "mean")


class TaskModel(nn.Module):
    """A GPT trunk (``self.gpt``) plus an optional classification head over pooled final hidden states."""

    def __init__(self, gpt: GPT, n_classes: int = 0, pool: str = "last", dropout: float = 0.1):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        self.gpt, self.pool, self.n_classes = gpt, pool, n_classes
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(gpt.config.n_embd, n_classes) if n_classes else None  # W_y of GPT-1 eq. 3
        if self.head is not None:
            nn.init.normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def pooled(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T) right-padded ids, lengths (B,) -> (B, C): h_L at the last real token, or the mean over them."""
        h = self.gpt.hidden_states(x)  # (B, T, C)
        if self.pool == "last":
            return h[torch.arange(h.size(0), device=h.device), lengths - 1]  # (B, C)
        keep = (torch.arange(h.size(1), device=h.device)[None, :] < lengths[:, None]).to(h.dtype)  # (B, T)
        return (h * keep[..., None]).sum(1) / lengths[:, None].to(h.dtype)  # (B, C)

    def classify(self, x: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits (B, K), cross-entropy or None)``: GPT-1's P(y | x) = softmax(h_L W_y)."""
        if self.head is None:
            raise ValueError("this model has no classification head")
        logits = self.head(self.drop(self.pooled(x, lengths)))  # (B, K)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return logits, loss

    def lm_loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy over the positions whose target is not -1 (translation: the target side)."""
        return self.gpt(x, targets)[1]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ----- decoding with the KV cache ----------------------------------------------------------------------------


def _check_room(gpt: GPT, prompt: list[int], max_new: int) -> int:
    room = gpt.config.block_size - len(prompt)
    if room < 1:
        raise ValueError(f"the prompt has {len(prompt)} tokens, the model's context is {gpt.config.block_size}")
    return min(max_new, room)


@torch.no_grad()
def greedy_translate(gpt: GPT, prompt: list[int], max_new: int, eot_id: int) -> list[int]:
    """The argmax token at every step until ``<|endoftext|>`` (not returned) or ``max_new`` tokens."""
    max_new = _check_room(gpt, prompt, max_new)
    idx = torch.tensor([prompt], dtype=torch.long, device=gpt.lm_head.weight.device)
    out = gpt.generate(idx, max_new, temperature=0.0, eot_id=eot_id)[0, len(prompt):].tolist()
    return out[:out.index(eot_id)] if eot_id in out else out


@torch.no_grad()
def beam_search(gpt: GPT, prompt: list[int], beam_size: int, max_new: int, eot_id: int,
                len_alpha: float = 1.0) -> list[int]:
    """The hypothesis with the best ``log p(y | prompt) / len(y) ** len_alpha`` among ``beam_size`` beams.

    The k live hypotheses are the rows of one batch over a shared KV cache: the prompt is run once (prefill),
    every step feeds the k newest tokens, scores the k x V extensions, keeps the best k (a hypothesis that emits
    ``<|endoftext|>`` is finished and leaves the beam) and moves each survivor's cache rows onto its parent's
    (:meth:`KVCache.reorder`). The search stops when k hypotheses have finished, when no live one can still
    beat the best finished one (scores only fall as tokens are added, for len_alpha = 0) or after ``max_new``
    tokens. ``beam_size=1`` is greedy decoding.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    max_new = _check_room(gpt, prompt, max_new)
    device = gpt.lm_head.weight.device
    cache = gpt.new_cache()
    h = gpt.hidden_states(torch.tensor([prompt], dtype=torch.long, device=device), cache)  # (1, P, C)
    logp = F.log_softmax(gpt.lm_head(h[:, -1]).float(), dim=-1)  # (1, V)
    seqs: list[list[int]] = [[]]
    scores = torch.zeros(1, device=device)  # (live,) summed log-probabilities
    finished: list[tuple[float, list[int]]] = []

    def norm(score: float, n: int) -> float:
        return score / max(n, 1) ** len_alpha

    for t in range(max_new):
        V = logp.size(-1)
        cand = (scores[:, None] + logp).view(-1)  # (live * V,)
        top, flat = cand.topk(min(2 * beam_size, cand.numel()))  # enough to keep k live after the finished leave
        parents, new_seqs, new_scores = [], [], []
        for s, f in zip(top.tolist(), flat.tolist()):
            parent, tok = divmod(f, V)
            if tok == eot_id:
                finished.append((norm(s, len(seqs[parent]) + 1), seqs[parent]))
            else:
                parents.append(parent)
                new_seqs.append(seqs[parent] + [tok])
                new_scores.append(s)
            if len(parents) == beam_size:
                break
        if len(finished) >= beam_size or not parents:
            break
        if finished and len_alpha == 0 and max(f[0] for f in finished) >= max(new_scores):
            break
        seqs, scores = new_seqs, torch.tensor(new_scores, device=device)
        if t == max_new - 1:
            break
        index = torch.tensor(parents, device=device)
        cache.reorder(index)  # (live, nh, S, hs) rows follow their parents
        last = torch.tensor([[s[-1]] for s in seqs], dtype=torch.long, device=device)  # (live, 1)
        logp = F.log_softmax(gpt.lm_head(gpt.hidden_states(last, cache)[:, -1]).float(), dim=-1)  # (live, V)
    if not finished:  # ran out of room: the best live hypothesis
        finished = [(norm(float(s), len(q)), q) for s, q in zip(scores.tolist(), seqs)]
    return max(finished, key=lambda f: f[0])[1]
