import dataclasses
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from attnvision.data import Augment, load_dataset
from attnvision.errors import UserError
from attnvision.nn import Encoder, patchify
from attnvision.train import (
    TrainConfig,
    evaluate_classifier,
    fit,
    label_smoothing_cross_entropy,
    parameter_groups,
    warmup_cosine_lr,
    warmup_cosine_schedule,
)
from attnvision.train.ddp import epoch_batches, steps_per_epoch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models: one thread is faster, and immune to a busy machine's spin-waits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


class TinyViT(nn.Module):
    """8×8 digits as 16 patch tokens of 2×2 pixels, a class token, one encoder block."""

    def __init__(self, dim: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.encoder = Encoder(depth=1, dim=dim, num_heads=2, mlp_ratio=2.0, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 1, 8, 8)
        z = self.embed(patchify(x, 2))  # (B, 16, D)
        z = torch.cat([self.cls_token.expand(len(z), -1, -1), z], 1) + self.pos_embed
        return self.head(self.norm(self.encoder(z))[:, 0])  # (B, 10)


def mlp(seed: int = 0, dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(64, 10))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


QUICK = TrainConfig(epochs=3, batch_size=128, lr=3e-3, warmup_epochs=0.5)


# Schedule, loss, parameter groups ----------------------------------------------------------


def test_schedule_warmup_then_cosine_to_min_lr():
    lr = [warmup_cosine_lr(s, 100, 10, base_lr=1.0, min_lr=0.01) for s in range(100)]
    assert lr[0] == pytest.approx(0.1)  # base / W at the first step
    assert lr[9] == pytest.approx(1.0)  # base at the end of the warm-up
    assert lr[99] == pytest.approx(0.01)  # min at the last step
    assert all(a < b for a, b in itertools.pairwise(lr[:10]))
    assert all(a > b for a, b in itertools.pairwise(lr[9:]))
    mid = 9 + (99 - 9) // 2
    assert lr[mid] == pytest.approx(0.01 + 0.99 * 0.5)
    assert warmup_cosine_lr(0, 50, 0, 2.0) == pytest.approx(2.0)  # no warm-up
    assert warmup_cosine_lr(49, 50, 0, 2.0, 0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        warmup_cosine_lr(0, 10, 11, 1.0)


def test_lambda_lr_schedule_matches_the_formula_step_by_step():
    params = [nn.Parameter(torch.zeros(2))]
    opt = torch.optim.SGD([{"params": params, "lr": 0.5}], lr=0.5)
    sched = warmup_cosine_schedule(opt, total_steps=20, warmup_steps=4, min_lr=1e-3)
    for step in range(20):
        assert opt.param_groups[0]["lr"] == pytest.approx(
            warmup_cosine_lr(step, 20, 4, 0.5, 1e-3))
        opt.step()
        sched.step()


def test_each_group_follows_the_formula_from_its_own_base_to_its_own_floor():
    opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(2))], "lr": 0.5},
                           {"params": [nn.Parameter(torch.zeros(2))], "lr": 5.0}], lr=0.5)
    sched = warmup_cosine_schedule(opt, total_steps=12, warmup_steps=3, min_lr=[1e-3, 1e-2])
    for step in range(12):
        for group, base, floor in zip(opt.param_groups, (0.5, 5.0), (1e-3, 1e-2), strict=True):
            assert group["lr"] == pytest.approx(warmup_cosine_lr(step, 12, 3, base, floor))
        opt.step()
        sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(10 * opt.param_groups[0]["lr"])
    with pytest.raises(ValueError, match="2 floors for 1 param groups"):
        warmup_cosine_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 5, 1,
                               [0.0, 0.0])


def test_label_smoothing_loss_is_the_formula():
    torch.manual_seed(1)
    logits, y, eps = torch.randn(7, 5), torch.randint(0, 5, (7,)), 0.1
    logp = logits.log_softmax(-1)
    formula = ((1 - eps) * -logp[torch.arange(7), y] + eps * -logp.mean(-1)).mean()
    torch.testing.assert_close(label_smoothing_cross_entropy(logits, y, eps), formula)
    torch.testing.assert_close(label_smoothing_cross_entropy(logits, y, 0.0),
                               F.nll_loss(logp, y))


def test_no_weight_decay_on_biases_norms_and_embeddings():
    model = TinyViT()
    decay, no_decay = parameter_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert decayed == {"embed.weight", "encoder.blocks.0.attn.qkv.weight",
                       "encoder.blocks.0.attn.proj.weight", "encoder.blocks.0.mlp.fc1.weight",
                       "encoder.blocks.0.mlp.fc2.weight", "head.weight"}
    assert {"cls_token", "pos_embed", "norm.weight", "norm.bias", "head.bias",
            "encoder.blocks.0.norm1.weight"} <= skipped
    assert decayed | skipped == set(names.values()) and not decayed & skipped

    model.no_weight_decay = lambda: {"head.weight"}  # timm's hook names more
    decay, _ = parameter_groups(model, 0.05)
    assert "head.weight" not in {names[id(p)] for p in decay["params"]}


def test_lr_scale_puts_a_part_in_its_own_groups():
    model = TinyViT()
    groups = parameter_groups(model, 0.05, [("head", 10.0), ("encoder.blocks.0.attn", 0.5)])
    names = {id(p): n for n, p in model.named_parameters()}
    named = [({names[id(p)] for p in g["params"]}, g["weight_decay"], g.get("lr_scale"))
             for g in groups]
    assert named[2:] == [({"head.weight"}, 0.05, 10.0), ({"head.bias"}, 0.0, 10.0),
                         ({"encoder.blocks.0.attn.qkv.weight",
                           "encoder.blocks.0.attn.proj.weight"}, 0.05, 0.5),
                         ({"encoder.blocks.0.attn.qkv.bias",
                           "encoder.blocks.0.attn.proj.bias"}, 0.0, 0.5)]
    assert not any(n.startswith(("head.", "encoder.blocks.0.attn."))
                   for params, _, _ in named[:2] for n in params)
    assert sum(len(g["params"]) for g in groups) == len(names)
    # "head" names the module, not any name that starts with the letters.
    model.headless = nn.Linear(2, 2)
    rest = parameter_groups(model, 0.0, [("head", 2.0)])[0]["params"]
    assert any(p is model.headless.weight for p in rest)
    with pytest.raises(UserError, match="no trained parameter's name starts with it"):
        parameter_groups(model, 0.05, [("decoder", 2.0)])
    # A part inside another takes its own factor, whichever comes first.
    nested = parameter_groups(model, 0.05, [("encoder", 2.0), ("encoder.blocks.0.mlp", 5.0)])
    factor = {names[id(p)]: g.get("lr_scale", 1.0) for g in nested for p in g["params"]
              if id(p) in names}
    assert factor["encoder.blocks.0.mlp.fc1.weight"] == 5.0
    assert factor["encoder.blocks.0.attn.qkv.weight"] == 2.0 and factor["head.weight"] == 1.0


def test_fit_trains_a_scaled_part_faster_and_resumes_runs_from_before_the_option(digits,
                                                                                  tmp_path):
    scaled_run = dataclasses.replace(QUICK, epochs=1, lr_scale=(("1", 10.0),))
    fit(mlp(), digits.train, None, scaled_run, tmp_path / "scaled", progress=False)
    state = torch.load(tmp_path / "scaled" / "train_state.pt", weights_only=True)
    first, *_, scaled = state["optimizer"]["param_groups"]
    assert scaled["initial_lr"] == pytest.approx(10 * first["initial_lr"])
    assert scaled["lr"] == pytest.approx(10 * first["lr"])  # the floor scaled too

    # A state written before lr_scale existed resumes as the default (no factor) ...
    plain = dataclasses.replace(QUICK, epochs=1)
    fit(mlp(), digits.train, None, plain, tmp_path / "old", progress=False)
    state = torch.load(tmp_path / "old" / "train_state.pt", weights_only=True)
    del state["config"]["lr_scale"]
    torch.save(state, tmp_path / "old" / "train_state.pt")
    assert fit(mlp(), digits.train, None, plain, tmp_path / "old", progress=False)["epoch"] == 1
    # ... and not as another factor.
    with pytest.raises(UserError, match=r"lr_scale \(\) -> \(\('1', 10.0\),\)"):
        fit(mlp(), digits.train, None, scaled_run, tmp_path / "old", progress=False)


def test_config_rejects_bad_values_in_one_line():
    with pytest.raises(UserError, match="amp must be one of none, bf16"):
        TrainConfig(amp="fp16")
    with pytest.raises(UserError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)


def test_sharding_matches_one_process_and_pads_evenly():
    one = epoch_batches(10, 4, seed=0, epoch=1)
    two = [epoch_batches(10, 4, seed=0, epoch=1, rank=r, world=2) for r in range(2)]
    assert len(one) == len(two[0]) == len(two[1]) == steps_per_epoch(10, 4, 2) == 3
    for step, batch in enumerate(one):
        assert sorted(batch.tolist()) == sorted(two[0][step].tolist() + two[1][step].tolist())
    odd = [torch.cat(epoch_batches(7, 4, seed=0, epoch=2, rank=r, world=2)) for r in range(2)]
    assert len(odd[0]) == len(odd[1]) == 4 and set(torch.cat(odd).tolist()) == set(range(7))
    assert not torch.equal(torch.cat(one), torch.cat(epoch_batches(10, 4, seed=0, epoch=2)))


# Training ----------------------------------------------------------------------------------


def test_fit_learns_digits_and_writes_checkpoints(digits, tmp_path):
    model = mlp()
    config = TrainConfig(epochs=6, batch_size=64, lr=3e-3, warmup_epochs=0.5, eval_every=2)
    result = fit(model, digits.train, digits.test, config, tmp_path, augment=Augment(),
                 metadata={"model": "mlp", "hidden": 64}, progress=False)
    assert result["eval"]["accuracy"] > 0.8, result["eval"]  # chance is 0.1
    assert result["epochs"] == result["epoch"] == 6 and result["global_step"] == 6 * 23
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4, 5, 6]
    assert [("eval" in h) for h in result["history"]] == [False, True, False, True, False, True]
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[-1] < losses[0] and math.isfinite(result["seconds"])
    assert result["history"][-1]["lr"] == pytest.approx(config.min_lr)
    assert result["checkpoint"] == str(tmp_path / "model.safetensors")

    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["best.json", "best.safetensors", "model.json", "model.safetensors",
                     "train_state.pt"]  # and no .tmp leftovers
    weights = load_file(tmp_path / "model.safetensors")
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["metadata"] == {"model": "mlp", "hidden": 64}
    assert info["config"]["lr"] == 3e-3 and info["epoch"] == 6
    assert info["metrics"]["eval"]["accuracy"] == result["eval"]["accuracy"]
    assert info["history"] == result["history"]
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["best"] == result["best"] and best["weights"] == "best.safetensors"
    assert best["best"]["accuracy"] == max(h["eval"]["accuracy"] for h in result["history"]
                                           if "eval" in h)
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["epoch"] == 6 and state["step"] == 6 * 23
    assert {"optimizer", "scheduler", "rng", "model"} <= state.keys()


def test_same_seed_same_run(digits, tmp_path):
    runs = []
    for i in range(2):
        torch.manual_seed(0)
        model = TinyViT()
        fit(model, digits.train, None, QUICK, tmp_path / str(i), augment=Augment(),
            progress=False)
        runs.append(model)
    assert same_weights(*runs)
    torch.manual_seed(0)
    other = TinyViT()
    fit(other, digits.train, None, dataclasses.replace(QUICK, seed=1), tmp_path / "s1",
        augment=Augment(), progress=False)
    assert not same_weights(runs[0], other)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_equals_an_uninterrupted_run(digits, tmp_path):
    def run(out, stop_after=None):
        torch.manual_seed(0)
        model = TinyViT()  # dropout and augmentation: every RNG stream matters

        def stop(record):
            if record["epoch"] == stop_after:
                raise Interrupt

        return model, fit(model, digits.train, digits.test, QUICK, out, augment=Augment(),
                          progress=False, on_epoch_end=stop)

    straight, expected = run(tmp_path / "straight")
    with pytest.raises(Interrupt):
        run(tmp_path / "resumed", stop_after=2)
    state = torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2
    torch.manual_seed(123)  # the global RNG is restored from the checkpoint, whatever it is now
    resumed, result = run(tmp_path / "resumed")
    assert result["resumed_from"] == 2 and result["epoch"] == 3
    assert same_weights(straight, resumed)
    assert result["history"] == [{**h, "seconds": r["seconds"]}
                                 for h, r in zip(expected["history"], result["history"],
                                                 strict=True)]
    assert result["eval"] == expected["eval"]

    # Resuming a finished run trains nothing and answers with its results.
    again = TinyViT()
    done = fit(again, digits.train, digits.test, QUICK, tmp_path / "resumed", progress=False)
    assert done["resumed_from"] == 3 and done["eval"] == expected["eval"]
    assert same_weights(again, straight)


def test_resume_refuses_another_config_and_resume_false_starts_over(digits, tmp_path):
    one = TrainConfig(epochs=1, batch_size=256)
    fit(mlp(), digits.train, None, one, tmp_path, progress=False)
    with pytest.raises(UserError, match=r"another training config \(lr 0.001 -> 0.01\)"):
        fit(mlp(), digits.train, None, TrainConfig(epochs=1, batch_size=256, lr=0.01), tmp_path,
            progress=False)
    fresh = fit(mlp(), digits.train, None, TrainConfig(epochs=1, batch_size=256, lr=0.01),
                tmp_path, progress=False, resume=False)
    assert fresh["resumed_from"] is None
    assert json.loads((tmp_path / "model.json").read_text())["config"]["lr"] == 0.01


def test_a_corrupt_training_state_is_one_line_without_torchs_unsafe_advice(digits, tmp_path):
    # Junk where train_state.pt should be: one line naming the file and what to do; torch's
    # own message would advise weights_only=False, which runs whatever the file holds.
    (tmp_path / "train_state.pt").write_bytes(b"\x80\x02\xc2" + bytes(range(40)))
    with pytest.raises(UserError) as caught:
        fit(mlp(), digits.train, None, TrainConfig(epochs=1, batch_size=256), tmp_path,
            progress=False)
    message = str(caught.value)
    assert message.startswith(f"cannot resume from {tmp_path / 'train_state.pt'} "
                              "(UnpicklingError: Unsupported operand"), message
    assert message.endswith("delete it or train without resuming")
    assert "\n" not in message and "weights_only" not in message


class ListDataset(Dataset):
    """The same examples one by one, as a dataset that is not a TensorDataset."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.data[i]


def test_generic_datasets_custom_loss_and_evaluate(digits, tmp_path):
    calls = []

    def evaluate(model, dataset):
        calls.append(len(dataset))
        return {"score": torch.tensor(0.5), "accuracy": 0.25}

    config = TrainConfig(epochs=2, batch_size=128)
    model_a = mlp(dropout=0)
    fit(model_a, digits.train, None, config, tmp_path / "a", progress=False)
    model_b = mlp(dropout=0)
    result = fit(model_b, ListDataset(digits.train), ListDataset(digits.test), config,
                 tmp_path / "b", evaluate=evaluate, progress=False)
    assert same_weights(model_a, model_b)
    assert calls == [360, 360] and result["eval"] == {"score": 0.5, "accuracy": 0.25}

    seen = []

    def loss_fn(logits, y):
        seen.append(logits.shape)
        return F.cross_entropy(logits, y)

    fit(mlp(), digits.train, None, TrainConfig(epochs=1, batch_size=1000), tmp_path / "c",
        loss_fn=loss_fn, progress=False)
    assert seen == [(1000, 10), (437, 10)]


@pytest.mark.parametrize("native", [True, False])
def test_bf16_autocast_trains_and_says_when_the_cpu_emulates_it(digits, tmp_path, capsys,
                                                                monkeypatch, native):
    monkeypatch.setattr("attnvision.precision.cpu_has_fast_bf16", lambda: native)
    config = TrainConfig(epochs=1, batch_size=256, amp="bf16")
    result = fit(mlp(), digits.train, digits.test, config, tmp_path, progress=False)
    assert math.isfinite(result["train_loss"]) and result["eval"]["accuracy"] > 0.1
    said = capsys.readouterr().err
    assert ("no native bf16" in said) is not native
    assert native or "leave --amp out" in said


def test_bad_inputs_are_one_line_user_errors(digits, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    cases = [
        (lambda: fit(mlp(), digits.train, None, QUICK, a_file, progress=False), "existing file"),
        (lambda: fit(mlp(), empty, None, QUICK, tmp_path / "x", progress=False),
         "training set is empty"),
        (lambda: fit(mlp(), digits.train, empty, QUICK, tmp_path / "x", progress=False),
         "evaluation set is empty"),
    ]
    for call, words in cases:
        with pytest.raises(UserError, match=words) as info:
            call()
        assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_evaluate_classifier_counts():
    class Lookup(nn.Module):  # predicts the class stored in the first pixel
        def forward(self, x):
            return F.one_hot(x.flatten(1)[:, 0].long(), 3).float()

    pred = torch.tensor([0, 1, 1, 2, 2, 0])
    label = torch.tensor([0, 1, 2, 2, 2, 1])
    data = TensorDataset(pred.float()[:, None, None, None].expand(6, 1, 2, 2), label)
    out = evaluate_classifier(Lookup(), data, batch_size=4)
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 1, 2]]
    assert out["per_class_accuracy"] == pytest.approx([1.0, 0.5, 2 / 3])
    assert out["predictions"] == pred.tolist() and out["num_examples"] == 6
    json.dumps(out)
