"""Load: a few hundred requests with random schedulers, step counts, rows and guidance through one pipeline object
from many threads; every result equals its serial run bit for bit, none lost, none mixed up, none twice."""

from __future__ import annotations

import queue
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from specs import CASES
from test_stages import EMBED, SHAPE, conditioned_model

from functional_sched.stages import Decode, Denoise, Pipeline, PrepareLatents, PrepareTimesteps, Req
from functional_sched.testing import latents

REQUESTS = 300
THREADS = 16
BATCH = 8  # the most requests a serving thread steps in one step_many call


def _requests(count: int) -> list[Req]:
    rng = random.Random(2026)
    reqs = []
    for index in range(count):
        while True:  # a config and step count that makes a schedule (some are refused: the parity column checks why)
            case = rng.choice(list(CASES.values()))
            schedule = case.init_kwargs(rng.randint(max(2, case.steps - 5), case.steps + 4))
            try:
                case.scheduler().plan(**schedule)
                break
            except ValueError:
                continue
        rows = rng.choice([1, 1, 2])
        guided = rng.random() < 0.7
        reqs.append(
            Req(
                scheduler=case.scheduler(),
                num_inference_steps=schedule.pop("num_inference_steps"),
                **schedule,
                latent_shape=(rows, *SHAPE),
                seed=index,
                prompt_embeds=latents((rows, *EMBED), torch.float32, seed=10_000 + index),
                negative_prompt_embeds=latents((rows, *EMBED), torch.float32, seed=20_000 + index) if guided else None,
                guidance_scale=rng.uniform(1.0, 8.0),
                guidance_rescale=rng.choice([0.0, 0.0, 0.7]),
                extras={"id": index},
            )
        )
    return reqs


PIPELINE = Pipeline([PrepareTimesteps(), PrepareLatents(), Denoise(conditioned_model), Decode()])


@pytest.fixture(scope="module")
def serial() -> tuple[list[Req], list[Req]]:
    reqs = _requests(REQUESTS)
    return reqs, [PIPELINE.forward(req) for req in reqs]


def _check(results: dict[int, Req], expected: list[Req]) -> None:
    assert sorted(results) == list(range(len(expected)))  # none lost, none twice
    for index, ref in enumerate(expected):
        ours = results[index]
        assert ours.extras["id"] == index and ours.seed == ref.seed  # not mixed up with another request
        assert torch.equal(ours.output, ref.output), f"request {index}"
        assert torch.equal(ours.state.step_index, ref.state.step_index)


def test_threads_each_running_whole_requests(serial: tuple[list[Req], list[Req]]) -> None:
    reqs, expected = serial
    with ThreadPoolExecutor(THREADS) as pool:
        done = list(pool.map(PIPELINE.forward, reqs))
    _check({req.extras["id"]: req for req in done}, expected)


def test_threads_serving_steps_of_mixed_batches(serial: tuple[list[Req], list[Req]]) -> None:
    """A serving loop: threads take up to BATCH in-flight requests from one queue (whatever their scheduler and
    step), advance them one step in one `step_many` call, and put back the unfinished ones."""
    reqs, expected = serial
    prepare, latents_stage, denoise, decode = PIPELINE.stages
    waiting: queue.Queue[Req] = queue.Queue()
    for req in reqs:
        waiting.put(latents_stage.forward(prepare.forward(req)))
    results: dict[int, Req] = {}
    lock = threading.Lock()
    finished = threading.Event()
    calls = []

    def serve() -> None:
        while not finished.is_set():
            try:
                batch = [waiting.get(timeout=0.01)]
            except queue.Empty:
                continue
            while len(batch) < BATCH:
                try:
                    batch.append(waiting.get_nowait())
                except queue.Empty:
                    break
            calls.append(len(batch))
            for req in denoise.step_many(batch):
                if not denoise.done(req):
                    waiting.put(req)
                    continue
                with lock:
                    assert req.extras["id"] not in results
                    results[req.extras["id"]] = decode.forward(req)
                    if len(results) == len(reqs):
                        finished.set()

    threads = [threading.Thread(target=serve) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert finished.is_set() and not any(thread.is_alive() for thread in threads)
    _check(results, expected)
    assert max(calls) > 1  # requests really were stepped together
    steps = sum(int(req.state.step_index[0]) for req in expected)
    print(f"\nload: {len(reqs)} requests, {steps} request-steps in {len(calls)} step_many calls from {THREADS} threads")
