"""`functional_sched.unchecked()`: it drops the eager checks in its block only, and in its thread only. (That every
scheduler's unchecked steps equal its checked ones is the conformance suite's hostile-inputs column.)"""

from __future__ import annotations

import threading

import pytest
import torch

import functional_sched as fs


def test_unchecked_is_scoped_to_its_block_and_thread() -> None:
    sched = fs.FlowMatchEulerDiscrete()
    sample = torch.randn(2, 3)
    state = sched.init(4, sample=sample)
    wrong_rows = torch.randn(3, 3)
    with pytest.raises(RuntimeError, match="boom"), fs.unchecked():
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="the state has 2 rows"):
        sched.step(state, wrong_rows, wrong_rows)  # checks are back after the block, even one that raised

    seen_in_thread: list[BaseException] = []

    def other_thread() -> None:
        try:
            sched.step(state, wrong_rows, wrong_rows)
        except ValueError as error:
            seen_in_thread.append(error)

    with fs.unchecked():
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert len(seen_in_thread) == 1, "another thread keeps its checks while this one runs unchecked"
