"""Our samplers against diffusers 0.42.1's: same timesteps, σ, noise draws and every step.

A fixed smooth fake "model" is run from the same initial noise through both schedulers (same
generator seeds for the stochastic ones); every step's x_{t-1} and x̂_0 must agree to 1e-5 in
float32 (measured: 0, the arithmetic is the same operation for operation).
"""

from __future__ import annotations

import inspect
import json
import logging

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from attnvision.diffusion import samplers as ours  # noqa: E402
from attnvision.diffusion.samplers import make_scheduler  # noqa: E402

logging.getLogger("diffusers").setLevel(logging.ERROR)
# diffusers' own np.array(tensor) under numpy 2, not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PAIRS = {
    "ddpm": (ours.DDPMScheduler, diffusers.DDPMScheduler),
    "ddim": (ours.DDIMScheduler, diffusers.DDIMScheduler),
    "dpm++": (ours.DPMSolverMultistepScheduler, diffusers.DPMSolverMultistepScheduler),
    "euler": (ours.EulerDiscreteScheduler, diffusers.EulerDiscreteScheduler),
}
SCHEDULES = {
    "linear": {"beta_schedule": "linear"},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
}
SHAPE = (2, 4, 8, 8)
ATOL = 1e-5


def fake_model(x: torch.Tensor, t: torch.Tensor, learned_variance: bool = False) -> torch.Tensor:
    """A deterministic smooth function of (x, t); with learned_variance a 2C output whose
    second half, in [-1, 1], is the variance interpolation v."""
    phase = torch.arange(x[0].numel(), dtype=torch.float32).reshape(x.shape[1:]) * 0.37
    out = torch.tanh(0.7 * x) * 0.9 + 0.2 * torch.sin(phase + float(t) / 97.0)
    if learned_variance:
        return torch.cat([out, torch.sin(3 * phase + float(t) / 50.0).expand_as(out)], dim=1)
    return out


def pred_x0(result, scheduler) -> torch.Tensor:
    x0 = getattr(result, "pred_original_sample", None)
    return scheduler.model_outputs[-1] if x0 is None else x0  # DPM-Solver keeps it there


def compare_loops(name: str, config: dict, steps: int, seed: int = 0, step_kwargs=None,
                  learned_variance: bool = False, shape: tuple[int, ...] = SHAPE) -> float:
    """Run both samplers side by side; assert every step agrees; return the largest gap."""
    ours_cls, ref_cls = PAIRS[name]
    # from_config: both ignore the keys that are another sampler's (clip_sample for DPM)
    a, b = ours_cls.from_config(config), ref_cls.from_config(config)
    a.set_timesteps(steps)
    b.set_timesteps(steps)
    assert torch.equal(a.timesteps, b.timesteps), (a.timesteps, b.timesteps)
    assert a.timesteps.dtype == b.timesteps.dtype
    if hasattr(b, "sigmas"):
        assert torch.equal(a.sigmas, b.sigmas)
    assert float(a.init_noise_sigma) == float(b.init_noise_sigma)

    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    xa, xb = noise * a.init_noise_sigma, noise * b.init_noise_sigma
    gen_a = torch.Generator().manual_seed(seed + 1)
    gen_b = torch.Generator().manual_seed(seed + 1)
    worst = 0.0
    for t in b.timesteps:
        in_a, in_b = a.scale_model_input(xa, t), b.scale_model_input(xb, t)
        torch.testing.assert_close(in_a, in_b, atol=ATOL, rtol=0)
        out_a, out_b = fake_model(in_a, t, learned_variance), fake_model(in_b, t, learned_variance)
        ra = a.step(out_a, t, xa, generator=gen_a, **(step_kwargs or {}))
        rb = b.step(out_b, t, xb, generator=gen_b, **(step_kwargs or {}))
        for mine, ref in ((ra.prev_sample, rb.prev_sample), (ra.pred_original_sample,
                                                             pred_x0(rb, b))):
            assert mine.dtype == ref.dtype and mine.shape == ref.shape
            gap = (mine - ref).abs().max().item()
            assert gap <= ATOL, f"{name} {config} steps={steps} t={int(t)}: gap {gap}"
            worst = max(worst, gap)
        xa, xb = ra.prev_sample, rb.prev_sample
    # the generators were used alike: the next draw is the same
    assert torch.equal(torch.randn(3, generator=gen_a), torch.randn(3, generator=gen_b))
    return worst


@pytest.mark.parametrize("name", list(PAIRS))
def test_defaults_are_diffusers_defaults(name):
    ours_cls, ref_cls = PAIRS[name]
    params = inspect.signature(ref_cls.__init__).parameters
    ref_defaults = {k: p.default for k, p in params.items() if k != "self"}
    assert set(ours_cls.DEFAULTS) == set(ref_defaults)
    for key, value in ref_defaults.items():
        mine = ours_cls.DEFAULTS[key]
        assert mine == value and type(mine) is type(value), (key, mine, value)
    a, b = ours_cls(), ref_cls()
    assert {k: v for k, v in a.config.items() if not k.startswith("_")} == {
        k: v for k, v in b.config.items() if not k.startswith("_")}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("name", list(PAIRS))
def test_training_schedule_is_the_same(name, schedule):
    ours_cls, ref_cls = PAIRS[name]
    a, b = ours_cls(**SCHEDULES[schedule]), ref_cls(**SCHEDULES[schedule])
    assert torch.equal(a.betas, b.betas)
    assert torch.equal(a.alphas_cumprod, b.alphas_cumprod)


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_timesteps_and_sigmas_are_the_same(name, spacing, offset):
    ours_cls, ref_cls = PAIRS[name]
    config = {"timestep_spacing": spacing, "steps_offset": offset}
    for train_steps in (1000, 100):
        for steps in (1, 2, 3, 7, 10, 14, 15, 25, 33, 50, 100, train_steps):
            a, b = ours_cls(num_train_timesteps=train_steps, **config), ref_cls(
                num_train_timesteps=train_steps, **config)
            a.set_timesteps(steps)
            b.set_timesteps(steps)
            assert torch.equal(a.timesteps, b.timesteps), (steps, a.timesteps, b.timesteps)
            assert a.timesteps.dtype == b.timesteps.dtype
            if hasattr(b, "sigmas"):
                assert torch.equal(a.sigmas, b.sigmas)
            assert float(a.init_noise_sigma) == float(b.init_noise_sigma)


@pytest.mark.parametrize("steps", [1, 10, 25, 50])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("name", list(PAIRS))
def test_sampling_loop_matches(name, schedule, prediction, spacing, steps):
    config = {**SCHEDULES[schedule], "prediction_type": prediction, "timestep_spacing": spacing}
    if name in ("ddpm", "ddim"):
        config["clip_sample"] = False  # so that x̂_0 is compared unclamped
    compare_loops(name, config, steps)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ddpm_full_chain_of_1000_steps(schedule, prediction):
    compare_loops("ddpm", {**SCHEDULES[schedule], "prediction_type": prediction}, 1000)


@pytest.mark.parametrize("steps", [10, 50, 1000])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
def test_ddpm_variance_types(variance_type, steps):
    config = {"variance_type": variance_type, "clip_sample": False}
    compare_loops("ddpm", config, steps, learned_variance=variance_type == "learned_range")


@pytest.mark.parametrize("config", [
    {}, {"clip_sample_range": 2.0}, {"timestep_spacing": "trailing", "steps_offset": 1},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
     "steps_offset": 1},
], ids=["defaults", "clip2", "trailing-offset", "sd-leading-offset"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_default_and_stable_diffusion_like_configs(name, config):
    compare_loops(name, config, 20)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clipped", [False, True])
def test_ddim_eta_draws_the_same_noise(eta, clipped):
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
              "set_alpha_to_one": False, "clip_sample": clipped}
    compare_loops("ddim", config, 25, step_kwargs={"eta": eta,
                                                   "use_clipped_model_output": clipped})


@pytest.mark.parametrize("config", [
    {"solver_order": 1}, {"solver_order": 3}, {"solver_type": "heun"},
    {"final_sigmas_type": "sigma_min"}, {"final_sigmas_type": "sigma_min", "solver_order": 3},
    {"lower_order_final": False, "final_sigmas_type": "sigma_min"},
    {"euler_at_final": True, "final_sigmas_type": "sigma_min"},
    {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1},
    {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1,
     "timestep_spacing": "trailing"},
    {"prediction_type": "sample"}, {"variance_type": "learned_range"},
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("steps", [5, 14, 15, 20])
def test_dpm_solver_options(config, steps):
    if "variance_type" in config:  # diffusers keeps channels [:3] of a learned-variance output
        compare_loops("dpm++", config, steps, learned_variance=True, shape=(2, 3, 8, 8))
    else:
        compare_loops("dpm++", config, steps)


@pytest.mark.parametrize("config", [
    {"final_sigmas_type": "sigma_min"}, {"prediction_type": "sample"},
    {"timestep_spacing": "leading", "steps_offset": 1, "prediction_type": "v_prediction"},
])
def test_euler_options(config):
    compare_loops("euler", config, 30)


@pytest.mark.parametrize("name", list(PAIRS))
def test_zero_terminal_snr(name):
    config = {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction",
              "timestep_spacing": "trailing", "beta_schedule": "scaled_linear",
              "beta_start": 0.00085, "beta_end": 0.012}
    if name in ("ddpm", "ddim"):
        config["clip_sample"] = False
    compare_loops(name, config, 12)


def test_trained_betas():
    betas = torch.linspace(1e-4, 0.03, 1000).tolist()
    for name in PAIRS:
        compare_loops(name, {"trained_betas": betas}, 10)


def test_a_list_of_generators_draws_per_sample():
    a, b = ours.DDPMScheduler(), diffusers.DDPMScheduler()
    a.set_timesteps(5)
    b.set_timesteps(5)
    x = torch.randn(SHAPE)
    out = fake_model(x, 0)
    t = a.timesteps[0]
    ra = a.step(out, t, x, generator=[torch.Generator().manual_seed(i) for i in range(2)])
    rb = b.step(out, t, x, generator=[torch.Generator().manual_seed(i) for i in range(2)])
    assert torch.equal(ra.prev_sample, rb.prev_sample)


@pytest.mark.parametrize("name", list(PAIRS))
def test_add_noise_matches(name):
    ours_cls, ref_cls = PAIRS[name]
    a, b = ours_cls(beta_schedule="scaled_linear"), ref_cls(beta_schedule="scaled_linear")
    a.set_timesteps(20)
    b.set_timesteps(20)
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    timesteps = b.timesteps[[3, 11]]
    torch.testing.assert_close(a.add_noise(x0, noise, timesteps), b.add_noise(x0, noise, timesteps),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("target", ["dpm++", "euler", "ddpm", "ddim"])
@pytest.mark.parametrize("source", list(PAIRS))
def test_switching_sampler_keeps_the_trained_schedule(source, target):
    """make_scheduler(name, other.config) == diffusers' XScheduler.from_config(other.config)."""
    original = PAIRS[source][1](beta_schedule="scaled_linear", beta_start=0.00085,
                                beta_end=0.012, prediction_type="v_prediction")
    mine = make_scheduler(target, original.config)
    theirs = PAIRS[target][1].from_config(original.config)
    assert {k: v for k, v in mine.config.items() if not k.startswith("_")} == {
        k: v for k, v in theirs.config.items() if not k.startswith("_")}
    config = {k: v for k, v in theirs.config.items() if not k.startswith("_")}
    if target in ("ddpm", "ddim"):
        config["clip_sample"] = False
    compare_loops(target, config, 10)


def test_make_dpm_from_a_ddim_config():
    ddim = diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2",
                                   prediction_type="v_prediction", timestep_spacing="trailing")
    mine = make_scheduler("dpm++", ddim.config)
    theirs = diffusers.DPMSolverMultistepScheduler.from_config(ddim.config)
    assert isinstance(mine, ours.DPMSolverMultistepScheduler)
    mine.set_timesteps(20)
    theirs.set_timesteps(20)
    assert torch.equal(mine.timesteps, theirs.timesteps)
    x = torch.randn(SHAPE)
    for t in theirs.timesteps:
        x_mine = mine.step(fake_model(x, t), t, x).prev_sample
        x_theirs = theirs.step(fake_model(x, t), t, x).prev_sample
        torch.testing.assert_close(x_mine, x_theirs, atol=ATOL, rtol=0)
        x = x_theirs


@pytest.mark.parametrize("name", list(PAIRS))
def test_from_pretrained_reads_a_diffusers_folder(name, tmp_path):
    ours_cls, ref_cls = PAIRS[name]
    ref = ref_cls(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  prediction_type="v_prediction", steps_offset=1)
    ref.save_pretrained(tmp_path / "scheduler")
    assert json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())[
        "_class_name"] == ref_cls.__name__
    for loaded in (ours_cls.from_pretrained(tmp_path),
                   ours_cls.from_pretrained(tmp_path / "scheduler", subfolder=None)):
        assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
            k: v for k, v in ref.config.items() if not k.startswith("_")}
        assert torch.equal(loaded.alphas_cumprod, ref.alphas_cumprod)
    # and diffusers reads what we write
    ours_cls.from_pretrained(tmp_path).save_pretrained(tmp_path / "again")
    back = ref_cls.from_pretrained(tmp_path / "again")
    assert {k: v for k, v in back.config.items() if not k.startswith("_")} == {
        k: v for k, v in ref.config.items() if not k.startswith("_")}


def test_make_scheduler_passes_a_diffusers_object_through():
    ref = diffusers.EulerDiscreteScheduler()
    assert make_scheduler(ref) is ref
    built = make_scheduler(diffusers.DDIMScheduler, {"beta_schedule": "scaled_linear"})
    assert isinstance(built, diffusers.DDIMScheduler)
