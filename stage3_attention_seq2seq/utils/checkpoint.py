"""Rebuild a translation model from a self-describing checkpoint (kind ``stage3_attention_seq2seq``)."""
from __future__ import annotations

from scripts.checkpoint import CheckpointError, load_checkpoint
from scripts.config import config_from_dict
from stage3_attention_seq2seq.models.seq2seq import ModelConfig, Seq2Seq
from stage3_attention_seq2seq.utils.tokenizer import Vocab

KIND = "stage3_attention_seq2seq"


def load_model(path, device="cpu", src_lang: str | None = None, tgt_lang: str | None = None):
    """``(model in eval mode, src_vocab, tgt_vocab, checkpoint dict)``; one-line errors on bad files.

    ``src_lang``/``tgt_lang``, when given, must match the checkpoint's language pair.
    """
    ckpt = load_checkpoint(path, kind=KIND, map_location=device)
    try:
        cfg = config_from_dict(ModelConfig, ckpt["config"]["model"])
        src_vocab, tgt_vocab = Vocab(ckpt["vocab"]["src"]), Vocab(ckpt["vocab"]["tgt"])
        pair = ckpt["config"]["train"]["src_lang"], ckpt["config"]["train"]["tgt_lang"]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint lacks {e} (saved by another version?)") from None
    for want, have, what in ((src_lang, pair[0], "source"), (tgt_lang, pair[1], "target")):
        if want is not None and want != have:
            raise CheckpointError(f"{path} translates {pair[0]}->{pair[1]}, but {what} language {want!r} was requested")
    model = Seq2Seq(cfg, len(src_vocab), len(tgt_vocab)).to(device)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the saved config ({str(e).splitlines()[0][:150]})") from None
    model.eval()
    return model, src_vocab, tgt_vocab, ckpt
