"""Stage 2 models: recurrent cells written from the equations, and one language model on top.

- :mod:`stage2_rnn_lstm.models.rnn_scratch`: ``RNNCellScratch``, ``LSTMCellScratch``,
  ``GRUCellScratch`` and the multi-layer ``RecurrentScratch`` (same signature as ``nn.LSTM``).
- :mod:`stage2_rnn_lstm.models.language_model`: ``LMConfig`` and ``RNNLanguageModel``
  (``--impl scratch|torch``), its output ``LMOutput``, and ``copy_torch_to_scratch`` used by the equivalence tests.
"""
from stage2_rnn_lstm.models.language_model import LMConfig, LMOutput, RNNLanguageModel, copy_torch_to_scratch
from stage2_rnn_lstm.models.rnn_scratch import GRUCellScratch, LSTMCellScratch, RecurrentScratch, RNNCellScratch

__all__ = ["LMConfig", "LMOutput", "RNNLanguageModel", "copy_torch_to_scratch", "RNNCellScratch", "LSTMCellScratch",
           "GRUCellScratch", "RecurrentScratch"]
