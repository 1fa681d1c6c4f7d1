"""GRU language model: TBPTT, regularisation, generation, saving, LoRA, resumable training, the CLI."""

import csv
import json

import numpy as np
import pytest
import torch

from grukit.cli import main
from grukit.lm import (
    GRULanguageModel,
    LMConfig,
    add_lora,
    count_parameters,
    load_lora,
    lora_config,
    merge_lora,
    sample_next,
    save_lora,
)
from grukit.lm.training import LMTrainingConfig, train_language_model
from grukit.text import CharTokenizer, TBPTTBatches
from grukit.train import CheckpointError

TEXT = (
    "In the beginning God created the heaven and the earth. And the earth was without form, and void; "
    "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.\n"
) * 8


@pytest.fixture
def tokenizer():
    return CharTokenizer.train([TEXT])


def small_model(tokenizer, seed=0, **overrides):
    torch.manual_seed(seed)
    config = LMConfig(tokenizer.vocab_size, embedding_size=12, hidden_size=20, num_layers=2, **overrides)
    return GRULanguageModel(config, tokenizer)


def test_forward_shapes_tied_weights_and_errors(tokenizer):
    model = small_model(tokenizer, tie_weights=True)
    ids = torch.randint(0, tokenizer.vocab_size, (3, 5))
    logits, state = model(ids)
    assert logits.shape == (3, 5, tokenizer.vocab_size)
    assert [tuple(s.shape) for s in state] == [(1, 3, 20), (1, 3, 12)]  # the last layer is D wide when tied
    assert model.decoder.weight is model.embedding.weight
    with pytest.raises(ValueError, match=rf"expected ids in \[0, {tokenizer.vocab_size}\), got min 0 and max 99"):
        model(torch.tensor([[0, 99]]))
    with pytest.raises(ValueError, match=r"integer ids of shape \(batch, time\), got \(4,\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="weight_dropout in \\[0, 1\\), got 1.5"):
        LMConfig(10, weight_dropout=1.5)


def test_tbptt_with_carried_state_equals_one_long_forward_pass(tokenizer):
    model = small_model(tokenizer).eval()
    tokens = np.array(tokenizer.encode(TEXT))
    batches = TBPTTBatches(tokens, batch_size=3, seq_len=11)
    whole_x = torch.cat([x for x, _ in batches], dim=1)  # (B, n - 1): each row's full stretch
    with torch.no_grad():
        whole, _ = model(whole_x)
        state, pieces = None, []
        for x, _ in batches:
            logits, state = model(x, state)
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-5, atol=1e-5)


def test_awd_regularisation_is_random_in_training_only_and_never_mutates_weights(tokenizer):
    model = small_model(
        tokenizer, embedding_dropout=0.1, input_dropout=0.2, hidden_dropout=0.2, output_dropout=0.2,
        weight_dropout=0.5,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, tokenizer.vocab_size, (2, 6))
    model.train()
    first, _ = model(ids)
    second, _ = model(ids)
    assert not torch.allclose(first, second)
    model.eval()
    torch.testing.assert_close(model(ids)[0], model(ids)[0])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_weight_dropout_reaches_the_recurrent_matrix_only(tokenizer):
    model = small_model(tokenizer, weight_dropout=0.5).train()
    ids = torch.randint(0, tokenizer.vocab_size, (2, 6))
    logits, _ = model(ids)
    logits.sum().backward()
    grad = model.layers[0].weight_hh_l0.grad  # dropped entries get no gradient
    assert (grad == 0).float().mean() > 0.3
    assert (model.layers[0].weight_ih_l0.grad == 0).float().mean() < 0.1


def greedy_rollout(model, prompt_ids, steps):
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(steps):
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt_ids) :]


def test_generation_at_temperature_zero_and_near_zero_is_greedy_argmax(tokenizer):
    model = small_model(tokenizer).eval()
    prompt = tokenizer.encode("And the earth")
    expected = greedy_rollout(model, prompt, 15)
    assert model.generate(prompt, 15, temperature=0)[0].tolist() == expected
    assert model.generate(prompt, 15, temperature=1e-4, seed=3)[0].tolist() == expected
    assert model.generate(prompt, 15, top_k=1, seed=4)[0].tolist() == expected
    assert model.generate(prompt, 15, top_p=1e-6, seed=5)[0].tolist() == expected


def test_seed_makes_sampling_repeatable(tokenizer):
    model = small_model(tokenizer)
    first = model.generate("And the", 30, temperature=1.5, seed=7)
    assert model.generate("And the", 30, temperature=1.5, seed=7) == first
    assert model.generate("And the", 30, temperature=1.5, seed=8) != first
    assert model.training  # generate restores the mode it found
    assert isinstance(first, str) and len(first) == 30


def test_batched_prompts_of_different_lengths_match_single_prompts(tokenizer):
    model = small_model(tokenizer)
    prompts = ["In the beginning", "And", "darkness was upon"]
    batched = model.generate(prompts, 12, temperature=0)
    assert batched == [model.generate(p, 12, temperature=0) for p in prompts]


def test_streaming_yields_one_token_per_step_with_the_same_text(tokenizer):
    model = small_model(tokenizer)
    steps = list(model.stream(["In", "And the"], 9, seed=1))
    assert len(steps) == 9 and all(s.shape == (2,) for s in steps)
    assert "".join(model.stream_text("And", 20, seed=2)) == model.generate("And", 20, seed=2)


def test_sampling_arguments_are_validated(tokenizer):
    logits = torch.randn(2, 5)
    with pytest.raises(ValueError, match="temperature must be a non-negative number, got -1"):
        sample_next(logits, temperature=-1)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\] or None, got 1.5"):
        sample_next(logits, top_p=1.5)
    with pytest.raises(ValueError, match="top_k must be a positive integer or None, got 0"):
        sample_next(logits, top_k=0)
    allowed = set(logits[0].topk(2).indices.tolist())
    generator = torch.Generator().manual_seed(0)
    assert {int(sample_next(logits, top_k=2, generator=generator)[0]) for _ in range(50)} <= allowed
    with pytest.raises(ValueError, match="at least one token, got an empty one"):
        small_model(tokenizer).generate([[]], 3)


def test_save_pretrained_round_trips_weights_and_tokenizer(tmp_path, tokenizer):
    model = small_model(tokenizer, tie_weights=True).eval()
    model.save_pretrained(tmp_path / "lm")
    names = {p.name for p in (tmp_path / "lm").iterdir()}
    assert {"config.json", "model.safetensors", "char_tokenizer.json", "manifest.json"} <= names
    assert json.loads((tmp_path / "lm" / "config.json").read_text())["tie_weights"] is True
    loaded = GRULanguageModel.from_pretrained(tmp_path / "lm")
    ids = torch.randint(0, tokenizer.vocab_size, (2, 7))
    torch.testing.assert_close(loaded(ids)[0], model(ids)[0], rtol=0, atol=0)
    assert loaded.decoder.weight is loaded.embedding.weight
    assert loaded.generate("And", 10, temperature=0) == model.generate("And", 10, temperature=0)


def test_lora_with_zero_b_equals_base_and_merged_equals_unmerged(tmp_path, tokenizer):
    model = small_model(tokenizer).eval()
    ids = torch.randint(0, tokenizer.vocab_size, (2, 9))
    base_logits = model(ids)[0].detach()
    _, total = count_parameters(model)
    add_lora(model, rank=2, alpha=4.0, targets=("weight_ih", "weight_hh"))
    torch.testing.assert_close(model(ids)[0], base_logits, rtol=0, atol=0)  # B = 0: the base model exactly
    trainable, _ = count_parameters(model)
    # per layer: A (2, in) and B (3H, 2) on W_ih and W_hh
    assert trainable == sum(2 * i + 60 * 2 + 2 * 20 + 60 * 2 for i in (12, 20))
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    assert lora_config(model) == {"rank": 2, "alpha": 4.0, "targets": ["weight_hh", "weight_ih"]}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_()
    adapted = model(ids)[0].detach()
    assert not torch.allclose(adapted, base_logits)
    save_lora(model, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == {
        "adapter_config.json", "adapter_model.safetensors", "manifest.json",
    }
    model.save_pretrained(tmp_path / "lm")
    assert (tmp_path / "lm" / "adapter_model.safetensors").is_file()
    torch.testing.assert_close(GRULanguageModel.from_pretrained(tmp_path / "lm").eval()(ids)[0], adapted)
    fresh = load_lora(small_model(tokenizer).eval(), tmp_path / "adapter")  # same base (seed 0) + adapters
    torch.testing.assert_close(fresh(ids)[0], adapted)
    merge_lora(model)
    assert lora_config(model) is None and count_parameters(model)[1] == total
    torch.testing.assert_close(model(ids)[0], adapted, rtol=1e-5, atol=1e-6)


def test_lora_trains_only_the_adapters(tokenizer):
    model = small_model(tokenizer, weight_dropout=0.3)
    add_lora(model, rank=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids = torch.tensor([tokenizer.encode(TEXT[:40])])
    logits, _ = model(ids[:, :-1])
    torch.nn.functional.cross_entropy(logits[0], ids[0, 1:]).backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k for k in changed)
    with pytest.raises(ValueError, match=r"targets among \('weight_ih', 'weight_hh'\), got \('bias_ih',\)"):
        add_lora(small_model(tokenizer), targets=("bias_ih",))


def run_training(model, out, steps_hook=None, resume=False):
    tokens = np.array(model.tokenizer.encode(TEXT))
    config = LMTrainingConfig(batch_size=4, seq_len=12, steps=9, checkpoint_every=3, warmup_steps=2, lr=3e-3)
    return train_language_model(
        model, tokens[:1200], tokens[1200:], out, config, resume=resume, progress=False, tensorboard=False,
        on_step=steps_hook,
    )


def read_losses(path):
    with open(path / "train_log.csv", newline="") as handle:
        return [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(handle)]


def test_interrupted_training_resumes_with_identical_losses(tmp_path, tokenizer):
    straight = small_model(tokenizer, weight_dropout=0.2, hidden_dropout=0.2)
    result = run_training(straight, tmp_path / "straight")
    assert result["steps"] == 9 and "valid_bits_per_char" in result

    def crash(step, loss):
        if step == 5:  # after the step-3 checkpoint, before the step-6 one
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(small_model(tokenizer, weight_dropout=0.2, hidden_dropout=0.2), tmp_path / "resumed", crash)
    resumed = small_model(tokenizer, seed=123, weight_dropout=0.2, hidden_dropout=0.2)  # weights come from disk
    run_training(resumed, tmp_path / "resumed", resume=True)
    assert read_losses(tmp_path / "resumed") == read_losses(tmp_path / "straight")
    for name, tensor in straight.state_dict().items():  # resumed mid-epoch (step 3 of 25), carried state included
        assert torch.equal(resumed.state_dict()[name], tensor), name
    assert (tmp_path / "resumed" / "model" / "char_tokenizer.json").is_file()


def test_resume_refuses_a_checkpoint_of_another_model_config(tmp_path, tokenizer):
    run_training(small_model(tokenizer), tmp_path / "run")
    expected = r"another configuration \(hidden_dropout: checkpoint 0.0, this model 0.3"
    with pytest.raises(CheckpointError, match=expected):
        run_training(small_model(tokenizer, hidden_dropout=0.3), tmp_path / "run", resume=True)


def test_tied_weights_train_and_resume_with_the_tie_kept(tmp_path, tokenizer):
    straight = small_model(tokenizer, tie_weights=True, output_dropout=0.1)
    run_training(straight, tmp_path / "straight")

    def crash(step, loss):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(small_model(tokenizer, tie_weights=True, output_dropout=0.1), tmp_path / "resumed", crash)
    resumed = small_model(tokenizer, seed=5, tie_weights=True, output_dropout=0.1)
    run_training(resumed, tmp_path / "resumed", resume=True)
    assert resumed.decoder.weight is resumed.embedding.weight
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


def test_a_non_finite_gradient_stops_language_model_training_and_names_the_parameter(tmp_path, tokenizer):
    model = small_model(tokenizer)
    poisoned = next(name for name, _ in model.named_parameters() if "weight_hh" in name)

    def poison(step, loss):  # after step 1 lands, make the recurrent weights NaN for step 2
        if step == 1:
            with torch.no_grad():
                dict(model.named_parameters())[poisoned].fill_(float("nan"))

    expected = r"non-finite loss at epoch 1, step 2: first bad gradient in parameter"
    with pytest.raises(FloatingPointError, match=expected):
        run_training(model, tmp_path / "run", poison)


def test_cli_trains_on_text_files_and_generates(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT.replace("; ", ";\n"), encoding="utf-8")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "tokenizer": {"type": "bpe", "vocab_size": 300},
        "model": {"embedding_size": 8, "hidden_size": 16, "num_layers": 1},
        "training": {"batch_size": 2, "seq_len": 8, "warmup_steps": 1},
    }))
    out = tmp_path / "run"
    assert main(["lm", "train", "--text", str(corpus), "--config", str(config), "--out", str(out), "--steps", "3",
                 "--valid-fraction", "0.2", "--no-progress"]) == 0
    assert "3 steps" in capsys.readouterr().out
    assert (out / "model" / "tokenizer.json").is_file() and (out / "tensorboard").is_dir()
    with open(out / "valid_log.csv", newline="") as handle:
        assert next(csv.DictReader(handle))["perplexity"]
    assert main(["lm", "generate", str(out), "--prompt", "And the", "--max-new-tokens", "5", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("And the")


def test_text_files_hold_out_their_last_bytes_for_validation(tmp_path):
    from grukit.lm.corpus import text_file_sources

    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("".join(f"line {i}\n" for i in range(10)), encoding="utf-8")  # 70 bytes
    second.write_text("".join(f"line {i}\n" for i in range(10, 20)), encoding="utf-8")  # 80 bytes
    train, valid = text_file_sources([first, second], valid_fraction=0.2)  # cut at byte 120; line 17 starts at 126
    assert list(train()) + list(valid()) == [f"line {i}\n" for i in range(20)]
    assert list(valid()) == [f"line {i}\n" for i in range(17, 20)]
    with pytest.raises(FileNotFoundError, match="no such text file: .*missing.txt"):
        text_file_sources([tmp_path / "missing.txt"])
