"""The showcase's API (scripts/demo.py + scripts/showcase.py + the stages' serve.py), through FastAPI's test client,
on tiny real checkpoints (conftest.py): every tab's answer equals what the stage's own command line gives, streaming
sends the text in pieces, and bad input, missing, broken or malicious checkpoints are one clear error, after which
the server still answers."""
from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch
from fastapi.testclient import TestClient

from scripts import REPO_ROOT
from scripts.demo import LIMITS, main, make_app
from scripts.showcase import TASKS, Registry, Servable, discover

SENTENCE = "One of the best films I have seen this year: moving, funny and beautifully acted."
ENGLISH = "A man is riding a bike."
SAMPLING = {"max_new_tokens": 40, "temperature": 0.9, "top_k": 20, "top_p": 0.95, "seed": 7}
STAGES = ["stage1_mlp", "stage2_rnn_lstm", "stage3_attention_seq2seq", "stage4_transformer", "stage5_gpt"]


@pytest.fixture(scope="module")
def client(demo_root):
    root, _ = demo_root
    with TestClient(make_app(Registry(root))) as c:
        yield c


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread (the root conftest.py's fixture)."""


def events(text: str) -> list[tuple[str, dict]]:
    """Parse a text/event-stream body into (event, data) pairs."""
    out = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        event = "message"
        data = ""
        for line in frame.split("\n"):
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                data += line[len("data: "):]
        out.append((event, json.loads(data)))
    return out


def stream(client, model: str, prompt: str, **params) -> list[tuple[str, dict]]:
    with client.stream("POST", "/api/generate", json={"model": model, "prompt": prompt, **params}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return events(r.read().decode("utf-8"))


# ----- what is listed ---------------------------------------------------------------------------------------------

def test_every_stage_has_an_adapter_and_the_web_layer_holds_no_model_code():
    found = dict(discover())
    assert sorted(found) == STAGES and not [m for m in found.values() if isinstance(m, Exception)]
    for stage, module in found.items():
        assert module.MODELS and all(isinstance(s, Servable) and s.task in TASKS for s in module.MODELS), stage
        assert all(s.command.startswith(f"cd {stage} && python ") for s in module.MODELS if s.run), stage
    for name in ("demo.py", "showcase.py"):  # the web app finds stages by globbing; it names none, runs no torch
        text = (REPO_ROOT / "scripts" / name).read_text(encoding="utf-8")
        assert not re.search(r"stage\d_", text), name
        assert not re.search(r"^\s*(import|from)\s+torch\b", text, re.M), name


def test_models_lists_ready_and_missing_models(client, demo_root):
    root, paths = demo_root
    listing = {m["id"]: m for m in client.get("/api/models").json()["models"]}
    for task, by_model in paths.items():
        for model_id, path in by_model.items():
            m = listing[model_id]
            assert (m["task"], m["status"], m["checkpoint"]) == (task, "ready", str(path.relative_to(root))), m
    word = listing["stage2_rnn_lstm/lstm_word"]  # never trained here: the command that makes it is shown
    assert word["status"] == "missing" and word["checkpoint"] is None
    assert "cd stage2_rnn_lstm && python train.py --model_type lstm --vocab_type word" in word["error"]
    assert {m["task"] for m in listing.values()} == set(TASKS)


def test_a_full_runs_checkpoint_is_preferred_to_the_quick_starts(demo_root, tmp_path):
    root, paths = demo_root
    quick = paths["classify"]["stage1_mlp/mlp"]
    shutil.copytree(quick.parent, tmp_path / "stage1_mlp" / "checkpoints" / "quickstart")
    registry = Registry(tmp_path)
    entry = registry.entries["stage1_mlp/mlp"]
    assert registry.checkpoint_of(entry) == tmp_path / "stage1_mlp/checkpoints/quickstart/best_model.pt"
    shutil.copy(quick, tmp_path / "stage1_mlp" / "checkpoints" / "best_model.pt")
    assert registry.checkpoint_of(entry) == tmp_path / "stage1_mlp/checkpoints/best_model.pt"


def test_the_page_has_every_tab(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for tab in ("classify", "generate", "translate", "compare", "models"):
        assert f'data-tab="{tab}"' in r.text and f'id="tab-{tab}"' in r.text


# ----- the tabs: the same answers as the stages' own command lines ----------------------------------------------

def test_classify_gives_the_probabilities_of_the_stages_own_command_line(client, demo_root, stage_cli):
    _, paths = demo_root
    expected = {
        "stage1_mlp/mlp": stage_cli("stage1_mlp", "evaluate")(
            ["--checkpoint", str(paths["classify"]["stage1_mlp/mlp"]), "--text", SENTENCE]),
        "stage4_transformer/classifier": stage_cli("stage4_transformer", "classify")(
            ["evaluate", "--checkpoint", str(paths["classify"]["stage4_transformer/classifier"]), "--text", SENTENCE]),
        "stage5_gpt/gpt_classify": stage_cli("stage5_gpt", "finetune")(
            ["evaluate", "--checkpoint", str(paths["classify"]["stage5_gpt/gpt_classify"]), "--text", SENTENCE]),
    }
    for model_id, cli in expected.items():
        r = client.post("/api/classify", json={"model": model_id, "text": SENTENCE})
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["labels"] == list(cli["probabilities"]) == ["neg", "pos"]
        assert math.isclose(sum(d["probs"]), 1.0, abs_tol=1e-6) and all(0 <= p <= 1 for p in d["probs"])
        assert d["probs"] == pytest.approx(list(cli["probabilities"].values()), abs=1e-6), model_id
        assert d["ms"] > 0


def test_generate_streams_pieces_that_make_the_stages_own_text(client, demo_root, stage_cli):
    _, paths = demo_root
    flags = ["--prompt", "ROMEO:", "--max_new_tokens", str(SAMPLING["max_new_tokens"]), "--temperature",
             str(SAMPLING["temperature"]), "--top_k", str(SAMPLING["top_k"]), "--top_p", str(SAMPLING["top_p"]),
             "--seed", str(SAMPLING["seed"])]
    stage2 = paths["generate"]["stage2_rnn_lstm/lstm_char"]
    stage5 = paths["generate"]["stage5_gpt/gpt"]
    expected = {"stage2_rnn_lstm/lstm_char": stage_cli("stage2_rnn_lstm", "generate")(
                    ["--checkpoint", str(stage2), *flags]),
                "stage5_gpt/gpt": stage_cli("stage5_gpt", "generate")(
                    ["--checkpoint", str(stage5), "--device", "cpu", *flags])[0]}
    for model_id, cli_text in expected.items():
        got = stream(client, model_id, "ROMEO:", **SAMPLING)
        pieces = [d["text"] for e, d in got if e == "message"]
        assert len(pieces) > 1, got
        assert got[-1][0] == "done" and got[-1][1]["pieces"] == len(pieces)
        assert "".join(pieces) == cli_text and len(cli_text) > 10, model_id
        whole = client.post("/api/generate", json={"model": model_id, "prompt": "ROMEO:", "stream": False,
                                                   **SAMPLING})
        assert whole.status_code == 200 and whole.json()["text"] == cli_text
        other = client.post("/api/generate", json={"model": model_id, "prompt": "ROMEO:", "stream": False,
                                                   **{**SAMPLING, "seed": 8}})
        assert other.json()["text"] != cli_text  # the seed is used, not ignored


def test_translate_gives_the_stages_translation_and_its_attention_map(client, demo_root, stage_cli):
    _, paths = demo_root
    s3 = stage_cli("stage3_attention_seq2seq", "translate")(
        ["--checkpoint", str(paths["translate"]["stage3_attention_seq2seq/attention"]), "--sentence", ENGLISH,
         "--beam_size", "1", "--device", "cpu"])
    s4 = stage_cli("stage4_transformer", "translate")(
        ["--checkpoint", str(paths["translate"]["stage4_transformer/transformer"]), "--sentence", ENGLISH,
         "--beam_size", "1", "--device", "cpu"])
    want_s4 = s4["maps"]["cross"][-1].mean(0)  # the last of its 2 decoder layers, mean over heads
    for model_id, cli, attn in (("stage3_attention_seq2seq/attention", s3, s3["attn"]),
                                ("stage4_transformer/transformer", s4, want_s4)):
        r = client.post("/api/translate", json={"model": model_id, "text": ENGLISH, "beam_size": 1})
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["translation"] == cli["text"] and d["translation"], model_id
        a = torch.tensor(d["attention"])
        assert a.shape == (len(d["tgt_tokens"]), len(d["src_tokens"])) == attn.shape, model_id
        assert torch.allclose(a, attn.float(), atol=1e-4), model_id
        assert torch.allclose(a.sum(1), torch.ones(len(a)), atol=1e-3)  # each output token's weights sum to 1
    s5 = stage_cli("stage5_gpt", "finetune")(  # its checkpoint was trained with --beam_size 1
        ["evaluate", "--checkpoint", str(paths["translate"]["stage5_gpt/gpt_translate"]), "--text", ENGLISH])
    d = client.post("/api/translate", json={"model": "stage5_gpt/gpt_translate", "text": ENGLISH,
                                            "beam_size": 1}).json()
    assert d["translation"] == s5["translation"]
    a = torch.tensor(d["attention"])  # the last layer's self-attention from each French token to the prompt
    assert a.shape == (len(d["tgt_tokens"]), len(d["src_tokens"])) and len(d["src_tokens"]) > len(ENGLISH.split())
    assert bool((a.sum(1) <= 1 + 1e-4).all()) and bool((a >= 0).all())  # a share of each row (the rest: French)
    beam = client.post("/api/translate", json={"model": "stage3_attention_seq2seq/attention", "text": ENGLISH})
    assert beam.status_code == 200 and beam.json()["translation"]  # the default: beam search (5)


def test_compare_runs_every_model_of_a_task_with_its_time(client):
    for task, text in (("classify", SENTENCE), ("translate", ENGLISH), ("generate", "ROMEO:")):
        r = client.post("/api/compare", json={"task": task, "text": text, **SAMPLING, "beam_size": 1})
        assert r.status_code == 200, r.text
        rows = {row["model"]: row for row in r.json()["results"]}
        listing = [m for m in client.get("/api/models").json()["models"] if m["task"] == task]
        assert list(rows) == [m["id"] for m in listing]
        for m in listing:
            row = rows[m["id"]]
            assert row["ok"] == (m["status"] == "ready"), row
            if row["ok"]:
                assert row["ms"] > 0
                key = {"classify": "text", "translate": "text", "generate": "prompt"}[task]
                alone = client.post(f"/api/{task}", json={"model": m["id"], key: text, "stream": False, **SAMPLING,
                                                          "beam_size": 1}).json()
                assert {k: alone[k] for k in row["result"]} == row["result"]
            else:
                assert m["command"] in row["error"] and row["ms"] is None, row
    gpt = client.post("/api/compare", json={"task": "classify", "text": SENTENCE}).json()["results"][-1]
    assert gpt["model"] == "stage5_gpt/gpt_classify" and gpt["ok"] and gpt["ms"] > 0


# ----- bad input, missing and broken checkpoints -------------------------------------------------------------

def test_bad_input_is_a_4xx_with_one_clear_message_and_the_server_keeps_answering(client):
    cases = [
        ("/api/classify", {"model": "stage1_mlp/mlp", "text": "x" * (LIMITS["text_chars"] + 1)}, 422,
         "text: String should have at most 1000 characters"),
        ("/api/classify", {"model": "stage1_mlp/mlp", "text": "   "}, 400, "the text is empty"),
        ("/api/classify", {"model": "stage9/nothing", "text": SENTENCE}, 404, "no model 'stage9/nothing'"),
        ("/api/classify", {"model": "stage2_rnn_lstm/lstm_char", "text": SENTENCE}, 400, "is a generate model"),
        ("/api/classify", {"model": "stage1_mlp/mlp", "text": "zzqx"}, 400, "none of the words/n-grams"),
        ("/api/classify", {"text": SENTENCE}, 422, "model: Field required"),
        ("/api/generate", {"model": "stage5_gpt/gpt", "prompt": "hi", "max_new_tokens": 10_000}, 422,
         "max_new_tokens: Input should be less than or equal to 500"),
        ("/api/generate", {"model": "stage5_gpt/gpt", "prompt": "hi", "top_p": 0}, 422, "top_p: Input should be"),
        ("/api/generate", {"model": "stage5_gpt/gpt", "prompt": "日本"}, 400, "not in the 65-character vocabulary"),
        ("/api/generate", {"model": "stage2_rnn_lstm/lstm_char", "prompt": "hi", "temperature": 0}, 400,
         "--temperature must be > 0"),
        ("/api/generate", {"model": "stage2_rnn_lstm/lstm_char", "prompt": "hi", "top_k": 999}, 400,
         "--top_k must be between 1 and the vocabulary size 65"),
        ("/api/translate", {"model": "stage4_transformer/transformer", "text": "日本"}, 400, "unknown to the model"),
        ("/api/translate", {"model": "stage3_attention_seq2seq/attention", "text": ENGLISH, "beam_size": 99}, 422,
         "beam_size: Input should be less than or equal to 8"),
        ("/api/compare", {"task": "dance", "text": SENTENCE}, 422, "task: Input should be"),
        ("/api/translate", {"model": "stage5_gpt/gpt_translate", "text": "   "}, 400, "empty"),
    ]
    for url, body, status, message in cases:
        r = client.post(url, json=body)
        assert r.status_code == status, (url, body, r.text)
        assert message in r.json()["error"] and "Traceback" not in r.text, (url, r.json())
    r = client.post("/api/classify", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    ok = client.post("/api/classify", json={"model": "stage1_mlp/mlp", "text": SENTENCE})
    assert ok.status_code == 200 and len(ok.json()["probs"]) == 2


class Boom:
    """Unpickling this would run code; a weights_only load refuses before it can."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_missing_broken_and_malicious_checkpoints_are_one_message_in_the_page(demo_root, tmp_path):
    _, paths = demo_root
    app = TestClient(make_app(Registry(tmp_path)))
    r = app.post("/api/translate", json={"model": "stage3_attention_seq2seq/attention", "text": ENGLISH})
    assert r.status_code == 404 and r.json()["kind"] == "missing_checkpoint"
    assert "make one with: cd stage3_attention_seq2seq && python quickstart.py" in r.json()["error"]
    r = app.post("/api/generate", json={"model": "stage5_gpt/gpt", "prompt": "ROMEO:"})  # a stream: JSON first
    assert r.status_code == 404 and "cd stage5_gpt && python quickstart.py" in r.json()["error"]

    target = tmp_path / "stage1_mlp" / "checkpoints" / "quickstart" / "best_model.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"this is not a checkpoint")
    r = app.post("/api/classify", json={"model": "stage1_mlp/mlp", "text": SENTENCE})
    assert r.status_code == 503 and r.json()["kind"] == "broken_checkpoint", r.text
    message = r.json()["error"]
    assert "stage1_mlp/checkpoints/quickstart/best_model.pt" in message
    assert "cd stage1_mlp && python quickstart.py" in message
    listed = {m["id"]: m for m in app.get("/api/models").json()["models"]}["stage1_mlp/mlp"]
    assert listed["status"] == "broken" and listed["error"] == message

    marker = tmp_path / "pwned"
    torch.save({"kind": "stage1_mlp", "format": 1, "model": Boom(marker)}, target)
    r = app.post("/api/classify", json={"model": "stage1_mlp/mlp", "text": SENTENCE})
    assert r.status_code == 503 and not marker.exists(), r.text
    assert "weights_only=False" not in r.json()["error"]

    shutil.copy(paths["classify"]["stage1_mlp/mlp"], target)  # a good file replaces the bad one: no restart needed
    r = app.post("/api/classify", json={"model": "stage1_mlp/mlp", "text": SENTENCE})
    assert r.status_code == 200 and math.isclose(sum(r.json()["probs"]), 1.0, abs_tol=1e-6)

    other = tmp_path / "stage4_transformer" / "checkpoints" / "classify" / "best_classifier.pt"
    other.parent.mkdir(parents=True)
    shutil.copy(paths["translate"]["stage4_transformer/transformer"], other)  # a translator where a classifier goes
    r = app.post("/api/classify", json={"model": "stage4_transformer/classifier", "text": SENTENCE})
    assert r.status_code == 503 and "not a classifier" in r.json()["error"]


def test_a_model_that_fails_is_a_500_message_not_a_dead_server(demo_root, monkeypatch):
    root, _ = demo_root
    registry = Registry(root)
    entry = registry.entries["stage1_mlp/mlp"]

    def crash(loaded, text):
        raise RuntimeError("shape mismatch in layer 2")

    monkeypatch.setattr(entry, "spec", Servable(**{**entry.spec.__dict__, "run": crash}))
    app = TestClient(make_app(registry))
    r = app.post("/api/classify", json={"model": "stage1_mlp/mlp", "text": SENTENCE})
    assert r.status_code == 500
    assert r.json()["error"] == "stage1_mlp/mlp failed: RuntimeError: shape mismatch in layer 2"
    assert app.get("/api/models").status_code == 200


def test_a_stream_that_fails_half_way_ends_with_an_error_event(demo_root, monkeypatch):
    root, _ = demo_root
    registry = Registry(root)
    entry = registry.entries["stage5_gpt/gpt"]
    real = entry.spec.run

    def two_then_crash(loaded, **request):
        pieces = real(loaded, **request)
        yield next(pieces)
        yield next(pieces)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(entry, "spec", Servable(**{**entry.spec.__dict__, "run": two_then_crash}))
    got = stream(TestClient(make_app(registry)), "stage5_gpt/gpt", "ROMEO:", **SAMPLING)
    assert [e for e, _ in got] == ["message", "message", "error"]
    assert got[-1][1] == {"error": "stage5_gpt/gpt failed: RuntimeError: out of memory", "kind": "internal"}


def test_command_line_refuses_a_root_that_is_not_a_folder(tmp_path, capsys):
    assert main(["--root", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
