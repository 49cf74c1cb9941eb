"""Stage-5 tokenizers: byte-level BPE from scratch checked against Hugging Face ``tokenizers``, and characters."""
import json
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from scripts import REPO_ROOT
from scripts.cli import UserError
from stage5_gpt.tokenizer import EOT, ByteLevelBPE, CharTokenizer, UnknownCharactersError, tokenizer_from_dict
from stage5_gpt.tokenizer.bpe import BYTE_TO_CHAR, GPT2_SPLIT_PATTERN, hf_reference_tokenizer

SHAKESPEARE = REPO_ROOT / "stage2_rnn_lstm" / "data" / "tinyshakespeare" / "input.txt"
HF_VOCAB = 512


@lru_cache(maxsize=None)
def splits() -> tuple[str, str]:
    text = SHAKESPEARE.read_text(encoding="utf-8")
    n = int(0.9 * len(text))  # nanoGPT's split, as prepare.py does
    return text[:n], text[n:]


@lru_cache(maxsize=None)
def small_bpe() -> ByteLevelBPE:
    """Trained on a slice of Shakespeare plus some non-ASCII text, so merges of multi-byte characters exist."""
    return ByteLevelBPE.train(splits()[0][:50_000] + " naïve café 日本語のテキスト 😀😀 ÄÖÜ" * 20, 400)


@lru_cache(maxsize=None)
def hf_pair():
    """(Hugging Face's ByteLevel BPE trained on the train split, ours trained the same way)."""
    train = splits()[0]
    return hf_reference_tokenizer(train, HF_VOCAB), ByteLevelBPE.train(train, HF_VOCAB)


def test_the_wikipedia_example_aaabdaaabac():
    """aa -> Z, ab -> Y, ZY -> X: "aaabdaaabac" becomes XdXac (Wikipedia's "Byte pair encoding" article)."""
    tok = ByteLevelBPE.train("aaabdaaabac", 256 + 3 + 1)
    assert [tok.id_to_str(i) for i in range(256, tok.vocab_size)] == ["aa", "ab", "aaab", EOT]
    X = tok.token_to_id[b"aaab"]
    assert tok.encode("aaabdaaabac") == [X, ord("d"), X, ord("a"), ord("c")]
    assert tok.decode(tok.encode("aaabdaaabac")) == "aaabdaaabac"
    assert tok.eot_id == tok.vocab_size - 1 == 259


def test_byte_table_and_gpt2_pre_tokenisation():
    assert len(set(BYTE_TO_CHAR.values())) == 256
    assert BYTE_TO_CHAR[ord(" ")] == "Ġ" and BYTE_TO_CHAR[ord("\n")] == "Ċ" and BYTE_TO_CHAR[ord("A")] == "A"
    import regex

    pieces = regex.findall(GPT2_SPLIT_PATTERN, "I'm here  123 times!!\n\nOK")
    assert pieces == ["I", "'m", " here", " ", " 123", " times", "!!", "\n", "\n", "OK"]
    tok = small_bpe()
    assert not any(regex.search(rb"[A-Za-z] ", t) for t in tok.tokens if t)  # merges never glue two words


def test_incremental_training_learns_exactly_the_naive_merges():
    text = splits()[0][:15_000] + " aaaa aaaaaaa abababab ba" * 30  # overlapping pairs: aaa holds (a,a) twice
    fast, slow = ByteLevelBPE.train(text, 420), ByteLevelBPE.train_naive(text, 420)
    assert fast.merges == slow.merges and fast.tokens == slow.tokens
    assert len(fast.merges) == 420 - 257


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab c\nd", max_size=60), st.integers(257, 280))
def test_incremental_equals_naive_on_arbitrary_small_texts(text, vocab_size):
    assert ByteLevelBPE.train(text, vocab_size).merges == ByteLevelBPE.train_naive(text, vocab_size).merges


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_on_arbitrary_unicode(text):
    tok = small_bpe()
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_special_token_and_a_cut_character():
    tok = small_bpe()
    ids = tok.encode(f"To be{EOT}or not")
    assert ids.count(tok.eot_id) == 1 and tok.decode(ids) == f"To be{EOT}or not"
    assert tok.eot_id not in tok.encode_ordinary(f"To be{EOT}")
    assert tok.decode([0xc3]) == "\ufffd"  # half of "é" (0xc3 0xa9)


def test_save_load_round_trip(tmp_path):
    tok = small_bpe()
    again = ByteLevelBPE.load(tok.save(tmp_path / "bpe.json"))
    val = splits()[1][:20_000]
    assert again.encode(val) == tok.encode(val) and again.to_dict() == tok.to_dict()
    assert tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))).encode(val) == tok.encode(val)
    damaged = tok.to_dict()
    damaged["merges"] = damaged["merges"][:5] + ["Ġ nope"]
    with pytest.raises(UserError, match="not a stage-5 byte-level BPE tokenizer"):
        ByteLevelBPE.from_dict(damaged)
    (tmp_path / "bad.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(UserError, match="bad.json: not JSON"):
        ByteLevelBPE.load(tmp_path / "bad.json")
    with pytest.raises(UserError, match="not a stage-5 tokenizer"):
        tokenizer_from_dict({"kind": "wordpiece"})


def test_vocab_size_below_the_bytes_is_a_one_line_error():
    with pytest.raises(UserError, match="--vocab_size must be at least 257"):
        ByteLevelBPE.train("hello", 200)


def test_our_encoder_with_hugging_faces_merges_gives_its_ids_on_the_whole_validation_text():
    """The key check against a peer implementation: same merges -> same ids, every one of ~60k tokens."""
    hf, _ = hf_pair()
    val = splits()[1]
    ours = ByteLevelBPE.from_hf(hf.to_str())
    expected = hf.encode(val).ids
    assert ours.vocab_size == hf.get_vocab_size() == HF_VOCAB
    assert ours.encode(val) == expected
    assert ours.decode(expected) == val


def test_our_trainer_learns_hugging_faces_merges_and_compresses_as_well():
    """Same set of merges (only the order among equal counts may differ), so the same tokens per byte."""
    hf, ours = hf_pair()
    theirs = {tuple(m) for m in json.loads(hf.to_str())["model"]["merges"]}
    assert {tuple(m.split(" ")) for m in ours.to_dict()["merges"]} == theirs
    val = splits()[1]
    n_ours, n_hf = len(ours.encode(val)), len(hf.encode(val).ids)
    assert abs(n_ours - n_hf) <= 0.01 * n_hf


def test_exported_tokenizer_json_encodes_like_ours_in_hugging_face(tmp_path):
    _, ours = hf_pair()
    path = ours.save_hf_tokenizer_json(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(path))
    text = splits()[1][:30_000] + f"{EOT}naïve 😀 café\n"
    assert hf.encode(text).ids == ours.encode(text)
    assert hf.token_to_id(EOT) == ours.eot_id
    assert hf.decode(ours.encode(text[:2000]), skip_special_tokens=False) == text[:2000]
    assert ByteLevelBPE.from_hf(path.read_text(encoding="utf-8")).to_dict() == ours.to_dict()


def test_char_tokenizer_round_trip_and_unknown_characters_named():
    tok = CharTokenizer.from_text(splits()[0])
    assert tok.vocab_size == 65 and tok.eot_id is None
    val = splits()[1]
    assert tok.decode(tok.encode(val)) == val
    with pytest.raises(UnknownCharactersError) as e:
        tok.encode("Romeo, 你好 é")
    msg = str(e.value)
    assert "3 character(s) not in the 65-character vocabulary" in msg and "'é', '你', '好'" in msg
    assert "\n" not in msg and isinstance(e.value, UserError)
    assert tok.decode([0, 999]) == "\n\ufffd"
    assert tokenizer_from_dict(tok.to_dict()).chars == tok.chars
    with pytest.raises(UserError, match="empty text"):
        CharTokenizer.from_text("")
