"""`DPMSolverAdaptive` beyond the conformance suite (tests/specs/dpm_adaptive.py holds it to k-diffusion): the budget's
rule, finished rows, the queries it has and has not, a handed-over solve, and the README's example as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import functional_sched as fs
from functional_sched.adapters.k_diffusion import sample_dpm_adaptive_rows
from functional_sched.machinery import serialize
from functional_sched.testing import latents, toy_model

README = Path(__file__).resolve().parents[1] / "README.md"


def run(sched: fs.DPMSolverAdaptive, x: torch.Tensor, attempts: int) -> tuple[torch.Tensor, object, list]:
    """Our loop until every row is finished: the final sample, the state, each call's (timestep, sample)."""
    state = sched.init(attempts, sample=x)
    calls = []
    while sched.steps_left(state):
        timestep = sched.timestep(state)
        calls.append((timestep, x))
        x, state = sched.step(state, toy_model(x, timestep), x)
    return x, state, calls


def test_a_small_budget_ends_every_row_at_sigma_min_as_k_diffusion_would_with_it() -> None:
    """Two attempts where the solve needs nine: the second goes to sigma_min and is accepted (forced), every row ends
    there, and the result is k-diffusion's own loop with the budget's rule on its controller, bit for bit."""
    sched = fs.DPMSolverAdaptive()
    x = latents((2, 4, 8, 8)) * sched.sigma_max
    final, state, calls = run(sched, x, 2)
    info = sched.info(state)
    assert len(calls) == 2 * sched.order
    assert info["forced"].all() and info["finished"].all() and info["steps"].tolist() == [2, 2]
    assert torch.allclose(info["sigma"], torch.tensor(sched.sigma_min, dtype=torch.float64).float())
    reference, infos = sample_dpm_adaptive_rows(toy_model, x.clone(), sched, 2)
    assert torch.equal(final, reference) and [entry["steps"] for entry in infos] == [2, 2]


def test_a_finished_row_is_left_as_it_is_while_the_others_go_on() -> None:
    """Rows of one state finish at different calls (one starts from a sample the model finds harder); a finished
    row's later calls return its sample as given and leave its solve (log sigma, step size, counts) as they were."""
    sched = fs.DPMSolverAdaptive(rtol=0.01, atol=0.001)
    x = torch.cat([latents((1, 4, 8, 8), seed=1), 3 * latents((1, 4, 8, 8), seed=2)]) * sched.sigma_max
    state = sched.init(40, sample=x)
    seen_finished = False
    while sched.steps_left(state):
        before = state
        output = toy_model(x, sched.timestep(state))
        output[0] = output[0] if not sched.finished(state)[0] else float("nan")  # a finished row's output is ignored
        x_next, state = sched.step(state, output, x)
        done = sched.finished(before)
        if done.any() and not done.all():
            seen_finished = True
            row = int(done.nonzero()[0])
            assert torch.equal(x_next[row], x[row])
            for name in ("log_sigma", "step_size", "attempts", "accepted"):
                assert torch.equal(getattr(state, name)[row], getattr(before, name)[row]), name
        x = x_next
    assert seen_finished, "the rows finished together: pick other starts"
    assert torch.isfinite(x).all()
    info = sched.info(state)
    assert info["finished"].all() and not info["forced"].any() and info["steps"][0] != info["steps"][1]


def test_there_is_no_table_to_read() -> None:
    sched = fs.DPMSolverAdaptive()
    state = sched.init(10, sample=torch.zeros(1, 4, 8, 8))
    for method in (sched.timesteps, sched.sigmas):
        with pytest.raises(TypeError, match=r"no table: its sigmas are chosen from the data .* timestep\(state\)"):
            method(state)
    with pytest.raises(ValueError, match="give num_inference_steps, the budget of attempts"):
        sched.init(sample=torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="begin_index must be 0"):
        sched.init(10, sample=torch.zeros(1, 4, 8, 8), begin_index=3)


def test_a_state_whose_solve_the_host_does_not_know_reads_it_once_and_goes_on_alike() -> None:
    """A state rebuilt with `replace` (its solve's tensors the same values, other objects) and a deserialised one step
    on bit for bit as the state they copy."""
    sched = fs.DPMSolverAdaptive(pcoeff=0.3, icoeff=0.9, dcoeff=0.2)
    x = latents((1, 4, 8, 8)) * sched.sigma_max
    expected = run(sched, x, 30)[0]
    state, sample = sched.init(30, sample=x), x
    for _ in range(7):  # into the third attempt
        sample, state = sched.step(state, toy_model(sample, sched.timestep(state)), sample)
    rebuilt = state.replace(step_size=state.step_size.clone())
    tensors, metadata = serialize.state_to_tensors(state)
    loaded = serialize.state_from_tensors(tensors, metadata, sched)
    for other in (rebuilt, loaded):
        x_other = sample
        while sched.steps_left(other):
            x_other, other = sched.step(other, toy_model(x_other, sched.timestep(other)), x_other)
        assert torch.equal(x_other, expected)


@pytest.mark.parametrize(
    ("field", "edit", "problem"),
    [
        ("accepted", lambda value: value + 5, "no counts of"),
        ("step_size", lambda value: -value, "not positive"),
        ("attempt_plan", lambda value: value * 1.01, "coefficients are not those"),
        ("log_sigma", lambda value: value - 10, "lies outside"),
    ],
)
def test_an_edited_solve_is_refused_on_loading(field: str, edit: object, problem: str) -> None:
    sched = fs.DPMSolverAdaptive()
    sample = latents((1, 4, 8, 8)) * sched.sigma_max
    state = sched.init(10, sample=sample)
    for _ in range(4):
        sample, state = sched.step(state, toy_model(sample, sched.timestep(state)), sample)
    tensors, metadata = serialize.state_to_tensors(state)
    tensors = {**tensors, field: edit(tensors[field])}  # type: ignore[operator]
    with pytest.raises(ValueError, match=problem):
        serialize.state_from_tensors(tensors, metadata, sched)


def test_readme_example_runs_as_written() -> None:
    """The README's DPM-Solver adaptive block, with a denoiser and latents of its reader's."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    examples = [block for block in blocks if "fs.DPMSolverAdaptive(" in block]
    assert len(examples) == 1
    namespace = {"fs": fs, "latents": latents((2, 4, 8, 8)), "denoiser": toy_model}
    exec(compile(examples[0], "README.md", "exec"), namespace)
    info = namespace["sched"].info(namespace["state"])
    assert info["finished"].all() and not info["forced"].any()


def test_an_attempt_of_zero_length_is_rejected_as_k_diffusion_rejects_it() -> None:
    """A step size below what the float32 time can hold (t = s): the attempt divides 0 by 0 (NaN coefficients, NaN
    error, rejected), on the host path as on the tensors, until the budget's last attempt forces the end."""
    sched = fs.DPMSolverAdaptive(h_init=1e-12)
    x = latents((1, 4, 8, 8)) * sched.sigma_max
    final, state, _ = run(sched, x, 3)
    info = sched.info(state)
    assert info["n_reject"].tolist() == [2] and info["forced"].all() and torch.isfinite(final).all()
    assert torch.equal(final, sample_dpm_adaptive_rows(toy_model, x.clone(), sched, 3)[0])
