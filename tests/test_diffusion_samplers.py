"""Noise schedules and samplers against their equations (diffusers parity: tests/reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.diffusion import schedules as sch
from attnvision.diffusion.samplers import (
    SCHEDULERS,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    SchedulerOutput,
    ddim_sigma,
    ddim_step,
    ddpm_posterior_mean,
    ddpm_sigma,
    make_scheduler,
)
from attnvision.errors import UserError

T = 1000
CLASSES = [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler]


# --- schedules -------------------------------------------------------------------------------

def test_linear_and_scaled_linear_alpha_bar_are_products_of_one_minus_beta():
    for betas_np, betas in (
        (np.linspace(1e-4, 0.02, T), sch.linear_betas(T, 1e-4, 0.02)),
        (np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T) ** 2, sch.scaled_linear_betas(T)),
    ):
        np.testing.assert_allclose(betas.numpy(), betas_np, rtol=1e-6)
        expected = np.cumprod(1 - betas_np)  # ᾱ_t = ∏_{s<=t} (1 − β_s), in float64
        np.testing.assert_allclose(sch.alphas_cumprod(betas).numpy(), expected, rtol=1e-5)


def test_cosine_alpha_bar_is_nichol_dhariwal_f_ratio_with_beta_capped():
    def f(t: float) -> float:
        return math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = sch.cosine_betas(T)
    alpha_bar = sch.alphas_cumprod(betas).double()
    expected = torch.tensor([f(t + 1) / f(0) for t in range(T)], dtype=torch.float64)
    # ᾱ_t = f(t+1)/f(0) wherever β was not capped: every step but the last
    torch.testing.assert_close(alpha_bar[:-1], expected[:-1], rtol=2e-5, atol=0)
    assert betas.max() == pytest.approx(0.999) and betas[-1] == pytest.approx(0.999)
    assert (betas[:-1] < 0.999).all()


def test_zero_terminal_snr_ends_at_pure_noise_and_keeps_the_start():
    betas = sch.rescale_zero_terminal_snr(sch.scaled_linear_betas(T))
    alpha_bar = sch.alphas_cumprod(betas)
    assert alpha_bar[-1] == pytest.approx(0, abs=1e-12)
    original = sch.alphas_cumprod(sch.scaled_linear_betas(T))
    assert alpha_bar[0] == pytest.approx(original[0].item(), rel=1e-6)


def test_add_noise_has_the_forward_process_mean_and_variance():
    gen = torch.Generator().manual_seed(0)
    alpha_bar = torch.tensor([0.9, 0.5, 0.01])
    x0 = torch.tensor([1.0, -2.0, 0.5]).reshape(3, 1)
    noise = torch.randn(3, 200_000, generator=gen, dtype=torch.float64).float()
    x_t = sch.add_noise(x0.expand(3, 200_000), noise, alpha_bar)
    torch.testing.assert_close(x_t.mean(1), alpha_bar.sqrt() * x0[:, 0], atol=1e-2, rtol=0)
    torch.testing.assert_close(x_t.var(1), 1 - alpha_bar, atol=1e-2, rtol=2e-2)
    exact = sch.add_noise(x0, torch.zeros_like(x0), alpha_bar)
    torch.testing.assert_close(exact[:, 0], alpha_bar.sqrt() * x0[:, 0])


@settings(max_examples=60, deadline=None)
@given(alpha_bar=st.floats(1e-4, 1 - 1e-4), seed=st.integers(0, 2 ** 16))
def test_v_eps_x0_conversions_are_inverses(alpha_bar, seed):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    ab = torch.tensor(alpha_bar, dtype=torch.float64)
    alpha, sigma = sch.alpha_sigma(ab)
    x_t = sch.add_noise(x0, eps, ab)
    v = sch.velocity(x0, eps, ab)
    close = dict(atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(sch.x0_from_eps(x_t, eps, alpha, sigma), x0, **close)
    torch.testing.assert_close(sch.eps_from_x0(x_t, x0, alpha, sigma), eps, **close)
    torch.testing.assert_close(sch.x0_from_v(x_t, v, alpha, sigma), x0, **close)
    torch.testing.assert_close(sch.eps_from_v(x_t, v, alpha, sigma), eps, **close)
    for kind, output in (("epsilon", eps), ("v_prediction", v), ("sample", x0)):
        torch.testing.assert_close(sch.predict_x0(output, x_t, alpha, sigma, kind), x0, **close)
        torch.testing.assert_close(sch.predict_eps(output, x_t, alpha, sigma, kind), eps, **close)


def test_conversions_take_one_alpha_bar_per_sample():
    x0, eps = torch.randn(3, 2, 5, 5), torch.randn(3, 2, 5, 5)
    alpha_bar = torch.tensor([0.99, 0.5, 0.02])
    x_t = sch.add_noise(x0, eps, alpha_bar)
    for i in range(3):
        torch.testing.assert_close(x_t[i], sch.add_noise(x0[i], eps[i], alpha_bar[i]))
    alpha, sigma = sch.alpha_sigma(alpha_bar)
    torch.testing.assert_close(sch.x0_from_eps(x_t, eps, alpha, sigma), x0, atol=1e-4, rtol=0)


def test_timestep_spacings_follow_their_formulas():
    leading = sch.spaced_timesteps(1000, 10, "leading", steps_offset=1)
    assert leading.tolist() == [901 - 100 * i for i in range(10)]
    trailing = sch.spaced_timesteps(1000, 10, "trailing")
    assert trailing.tolist() == [999 - 100 * i for i in range(10)]
    linspace = sch.spaced_timesteps(1000, 4, "linspace")
    torch.testing.assert_close(linspace, torch.tensor([999, 666, 333, 0], dtype=torch.float64))
    assert sch.spaced_timesteps(1000, 1, "trailing").tolist() == [999]


# --- samplers: a one-point dataset -----------------------------------------------------------

def exact_model(x0: torch.Tensor, scheduler, prediction_type: str):
    """The perfect denoiser of a one-point dataset {x0}: the exact ε (or v, or x0) of x_t."""
    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # the scheduler's own float32 α and σ, so that only float64 rounding is left
        if isinstance(scheduler, EulerDiscreteScheduler):  # x_t is the model's α-scaled input
            ratio = scheduler.sigmas[scheduler.step_index]
            alpha = 1 / (ratio ** 2 + 1) ** 0.5
            sigma = ratio * alpha
        elif isinstance(scheduler, DPMSolverMultistepScheduler):
            ratio = scheduler.sigmas[scheduler.step_index or 0]
            alpha = 1 / (ratio ** 2 + 1) ** 0.5
            sigma = ratio * alpha
        else:
            alpha, sigma = sch.alpha_sigma(scheduler.alphas_cumprod[int(t)])
        eps = sch.eps_from_x0(x_t, x0, alpha, sigma)
        return {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}[
            prediction_type]
    return model


def run_chain(scheduler, model, x_T: torch.Tensor, generator=None) -> torch.Tensor:
    x = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x, generator=generator).prev_sample
    return x


@settings(max_examples=30, deadline=None)
@given(cls=st.sampled_from([DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler]),
       steps=st.integers(1, 60), spacing=st.sampled_from(sch.TIMESTEP_SPACINGS),
       schedule=st.sampled_from(["linear", "scaled_linear"]),
       prediction=st.sampled_from(sch.PREDICTION_TYPES), seed=st.integers(0, 1000))
def test_deterministic_samplers_land_on_the_one_point_exactly(cls, steps, spacing, schedule,
                                                              prediction, seed):
    """A perfect denoiser keeps every step on the line x = α x0 + σ ε̂: DDIM (η = 0), DPM++
    and Euler then end on x0 in any number of steps (their update is exact for constant x̂0)."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(1, 2, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    x_T = torch.randn(1, 2, 4, 4, generator=gen, dtype=torch.float64)
    scheduler = cls(beta_schedule=schedule, timestep_spacing=spacing, prediction_type=prediction,
                    clip_sample=False)
    scheduler.set_timesteps(steps)
    if cls is DDIMScheduler and scheduler.timesteps[-1] >= T // steps:
        spacing = "leading"  # see test_ddim_trailing_may_stop_at_step_0
        scheduler = cls(beta_schedule=schedule, prediction_type=prediction, clip_sample=False)
        scheduler.set_timesteps(steps)
    final = run_chain(scheduler, exact_model(x0, scheduler, prediction), x_T)
    # exact up to the float32 schedule (its α² + σ² is 1 only to ~1e-7), whose rounding Euler
    # multiplies by its starting scale σ_max (157 for the linear schedule)
    atol = 1e-6 * max(1.0, float(scheduler.init_noise_sigma))
    torch.testing.assert_close(final, x0, atol=atol, rtol=0)


def test_ddim_trailing_may_stop_at_step_0():
    """As diffusers, DDIM steps from t to t − T // n: with "trailing" spacing the chain can end
    at t = 0, not past it: a perfect denoiser then gives √ᾱ_0 x0 + √(1 − ᾱ_0) ε̂, not x0."""
    x0 = torch.linspace(-1, 1, 32, dtype=torch.float64).reshape(1, 2, 4, 4)
    scheduler = DDIMScheduler(timestep_spacing="trailing", clip_sample=False)
    scheduler.set_timesteps(6)
    assert scheduler.timesteps[-1] - T // 6 == 0
    exact, outputs = exact_model(x0, scheduler, "epsilon"), []

    def model(x_t, t):
        outputs.append(exact(x_t, t))
        return outputs[-1]

    final = run_chain(scheduler, model, torch.cos(torch.arange(32.0)).reshape(1, 2, 4, 4))
    alpha_0, sigma_0 = sch.alpha_sigma(scheduler.alphas_cumprod[0])
    torch.testing.assert_close(final, alpha_0 * x0 + sigma_0 * outputs[-1], atol=1e-6, rtol=0)
    assert (final - x0).abs().max() > 1e-3


def test_cosine_schedule_also_recovers_the_point():
    x0 = torch.linspace(-1, 1, 32, dtype=torch.float64).reshape(1, 2, 4, 4)
    for cls in (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler):
        scheduler = cls(beta_schedule="squaredcos_cap_v2", clip_sample=False)
        scheduler.set_timesteps(20)
        final = run_chain(scheduler, exact_model(x0, scheduler, "epsilon"), torch.ones_like(x0))
        torch.testing.assert_close(final, x0, atol=1e-6, rtol=0)


def test_ddpm_ends_on_the_point_and_its_last_mean_is_x0():
    x0 = torch.linspace(-1, 1, 32, dtype=torch.float64).reshape(1, 2, 4, 4)
    scheduler = DDPMScheduler(clip_sample=False)
    scheduler.set_timesteps(50)
    final = run_chain(scheduler, exact_model(x0, scheduler, "epsilon"), torch.randn_like(x0),
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(final, x0, atol=1e-8, rtol=0)
    # the posterior mean at ᾱ_{t-1} = 1 is x0 whatever x_t
    point = x0.flatten()[:4].float()
    mean = ddpm_posterior_mean(torch.randn(4), point, torch.tensor(0.3), torch.tensor(1.0))
    torch.testing.assert_close(mean, point, atol=1e-6, rtol=0)


def test_ddim_with_eta_zero_is_deterministic_and_draws_nothing():
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(10)
    x, out = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    gen = torch.Generator().manual_seed(0)
    first = scheduler.step(out, scheduler.timesteps[0], x, generator=gen).prev_sample
    again = scheduler.step(out, scheduler.timesteps[0], x, generator=gen).prev_sample
    assert torch.equal(first, again)
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=gen.manual_seed(0)))


def test_ddim_eta_one_has_ddpm_posterior_variance():
    alpha_bar_t, alpha_bar_prev = torch.tensor(0.3), torch.tensor(0.5)
    torch.testing.assert_close(ddim_sigma(alpha_bar_t, alpha_bar_prev, 1.0),
                               ddpm_sigma(alpha_bar_t, alpha_bar_prev, "fixed_small"))
    # ddim_step's default x̂0 is the epsilon one; with σ = 0 it is the eq. 12 line
    x_t, eps = torch.randn(5), torch.randn(5)
    x0 = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    expected = alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev).sqrt() * eps
    torch.testing.assert_close(ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev), expected)


def test_learned_range_interpolates_the_two_fixed_variances():
    alpha_bar_t, alpha_bar_prev = torch.tensor(0.3), torch.tensor(0.5)
    small = ddpm_sigma(alpha_bar_t, alpha_bar_prev, "fixed_small")
    large = ddpm_sigma(alpha_bar_t, alpha_bar_prev, "fixed_large")
    lo, hi, mid = (ddpm_sigma(alpha_bar_t, alpha_bar_prev, "learned_range", torch.tensor(v))
                   for v in (-1.0, 1.0, 0.0))
    torch.testing.assert_close(lo, small)
    torch.testing.assert_close(hi, large)
    torch.testing.assert_close(mid, (small * large).sqrt())  # the geometric mean of σ
    beta = 1 - alpha_bar_t / alpha_bar_prev
    torch.testing.assert_close(large, beta.sqrt())
    torch.testing.assert_close(small ** 2, (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta)


def test_ddpm_learned_range_reads_the_second_half_of_the_output():
    scheduler = DDPMScheduler(variance_type="learned_range")
    scheduler.set_timesteps(10)
    x, eps = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    t = scheduler.timesteps[0]
    lo = scheduler.step(torch.cat([eps, -torch.ones_like(eps)], 1), t, x,
                        generator=torch.Generator().manual_seed(0)).prev_sample
    hi = scheduler.step(torch.cat([eps, torch.ones_like(eps)], 1), t, x,
                        generator=torch.Generator().manual_seed(0)).prev_sample
    assert lo.shape == x.shape and (hi - lo).abs().max() > 1e-3


# --- the scheduler interface -----------------------------------------------------------------

@pytest.mark.parametrize("cls", CLASSES)
def test_interface(cls, tmp_path):
    scheduler = cls(beta_schedule="scaled_linear", _class_name="Other", _diffusers_version="0.1",
                    not_a_key=3)
    assert scheduler.config.beta_schedule == "scaled_linear" and "not_a_key" not in scheduler.config
    assert "beta_schedule" not in scheduler.config._use_default_values
    assert len(scheduler) == 1000 and scheduler.order == 1
    scheduler.set_timesteps(8)
    x = torch.randn(1, 2, 4, 4)
    out = scheduler.step(torch.zeros_like(x), scheduler.timesteps[0], x)
    assert isinstance(out, SchedulerOutput) and out[0] is out.prev_sample
    assert out.pred_original_sample.shape == x.shape
    scheduler.save_pretrained(tmp_path / "scheduler")
    back = cls.from_pretrained(tmp_path)
    assert back.config.beta_schedule == "scaled_linear"


def test_make_scheduler_names_objects_and_schedule_kept():
    for name in ("ddpm", "ddim", "dpm++", "DPMSolver++", "dpm-solver++", "euler",
                 "DDIMScheduler", "EulerDiscreteScheduler"):
        assert isinstance(make_scheduler(name), tuple(CLASSES))
    ddim = DDIMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction")
    dpm = make_scheduler("dpm++", ddim.config)
    assert isinstance(dpm, DPMSolverMultistepScheduler)
    assert dpm.config.prediction_type == "v_prediction"
    assert dpm.config.timestep_spacing == "linspace"  # DDIM's was its default: DPM's own
    assert torch.equal(dpm.alphas_cumprod, ddim.alphas_cumprod)
    assert make_scheduler(ddim) is ddim
    assert isinstance(make_scheduler(None, {"_class_name": "DDIMScheduler"}), DDIMScheduler)
    assert isinstance(make_scheduler(EulerDiscreteScheduler, ddim.config), EulerDiscreteScheduler)
    assert set(SCHEDULERS) >= {"ddpm", "ddim", "dpm++", "euler"}


@pytest.mark.parametrize("make", [
    lambda: make_scheduler("pndm"),
    lambda: make_scheduler("PNDMScheduler", {}),
    lambda: DDIMScheduler(beta_schedule="sigmoid"),
    lambda: DDPMScheduler(thresholding=True),
    lambda: DDPMScheduler(variance_type="learned"),
    lambda: DPMSolverMultistepScheduler(use_karras_sigmas=True),
    lambda: DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++"),
    lambda: DPMSolverMultistepScheduler(solver_order=4),
    lambda: EulerDiscreteScheduler(interpolation_type="log_linear"),
    lambda: DDIMScheduler(timestep_spacing="karras"),
    lambda: DDIMScheduler(trained_betas=[0.1, 0.2]),
    lambda: DDIMScheduler().set_timesteps(1001),
    lambda: DDIMScheduler().set_timesteps(0),
    lambda: DDIMScheduler().step(torch.zeros(1), 10, torch.zeros(1)),
    lambda: DDPMScheduler(variance_type="learned_range").step(
        torch.zeros(1, 2, 2, 2), 10, torch.zeros(1, 2, 2, 2)),
    lambda: DDPMScheduler.from_pretrained("/nonexistent/folder"),
], ids=["name", "class-name", "schedule", "thresholding", "variance", "karras", "sde", "order4",
        "log-linear", "spacing", "trained-betas", "too-many-steps", "zero-steps", "not-set",
        "no-variance-half", "missing-folder"])
def test_mistakes_are_one_line_user_errors(make):
    with pytest.raises(UserError) as info:
        make()
    assert "\n" not in str(info.value) and str(info.value)


def test_bad_json_is_a_user_error(tmp_path):
    (tmp_path / "scheduler_config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        DDIMScheduler.from_pretrained(tmp_path)
