"""Several threads running the same pipeline object at once, with different step counts (issue 3, item 3).

A diffusers scheduler is one mutable object (timesteps, sigmas, step index, solver history): threads that share a
pipeline share it, so one thread's `set_timesteps` and `step` clobber another's. `for_request(pipe)` gives each
request a shallow copy of the pipeline with its own drop-in scheduler, sharing the models, so every thread's output
equals its serial run bit for bit.

The interleaved runs are deterministic, not timing-dependent: threads start one after another (each reaches its
first UNet call, so its `set_timesteps` is done, before the next starts), and a turn keeper then lets exactly one
thread run a denoising step at a time, round robin: a UNet forward pre-hook waits for the thread's turn and
`callback_on_step_end` (after the scheduler's `step`) passes the turn on. Every wait has a timeout, so a bug fails
instead of hanging.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import _tiny_pipelines as tiny
import diffusers
import test_pipelines
import torch
from test_pipelines import SD_KWARGS, _sd_call

from functional_sched.adapters.drop_in import DPMSolverMultistepScheduler, as_diffusers, for_request

sd_parts = test_pipelines.sd_parts  # the tiny Stable Diffusion parts (a module-scoped fixture)
TIMEOUT = 30.0
STEP_COUNTS = (4, 7, 5)


def _run(pipe: Any, parts: dict[str, Any], steps: int, **kwargs: Any) -> torch.Tensor:
    return pipe(height=32, width=32, **_sd_call(parts, num_inference_steps=steps, **kwargs)).images


class _Turns:
    """Round-robin turns between threads, one denoising step each; a thread leaves after its last step."""

    def __init__(self, steps: list[int]) -> None:
        self.remaining = list(steps)
        self.turn = 0
        self.condition = threading.Condition()
        self.local = threading.local()
        self.ready = [threading.Event() for _ in steps]
        self.order: list[int] = []  # (thread) per step, as run

    def _wait(self, predicate: Any) -> None:
        if not self.condition.wait_for(predicate, timeout=TIMEOUT):
            raise TimeoutError("turn keeper timed out")

    def before_unet(self, module: Any, args: Any) -> None:
        index = getattr(self.local, "index", None)
        if index is None:  # a serial run, or a thread not under the turn keeper
            return
        self.ready[index].set()  # its set_timesteps is done: the next thread may start
        with self.condition:
            self._wait(lambda: self.turn == index)
            self.order.append(index)

    def after_step(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        index = self.local.index
        with self.condition:
            assert self.turn == index
            self.remaining[index] -= 1
            active = [i for i, left in enumerate(self.remaining) if left > 0]
            if active:
                later = [i for i in active if i > index]
                self.turn = later[0] if later else active[0]
            self.condition.notify_all()
        return callback_kwargs

    def run(self, pipes: list[Any], parts: dict[str, Any], steps: list[int]) -> list[Any]:
        """Each thread calls its pipe (possibly the same object) with its step count; results or exceptions."""
        results: list[Any] = [None] * len(steps)

        def worker(index: int) -> None:
            self.local.index = index
            try:
                results[index] = _run(pipes[index], parts, steps[index], callback_on_step_end=self.after_step)
            except Exception as error:  # recorded, asserted by the test
                results[index] = error
                with self.condition:  # let the others go on without this thread
                    self.remaining[index] = 0
                    active = [i for i, left in enumerate(self.remaining) if left > 0]
                    if active and self.turn == index:
                        self.turn = active[0]
                    self.condition.notify_all()
            finally:
                self.ready[index].set()

        unet = parts["unet"]
        handle = unet.register_forward_pre_hook(self.before_unet)
        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(steps))]
        try:
            for index, thread in enumerate(threads):
                thread.start()
                assert self.ready[index].wait(TIMEOUT), "thread did not reach its first step"
            for thread in threads:
                thread.join(TIMEOUT)
                assert not thread.is_alive(), "thread hung"
        finally:
            handle.remove()
        return results


def _serial(parts: dict[str, Any], scheduler_class: type, steps: list[int]) -> list[torch.Tensor]:
    return [_run(tiny.sd_pipeline(scheduler_class(**SD_KWARGS)), parts, n) for n in steps]


# ------------------------------------------------------------------------------------------------ for_request
def test_for_request_shares_models_not_scheduler(sd_parts: dict[str, Any]) -> None:
    for original in (diffusers.DPMSolverMultistepScheduler(**SD_KWARGS), DPMSolverMultistepScheduler(**SD_KWARGS)):
        pipe = tiny.sd_pipeline(original)
        config = pipe.config
        snapshot = dict(config)
        request = for_request(pipe)
        assert pipe.scheduler is original and pipe.config is config and dict(pipe.config) == snapshot
        assert request is not pipe and type(request) is type(pipe)
        assert type(request.scheduler) is DPMSolverMultistepScheduler and request.scheduler is not original
        assert dict(request.scheduler.config) == dict(as_diffusers(original).config)
        assert request.unet is pipe.unet and request.vae is pipe.vae
        # The copy's model index names its own scheduler's class (the drop-in's module); the rest is `pipe`'s.
        assert dict(request.config) == {
            **snapshot,
            "scheduler": (DPMSolverMultistepScheduler.__module__, "DPMSolverMultistepScheduler"),
        }
        assert for_request(pipe).scheduler is not request.scheduler  # fresh per call
        # Running the copy leaves the original scheduler untouched.
        _run(request, sd_parts, 3)
        assert request.scheduler.step_index == 3
        assert pipe.scheduler is original and dict(pipe.config) == snapshot


# ------------------------------------------------------------------------------------------------ interleaved
def test_upstream_shared_dpm_solver_is_corrupted_by_concurrent_requests(sd_parts: dict[str, Any]) -> None:
    """Documents upstream diffusers behaviour, not ours: one pipeline, its own scheduler, three threads at once.

    The threads share `pipe.scheduler`: the last `set_timesteps` (thread 2's, 5 steps) wins for everyone, and every
    `step` advances the one shared step index. Five steps in all (threads 0, 1, 2, 0, 1) use up the shared 5-step
    schedule; the sixth (thread 2's second step) and every later one (threads 0 and 1, their third) index past the
    end of the shared sigmas: all three requests die with the same IndexError, none produces an image.
    """
    steps = list(STEP_COUNTS)
    pipe = tiny.sd_pipeline(diffusers.DPMSolverMultistepScheduler(**SD_KWARGS))
    turns = _Turns(steps)
    results = turns.run([pipe] * len(steps), sd_parts, steps)
    assert turns.order == [0, 1, 2, 0, 1, 2, 0, 1]  # UNet calls entered; the last three steps raise in `step`
    for result in results:
        assert isinstance(result, IndexError), repr(result)
        assert str(result) == "index 6 is out of bounds for dimension 0 with size 6"
    assert pipe.scheduler.num_inference_steps == 5 and pipe.scheduler.step_index == 5
    # Alone, the same pipeline object runs each request fine.
    assert _run(pipe, sd_parts, 7).shape == (1, 4, 16, 16)


def test_for_request_interleaved_equals_serial(sd_parts: dict[str, Any]) -> None:
    steps = list(STEP_COUNTS)
    for scheduler_class in (diffusers.DPMSolverMultistepScheduler, DPMSolverMultistepScheduler):
        serial = _serial(sd_parts, DPMSolverMultistepScheduler, steps)
        pipe = tiny.sd_pipeline(scheduler_class(**SD_KWARGS))
        turns = _Turns(steps)
        results = turns.run([for_request(pipe) for _ in steps], sd_parts, steps)
        assert turns.order == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 1, 2, 1, 1]  # really interleaved
        for index, result in enumerate(results):
            assert not isinstance(result, Exception), repr(result)
            assert torch.equal(result, serial[index]), f"thread {index} ({steps[index]} steps) differs"
        assert isinstance(pipe.scheduler, scheduler_class) and pipe.scheduler.step_index is None


def test_for_request_under_load_equals_serial(sd_parts: dict[str, Any]) -> None:
    """8 threads, no turn keeper, random step counts: each request equals its serial run."""
    steps = random.Random(3).choices(range(2, 9), k=8)
    serial = {n: _run(tiny.sd_pipeline(DPMSolverMultistepScheduler(**SD_KWARGS)), sd_parts, n) for n in set(steps)}
    pipe = tiny.sd_pipeline(diffusers.DPMSolverMultistepScheduler(**SD_KWARGS))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda n: _run(for_request(pipe), sd_parts, n), steps))
    for n, result in zip(steps, results, strict=True):
        assert torch.equal(result, serial[n]), f"{n} steps differs"
