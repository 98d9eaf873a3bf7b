"""Purity and structure: `step` writes into none of its inputs, the same inputs give the same outputs, and a state
keeps one structure (fields, shapes, dtypes, devices) after every step (optax's
`test_state_shape_dtype_shard_stability`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree

from ..requests import run_loop, same_state, start, step_inputs, tensor_leaves
from ..selection import configs
from ..spec import Case


def layout(state: Any) -> tuple[Any, list[tuple[str, torch.Size, torch.dtype, torch.device]]]:
    return pytree.tree_structure(state), [
        (path, leaf.shape, leaf.dtype, leaf.device) for path, leaf in tensor_leaves(state)
    ]


class Purity:
    """No input written, nothing hidden carried between calls, a state of fixed structure."""

    @configs("every")
    def test_step_writes_into_nothing(self, case: Case) -> None:
        sched, state, sample = start(case)
        samples, state = run_loop(case, sched, state, sample, 2, generator=torch.Generator().manual_seed(2))
        sample = samples[-1]  # a request a few steps in: multistep histories hold real values
        inputs = step_inputs(case, sched, state, sample, torch.Generator().manual_seed(3))
        watched = [("sample", sample), *inputs.items(), *tensor_leaves(state)]
        before = [(tensor.clone(), tensor._version) for _, tensor in watched]

        prev_sample, new_state = sched.step(state, sample=sample, **inputs)

        for (name, tensor), (copy, version) in zip(watched, before, strict=True):
            assert tensor._version == version, f"{name} was written in place"
            assert torch.equal(tensor, copy), f"{name} changed"
        assert prev_sample.data_ptr() != sample.data_ptr()
        again_sample, again_state = sched.step(state, sample=sample, **inputs)
        assert torch.equal(again_sample, prev_sample), "the same inputs gave another sample"
        assert same_state(again_state, new_state), "the same inputs gave another state"
        assert torch.equal(new_state.step_index, state.step_index + 1)

    @configs("every")
    def test_state_structure_is_stable(self, case: Case) -> None:
        for dtype in (torch.float32, torch.bfloat16):
            sched, state, sample = start(case, dtype=dtype)
            initial = layout(state)
            assert state.plan.coefficients.shape[-1] == sched.plan_columns, "the plan's layout is not plan_columns"
            assert all(isinstance(leaf, torch.Tensor) for leaf in pytree.tree_leaves(state)), "a state holds tensors"
            generator = torch.Generator().manual_seed(4)
            for index in range(len(sched.timesteps(state))):
                sample, state = sched.step(state, sample=sample, **step_inputs(case, sched, state, sample, generator))
                assert sample.dtype == dtype, f"{dtype}, step {index}: returned {sample.dtype}"
                assert layout(state) == initial, f"{dtype}, step {index}: the state changed structure"
