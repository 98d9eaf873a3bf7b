"""What the conformance suite does not express for ComfyUI's RES multistep samplers (`tests/specs/res.py` holds their
tables): parity with trajectories recorded from ComfyUI's own loop (`tests/fixtures/comfyui/res_*.safetensors`; how
they were made: `tests/fixtures/comfyui/README.md`), the ancestral variant's weak order on the Gaussian
problem, and the README's rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import functional_sched as fs
from functional_sched.testing import gaussian, toy_model

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfyui"
README = Path(__file__).resolve().parents[1] / "README.md"
SAMPLERS = {"res_multistep": fs.RESMultistep, "res_multistep_ancestral": fs.RESMultistepAncestral}
EDM = {"sigma_min": 0.002, "sigma_max": 80.0}
#: Our options besides ComfyUI's eta and s_noise (the fixture's metadata) for each recorded config: the range and rho
#: of its Karras table (10 steps; "from-step-4" ran ComfyUI's loop on the table's tail, an img2img start), or none
#: where the table is custom (the flow model's).
KARRAS = {"sd15-karras": {}, "edm-karras": EDM, "edm-eta-half": EDM, "eta-2": {"rho": 3.0}, "from-step-4": {}}


def recorded(sampler: str) -> dict[str, dict[str, Any]]:
    """A fixture's configs: ComfyUI's keyword arguments and its tensors (the sigma table it was given, each model
    call's input and sigma, each noise draw, the final sample)."""
    path = FIXTURES / f"{sampler}.safetensors"
    tensors = load_file(path)
    with safe_open(path, "pt") as handle:
        configs = json.loads(handle.metadata()["configs"])
    return {
        name: {
            "kwargs": json.loads(kwargs),
            **{key.split(".", 1)[1]: value for key, value in tensors.items() if key.split(".", 1)[0] == name},
        }
        for name, kwargs in configs.items()
    }


RECORDED = {sampler: recorded(sampler) for sampler in SAMPLERS}


def run(sched: Any, record: dict[str, Any], config: str, branch_free: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Our loop from the recorded start, fed the recorded noise where ComfyUI drew it: (each call's input, the final
    sample); each call's timestep is held to the sigma ComfyUI called its model at. `branch_free`: every step on a
    state without its cursor (the path compiled code takes)."""
    x = record["inputs"][0]
    if config in KARRAS:
        begin = 4 if config == "from-step-4" else 0
        state = sched.init(10, sample=x, begin_index=begin)
        assert torch.equal(sched.sigmas(state)[begin:], record["sigmas"])  # our Karras table is ComfyUI's
    else:
        state = sched.init(sample=x, sigmas=record["sigmas"].tolist())
    inputs, draws = [], iter(record["noise"])
    while sched.steps_left(state):
        inputs.append(x)
        assert torch.equal(sched.timestep(state), record["call_sigmas"][len(inputs) - 1])
        noise = None
        if sched.stochastic:
            noise = next(draws) if sched._draws_noise(state) else torch.full_like(x, float("nan"))
        if branch_free:
            state = state.replace(cursor=None)
        x, state = sched.step(state, toy_model(x, sched.timestep(state)), x, noise=noise)
    # ComfyUI draws noise at every step into a positive sigma (eta = 0 included, scaled by 0): so does the ancestral
    # class; the deterministic one takes none.
    assert next(draws, None) is None or not sched.stochastic, "ComfyUI drew noise where ours does not"
    return inputs, x


@pytest.mark.parametrize("branch_free", [False, True], ids=["eager", "branch-free"])
@pytest.mark.parametrize(
    ("sampler", "config"), [(sampler, config) for sampler, configs in RECORDED.items() for config in configs]
)
def test_matches_comfyui_bit_for_bit(sampler: str, config: str, branch_free: bool) -> None:
    """Every model call's input and the final sample equal ComfyUI's loop's (float32, CPU), bit for bit: SD 1.5's and
    EDM's Karras tables, a flow model's, eta 0.5 with s_noise 1.003, eta 2 (sigma_down 0 mid-schedule), and an
    img2img start (`begin_index` 4: ComfyUI's loop on the table's tail, whose warm-up restarts)."""
    record = RECORDED[sampler][config]
    sched = SAMPLERS[sampler](**KARRAS.get(config, {}), **record["kwargs"])
    inputs, final = run(sched, record, config, branch_free)
    assert len(inputs) == len(record["inputs"])
    for index, (ours, theirs) in enumerate(zip(inputs, record["inputs"], strict=True)):
        assert torch.equal(ours, theirs), f"call {index}: {(ours - theirs).abs().max().item():.3g}"
    assert torch.equal(final, record["final"]), (final - record["final"]).abs().max().item()


def test_ancestral_at_eta_0_is_res_multistep() -> None:
    """`RESMultistepAncestral(eta=0)` is ComfyUI's `sample_res_multistep` (its noise scaled by sigma_up = 0)."""
    record = RECORDED["res_multistep"]["sd15-karras"]
    record = {**record, "noise": torch.randn(len(record["inputs"]) - 1, *record["final"].shape)}
    _, final = run(fs.RESMultistepAncestral(eta=0.0), record, "sd15-karras", branch_free=False)
    assert torch.equal(final, record["final"])


# Measured slopes over 20-160 steps: 2.16 (eta 1), 2.09 (eta 0.5).
WEAK_ORDER_TWO = {"eta-1": fs.RESMultistepAncestral(), "eta-half": fs.RESMultistepAncestral(eta=0.5)}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=(pytest.mark.slow,) if "half" in name else ()) for name in WEAK_ORDER_TWO]
)
def test_ancestral_weak_order_two(name: str) -> None:
    """The ancestral sampler's weak error on the Gaussian problem (the law of its samples against the data's marginal,
    `gaussian.weak_error_of_states`) falls like N^-2, as the deterministic RES multistep's error does."""
    steps = (20, 40, 80, 160)
    errors = [gaussian.weak_error_of_states(WEAK_ORDER_TWO[name], count) for count in steps]
    slope = gaussian.fitted_order(steps, errors)
    assert abs(slope - 2) <= 0.2 and errors == sorted(errors, reverse=True), (slope, errors)


def test_readme_lists_both() -> None:
    section = README.read_text().split("### Beyond diffusers", 1)[1].split("\n#", 1)[0]
    for scheduler in SAMPLERS.values():
        assert f"| comfyui `{scheduler.diffusers_name}`" in section and f"| `{scheduler.__name__}` |" in section
