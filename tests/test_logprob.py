"""Log-probabilities of stochastic steps (`functional_sched.step_log_prob`, `step_transition`): the transition read
off every stochastic class's step, against the closed forms, `torch.distributions.Normal`, Flow-GRPO's and DDPO's
log-probabilities; batch invariance; `vmap`, `grad` and `torch.compile`; the README's worked example, run as written."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import diffusers
import pytest
import torch
from specs import SPECS
from specs.flow_sde import FlowGRPOReference, sde_step_with_logprob

import functional_sched as fs
from functional_sched.machinery.logprob import log_density, transition_by_jvp
from functional_sched.testing import Case, latents, toy_model, ulp

README = Path(__file__).resolve().parents[1] / "README.md"
SHAPE = (2, 4, 6, 6)
#: Classes whose noise term goes through more operations than one product: it enters before the update (Euler's
#: churn: x + gamma noise, then the Euler step of it), or its scale is a product formed around it (SEEDS: ComfyUI's
#: `alpha_t * noise * ...` in its order), so that `step` rounds `mean + std * noise` a few more times: held to a few
#: ulps, not one. By name: the classes of helpers still landing may not be registered yet.
CHURNED = ("EulerDiscrete", "EDMEuler", "SEEDS2", "SEEDS3")


def stochastic_cases() -> list[Any]:
    """Every registered class's stochastic configs: the first of each class in the default run, the rest slow."""
    params = []
    for scheduler_class in fs.SCHEDULERS:
        cases = [case for case in map(SPECS[scheduler_class].case, SPECS[scheduler_class].configs) if case.stochastic]
        for index, case in enumerate(cases):
            params.append(pytest.param(case, id=case.id, marks=(pytest.mark.slow,) if index else ()))
    return params


def model_output(sched: Any, state: Any, sample: torch.Tensor) -> torch.Tensor:
    """The toy model's output at the state's step; for a learned variance, its second half of channels a log-ish
    variance in [-1, 1] (DDPM's learned_range) or a positive variance (learned)."""
    output = toy_model(sched.scale_model_input(state, sample), sched.timestep(state))
    if sched._output_like_sample():
        return output
    return torch.cat([output, 0.5 * torch.tanh(output) + 0.5], dim=1)


def walk(case: Case, steps: int = 12, seed: int = 1, dtype: torch.dtype = torch.float32) -> Any:
    """(sched, state, sample, output, noise) before each step of a loop of the case (at most `steps` of them), the
    sample, the model output and the noise in `dtype`."""
    sched = case.scheduler()
    sample = latents(SHAPE, dtype)
    state = sched.init(sample=sample, **case.init_kwargs())
    generator = torch.Generator().manual_seed(seed)
    for _ in range(min(steps, sched.steps_left(state))):
        output = model_output(sched, state, sample).to(dtype)
        noise = torch.randn(SHAPE, generator=generator).to(dtype)
        yield sched, state, sample, output, noise
        sample, state = sched.step(state, output, sample, noise=noise)[:2]


# ------------------------------------------------------------------------------------------------------- coverage
@pytest.mark.parametrize("case", stochastic_cases())
def test_step_is_its_transition(case: Case) -> None:
    """Every stochastic config's step is `mean + std * noise`: the step's own result, within 2 ulps at the terms' scale
    (most bit for bit or within 1; 16 where the noise enters before the update, which scales its rounding), or the
    class says why it is no Gaussian transition."""
    sched = case.scheduler()
    if sched._not_gaussian is not None:
        with pytest.raises(NotImplementedError, match="no Gaussian transition"):
            next(
                iter(fs.step_transition(sched, state, output, sample) for sched, state, sample, output, _ in walk(case))
            )
        return
    ulps = 16 if type(sched).__name__ in CHURNED else 2  # 2: a noise term whose product is formed in another order
    for sched, state, sample, output, noise in walk(case):
        produced = sched.step(state, output, sample, noise=noise)[0]
        mean, std = fs.step_transition(sched, state, output, sample)
        assert mean.shape == std.shape == sample.shape and mean.dtype == std.dtype == sample.dtype
        assert torch.equal(mean, sched.step(state, output, sample, noise=torch.zeros_like(noise))[0])
        assert bool((std >= 0).all())
        term = std * noise
        bound = ulps * ulp(mean.abs() + term.abs())  # an ulp where the terms and the result are
        error = (produced - (mean + term)).abs().double()
        assert bool((error <= bound).all()), (error / bound).max()


#: The classes RL fine-tunes with give their transition in closed form (`_transition`: step_log_prob's fast path);
#: a learned DDPM variance (elementwise, from the model output) is read off the step.
CLOSED_FORMS = (fs.DDIM, fs.DDPM, fs.EulerAncestralDiscrete, fs.FlowMatchEulerDiscrete, fs.FlowMatchSDE)


def learned_variance(sched: Any) -> bool:
    return isinstance(sched, fs.DDPM) and sched.variance_type in ("learned", "learned_range")


@pytest.mark.parametrize(
    "case", [param for param in stochastic_cases() if hasattr(param.values[0].scheduler(), "_transition")]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_closed_forms_are_the_transition_read_off_the_step(case: Case, dtype: torch.dtype) -> None:
    """Where a class gives its transition in closed form, it is the one read off the step by forward mode
    (`transition_by_jvp`, the oracle), bit for bit: the mean, and the std (one per row) in the sample's dtype; with
    the host's scalars (an eager state's cursor) and with the device's gather (no cursor, as compiled code steps).
    The state after is the step's; each reduction of the log-density is the read-off transition's."""
    for sched, state, sample, output, noise in walk(case, steps=6, dtype=dtype):
        expected_mean, expected_std = transition_by_jvp(sched, state, output, sample)
        for current in (state, state.replace(cursor=None)):
            cursor = sched._cursor(current)
            assert (cursor is None) == (current is not state)
            closed_form = sched._transition(current, output, sample, cursor)
            if learned_variance(sched):
                assert closed_form is None
                continue
            mean, std, new_state = closed_form
            assert torch.equal(mean, expected_mean)
            assert torch.equal(torch.broadcast_to(std.to(dtype), sample.shape), expected_std)
            assert torch.equal(new_state.step_index, sched.step(current, output, sample, noise=noise)[1].step_index)
        next_sample = sched.step(state, output, sample, noise=noise)[0]
        for reduce, atol in (("sum", 1e-2), ("mean", 1e-5), ("none", 1e-4)):
            fast = fs.step_log_prob(sched, state, output, sample, next_sample=next_sample, reduce=reduce)[2]
            oracle = log_density(next_sample, expected_mean, expected_std, reduce)
            assert torch.allclose(fast, oracle, rtol=1e-5, atol=atol), (fast - oracle).abs().max()


def test_the_classes_rl_uses_have_closed_forms() -> None:
    """The classes with a closed form are CLOSED_FORMS (and the sglang subclass of flow-match Euler, which steps as
    it); their first stochastic config takes it."""
    with_hook = {cls for cls in fs.SCHEDULERS if getattr(cls, "_transition", None) is not None}
    assert {cls for cls in with_hook if cls in CLOSED_FORMS} == set(CLOSED_FORMS)
    assert all(issubclass(cls, fs.FlowMatchEulerDiscrete) for cls in with_hook - set(CLOSED_FORMS))
    for cls in CLOSED_FORMS:
        case = next(param.values[0] for param in stochastic_cases() if type(param.values[0].scheduler()) is cls)
        sched, state, sample, output, _ = next(iter(walk(case, steps=1)))
        assert sched._transition(state, output, sample, sched._cursor(state)) is not None


def test_every_stochastic_class_is_covered_but_two() -> None:
    """The classes left out, and why: DPMSolverSDE, whose Brownian noise is shared between an interval's calls, and
    DPMSolverAdaptive, whose noise is added only where its controller accepts an attempt (a decision of the data)."""
    left_out = {cls.__name__ for cls in fs.SCHEDULERS if cls._not_gaussian is not None}
    assert left_out == {"DPMSolverSDE", "DPMSolverAdaptive"}


# ---------------------------------------------------------------------------------------------------- closed forms
def first_steps(sched: Any, reference: Any, steps: int = 6) -> Any:
    """(our state, the reference's timestep index, sample, epsilon-like output) at each step of a loop."""
    sample = latents(SHAPE, torch.float64)
    state = sched.init(steps, sample=sample)
    for index in range(steps):
        output = toy_model(sample, sched.timestep(state))
        yield state, index, sample, output
        sample, state = sched.step(state, output, sample, noise=torch.randn_like(sample))[:2]


@pytest.mark.parametrize(
    ("sched", "reference_class"),
    [
        (fs.DDIM(eta=1.0, clip_sample=False, set_alpha_to_one=False), diffusers.DDIMScheduler),
        (fs.DDIM(eta=0.3, clip_sample=False, timestep_spacing="trailing"), diffusers.DDIMScheduler),
        (fs.DDPM(clip_sample=False, beta_schedule="scaled_linear"), diffusers.DDPMScheduler),
        (fs.DDPM(clip_sample=False, variance_type="fixed_large"), diffusers.DDPMScheduler),
    ],
    ids=["ddim-eta-1", "ddim-eta-0.3-trailing", "ddpm-fixed-small", "ddpm-fixed-large"],
)
def test_alpha_bar_transitions_are_the_closed_form(sched: Any, reference_class: type) -> None:
    """DDIM (Song et al. 2021, eq. 12 and 16) and DDPM's posterior (Ho et al. 2020, eq. 7) from diffusers' alpha_bar,
    in float64: mean and std to 1e-12."""
    options = {name: getattr(sched, name) for name in ("beta_schedule", "timestep_spacing", "clip_sample")}
    reference = reference_class(**options)
    alpha_bar = reference.alphas_cumprod.double()
    for state, _, sample, output in first_steps(sched, reference):
        t = int(sched.timestep(state)[0])
        if isinstance(sched, fs.DDIM):
            prev = t - sched.num_train_timesteps // 6
            final = 1.0 if sched.set_alpha_to_one else alpha_bar[0]
            a, a_prev = alpha_bar[t], (alpha_bar[prev] if prev >= 0 else torch.as_tensor(final, dtype=torch.float64))
            std = sched.eta * torch.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
            x0 = (sample - torch.sqrt(1 - a) * output) / torch.sqrt(a)
            mean = torch.sqrt(a_prev) * x0 + torch.sqrt(1 - a_prev - std**2) * output
        else:
            timesteps = sched.timesteps(state).tolist()
            following = timesteps[timesteps.index(t) + 1] if t != timesteps[-1] else -1
            a = alpha_bar[t]
            a_prev = alpha_bar[following] if following >= 0 else torch.tensor(1.0, dtype=torch.float64)
            beta = 1 - a / a_prev
            variance = (1 - a_prev) / (1 - a) * beta if sched.variance_type == "fixed_small" else beta
            std = torch.sqrt(variance) if t > 0 else torch.zeros((), dtype=torch.float64)
            x0 = (sample - torch.sqrt(1 - a) * output) / torch.sqrt(a)
            mean = (torch.sqrt(a_prev) * beta * x0 + torch.sqrt(a / a_prev) * (1 - a_prev) * sample) / (1 - a)
        got_mean, got_std = fs.step_transition(sched, state, output, sample)
        assert torch.allclose(got_mean, mean, rtol=1e-12, atol=1e-12)
        assert torch.allclose(got_std, std.expand_as(got_std), rtol=1e-12, atol=0)


def test_euler_ancestral_transition_is_the_closed_form() -> None:
    """Euler a (k-diffusion's `sample_euler_ancestral`): mean x + (sigma_down - sigma) eps, std sigma_up, float64."""
    sched = fs.EulerAncestralDiscrete(beta_schedule="scaled_linear")
    for state, index, sample, output in first_steps(sched, None):
        sigma, following = sched.sigmas(state)[index].double(), sched.sigmas(state)[index + 1].double()
        up = torch.sqrt(following**2 * (sigma**2 - following**2) / sigma**2)
        down = torch.sqrt(following**2 - up**2)
        mean, std = fs.step_transition(sched, state, output, sample)
        assert torch.allclose(mean, sample + (down - sigma) * output, rtol=1e-12, atol=1e-12)
        assert torch.allclose(std, up.expand_as(std), rtol=1e-12, atol=0)


def test_stochastic_flow_euler_transition_is_the_closed_form() -> None:
    """FlowMatchEulerDiscrete with stochastic_sampling: mean (1 - sigma') x0, x0 = x - sigma v, std sigma'."""
    sched = fs.FlowMatchEulerDiscrete(shift=3.0, stochastic_sampling=True)
    for state, index, sample, output in first_steps(sched, None):
        sigma, following = sched.sigmas(state)[index], sched.sigmas(state)[index + 1]
        mean, std = fs.step_transition(sched, state, output, sample)
        assert torch.allclose(mean, (1 - following) * (sample - sigma * output), rtol=1e-12, atol=1e-12)
        assert torch.allclose(std, following.expand_as(std), rtol=1e-12, atol=0)


@pytest.mark.parametrize("noise_level", [0.7, 1.0])
def test_flow_sde_log_prob_is_flow_grpos(noise_level: float) -> None:
    """FlowMatchSDE's transition and log-probability (reduce="mean", Flow-GRPO's) against Flow-GRPO's own function
    on diffusers' scheduler, float32, at sampling time and recomputed for the recorded result."""
    sched = fs.FlowMatchSDE(shift=3.0, noise_level=noise_level)
    reference = FlowGRPOReference(shift=3.0)
    reference.set_timesteps(8)
    sample = latents(SHAPE)
    state = sched.init(8, sample=sample)
    generator = torch.Generator().manual_seed(3)
    for t in reference.timesteps:
        output = toy_model(sample, t)
        noise = fs.randn_tensor(SHAPE, generator=torch.Generator().manual_seed(int(t)))
        theirs_next, theirs, theirs_mean, std_dev = sde_step_with_logprob(
            reference, output, t.unsqueeze(0), sample, noise_level, generator=torch.Generator().manual_seed(int(t))
        )
        ours_next, next_state, ours = fs.step_log_prob(sched, state, output, sample, noise=noise, reduce="mean")
        mean, std = fs.step_transition(sched, state, output, sample)
        assert torch.equal(ours_next, theirs_next) and torch.equal(mean, theirs_mean)
        dt = reference.sigmas[reference.index_for_timestep(t) + 1] - reference.sigmas[reference.index_for_timestep(t)]
        assert torch.equal(std, (std_dev * torch.sqrt(-1 * dt)).expand_as(std))
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-6), (ours, theirs)
        recorded = torch.randn(SHAPE, generator=generator)  # any result, as a training pass recomputes it
        _, _, again = fs.step_log_prob(sched, state, output, sample, next_sample=recorded, reduce="mean")
        _, theirs_again, _, _ = sde_step_with_logprob(reference, output, t.unsqueeze(0), sample, noise_level, recorded)
        assert torch.allclose(again, theirs_again, rtol=1e-6, atol=1e-6)
        sample, state = ours_next, next_state


def ddim_step_with_logprob(
    self: diffusers.DDIMScheduler,
    model_output: torch.Tensor,
    timestep: torch.Tensor,
    sample: torch.Tensor,
    eta: float,
    prev_sample: torch.Tensor,
) -> torch.Tensor:
    """DDPO's log-probability of `prev_sample` (ddpo_pytorch/diffusers_patch/ddim_with_logprob.py of
    github.com/kvablack/ddpo-pytorch at 1958463f, MIT licence): its arithmetic transcribed for the epsilon prediction
    without clipping, which the test uses (its noise draw and other branches left out)."""
    prev_timestep = timestep - self.config.num_train_timesteps // self.num_inference_steps
    prev_timestep = torch.clamp(prev_timestep, 0, self.config.num_train_timesteps - 1)  # sic: DDPO clamps to >= 0
    alpha_prod_t = self.alphas_cumprod.gather(0, timestep.cpu())
    alpha_prod_t_prev = torch.where(
        prev_timestep.cpu() >= 0, self.alphas_cumprod.gather(0, prev_timestep.cpu()), self.final_alpha_cumprod
    )
    shape = (-1,) + (1,) * (sample.dim() - 1)
    alpha_prod_t, alpha_prod_t_prev = alpha_prod_t.reshape(shape), alpha_prod_t_prev.reshape(shape)
    beta_prod_t = 1 - alpha_prod_t
    pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
    pred_epsilon = model_output
    variance = ((1 - alpha_prod_t_prev) / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = eta * variance ** (0.5)
    pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon
    prev_sample_mean = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
    log_prob = (
        -((prev_sample.detach() - prev_sample_mean) ** 2) / (2 * (std_dev_t**2))
        - torch.log(std_dev_t)
        - torch.log(torch.sqrt(2 * torch.as_tensor(math.pi)))
    )
    return log_prob.mean(dim=tuple(range(1, log_prob.ndim)))


def test_ddim_log_prob_is_ddpos() -> None:
    """DDIM with eta 1 on SD 1.5's schedule (DDPO's setting) against DDPO's log-probability (reduce="mean"), at
    sampling time and for a recorded result, float32. (DDPO's last step, t = 1, goes to prev -19, which DDPO's clamp
    sends to alpha_bar[0]; diffusers and ours take final_alpha_cumprod there, equal for SD 1.5's
    set_alpha_to_one=False.)"""
    options = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False}
    options.update(set_alpha_to_one=False, steps_offset=1)
    sched = fs.DDIM(eta=1.0, **options)
    reference = diffusers.DDIMScheduler(**options)
    reference.set_timesteps(10)
    sample = latents(SHAPE)
    state = sched.init(10, sample=sample)
    generator = torch.Generator().manual_seed(5)
    for t in reference.timesteps:
        output = toy_model(sample, t)
        noise = fs.randn_tensor(SHAPE, generator=generator)
        next_sample, next_state, ours = fs.step_log_prob(sched, state, output, sample, noise=noise, reduce="mean")
        timestep = t.expand(SHAPE[0])
        theirs = ddim_step_with_logprob(reference, output, timestep, sample, 1.0, next_sample)
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5), (ours, theirs)
        recorded = next_sample + 0.1 * torch.randn(SHAPE, generator=generator)
        _, _, again = fs.step_log_prob(sched, state, output, sample, next_sample=recorded, reduce="mean")
        theirs_again = ddim_step_with_logprob(reference, output, timestep, sample, 1.0, recorded)
        assert torch.allclose(again, theirs_again, rtol=1e-5, atol=1e-5)
        sample, state = next_sample, next_state


@pytest.mark.parametrize("case", stochastic_cases())
def test_log_prob_is_normals(case: Case) -> None:
    """Every reduction against `torch.distributions.Normal(mean, std).log_prob`, over the noised elements."""
    if case.scheduler()._not_gaussian is not None:
        return  # test_step_is_its_transition checks the refusal
    for sched, state, sample, output, noise in walk(case, steps=4):
        next_sample, _, total = fs.step_log_prob(sched, state, output, sample, noise=noise)
        elementwise = fs.step_log_prob(sched, state, output, sample, next_sample=next_sample, reduce="none")[2]
        mean_value = fs.step_log_prob(sched, state, output, sample, next_sample=next_sample, reduce="mean")[2]
        mean, std = fs.step_transition(sched, state, output, sample)
        noisy = std > 0
        safe = torch.where(noisy, std, torch.ones_like(std))
        normal = torch.distributions.Normal(mean, safe).log_prob(next_sample)
        expected = torch.where(noisy, normal, torch.zeros_like(normal))
        assert torch.allclose(elementwise, expected, rtol=1e-5, atol=1e-4)
        assert total.shape == (SHAPE[0],)
        assert torch.allclose(total, expected.flatten(1).sum(1), rtol=1e-5, atol=1e-3)
        assert torch.allclose(mean_value, expected.flatten(1).mean(1), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ the function
def flow_sde_inputs(rows: int = 3, seed: int = 0) -> tuple[Any, Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    sched = fs.FlowMatchSDE(shift=3.0)
    sample = torch.randn(rows, 4, 6, 6, generator=torch.Generator().manual_seed(seed))
    state = sched.init(8, sample=sample)
    output = toy_model(sample, sched.timestep(state))
    noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(seed + 1))
    return sched, state, sample, output, noise


def test_sampling_returns_the_steps_own_result_and_state() -> None:
    sched, state, sample, output, noise = flow_sde_inputs()
    next_sample, next_state, _ = fs.step_log_prob(sched, state, output, sample, noise=noise)
    expected, expected_state = sched.step(state, output, sample, noise=noise)
    assert torch.equal(next_sample, expected)
    assert torch.equal(next_state.step_index, expected_state.step_index)
    assert sched._cursor(next_state) is not None  # the eager fast path carries on


def test_recomputing_for_the_recorded_result_gives_the_sampling_log_prob() -> None:
    """DDPO's and Flow-GRPO's training pass: the same model output and the recorded result give the log-probability
    sampling gave, bit for bit, over a whole loop; the state comes back as the step's."""
    sched, state, sample, _, _ = flow_sde_inputs()
    generator = torch.Generator().manual_seed(9)
    for _ in range(8):
        output = toy_model(sample, sched.timestep(state))
        noise = torch.randn(sample.shape, generator=generator)
        next_sample, next_state, log_prob = fs.step_log_prob(sched, state, output, sample, noise=noise)
        again, again_state, recomputed = fs.step_log_prob(sched, state, output, sample, next_sample=next_sample)
        assert again is next_sample and torch.equal(recomputed, log_prob)
        assert torch.equal(again_state.step_index, next_state.step_index)
        sample, state = next_sample, next_state


def test_rows_alone_and_together_and_at_different_steps() -> None:
    """Each row's log-probability is the one it has alone: stacked with other rows, and with rows at other steps."""
    sched, state, sample, output, noise = flow_sde_inputs(rows=3)
    _, _, together = fs.step_log_prob(sched, state, output, sample, noise=noise)
    for row in range(3):
        alone = sched.init(8, sample=sample[row : row + 1])
        _, _, value = fs.step_log_prob(
            sched, alone, output[row : row + 1], sample[row : row + 1], noise=noise[row : row + 1]
        )
        assert torch.equal(value, together[row : row + 1])
    ahead = sched.init(8, sample=sample[:1], begin_index=3)
    later = sched.init(5, sample=sample[1:], begin_index=1)
    stacked = fs.batching.stack([ahead, later])
    output = toy_model(sample, sched.timestep(stacked))
    _, _, mixed = fs.step_log_prob(sched, stacked, output, sample, noise=noise)
    for rows, part in ((slice(0, 1), ahead), (slice(1, 3), later)):
        _, _, value = fs.step_log_prob(sched, part, output[rows], sample[rows], noise=noise[rows])
        assert torch.equal(value, mixed[rows])


def test_grad_is_the_analytic_gradient_and_finite_differences() -> None:
    """d log_prob / d model_output through `torch.func.grad`: for the flow SDE the mean is x a + v b dt, so the
    gradient is (x' - mean) / std^2 * b dt, elementwise; and autograd's `backward` gives the same."""
    sched, state, sample, output, noise = flow_sde_inputs()
    next_sample = sched.step(state, output, sample, noise=noise)[0]

    def total(model_output: torch.Tensor) -> torch.Tensor:
        return fs.step_log_prob(sched, state, model_output, sample, next_sample=next_sample)[2].sum()

    gradient = torch.func.grad(total)(output)
    mean, std = fs.step_transition(sched, state, output, sample)
    coefficients = state.plan.coefficients[0, 0, 0]
    from functional_sched.schedulers.flow_sde import DT, OUTPUT_SCALE

    analytic = (next_sample - mean) / std**2 * (coefficients[OUTPUT_SCALE] * coefficients[DT])
    assert torch.allclose(gradient, analytic, rtol=1e-4, atol=1e-5)
    leaf = output.clone().requires_grad_()
    total(leaf).backward()
    assert torch.equal(leaf.grad, gradient)


@pytest.mark.parametrize(
    "sched",
    [
        fs.DDPM(variance_type="learned_range", clip_sample=False),
        fs.DDIM(eta=1.0, clip_sample=False),
        fs.EulerAncestralDiscrete(),
        fs.FlowMatchEulerDiscrete(stochastic_sampling=True),
        fs.FlowMatchSDE(),
    ],
    ids=lambda sched: (
        sched.name + ("-learned-range" if getattr(sched, "variance_type", "").startswith("learned") else "")
    ),
)
def test_grad_matches_finite_differences(sched: Any) -> None:
    """float64 central differences of the summed log-probability along a random direction of the model output
    (DDPM's learned variance: through the std too)."""
    sample = torch.randn(2, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    state = sched.init(10, sample=sample, begin_index=2)
    output = model_output(sched, state, sample).double()
    noise = torch.randn(sample.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    next_sample = sched.step(state, output, sample, noise=noise)[0]

    def total(model_output: torch.Tensor) -> torch.Tensor:
        return fs.step_log_prob(sched, state, model_output, sample, next_sample=next_sample)[2].sum()

    direction = torch.randn(output.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    h = 1e-6
    numeric = (total(output + h * direction) - total(output - h * direction)) / (2 * h)
    analytic = (torch.func.grad(total)(output) * direction).sum()
    assert torch.allclose(analytic, numeric, rtol=1e-6), (analytic, numeric)


def test_vmap_over_seeds_of_per_sample_gradients() -> None:
    """`torch.func.vmap` of `torch.func.grad` (per-seed gradients, with the noise the mapped dim) equals a loop."""
    sched, state, sample, output, _ = flow_sde_inputs()
    noises = torch.randn(4, *sample.shape, generator=torch.Generator().manual_seed(7))

    def total(model_output: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return fs.step_log_prob(sched, state, model_output, sample, noise=noise)[2].sum()

    mapped = torch.func.vmap(torch.func.grad(total), in_dims=(None, 0))(output, noises)
    values = torch.func.vmap(total, in_dims=(None, 0))(output, noises)
    for index, noise in enumerate(noises):
        assert torch.allclose(mapped[index], torch.func.grad(total)(output, noise), rtol=1e-6, atol=1e-6)
        assert torch.allclose(values[index], total(output, noise), rtol=1e-6, atol=1e-4)


@pytest.mark.slow
def test_compiles_fullgraph_as_eager() -> None:
    sched, state, sample, output, noise = flow_sde_inputs()
    eager = fs.step_log_prob(sched, state, output, sample, noise=noise)
    compiled = torch.compile(
        lambda state, output, sample, noise: fs.step_log_prob(sched, state, output, sample, noise=noise),
        fullgraph=True,
    )(state, output, sample, noise)
    assert torch.equal(compiled[0], eager[0])
    assert torch.allclose(compiled[2], eager[2], rtol=1e-6, atol=1e-3)


def test_deterministic_elements_contribute_nothing_and_no_nan_gradient() -> None:
    """DDPM's last step (timestep 0) adds no noise: its log-probability is 0, its gradient 0, never NaN."""
    sched = fs.DDPM(clip_sample=False)
    sample = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    state = sched.init(4, sample=sample, begin_index=3)
    assert int(sched.timestep(state)[0]) == 0
    output = toy_model(sample, sched.timestep(state)).requires_grad_()
    _, _, log_prob = fs.step_log_prob(sched, state, output, sample, noise=torch.randn_like(sample))
    log_prob.sum().backward()
    assert torch.equal(log_prob, torch.zeros(2)) and torch.equal(output.grad, torch.zeros_like(output))


def test_rows_with_and_without_noise_together() -> None:
    """Stacked DDPM rows, one at its last step (std 0: the log-density's masked branch) and one before it: each row's
    log-probability is the one it has alone (the host's per-row numbers and the device's, bit for bit), and the
    gradient is finite, 0 for the row without noise."""
    sched = fs.DDPM(clip_sample=False)
    sample = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    last, earlier = sched.init(4, sample=sample[:1], begin_index=3), sched.init(4, sample=sample[1:], begin_index=1)
    stacked = fs.batching.stack([last, earlier])
    output = toy_model(sample, sched.timestep(stacked)).requires_grad_()
    noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(1))
    _, _, together = fs.step_log_prob(sched, stacked, output, sample, noise=noise)
    together.sum().backward()
    assert bool(torch.isfinite(output.grad).all()) and not bool(output.grad[0].any()) and bool(output.grad[1].any())
    for rows, part in ((slice(0, 1), last), (slice(1, 2), earlier)):
        _, _, alone = fs.step_log_prob(sched, part, output[rows].detach(), sample[rows], noise=noise[rows])
        assert torch.equal(alone, together[rows].detach())
    assert float(together[0]) == 0.0


def test_serving_modes_give_the_same_log_prob() -> None:
    sched, state, sample, output, noise = flow_sde_inputs()
    expected = fs.step_log_prob(sched, state, output, sample, noise=noise)[2]
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            assert torch.equal(fs.step_log_prob(sched, state, output, sample, noise=noise)[2], expected)


def test_log_density_is_float64_for_float64_and_float32_for_half() -> None:
    value = torch.zeros(2, 3, dtype=torch.bfloat16)
    assert log_density(value, value, torch.ones_like(value)).dtype == torch.float32
    assert log_density(value.double(), value.double(), value.double() + 1).dtype == torch.float64


def test_refusals_name_the_reason() -> None:
    sched, state, sample, output, noise = flow_sde_inputs()
    with pytest.raises(ValueError, match="exactly one of them"):
        fs.step_log_prob(sched, state, output, sample)
    with pytest.raises(ValueError, match="exactly one of them"):
        fs.step_log_prob(sched, state, output, sample, noise=noise, next_sample=sample)
    with pytest.raises(ValueError, match="reduce must be one of"):
        fs.step_log_prob(sched, state, output, sample, noise=noise, reduce="max")
    with pytest.raises(ValueError, match="next_sample"):
        fs.step_log_prob(sched, state, output, sample, next_sample=sample[:, :2])
    deterministic = fs.DDIM()
    with pytest.raises(ValueError, match="deterministic"):
        fs.step_transition(deterministic, deterministic.init(4, sample=sample), output, sample)
    with pytest.raises(TypeError, match="functional_sched scheduler"):
        fs.step_log_prob(diffusers.DDIMScheduler(), state, output, sample, noise=noise)
    brownian = fs.DPMSolverSDE()
    with pytest.raises(NotImplementedError, match="Brownian"):
        fs.step_log_prob(brownian, brownian.init(4, sample=sample), output, sample, noise=noise)


# ------------------------------------------------------------------------------------------- the README example
def readme_rl_example() -> str:
    """The README's worked example (RL fine-tuning), exactly as the README shows it: its one Python block that calls
    step_log_prob (the README is its only copy)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    examples = [block for block in blocks if "step_log_prob" in block]
    assert len(examples) == 1, f"the README shows {len(examples)} Python blocks calling step_log_prob, not one"
    return examples[0]


def test_readme_rl_example_runs_in_seconds() -> None:
    """The example as written: one GRPO policy-gradient step through a tiny model on the CPU. Its recomputed
    log-probabilities are the sampling ones (ratio 1 before the update), and the update moves the model."""
    namespace: dict[str, Any] = {}
    start = time.perf_counter()
    exec(compile(readme_rl_example(), "README.md", "exec"), namespace)
    assert time.perf_counter() - start < 30
    sched, trajectory = namespace["sched"], namespace["trajectory"]
    assert len(trajectory) == 10 and all(entry[3].shape == (8,) for entry in trajectory)
    state, x, x_next, old_log_prob = trajectory[0]
    before = namespace["velocity"]
    assert bool(torch.isfinite(namespace["loss"]))
    assert torch.equal(namespace["ratio"], torch.ones(8))  # recomputed before the update: the sampling values
    with torch.no_grad():
        _, _, after = fs.step_log_prob(
            sched, state, before(x, sched.timestep(state)), x, next_sample=x_next, reduce="mean"
        )
    assert not torch.equal(after, old_log_prob), "the optimizer step changed nothing"
