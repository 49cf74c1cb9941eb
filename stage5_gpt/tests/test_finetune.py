"""Fine-tuning: LoRA's algebra, the task model (pooling, padding), the translation targets, beam search, and
finetune.py end to end on bundled real data (IMDb sample, Multi30k) from a tiny pre-trained checkpoint: every
mode, exact resume, one-line errors."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from scripts.checkpoint import CheckpointError, load_checkpoint, weights_fingerprint
from scripts.cli import UserError
from stage5_gpt import finetune
from stage5_gpt import train as train_mod
from stage5_gpt.models.gpt import GPT, GPTConfig
from stage5_gpt.models.lora import LoRALinear, apply_lora, count_trainable, merge_lora, unmerge_lora
from stage5_gpt.models.tasks import TaskModel, beam_search, greedy_translate
from stage5_gpt.tokenizer import ByteLevelBPE
from stage5_gpt.utils import tasks_data as td
from stage5_gpt.utils.checkpoint import clean_state_dict, load_model
from stage5_gpt.utils.data import prepare_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True, scope="module")
def bundled_data():
    """The data bundled in the repository (stage 1's IMDb sample, Multi30k), as on a fresh clone, also in CI where
    $MY_LLM_DATA points at the full copies: small and the same everywhere (the sample has no test split, so the
    classifiers are scored on validation)."""
    mp = pytest.MonkeyPatch()
    mp.delenv("MY_LLM_DATA", raising=False)
    yield
    mp.undo()


def tiny_gpt(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=50, block_size=24, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


# ----- LoRA ------------------------------------------------------------------------------------------------

def test_lora_starts_as_the_pretrained_model_and_only_adapters_learn():
    base = tiny_gpt()
    model = tiny_gpt()
    names = apply_lora(model, rank=4, alpha=8.0)
    assert {n.rsplit(".", 1)[-1] for n in names} == {"c_attn", "c_proj", "c_fc"}
    x = torch.randint(0, 50, (3, 10))
    assert torch.equal(model(x)[0], base(x)[0])  # B = 0: exactly the pre-trained function at step 0
    _, loss = model(x, x)
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(n.endswith(("lora_A", "lora_B")) for n in with_grad)
    nonzero = {n for n in with_grad if model.get_parameter(n).grad.abs().sum() > 0}
    assert nonzero and all(n.endswith("lora_B") for n in nonzero)  # dL/dA = B^T (...) = 0 while B = 0
    per_layer = 4 * (16 + 48) + 4 * (16 + 16) + 4 * (16 + 64) + 4 * (64 + 16)  # r (d_in + d_out) per matrix
    assert count_trainable(model) == 2 * per_layer


def test_lora_forward_is_w_plus_scaled_ba_and_merge_unmerge_round_trip():
    torch.manual_seed(1)
    lin = torch.nn.Linear(6, 5)
    layer = LoRALinear(lin, rank=2, alpha=3.0)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 6)
    by_hand = x @ (lin.weight + 1.5 * layer.lora_B @ layer.lora_A).T + lin.bias  # (alpha / r) B A, alpha/r = 1.5
    torch.testing.assert_close(layer(x), by_hand)
    w0 = lin.weight.detach().clone()
    unmerged = layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), unmerged)  # merged == unmerged outputs
    assert not torch.allclose(lin.weight, w0)
    layer.unmerge()
    torch.testing.assert_close(lin.weight, w0)


def test_merged_lora_gpt_matches_the_unmerged_one():
    model = tiny_gpt()
    apply_lora(model, rank=3, alpha=6.0)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_B, std=0.1)
    x = torch.randint(0, 50, (2, 12))
    before = model(x)[0]
    merge_lora(model)
    torch.testing.assert_close(model(x)[0], before, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(model(x)[0], before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rank", [0, 17])
def test_lora_rank_zero_or_larger_than_the_layer_is_refused(rank):
    model = tiny_gpt()
    with pytest.raises(ValueError, match="rank"):
        apply_lora(model, rank=rank, alpha=1.0)
    assert count_trainable(model) == sum(p.numel() for p in model.parameters())  # nothing was changed


# ----- the task model --------------------------------------------------------------------------------------

@pytest.mark.parametrize("pool", ["last", "mean"])
def test_classifier_ignores_right_padding_and_pools_as_defined(pool):
    model = TaskModel(tiny_gpt(), n_classes=3, pool=pool, dropout=0.0).eval()
    rows = [[5, 6, 7, 8, 9], [3, 4]]
    x, lengths = td.pad_right(rows, pad_id=1)
    logits, _ = model.classify(x, lengths)
    wider = torch.cat([x, torch.full((2, 7), 1)], dim=1)  # 7 more pads on the right
    torch.testing.assert_close(model.classify(wider, lengths)[0], logits)
    alone = [model.classify(torch.tensor([r]), torch.tensor([len(r)]))[0][0] for r in rows]
    torch.testing.assert_close(logits, torch.stack(alone), atol=1e-6, rtol=1e-5)
    h = model.gpt.hidden_states(torch.tensor([rows[0]]))[0]  # (T, C)
    pooled = h[-1] if pool == "last" else h.mean(0)
    torch.testing.assert_close(logits[0], model.head(pooled), atol=1e-6, rtol=1e-5)


def test_translation_targets_cover_the_french_side_only():
    pairs = td.Pairs(["a"], ["b"], prompt=[[10, 11, 12]], target=[[20, 21, 2]])
    x, y = td.translation_batch(pairs, [0], pad_id=2)
    assert x.tolist() == [[10, 11, 12, 20, 21]]
    assert y.tolist() == [[-1, -1, 20, 21, 2]]  # the last prompt token predicts the first French token
    gpt = tiny_gpt()
    logits = gpt(x)[0]
    by_hand = F.cross_entropy(logits[0, 2:], torch.tensor([20, 21, 2]))
    torch.testing.assert_close(gpt(x, y)[1], by_hand)


def test_truncation_keeps_head_and_tail():
    ids = list(range(20))
    assert td.truncate(ids, 8) == [0, 1, 14, 15, 16, 17, 18, 19]
    assert td.truncate(ids, 8, "head") == list(range(8)) and td.truncate(ids, 8, "tail") == list(range(12, 20))
    assert td.truncate(ids[:5], 8) == ids[:5]


def sequence_logprob(gpt, prompt, out, eot):
    seq = torch.tensor([prompt + out + [eot]])
    logp = F.log_softmax(gpt(seq[:, :-1])[0][0], -1)
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(out + [eot])))


def test_a_longer_rope_context_changes_nothing_within_the_old_one():
    """--max_len above the context rebuilds a RoPE model with a longer block_size and the same weights: on texts
    that fit the old context every hidden state is unchanged (the rotation of position m does not depend on the
    context length; position interpolation would fail this), and longer texts run."""
    short = tiny_gpt(pos="rope")
    long = GPT(dataclasses.replace(short.config, block_size=2 * short.config.block_size))
    long.load_state_dict(short.state_dict())
    x = torch.randint(0, 50, (2, short.config.block_size))
    torch.testing.assert_close(long.hidden_states(x), short.hidden_states(x), rtol=0, atol=1e-6)
    assert long.hidden_states(torch.randint(0, 50, (1, 2 * short.config.block_size))).shape == (1, 48, 16)


def test_beam_search_of_one_is_greedy_and_a_wider_beam_scores_at_least_as_well():
    gpt = tiny_gpt(seed=3)
    for prompt in ([4, 9, 2], [7], [1, 2, 3, 4, 5]):
        greedy = greedy_translate(gpt, prompt, 12, eot_id=0)
        assert beam_search(gpt, prompt, 1, 12, eot_id=0) == greedy
        beam = beam_search(gpt, prompt, 4, 12, eot_id=0, len_alpha=0.0)
        if len(greedy) < 12 and len(beam) < 12:  # both finished: the beam's total log-probability is no lower
            assert sequence_logprob(gpt, prompt, beam, 0) >= sequence_logprob(gpt, prompt, greedy, 0) - 1e-5


# ----- finetune.py end to end --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny GPT pre-trained for 15 steps on the bundled IMDb train sample with a 300-token BPE."""
    root = tmp_path_factory.mktemp("ft")
    prepared = prepare_dataset("imdb_text", out_dir=root / "imdb300", vocab_size=300)
    rec = train_mod.main(["--dataset", "imdb_text", "--prepared_dir", str(prepared), "--n_layer", "2", "--n_head", "2",
                          "--n_embd", "32", "--block_size", "192", "--batch_size", "4", "--eval_iters", "1",
                          "--max_steps", "15", "--eval_every", "15", "--log_every", "5", "--peak_flops", "1e11",
                          "--threads", "1", "--out_dir", str(root / "pre"), "--run_dir", str(root / "pre_run")])
    return {"root": root, "ckpt": rec["checkpoint"], "prepared": prepared}


def ft_args(pretrained, out, *extra):
    return ["--init_from", pretrained["ckpt"], "--arch_from", pretrained["ckpt"], "--max_len", "48",
            "--batch_size", "8", "--limit_train", "96", "--log_every", "2", "--threads", "1", "--test_limit", "40",
            "--val_fraction", "0.02",
            "--out_dir", str(pretrained["root"] / out), "--run_dir", str(pretrained["root"] / (out + "_run")), *extra]


def test_finetune_classify_modes_train_what_they_say(pretrained):
    full = finetune.main(ft_args(pretrained, "cls_full", "--max_steps", "4", "--lr", "1e-3"))
    assert full["task"] == "classification" and full["init"] == "pretrained" and full["split"] == "val"
    assert 0 <= full["metrics"]["accuracy"] <= 1 and full["n_examples"] == 40
    assert full["trainable_params"] == full["params"]
    head = finetune.main(ft_args(pretrained, "cls_head", "--max_steps", "2", "--mode", "head"))
    assert head["trainable_params"] == 32 * 2 + 2  # one linear layer C -> 2 classes
    lora = finetune.main(ft_args(pretrained, "cls_lora", "--max_steps", "2", "--mode", "lora", "--lora_rank", "2"))
    per_layer = 2 * (32 + 96) + 2 * (32 + 32) + 2 * (32 + 128) + 2 * (128 + 32)
    assert lora["trainable_params"] == 2 * per_layer + 66
    scratch = finetune.main(ft_args(pretrained, "cls_scratch", "--max_steps", "2", "--init_from", "scratch"))
    assert scratch["init"] == "scratch" and scratch["params"] == full["params"]
    assert scratch["pretrained_weights"] is None and full["pretrained_weights"]  # scratch starts from no weights
    # the pre-trained trunk was really loaded (and the scratch one was not)
    pre, _, _ = load_model(pretrained["ckpt"])
    _, m_head, _, _, _ = finetune.load_finetuned(head["checkpoint"])
    _, m_scratch, _, _, _ = finetune.load_finetuned(scratch["checkpoint"])
    w = "transformer.h.0.attn.c_attn.weight"
    assert torch.equal(m_head.gpt.state_dict()[w], pre.state_dict()[w])  # frozen in head mode
    assert not torch.allclose(m_scratch.gpt.state_dict()[w], pre.state_dict()[w])


def test_finetune_overfits_a_few_real_reviews(pretrained):
    """16 real reviews, 40 epochs: the training loss must fall to near zero (a broken head, pooling or gradient
    path would keep it near log 2)."""
    finetune.main(ft_args(pretrained, "cls_fit", "--limit_train", "16", "--epochs", "40", "--eval_every", "80",
                          "--lr", "3e-3", "--warmup_steps", "2", "--dropout", "0", "--test_limit", "8"))
    from scripts.log import read_metrics

    steps = [r for r in read_metrics(pretrained["root"] / "cls_fit_run" / "metrics.jsonl") if "loss" in r]
    assert steps[-1]["step"] == 80
    assert steps[0]["loss"] > 0.5 and steps[-1]["loss"] < 0.1, (steps[0]["loss"], steps[-1]["loss"])


def test_finetune_resume_is_bit_identical(pretrained):
    whole = finetune.main(ft_args(pretrained, "res_whole", "--max_steps", "6", "--eval_every", "3", "--lr", "1e-3"))
    finetune.main(ft_args(pretrained, "res_part", "--max_steps", "3", "--schedule_steps", "6", "--eval_every", "3",
                          "--lr", "1e-3"))
    finetune.main(ft_args(pretrained, "res_part", "--max_steps", "6", "--schedule_steps", "6", "--eval_every", "3",
                          "--lr", "1e-3", "--resume"))
    a = load_checkpoint(pretrained["root"] / "res_whole" / finetune.LAST, kind="stage5_gpt")
    b = load_checkpoint(pretrained["root"] / "res_part" / finetune.LAST, kind="stage5_gpt")
    assert a["step"] == b["step"] == 6 and b["resumed_at_steps"] == [3]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert whole["steps"] == 6


def test_finetune_translate_and_multitask_end_to_end(pretrained):
    tr = finetune.main(ft_args(pretrained, "tr", "--task", "translate", "--max_steps", "3", "--beam_size", "2",
                               "--test_limit", "3", "--lr", "1e-3"))
    assert tr["task"] == "translation" and tr["split"] == "test_2016_flickr"
    assert {"test_2016_flickr/bleu", "test_2017_mscoco/bleu_greedy", "bleu", "chrf"} <= set(tr["metrics"])
    assert tr["beam_size"] == 2 and len(tr["examples"]["test_2016_flickr"]) == 3
    mt = finetune.main(ft_args(pretrained, "mt", "--task", "multitask", "--mix", "classify=2,translate=1,lm=1",
                               "--max_steps", "6", "--test_limit", "3", "--beam_size", "1",
                               "--prepared_dir", str(pretrained["prepared"]), "--lm_dataset", "imdb_text"))
    assert {"classify/accuracy", "translate/bleu", "lm/val_loss"} <= set(mt["metrics"])
    # the steps each task trained (read against the single-task models) and the pre-trained weights it started from
    assert sum(mt["steps_per_task"].values()) == mt["steps"] == 6 and set(mt["steps_per_task"]) == {
        "classify", "translate", "lm"}
    assert tr["steps_per_task"] == {"translate": 3}
    pre = load_checkpoint(pretrained["ckpt"], kind="stage5_gpt")["model"]
    assert mt["pretrained_weights"] == tr["pretrained_weights"] == weights_fingerprint(clean_state_dict(pre))
    cfg, model, tok, info, _ = finetune.load_finetuned(mt["checkpoint"])
    out = finetune.run_text(model, tok, info, cfg, "classify: A wonderful film.")
    assert math.isclose(sum(out["probabilities"].values()), 1.0, rel_tol=1e-5)
    assert "translation" in finetune.run_text(model, tok, info, cfg, "translate: A dog runs.")
    with pytest.raises(UserError, match="unknown task prefix"):
        finetune.run_text(model, tok, info, cfg, "summarise: A dog runs.")


def test_finetune_classifies_past_the_context_of_a_rope_model(pretrained):
    rec = train_mod.main(["--dataset", "imdb_text", "--prepared_dir", str(pretrained["prepared"]), "--n_layer", "1",
                          "--n_head", "2", "--n_embd", "16", "--block_size", "32", "--pos", "rope", "--batch_size",
                          "2", "--eval_iters", "1", "--max_steps", "2", "--eval_every", "2", "--peak_flops", "1e11",
                          "--threads", "1", "--out_dir", str(pretrained["root"] / "rope"),
                          "--run_dir", str(pretrained["root"] / "rope_run")])
    args = ft_args(pretrained, "rope_ft", "--max_steps", "2")
    args[1] = args[3] = rec["checkpoint"]
    r = finetune.main(args + ["--max_len", "96"])
    assert r["model_config"]["block_size"] == 96 and r["pretrained_context"] == 32
    assert r["truncation"] == "96 BPE tokens (head_tail)"
    with pytest.raises(UserError, match="only a RoPE model can classify"):
        finetune.main(args + ["--max_len", "96", "--task", "translate"])


def test_forgetting_is_the_pretraining_loss_of_each_model(pretrained, char_data):
    """finetune.py forgetting: the pre-training corpus's fixed validation windows, scored by the pre-trained model
    and by one fine-tuned from it; the first number is recomputed here by hand from the same windows."""
    ft = finetune.main(ft_args(pretrained, "forget", "--max_steps", "6", "--lr", "1e-2", "--warmup_steps", "1"))
    flags = ["--lm_dataset", "imdb_text", "--prepared_dir", str(pretrained["prepared"]), "--batch_size", "2",
             "--dtype", "float32", "--threads", "1"]
    rec = finetune.main(["forgetting", pretrained["ckpt"], ft["checkpoint"], *flags])
    first, tuned = rec["models"]
    assert first["kind"] == "pre-trained" and tuned["kind"] == "fine-tuned: classify"
    gpt = load_model(pretrained["ckpt"])[0].eval()
    from stage5_gpt.utils.data import load_meta, load_split

    val = load_split(pretrained["prepared"], "val", load_meta(pretrained["prepared"]))
    with torch.no_grad():
        by_hand = [float(gpt(*td.lm_batch(val, 2, gpt.config.block_size, 0, k))[1])
                   for k in range(finetune.LM_EVAL_BATCHES)]
    assert first["lm_val_loss"] == pytest.approx(sum(by_hand) / len(by_hand), abs=1e-5)
    assert tuned["lm_val_loss"] != pytest.approx(first["lm_val_loss"], abs=1e-3)  # fine-tuning moved the trunk
    assert tuned["increase_over_first"] == pytest.approx(tuned["lm_val_loss"] - first["lm_val_loss"])
    # each row names the weights it scored (compare.py merges files that scored the same pre-trained weights)
    assert first["weights"] == ft["pretrained_weights"] == weights_fingerprint(
        clean_state_dict(load_checkpoint(pretrained["ckpt"])["model"]))
    assert tuned["weights"] == weights_fingerprint(clean_state_dict(load_checkpoint(ft["checkpoint"])["model"]))
    assert tuned["weights"] != first["weights"]
    with pytest.raises(UserError, match="does not exist"):
        finetune.main(["forgetting", pretrained["ckpt"], "nope.pt", *flags])
    char = train_mod.main(["--prepared_dir", str(char_data), "--n_layer", "1", "--n_head", "2", "--n_embd", "16",
                           "--block_size", "64", "--batch_size", "2", "--eval_iters", "1", "--max_steps", "1",
                           "--peak_flops", "1e11", "--out_dir", str(pretrained["root"] / "forget_char"),
                           "--run_dir", str(pretrained["root"] / "forget_char_run")])
    with pytest.raises(UserError, match="another tokenizer"):
        finetune.main(["forgetting", pretrained["ckpt"], char["checkpoint"], *flags])


def test_task_of_step_follows_the_mix():
    picks = [td.task_of_step(0, s, ["a", "b"], [3.0, 1.0]) for s in range(2000)]
    assert 0.7 < picks.count("a") / 2000 < 0.8
    assert picks == [td.task_of_step(0, s, ["a", "b"], [3.0, 1.0]) for s in range(2000)]


# ----- one-line errors -----------------------------------------------------------------------------------------

def test_bad_inputs_are_one_line_errors(pretrained, tmp_path):
    args = ft_args(pretrained, "bad", "--max_steps", "1")
    with pytest.raises(UserError, match="longer than the context .* only a RoPE model"):
        finetune.main(args + ["--max_len", "500"])  # the fixture's model has a learned position table
    with pytest.raises(UserError, match="rank"):
        finetune.main(args + ["--mode", "lora", "--lora_rank", "0"])
    with pytest.raises(UserError, match="larger than the layer"):
        finetune.main(args + ["--mode", "lora", "--lora_rank", "33"])
    with pytest.raises(UserError, match="unknown task 'summarise'"):
        finetune.main(args + ["--task", "multitask", "--mix", "classify=1,summarise=1"])
    with pytest.raises(UserError, match="needs classify"):
        finetune.main(args + ["--task", "translate", "--mode", "head"])
    with pytest.raises(UserError, match="does not exist"):
        finetune.main(args + ["--init_from", str(tmp_path / "nope.pt")])
    with pytest.raises(UserError, match="nothing to continue"):
        finetune.main(ft_args(pretrained, "never_ran", "--max_steps", "1", "--resume"))
    with pytest.raises(UserError, match="pre-trained language model"):
        finetune.main(["evaluate", "--checkpoint", pretrained["ckpt"], "--text", "hi"])


def test_checkpoints_that_do_not_fit_are_refused(pretrained, tmp_path, char_data):
    rec = finetune.main(ft_args(pretrained, "cls_for_errors", "--max_steps", "1"))
    with pytest.raises(CheckpointError, match="fine-tuned"):
        load_model(rec["checkpoint"])  # generate.py / evaluate.py get a one-line error
    with pytest.raises(UserError, match="fine-tuned checkpoint"):
        finetune.main(ft_args(pretrained, "x", "--max_steps", "1", "--init_from", rec["checkpoint"]))
    char = train_mod.main(["--prepared_dir", str(char_data), "--n_layer", "1", "--n_head", "2", "--n_embd", "16",
                           "--block_size", "64", "--batch_size", "2", "--eval_iters", "1", "--max_steps", "1",
                           "--peak_flops", "1e11", "--out_dir", str(tmp_path / "char"), "--run_dir",
                           str(tmp_path / "char_run")])
    with pytest.raises(UserError, match="without <|endoftext|>"):
        finetune.main(ft_args(pretrained, "y", "--max_steps", "1", "--init_from", char["checkpoint"]))
    with pytest.raises(UserError, match="empty"):
        cfg, model, tok, info, _ = finetune.load_finetuned(rec["checkpoint"])
        finetune.run_text(model, tok, info, cfg, "   ")


def test_lm_task_refuses_a_corpus_with_another_tokenizer(pretrained, tmp_path):
    other = prepare_dataset("imdb_text", out_dir=tmp_path / "imdb280", vocab_size=280)
    with pytest.raises(UserError, match="another tokenizer"):
        finetune.main(ft_args(pretrained, "z", "--task", "multitask", "--mix", "lm=1", "--max_steps", "1",
                              "--prepared_dir", str(other), "--lm_dataset", "imdb_text"))


def test_bpe_of_the_pretrained_checkpoint_is_used(pretrained):
    _, tok, _ = load_model(pretrained["ckpt"])
    assert isinstance(tok, ByteLevelBPE) and tok.vocab_size == 300
    ids = td.encode_for_classification(tok, ["Great<br />film"], 48)[0]
    assert ids[-1] == tok.eot_id and tok.decode(ids[:-1]) == "Great film"
    assert dataclasses.is_dataclass(finetune.FinetuneConfig)
