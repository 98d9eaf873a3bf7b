"""sglang's DPM-Solver wrapper beyond the conformance suite (`tests/specs/sglang_dpm.py`): the options it takes and
drops, refused by name; its drop-in where the suite's columns cannot run sglang's object (img2img starts, the begin
index it keeps and never reads); wan_animate_2's truncated timesteps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from specs.sglang_dpm import SANA, WAN_ANIMATE, wan_sigmas

import functional_sched as fs
from functional_sched.adapters import drop_in, from_sglang
from functional_sched.adapters import sglang as sglang_adapter
from functional_sched.testing.parity import toy_model

pytestmark = pytest.mark.skipif(
    not sglang_adapter.available(), reason="sglang's wheel is not installed: pip install --no-deps sglang==0.5.23"
)


def _wrapper() -> type:
    return sglang_adapter.sglang_class("DPMSolverMultistepScheduler")


def _drop_in() -> type:
    found = drop_in.drop_in_class(fs.SglangDPMSolverMultistep)
    assert found is not None
    return found


DROPPED = [("use_dynamic_shifting", True), ("time_shift_type", "linear")]


def test_from_sglang_maps_a_checkpoints_config() -> None:
    """SANA's scheduler_config.json (diffusers' keys and defaults written out) maps to sglang's options."""
    config = {"beta_schedule": "linear", "solver_order": 2, **SANA, "use_dynamic_shifting": False}
    assert from_sglang(_wrapper().from_config(config)) == fs.SglangDPMSolverMultistep(beta_schedule="linear", **SANA)
    assert fs.SglangDPMSolverMultistep().beta_schedule == "scaled_linear"  # sglang's default, not diffusers' "linear"
    assert fs.SglangDPMSolverMultistep().flow_shift is None


@pytest.mark.parametrize(("key", "value"), DROPPED)
def test_options_sglang_drops_are_refused_by_name(key: str, value: object) -> None:
    """sglang's wrapper takes them (`**kwargs`) and never passes them on: a config asking for them would run without."""
    from_config = _wrapper().from_config({**SANA, key: value})
    with pytest.raises(NotImplementedError, match=rf"option {key}={value!r}"):
        from_sglang(from_config)
    with pytest.raises(NotImplementedError, match=rf"option {key}={value!r}"):
        _drop_in()(**SANA, **{key: value})
    ours = _drop_in().from_config({**SANA, key: value})  # from_config registers unknown keys after construction
    with pytest.raises(NotImplementedError, match=rf"option {key}={value!r}"):
        ours.set_timesteps(10)
    with pytest.raises(TypeError):
        fs.SglangDPMSolverMultistep(**{key: value})


def test_a_registered_sigma_range_is_refused_by_name() -> None:
    """Cosmos 2 registers sigma_min/sigma_max on diffusers' DPM; on sglang's wrapper they land where nothing reads."""
    wrapper = _wrapper()(use_karras_sigmas=True)
    wrapper.register_to_config(sigma_min=0.002, sigma_max=80.0)
    with pytest.raises(NotImplementedError, match=r"option sigma_min=0.002"):
        from_sglang(wrapper)


def test_mu_fails_as_sglangs_inner_scheduler_does() -> None:
    with pytest.raises(AssertionError):
        _wrapper()(**SANA).set_timesteps(10, mu=1.0)
    with pytest.raises(AssertionError):
        _drop_in()(**SANA).set_timesteps(10, mu=1.0)
    sched = fs.SglangDPMSolverMultistep(**SANA)
    with pytest.raises(ValueError, match="mu is not supported"):
        sched.init(10, sample=torch.zeros(1, 4), mu=1.0)


@pytest.mark.parametrize(("steps", "differ"), [(40, 17), (10, 2)])
def test_wan_animate_timesteps_are_truncated(steps: int, differ: int) -> None:
    """int64(sigma * 1000), as sglang's wrapper makes them: not rounded (17 of 40 entries differ for Wan's grid)."""
    sigmas = wan_sigmas(steps)["sigmas"]
    sched = fs.SglangDPMSolverMultistep(**WAN_ANIMATE)
    timesteps = sched.timesteps(sched.init(sample=torch.zeros(1, 4), sigmas=sigmas))
    assert timesteps.tolist() == (sigmas * 1000).astype(np.int64).tolist()
    assert int((timesteps != torch.from_numpy(np.round(sigmas * 1000)).to(torch.int64)).sum()) == differ
    assert sched.sigmas(sched.init(sample=torch.zeros(1, 4), sigmas=sigmas))[0].item() == 1.0


def _loop(scheduler: object, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    for t in timesteps:
        x = scheduler.step(toy_model(x, t), t, x, return_dict=False)[0]  # type: ignore[attr-defined]
    return x


@pytest.mark.parametrize("options", [SANA, {}], ids=["sana", "sglang-defaults"])
def test_drop_in_img2img_start(options: dict) -> None:
    """diffusers' img2img start (`get_timesteps`, one call per timestep: index int(n - n * strength)), which the
    suite's column takes `scheduler.order` for (sglang's is solver_order): both find it by the first timestep."""
    for strength in (0.5, 0.75):
        wrapper, ours = _wrapper()(**options), _drop_in()(**options)
        begin = int(10 - 10 * strength)
        for scheduler in (wrapper, ours):
            scheduler.set_timesteps(10)
            scheduler.set_begin_index(begin)
            assert scheduler.begin_index == begin
        image, noise = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
        t = wrapper.timesteps[begin : begin + 1].repeat(2)
        x = wrapper.add_noise(image, noise, t)
        assert torch.equal(ours.add_noise(image, noise, t), x)
        assert torch.equal(_loop(ours, x, ours.timesteps[begin:]), _loop(wrapper, x, wrapper.timesteps[begin:]))


def test_drop_in_keeps_the_begin_index_and_reads_it_not() -> None:
    """The wrapper forwards no `set_begin_index`: a loop from the first timestep starts at step 0 whatever was set
    (diffusers' DPM would start at the begin index), and `add_noise` looks each row's timestep up."""
    wrapper, ours = _wrapper()(**SANA), _drop_in()(**SANA)
    for scheduler in (wrapper, ours):
        scheduler.set_timesteps(8)
        scheduler.set_begin_index(3)
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_loop(ours, x, ours.timesteps), _loop(wrapper, x, wrapper.timesteps))
    image, noise, t = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6), wrapper.timesteps[[1, 6]]
    assert torch.equal(ours.add_noise(image, noise, t), wrapper.add_noise(image, noise, t))
    assert not hasattr(ours, "step_index") and not hasattr(wrapper, "step_index")
