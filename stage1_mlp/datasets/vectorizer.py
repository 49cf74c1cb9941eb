"""Bag of n-grams and TF-IDF as sparse rows (docs/stage1_mlp.md §3.2-3.3).

A document becomes a vector x ∈ R^V with one entry per vocabulary n-gram; almost all entries
are 0 (a review uses ~400 of ~100k n-grams), so we keep only the non-zeros, in CSR form:

    indptr  (N+1,)  row i owns entries indptr[i]:indptr[i+1]
    indices (nnz,)  vocabulary ids, ascending inside a row
    values  (nnz,)  the weights x_ij

The first layer of the MLP then computes ``x @ W1`` as a weighted sum of the rows of ``W1`` picked
by ``indices``: ``nn.EmbeddingBag(mode="sum")`` with ``per_sample_weights`` in PyTorch,
:func:`stage1_mlp.models.mlp_numpy.sparse_matmul` in NumPy. 25k IMDb reviews take ~100 MB.

Weights (``weighting``):

* ``tfidf`` (default): ``(1 + log tf) * idf`` with ``idf = log((1 + N) / (1 + df)) + 1``, each row
  scaled to unit L2 norm (Salton & Buckley 1988; the sublinear tf of Manning et al. IR book §6.4.1);
* ``count``: raw term counts tf, L2-normalised; ``binary``: 1 if present, L2-normalised;
* ``mean``: 1 / (number of n-gram tokens) for each occurrence — the average of the n-gram embeddings,
  i.e. fastText's input layer (Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification").

``nb_scale`` (two classes only) multiplies every column by its Naive Bayes log-count ratio
``r = log((p/|p|1) / (q/|q|1))`` (Wang & Manning 2012, NBSVM), computed on the training split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from scripts.cli import UserError
from stage1_mlp.datasets.text import add_ngrams

WEIGHTINGS = ("tfidf", "count", "binary", "mean")


@dataclass
class SparseRows:
    """N sparse rows in CSR form (see the module docstring)."""

    indptr: np.ndarray   # (N+1,) int64
    indices: np.ndarray  # (nnz,) int64
    values: np.ndarray   # (nnz,) float32
    n_cols: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def row_ids(self) -> np.ndarray:
        """(nnz,) the row of every stored entry."""
        return np.repeat(np.arange(len(self)), np.diff(self.indptr))

    def take(self, rows: np.ndarray) -> "SparseRows":
        """The sub-matrix of the given rows, in that order (a mini-batch)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # position of each gathered entry in the big arrays: start of its row + offset inside it
        pos = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return SparseRows(indptr, self.indices[pos], self.values[pos], self.n_cols)

    def to_dense(self) -> np.ndarray:
        """(N, V) dense float32 copy; only for tests and tiny inputs."""
        out = np.zeros((len(self), self.n_cols), dtype=np.float32)
        np.add.at(out, (self.row_ids(), self.indices), self.values)
        return out

    def to_torch(self, device=None):
        """``(indices, offsets, per_sample_weights)`` as ``nn.EmbeddingBag`` takes them."""
        import torch
        return (torch.from_numpy(self.indices).to(device), torch.from_numpy(self.indptr[:-1]).to(device),
                torch.from_numpy(self.values).to(device))


class NgramVectorizer:
    """Vocabulary of 1..``ngram``-grams fitted on training documents, then sparse weighted rows.

    Keeps the ``max_features`` n-grams with the highest document frequency among those seen in
    at least ``min_df`` documents (ties broken alphabetically, so the vocabulary is reproducible).
    """

    def __init__(self, ngram: int = 2, max_features: int = 100_000, min_df: int = 2,
                 weighting: str = "tfidf", nb_scale: bool = False, nb_alpha: float = 1.0):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose from {WEIGHTINGS}")
        self.ngram, self.max_features, self.min_df = ngram, max_features, min_df
        self.weighting, self.nb_scale, self.nb_alpha = weighting, nb_scale, nb_alpha
        self.vocab: list[str] = []
        self.index: dict[str, int] = {}
        self.idf: np.ndarray | None = None    # (V,) float32
        self.scale: np.ndarray | None = None  # (V,) float32, NB ratios (or None)

    # ----- fitting (training split only) -----------------------------------------------------
    def fit(self, docs: Sequence[list[str]], labels: Sequence[int] | None = None) -> "NgramVectorizer":
        """Build the vocabulary and idf from tokenized training documents."""
        self.fit_transform(docs, labels)
        return self

    def fit_transform(self, docs: Sequence[list[str]], labels: Sequence[int] | None = None) -> SparseRows:
        """:meth:`fit`, and the training documents' rows, in one pass over the n-gram strings.

        Every distinct n-gram gets a temporary id as it is first seen; document frequencies, the
        vocabulary choice and the rows are then computed with NumPy on those ids. The result is
        identical to ``fit(docs).transform(docs)`` (a test checks it), only faster.
        """
        seen: dict[str, int] = {}
        temp_ids, lengths = [], []
        for tokens in docs:
            grams = add_ngrams(tokens, self.ngram)
            temp_ids += [seen.setdefault(g, len(seen)) for g in grams]
            lengths.append(len(grams))
        n_docs, T = len(lengths), max(len(seen), 1)
        temp_ids = np.asarray(temp_ids, dtype=np.int64)
        doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
        pairs, _ = np.unique(doc_of * T + temp_ids, return_counts=True)  # (document, n-gram) pairs; with
        df = np.bincount(pairs % T, minlength=T)  # counts NumPy sorts (its hash path is slower here)
        strings = list(seen)
        candidates = np.flatnonzero(df >= self.min_df)
        # most frequent first, ties alphabetically: the vocabulary does not depend on document order
        df_list = df.tolist()
        chosen = sorted(candidates.tolist(), key=lambda t: (-df_list[t], strings[t]))[: self.max_features]
        if not chosen:
            raise UserError(f"no n-gram occurs in at least --min_df {self.min_df} of the {n_docs} training documents")
        self.vocab = [strings[t] for t in chosen]
        self.index = {g: i for i, g in enumerate(self.vocab)}
        self.idf = (np.log((1 + n_docs) / (1 + df[chosen].astype(np.float64))) + 1).astype(np.float32)
        self.scale = None
        remap = np.full(T, -1, dtype=np.int64)
        remap[np.asarray(chosen, dtype=np.int64)] = np.arange(len(chosen))
        ids = remap[temp_ids]
        known = ids >= 0
        x = self._rows(ids[known], np.bincount(doc_of[known], minlength=n_docs))
        if self.nb_scale:
            self.scale = nb_log_count_ratio(x, np.asarray(labels), self.nb_alpha)
            x.values = x.values * self.scale[x.indices]
        return x

    # ----- transforming ------------------------------------------------------------------------
    def transform(self, docs: Iterable[list[str]]) -> SparseRows:
        """Tokenized documents → :class:`SparseRows` (unknown n-grams are dropped)."""
        if not self.vocab:
            raise RuntimeError("fit the vectorizer first")
        lookup = self.index.get
        ids, lengths = [], []
        for tokens in docs:
            row = [i for i in map(lookup, add_ngrams(tokens, self.ngram)) if i is not None]
            ids += row
            lengths.append(len(row))
        return self._rows(np.asarray(ids, dtype=np.int64), np.asarray(lengths, dtype=np.int64))

    def _rows(self, ids: np.ndarray, lengths: np.ndarray) -> SparseRows:
        """CSR rows from every document's vocabulary ids (concatenated) and their counts per document."""
        V, n_docs = len(self.vocab), len(lengths)
        rows = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
        # one key per (document, n-gram): np.unique sorts and counts them all at once
        keys, tf = np.unique(rows * V + ids, return_counts=True)
        rows, cols = keys // V, keys % V
        indptr = np.zeros(n_docs + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_docs), out=indptr[1:])
        tf = tf.astype(np.float32)
        if self.weighting == "tfidf":
            values = (1 + np.log(tf)) * self.idf[cols]
        elif self.weighting == "count":
            values = tf
        elif self.weighting == "binary":
            values = np.ones_like(tf)
        else:  # mean: every occurrence weighs 1/len(doc)
            values = tf / np.maximum(np.asarray(lengths, dtype=np.float32), 1)[rows]
        if self.weighting != "mean":
            norms = np.sqrt(np.bincount(rows, weights=values.astype(np.float64) ** 2, minlength=n_docs))
            values = values / np.maximum(norms, 1e-12)[rows]
        values = values.astype(np.float32)
        if self.scale is not None:  # same float32 product as in fit_transform, bit for bit
            values = values * self.scale[cols]
        return SparseRows(indptr, cols, values, V)

    # ----- saving inside a checkpoint (plain data only) ---------------------------------------
    def state_dict(self) -> dict:
        return {"ngram": self.ngram, "max_features": self.max_features, "min_df": self.min_df,
                "weighting": self.weighting, "nb_scale": self.nb_scale, "nb_alpha": self.nb_alpha,
                "vocab": list(self.vocab), "idf": self.idf.tolist(),
                "scale": None if self.scale is None else self.scale.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "NgramVectorizer":
        v = cls(state["ngram"], state["max_features"], state["min_df"], state["weighting"],
                state["nb_scale"], state["nb_alpha"])
        v.vocab = list(state["vocab"])
        v.index = {g: i for i, g in enumerate(v.vocab)}
        v.idf = np.asarray(state["idf"], dtype=np.float32)
        v.scale = None if state["scale"] is None else np.asarray(state["scale"], dtype=np.float32)
        return v


def nb_log_count_ratio(x: SparseRows, labels: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """NBSVM's ``r = log((p/|p|1)/(q/|q|1))``, p/q = alpha + feature sums over class 1 / class 0."""
    if set(np.unique(labels)) - {0, 1}:
        raise ValueError("nb_scale needs exactly two classes (labels 0/1)")
    pos = labels[x.row_ids()] == 1
    p = alpha + np.bincount(x.indices[pos], weights=x.values[pos], minlength=x.n_cols)
    q = alpha + np.bincount(x.indices[~pos], weights=x.values[~pos], minlength=x.n_cols)
    return np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)
