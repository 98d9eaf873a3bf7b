"""Named schedules (`functional_sched/math/named_schedules.py`, public as `functional_sched.schedules`) against
references computed here: each formula written independently in numpy from its source, the runnable references that
exist (diffusers' Mochi `linear_quadratic_schedule` and Align Your Steps tables, k-diffusion's Karras and exponential
sigmas, the beta/Karras/exponential sigma options of our schedulers), tables recorded from ComfyUI's own functions,
and a scheduler run on each."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import scipy.stats
import torch
from diffusers.pipelines.mochi.pipeline_mochi import linear_quadratic_schedule as mochi_linear_quadratic
from diffusers.schedulers import AysSchedules

import functional_sched as fs

ns = fs.schedules
NAMES = tuple(ns.SCHEDULES)
STEP_COUNTS = (1, 2, 3, 7, 10, 25)


# ------------------------------------------------------------------------------------------------ the models
def comfy_sd15_sigmas() -> torch.Tensor:
    """SD 1.5's training sigmas as ComfyUI's ModelSamplingDiscrete forms them ("linear" 0.00085-0.012, which is
    diffusers' scaled_linear): betas and alpha-bar in float64, the sigmas rounded to float32."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    return torch.from_numpy(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()


SD15 = ns.Discrete(comfy_sd15_sigmas())
FLOW3 = ns.Flow(3.0)
MODELS = {"sd15": SD15, "flow3": FLOW3}


def shift3(t: np.ndarray) -> np.ndarray:
    return 3.0 * t / (1 + 2.0 * t)


def table_of(model: ns.Discrete | ns.Flow) -> np.ndarray:
    return model.sigmas.numpy()


def test_model_tables() -> None:
    """Flow's training sigmas are shift(t / N); Discrete.from_betas' are diffusers' (float32, bit for bit), within
    1.3e-5 of ComfyUI's float64-then-float32 ones."""
    assert_close(FLOW3.sigmas, shift3(np.arange(1, 1001) / 1000), rtol=1e-15)
    from diffusers import DDPMScheduler

    alphas_cumprod = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    diffusers_sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    assert torch.equal(ns.Discrete.from_betas().sigmas, diffusers_sigmas.double())
    assert_close(ns.Discrete.from_betas().sigmas, comfy_sd15_sigmas().double().numpy(), rtol=1.3e-5)


# ------------------------------------------------------------------------- independent numpy references
def np_sigma_of_timesteps(model: ns.Discrete | ns.Flow, timesteps: np.ndarray) -> np.ndarray:
    """sigma(t): log sigma interpolated over the training index (discrete), shift(t) (flow)."""
    if isinstance(model, ns.Flow):
        return shift3(timesteps)
    table = table_of(model)
    return np.exp(np.interp(timesteps, np.arange(len(table)), np.log(table)))


def np_timestep_of_sigma(model: ns.Discrete | ns.Flow, sigma: float) -> float:
    if isinstance(model, ns.Flow):
        return sigma  # ComfyUI's flow model reads a sigma as its time
    return float(np.argmin(np.abs(np.log(sigma) - np.log(table_of(model)))))


def reference(name: str, model: ns.Discrete | ns.Flow, n: int) -> np.ndarray:
    """Each schedule from its definition (the docstrings' sources), numpy float64, with the terminal 0."""
    table = table_of(model).astype(np.float64)
    size, smin, smax = len(table), table[0], table[-1]
    if name == "simple":
        picked = [table[size - 1 - math.floor(i * size / n)] for i in range(n)]
    elif name == "ddim_uniform":
        picked = table[np.arange(1, size, size // n)][::-1]
    elif name in ("normal", "sgm_uniform"):
        start, end = np_timestep_of_sigma(model, smax), np_timestep_of_sigma(model, smin)
        times = np.linspace(start, end, n) if name == "normal" else np.linspace(start, end, n + 1)[:-1]
        picked = np_sigma_of_timesteps(model, times)
    elif name == "karras":
        ramp = np.arange(n) / max(n - 1, 1)
        picked = (smax ** (1 / 7) + ramp * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7
    elif name == "exponential":
        picked = np.exp(np.linspace(math.log(smax), math.log(smin), n))
    elif name == "beta":
        picked = smin + scipy.stats.beta.ppf(1 - np.linspace(0, 1, n), 0.6, 0.6) * (smax - smin)
    elif name == "kl_optimal":
        ramp = np.arange(n) / max(n - 1, 1)
        picked = np.tan(ramp * math.atan(smin) + (1 - ramp) * math.atan(smax))
    elif name == "linear_quadratic":
        # diffusers' copy of Mochi's function (N noise levels, no terminal), scaled by sigma_max as ComfyUI scales it.
        picked = np.array(mochi_linear_quadratic(n, 0.025) if n > 1 else [1.0]) * smax
    else:
        raise AssertionError(name)
    return np.append(np.asarray(picked, dtype=np.float64), 0.0)


def np_beta_timesteps(model: ns.Discrete | ns.Flow, n: int) -> np.ndarray:
    """Beta quantiles placed on the training timesteps, repeats dropped (Lee et al. 2024 sample timesteps)."""
    table = table_of(model).astype(np.float64)
    timesteps = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, n, endpoint=False), 0.6, 0.6) * (len(table) - 1))
    kept = [int(t) for i, t in enumerate(timesteps) if i == 0 or t != timesteps[i - 1]]
    return np.append(table[kept], 0.0)


def np_loglinear(levels: np.ndarray, num: int) -> np.ndarray:
    """The AYS project's log-linear interpolation of a decreasing table to `num` points."""
    xs, new_xs = np.linspace(0, 1, len(levels)), np.linspace(0, 1, num)
    return np.exp(np.interp(new_xs, xs, np.log(levels[::-1])))[::-1]


def assert_close(actual: torch.Tensor, expected: np.ndarray, rtol: float) -> None:
    assert (actual.dtype, actual.shape) == (torch.float64, expected.shape), (actual.dtype, actual.shape)
    error = np.abs(actual.numpy() - expected)
    assert (error <= rtol * np.abs(expected)).all(), (error / np.maximum(np.abs(expected), 1e-300)).max()


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name", NAMES)
def test_schedule_matches_its_definition(name: str, model_name: str) -> None:
    model = MODELS[model_name]
    for n in STEP_COUNTS:
        assert_close(ns.SCHEDULES[name](model, n), reference(name, model, n), rtol=1e-12)


@pytest.mark.parametrize("model_name", MODELS)
def test_beta_on_timesteps_matches_its_definition(model_name: str) -> None:
    for n in STEP_COUNTS:
        assert_close(ns.beta(MODELS[model_name], n, space="timestep"), np_beta_timesteps(MODELS[model_name], n), 0)


def test_beta_without_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The core's own Beta quantile where scipy is missing: the same training timesteps, sigmas within 1e-9."""
    with_scipy = {space: ns.beta(SD15, 25, space=space) for space in ns.BETA_SPACES}
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    assert torch.equal(ns.beta(SD15, 25, space="timestep"), with_scipy["timestep"])
    assert_close(ns.beta(SD15, 25, space="sigma"), with_scipy["sigma"].numpy(), rtol=1e-9)


def test_beta_karras_exponential_are_the_scheduler_options() -> None:
    """One implementation: the named tables equal what EulerDiscrete's use_*_sigmas options make (float32)."""
    sd15 = ns.Discrete.from_betas()
    sample = torch.zeros(1, 4, 2, 2)
    for option, schedule in (
        ("use_beta_sigmas", ns.beta),
        ("use_karras_sigmas", ns.karras),
        ("use_exponential_sigmas", ns.exponential),
    ):
        sched = fs.EulerDiscrete(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, **{option: True})
        assert torch.equal(sched.sigmas(sched.init(12, sample=sample)), schedule(sd15, 12).float()), option


@pytest.mark.parametrize("model_name", MODELS)
def test_karras_and_exponential_are_k_diffusions(model_name: str) -> None:
    """k-diffusion 0.1.1.post1's own `get_sigmas_karras`/`get_sigmas_exponential` (float32, its default dtype)."""
    from functional_sched.adapters.k_diffusion import sampler

    model = MODELS[model_name]
    for name in ("karras", "exponential"):
        for n in (1, 2, 10, 25):
            expected = sampler(f"get_sigmas_{name}")(n, model.sigma_min, model.sigma_max).double().numpy()
            assert_close(ns.SCHEDULES[name](model, n), expected, rtol=2e-6)


def test_linear_quadratic_is_mochis_schedule() -> None:
    """On a flow model (sigma_max 1) the table is diffusers' Mochi schedule, float64, with the terminal 0; the noise
    level runs linearly to threshold_noise over the first half."""
    flow = ns.Flow(1.0)
    for n in (2, 3, 10, 64):
        table = ns.linear_quadratic(flow, n)
        assert table[:-1].tolist() == mochi_linear_quadratic(n, 0.025) and table[-1] == 0
    table = ns.linear_quadratic(flow, 20, threshold_noise=0.1, linear_steps=5)
    assert torch.allclose(1 - table[:6], torch.linspace(0, 0.1, 6, dtype=torch.float64), atol=1e-15, rtol=0)


# ---------------------------------------------------------------------------- ComfyUI's tables, recorded
# Recorded by running ComfyUI's own functions (comfy/samplers.py `simple_scheduler`, `ddim_scheduler`,
# `normal_scheduler` (sgm=False/True), `beta_scheduler`, `linear_quadratic_schedule`, `kl_optimal_scheduler`;
# comfy/k_diffusion `get_sigmas_karras`/`get_sigmas_exponential`; comfy_extras/nodes_align_your_steps.py) in a scratch
# interpreter on ModelSamplingDiscrete() (SD 1.5: "linear" 0.00085-0.012) and ModelSamplingDiscreteFlow(shift=3.0),
# 10 steps (AYS: 7 and 16, the SD1/SDXL/SVD tables); outputs are ComfyUI's float32 tensors, printed to 9 digits
# (which round-trip float32).
# ComfyUI's `beta` is our beta(space="timestep").
COMFYUI = {
    "sd15/simple/10": (
        "14.6146412 8.30280304 5.08776331 3.32108307 2.27646303 1.61288619 1.16057837 0.829859555 0.569284916 "
        "0.341673821 0"
    ),
    "sd15/ddim_uniform/10": (
        "8.39068508 5.13443089 3.34776354 2.29285383 1.62369204 1.16821599 0.835652828 0.574050248 "
        "0.346186697 0.0413144119 0"
    ),
    "sd15/normal/10": (
        "14.6146402 7.83988285 4.60917425 2.91830707 1.95016146 1.34492779 0.932357967 0.624976933 "
        "0.368657738 0.0291671604 0"
    ),
    "sd15/sgm_uniform/10": (
        "14.6146402 8.30717087 5.09240818 3.32506895 2.27973056 1.61558032 1.16286457 0.831883729 0.571188867 "
        "0.34370482 0"
    ),
    "sd15/beta/10": (
        "14.6146412 11.5427704 7.37184429 4.37280178 2.61523581 1.61827886 1.02732933 0.654885352 0.39550969 "
        "0.199058622 0"
    ),
    "sd15/linear_quadratic/10": (
        "14.6146412 14.5415678 14.4684954 14.395422 14.3223486 14.2492752 13.6208448 11.8817034 9.03184795 5.07128048 0"
    ),
    "sd15/kl_optimal/10": (
        "14.6146326 4.23235035 2.39371896 1.59706593 1.1329968 0.815244496 0.572914183 0.372484177 "
        "0.195288345 0.0291671585 0"
    ),
    "sd15/karras/10": (
        "14.6146431 9.10292912 5.47839212 3.16860485 1.74941802 0.914072692 0.446918368 0.201398358 "
        "0.0819102973 0.0291671772 0"
    ),
    "sd15/exponential/10": (
        "14.6146402 7.32486916 3.67123032 1.84002364 0.922221303 0.462218285 0.231664181 0.116110273 "
        "0.0581945591 0.0291671604 0"
    ),
    "flow3/simple/10": "1 0.964285672 0.923076987 0.87499994 0.818181813 0.75 0.666666687 0.5625 0.428571463 0.25 0",
    "flow3/ddim_uniform/10": (
        "0.965049982 0.92396307 0.876039922 0.819419265 0.751496971 0.668514431 0.564837873 0.431623936 "
        "0.254152834 0.0059760958 0"
    ),
    "flow3/normal/10": (
        "1 0.960129261 0.913348913 0.857692361 0.790368378 0.70727849 0.602150559 0.464876026 0.278048784 "
        "0.00892857183 0"
    ),
    "flow3/sgm_uniform/10": (
        "1 0.964400291 0.923342466 0.87546742 0.818923295 0.751121104 0.668326676 0.564949632 0.432225078 0.255588651 0"
    ),
    "flow3/beta/10": (
        "1 0.986301303 0.955337703 0.907582879 0.840949059 0.75074929 0.63093853 0.479591817 0.298076898 0.113678373 0"
    ),
    "flow3/linear_quadratic/10": (
        "1 0.995000005 0.99000001 0.985000014 0.980000019 0.975000024 0.931999981 0.813000023 0.617999971 0.347000003 0"
    ),
    "flow3/kl_optimal/10": (
        "1 0.839666724 0.701199591 0.578681648 0.467928737 0.365855038 0.270089626 0.178729028 0.0901709944 "
        "0.00299401209 0"
    ),
    "flow3/karras/10": (
        "1 0.635697544 0.391634673 0.232736826 0.132643551 0.071972765 0.0368316621 0.0175571479 "
        "0.00766574731 0.00299401279 0"
    ),
    "flow3/exponential/10": (
        "1 0.524304688 0.2748954 0.144128934 0.0755674765 0.0396203771 0.02077315 0.010891459 0.00571044302 "
        "0.00299401185 0"
    ),
    "ays/SD1/7": "14.6146412 5.18944597 2.83696795 1.72889972 1.07142401 0.60784775 0.229142055 0",
    "ays/SD1/16": (
        "14.6146412 8.78623199 5.69060755 4.1212306 3.22662616 2.57676792 2.06047845 1.68304694 1.39438045 "
        "1.10729635 0.874517143 0.685023725 0.509388626 0.352545083 0.192868292 0.0816835985 0"
    ),
    "ays/SDXL/7": "14.6146412 5.06296825 2.35833812 1.18166518 0.629469633 0.35428822 0.152918652 0",
    "ays/SDXL/16": (
        "14.6146412 8.65320683 5.55252743 4.01967907 2.86687231 2.05238509 1.51400518 1.13599277 0.86207211 "
        "0.654705346 0.504852653 0.398297966 0.297650456 0.212662846 0.134019494 0.0674038008 0"
    ),
    "ays/SVD/7": "700 32.1326904 8.8019495 3.31800938 1.16472578 0.357140809 0.0682799891 0",
    "ays/SVD/16": (
        "700 141.957901 40.0452499 18.5326405 11.2571144 7.37280416 4.97276878 3.07145524 1.78900003 "
        "1.22891545 0.785376728 0.45040223 0.26404357 0.141164407 0.0510646924 0.0117506143 0"
    ),
}
AYS_NAMES = {"SD1": "sd1.5", "SDXL": "sdxl", "SVD": "svd"}


@pytest.mark.parametrize("key", [key for key in COMFYUI if not key.startswith("ays/")])
def test_recorded_comfyui_tables(key: str) -> None:
    model_name, name, steps = key.split("/")
    model = MODELS[model_name]
    table = ns.beta(model, int(steps), space="timestep") if name == "beta" else ns.SCHEDULES[name](model, int(steps))
    # ComfyUI computes in float32 (its log/exp, linspace and tan): within a few float32 ulps.
    assert_close(table, np.array(COMFYUI[key].split(), dtype=np.float64), rtol=2e-6)


@pytest.mark.parametrize("key", [key for key in COMFYUI if key.startswith("ays/")])
def test_recorded_comfyui_align_your_steps(key: str) -> None:
    _, model_type, steps = key.split("/")
    # ComfyUI's SD1/SDXL tables are SD 1.5's float64 training sigmas at the published timesteps.
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    float64_sd15 = ns.Discrete(torch.from_numpy(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5))
    model = None if model_type == "SVD" else float64_sd15
    assert_close(
        ns.align_your_steps(AYS_NAMES[model_type], int(steps), model),
        np.array(COMFYUI[key].split(), dtype=np.float64),
        rtol=1e-7,
    )


# ------------------------------------------------------------------------------------------ Align Your Steps
def test_align_your_steps_reproduces_the_published_tables_at_ten_steps() -> None:
    sd15 = ns.Discrete.from_betas()
    for model_type, published in ns.AYS_TIMESTEPS.items():
        table = ns.align_your_steps(model_type, 10)
        assert torch.equal(table[:-1], sd15.sigmas[list(published[:-1])]) and table[-1] == 0
        assert ns.nearest_timesteps(sd15, table).tolist() == list(published[:-1])
    # diffusers' copy of the published tables: SD/SDXL timesteps (without the final 0) and SVD sigmas (its last 0).
    assert list(ns.AYS_TIMESTEPS["sd1.5"][:-1]) == AysSchedules["StableDiffusionTimesteps"]
    assert list(ns.AYS_TIMESTEPS["sdxl"][:-1]) == AysSchedules["StableDiffusionXLTimesteps"]
    assert ns.align_your_steps("svd", 10).tolist() == AysSchedules["StableDiffusionVideoSigmas"]


@pytest.mark.parametrize("model_type", ns.AYS_MODELS)
def test_align_your_steps_interpolates_log_linearly(model_type: str) -> None:
    sd15 = ns.Discrete.from_betas()
    levels = (
        np.array(ns.AYS_SIGMAS[model_type])
        if model_type in ns.AYS_SIGMAS
        else sd15.sigmas.double().numpy()[list(ns.AYS_TIMESTEPS[model_type])]
    )
    for n in (1, 2, 4, 7, 9, 11, 20, 32, 100):
        expected = np_loglinear(levels, n + 1)
        expected[-1] = 0.0
        assert_close(ns.align_your_steps(model_type, n), expected, rtol=1e-12)
    # 20 steps put every published level at an even index: the interpolation passes through them.
    doubled = ns.align_your_steps(model_type, 20)
    assert_close(doubled[0:-1:2], levels[:-1].astype(np.float64), rtol=1e-12)


def test_a_table_reaching_zero_ends_there() -> None:
    """ComfyUI's rule for a model whose smallest training sigma is 0 within 1e-5: `normal` takes one more timestep
    and no appended 0; `ddim_uniform` likewise where the second training sigma is."""
    table = comfy_sd15_sigmas().double()
    near_zero = ns.Discrete(torch.cat([torch.tensor([1e-7, 2e-6], dtype=torch.float64), table[2:]]))
    times = np.linspace(999, 0, 11)
    expected = np.exp(np.interp(times, np.arange(1000), np.log(near_zero.sigmas.numpy())))
    assert_close(ns.normal(near_zero, 10), expected, rtol=1e-12)
    assert_close(ns.ddim_uniform(near_zero, 9), near_zero.sigmas.numpy()[1::100][::-1].copy(), rtol=0)
    assert ns.sgm_uniform(near_zero, 10)[-1] == 0  # sgm_uniform always appends the 0


def test_models_own_their_tables() -> None:
    table = comfy_sd15_sigmas().double()
    model = ns.Discrete(table)
    before = ns.karras(model, 5)
    table.mul_(2)  # the caller's buffer, reused
    assert torch.equal(ns.karras(model, 5), before)


# -------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", NAMES)
def test_bad_step_counts_are_refused(name: str) -> None:
    for steps in (0, -3, 1.5, None, 10_001):
        with pytest.raises(ValueError, match="steps"):
            ns.SCHEDULES[name](SD15, steps)
    with pytest.raises(ValueError, match="steps"):
        ns.align_your_steps("sdxl", 0)


def test_bad_models_are_refused() -> None:
    table = comfy_sd15_sigmas()
    for bad, word in (
        (table.flip(0), "increase"),
        (torch.cat([table[:5], table[4:]]), "increase"),
        (torch.where(torch.arange(1000) == 7, float("nan"), table), "finite"),
        (torch.cat([table[:1] * 0, table[1:]]), "positive"),
        (table[:1], "at least two"),
        (table[None], "1-D"),
    ):
        with pytest.raises(ValueError, match=f"sigmas.*{word}|{word}.*sigmas"):
            ns.normal(bad, 10)
    with pytest.raises(TypeError, match="model"):
        ns.simple("sd15", 10)
    for shift in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="shift"):
            ns.Flow(shift)
    for count in (1, 2.5, 10**7):
        with pytest.raises(ValueError, match="num_train_timesteps"):
            ns.Flow(3.0, num_train_timesteps=count)
        with pytest.raises(ValueError, match="num_train_timesteps"):
            ns.Discrete.from_betas(num_train_timesteps=count)
    with pytest.raises(ValueError, match="beta_schedule"):
        ns.Discrete.from_betas(beta_schedule="cosine")


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="model_type"):
        ns.align_your_steps("sd3", 10)
    with pytest.raises(ValueError, match="model"):
        ns.align_your_steps("svd", 10, SD15)
    with pytest.raises(ValueError, match="model"):
        ns.align_your_steps("sdxl", 10, FLOW3)
    with pytest.raises(ValueError, match="space"):
        ns.beta(SD15, 10, space="log")
    for linear_steps in (0, 10, 11, 2.5):
        with pytest.raises(ValueError, match="linear_steps"):
            ns.linear_quadratic(FLOW3, 10, linear_steps=linear_steps)
    with pytest.raises(ValueError, match="threshold_noise"):
        ns.linear_quadratic(FLOW3, 10, threshold_noise=1.5)
    with pytest.raises(TypeError, match="Discrete"):
        ns.nearest_timesteps(FLOW3, ns.simple(FLOW3, 4))
    with pytest.raises(ValueError, match="sigmas"):
        ns.nearest_timesteps(SD15, [float("nan"), 0.0])


# ----------------------------------------------------------------------------------------- end to end
SD_CONFIG = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SAMPLE = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
TABLES = {
    **{name: (lambda name=name: (ns.SCHEDULES[name](SD15, 10), ns.SCHEDULES[name](FLOW3, 10))) for name in NAMES},
    "align_your_steps": lambda: (ns.align_your_steps("sd1.5", 10), None),
}


def run(sched: fs.Scheduler, **schedule: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scheduler's sigma table and its final sample, a toy denoiser at every step."""
    state = sched.init(sample=SAMPLE, **schedule)
    latents = SAMPLE
    for _ in range(sched.steps_left(state)):
        latents, state = sched.step(state, torch.tanh(sched.scale_model_input(state, latents)), latents)
    return sched.sigmas(state), latents


def assert_sane(sigmas: torch.Tensor, latents: torch.Tensor) -> None:
    assert bool(torch.isfinite(latents).all()) and bool(torch.isfinite(sigmas).all())
    assert bool((sigmas[1:] < sigmas[:-1]).all()) and sigmas[-1] == 0


@pytest.mark.parametrize("name", TABLES)
def test_schedulers_run_on_named_schedules(name: str) -> None:
    discrete, flow = TABLES[name]()
    sigmas, latents = run(fs.EulerDiscrete(**SD_CONFIG), sigmas=discrete)
    assert torch.equal(sigmas, discrete.float())  # Euler steps on exactly these sigmas
    assert_sane(sigmas, latents)
    if name != "linear_quadratic":  # see below
        timesteps = ns.nearest_timesteps(SD15, discrete)
        sigmas, latents = run(fs.DPMSolverMultistep(**SD_CONFIG), timesteps=timesteps)
        assert_sane(sigmas, latents)
        assert len(sigmas) == len(discrete)
    if flow is not None:
        sigmas, latents = run(fs.FlowMatchEulerDiscrete(shift=1.0), sigmas=flow[:-1])
        assert torch.equal(sigmas, flow.float())
        assert_sane(sigmas, latents)


def test_grid_solvers_refuse_what_the_training_grid_cannot_resolve() -> None:
    """linear_quadratic's first steps (0.5% of sigma_max each) fall on one training timestep of SD 1.5: a multistep
    solver, which divides by each step's length, refuses the repeat rather than dividing by zero."""
    timesteps = ns.nearest_timesteps(SD15, ns.linear_quadratic(SD15, 10))
    assert bool((timesteps[1:] == timesteps[:-1]).any())
    with pytest.raises(ValueError, match="strictly decreasing"):
        fs.DPMSolverMultistep(**SD_CONFIG).init(timesteps=timesteps, sample=SAMPLE)
