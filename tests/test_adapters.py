"""functional_sched.adapters: `from_diffusers` maps what diffusers keeps outside its config, ignores what it ignores,
refuses what we lack by name; the report passes. (That every class's options round-trip through diffusers, with
diffusers' names and defaults, is the conformance suite's interop column.)"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any

import diffusers
import numpy as np
import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import drop_in, from_diffusers
from functional_sched.adapters.diffusers import config_options
from functional_sched.adapters.report import GRID, cases, main

AVAILABLE = {scheduler.diffusers_name: scheduler for scheduler in fs.SCHEDULERS}


def _assert_mirrors(ours: Any, reference: Any) -> None:
    """Every field of ours equals diffusers' config value of the same name (lists as tuples)."""
    for name in config_options(type(ours)):
        value = getattr(ours, name)
        expected = reference.config.get(name)  # None: a registered key (sigma_min) the pipeline did not register
        expected = tuple(expected) if isinstance(expected, list) else expected
        assert value == expected or (math.isnan(value) and math.isnan(expected)), name


def test_grid_covers_every_flow_match_pipeline():
    assert {case.label for case in cases() if case.diffusers_name == "FlowMatchEulerDiscreteScheduler"} >= {
        "SD3",
        "Flux.1-dev 1024px",
        "Qwen-Image 1328px",
    }


def test_numpy_values_become_python():
    reference = diffusers.FlowMatchEulerDiscreteScheduler(shift=np.float32(3.0), num_train_timesteps=np.int64(1000))
    ours = from_diffusers(reference)
    assert type(ours.shift) is float and ours.shift == 3.0
    assert type(ours.num_train_timesteps) is int


def test_invalid_value_is_rejected_by_our_constructor():
    with pytest.raises(ValueError, match="shift"):
        from_diffusers(diffusers.FlowMatchEulerDiscreteScheduler(shift=-1.0))


def test_unknown_class_names_it_and_lists_the_supported():
    class MadeUpScheduler:
        config: dict[str, Any] = {}  # noqa: RUF012

    with pytest.raises(NotImplementedError, match="MadeUpScheduler") as error:
        from_diffusers(MadeUpScheduler())
    for scheduler_class in fs.SCHEDULERS:
        listed = scheduler_class.diffusers_name in str(error.value)
        assert listed == (scheduler_class.reference_library == "diffusers") or scheduler_class.diffusers_name in {
            cls.diffusers_name for cls in fs.SCHEDULERS if cls.reference_library == "diffusers"
        }


def _impostor(**config: Any) -> Any:
    """A stand-in for a diffusers FlowMatchEulerDiscreteScheduler whose class has one more option, `exotic`."""
    real = diffusers.FlowMatchEulerDiscreteScheduler
    exotic = inspect.Parameter("exotic", inspect.Parameter.KEYWORD_ONLY, default="off")

    class FlowMatchEulerDiscreteScheduler:
        shift = 1.0

        def __init__(self, config: dict[str, Any]) -> None:
            self.config = config

    FlowMatchEulerDiscreteScheduler.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*inspect.signature(real.__init__).parameters.values(), exotic]
    )
    return FlowMatchEulerDiscreteScheduler({**real().config, **config})


def test_unsupported_option_names_option_and_value():
    with pytest.raises(NotImplementedError, match=r"FlowMatchEulerDiscreteScheduler option exotic='on'"):
        from_diffusers(_impostor(exotic="on"))


def test_unsupported_option_at_its_default_is_ignored():
    assert from_diffusers(_impostor(exotic="off")) == fs.FlowMatchEulerDiscrete()


def test_private_and_foreign_keys_are_ignored():
    # A config carried over from another class (SD 1.5's PNDM `skip_prk_steps`) and diffusers' bookkeeping keys.
    assert from_diffusers(_impostor(_class_name="x", skip_prk_steps=True)) == fs.FlowMatchEulerDiscrete()


def test_set_shift_maps_to_its_option_rather_than_silently_different():
    reference = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)
    reference.set_shift(3.0)
    assert from_diffusers(reference) == fs.FlowMatchEulerDiscrete(shift=1.0, set_shift=3.0)
    reference.set_shift(1.0)
    assert from_diffusers(reference) == fs.FlowMatchEulerDiscrete()


def test_set_shift_is_harmless_with_dynamic_shifting():
    reference = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    reference.set_shift(3.0)
    assert from_diffusers(reference) == fs.FlowMatchEulerDiscrete(use_dynamic_shifting=True)


def test_dpm_set_timesteps_mu_rewrites_flow_shift():
    reference = diffusers.DPMSolverMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True
    )
    reference.set_timesteps(10, mu=1.0)
    assert reference.config["flow_shift"] == 1.0  # the dict keeps the old value; diffusers reads the attribute
    ours = from_diffusers(reference)
    assert ours.flow_shift == pytest.approx(math.e) and type(ours.flow_shift) is float
    reference.set_timesteps(10)
    state = ours.init(10, sample=torch.zeros(1, 4))
    assert torch.equal(ours.timesteps(state), reference.timesteps)


def test_dpm_from_an_sd15_pndm_config():
    pndm = diffusers.PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    reference = diffusers.DPMSolverMultistepScheduler.from_config(pndm.config)
    assert "skip_prk_steps" in reference.config
    _assert_mirrors(from_diffusers(reference), reference)


def test_unipc_instance_copies_win_over_config():
    reference = diffusers.UniPCMultistepScheduler(disable_corrector=[0])
    assert from_diffusers(reference).disable_corrector == (0,)
    reference.disable_corrector = [0, 1]  # what diffusers' step reads
    assert from_diffusers(reference).disable_corrector == (0, 1)


def test_report_passes_and_writes_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["--steps", "4", "--repeats", "1", "--device", "cpu", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["case"] for row in rows] == [case.label for case in cases()]
    assert all(row["passed"] and row["table_equal"] and row["worst_error"] <= 1e-5 for row in rows)
    printed = capsys.readouterr().out
    assert "PASS" in printed and "FAIL" not in printed


def test_grid_names_real_diffusers_classes():
    for case in GRID:
        assert hasattr(diffusers, case.diffusers_name), case.diffusers_name


@pytest.mark.parametrize("spacing", ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"])
@pytest.mark.parametrize("name", ["FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler"])
def test_config_keys_no_constructor_takes_are_mapped(name: str, spacing: str) -> None:
    """A pipeline may register keys the class's constructor does not take: Cosmos 2 registers sigma_min=0.002 and
    sigma_max=80, which diffusers' Karras, exponential and beta sigmas read. `from_diffusers` maps them, a drop-in
    whose config gains them after construction re-plans with them, and `as_diffusers` registers them again: the
    tables equal diffusers' in each case."""
    reference = getattr(diffusers, name)(**{spacing: True})
    reference.register_to_config(sigma_min=0.002, sigma_max=80.0)
    reference.set_timesteps(8)
    ours = from_diffusers(reference)
    assert (ours.sigma_min, ours.sigma_max) == (0.002, 80.0)
    assert torch.equal(ours.plan(8).timesteps[0], reference.timesteps)
    late = drop_in.DROP_INS[name](**{spacing: True})
    late.set_timesteps(8)
    late.register_to_config(sigma_min=0.002, sigma_max=80.0)  # as Cosmos 2's pipeline does, after construction
    late.set_timesteps(8)
    again = drop_in.as_diffusers(ours)
    again.set_timesteps(8)
    for drop in (late, again):
        assert drop.config.sigma_min == 0.002 and torch.equal(drop.timesteps, reference.timesteps)
        assert torch.equal(drop.sigmas, reference.sigmas)


def test_trained_betas_of_another_length_construct_and_refuse_a_schedule() -> None:
    """diffusers builds a scheduler with any number of trained betas (its own tests do, and read `betas` back); a
    schedule needs one per training timestep, and is refused by name before anything is computed."""
    ours = drop_in.DPMSolverMultistepScheduler(trained_betas=[0.1, 0.3])
    assert ours.betas.tolist() == diffusers.DPMSolverMultistepScheduler(trained_betas=[0.1, 0.3]).betas.tolist()
    with pytest.raises(ValueError, match="trained_betas has 2 values but num_train_timesteps=1000"):
        ours.set_timesteps(10)
