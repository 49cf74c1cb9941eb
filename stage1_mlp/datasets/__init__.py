"""Text → features for stage 1 (docs/stage1_mlp.md §3).

* :mod:`stage1_mlp.datasets.text`: tokenization and n-grams.
* :mod:`stage1_mlp.datasets.vectorizer`: vocabulary on the training split only, TF-IDF / BoW
  weights, sparse CSR rows (:class:`SparseRows`).
* :mod:`stage1_mlp.datasets.sources`: reading IMDb / AG News from a data dir, the bundled
  sample or the hub; stratified train/validation split; the AG News test-split CV protocol.

This package is named ``datasets`` as in the seed layout; it shadows the Hugging Face library
of the same name when ``python train.py`` runs inside ``stage1_mlp/``, so the hub is reached
only through ``scripts.data.load_hub_dataset`` (never ``import datasets``).
"""
