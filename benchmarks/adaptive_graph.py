"""What DPM-Solver adaptive costs in one CUDA graph against fixed steps (issue 18's closing figure).

    python benchmarks/adaptive_graph.py --device cuda --out DIR      # the H100 figures in RESULTS.md
    python benchmarks/adaptive_graph.py --device cpu --repeats 3      # a smoke run (no graphs: compiled loops)
    python benchmarks/adaptive_graph.py --device cpu --eager-only --threads 1 --shapes 1x4x32x32,1x4x64x64,1x4x128x128

k-diffusion's `sample_dpm_adaptive` decides each step from the data, so its loop runs until it is done; ours runs a
budget of attempts in a state of fixed structure (`DPMSolverAdaptive`), a finished row frozen for the budget's rest.
Per latents shape, from one start, with a cheap elementwise denoiser (`toy_model`: the figures are the solver's own
cost and the number of model calls, which multiply a real model's time):

- k-diffusion eager: its loop (model calls `nfe`), per image;
- ours eager: `while sched.steps_left(state)`, the same calls;
- ours in one CUDA graph (inductor, `fullgraph=True`) with a budget of exactly the attempts the solve needs, and of
  twice that (a margin: a graph runs every call of its budget);
- ours in graphs of `--chunk` attempts, replayed until every row has finished (one host read per chunk);
- fixed steps for comparison: DPM-Solver-fast (`DPMSolverFast`, k-diffusion's fixed-step DPM-Solver-3) in one graph
  at the same number of model calls.

Each row also gives the time per model call and how far its final sample lies from k-diffusion's (max |a - b| over
max |b|): a compiled step rounds otherwise than eager, and on CUDA k-diffusion forms its scalars on the host, so an
accept decision may flip between the two. Rows of a batch are separate solves (each its own step sizes, compared with
k-diffusion on each row alone; k-diffusion's own batch is one solve, timed as its users run it): the batch's graph
runs until its slowest row.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

import functional_sched as fs
from functional_sched.adapters.k_diffusion import sampler
from functional_sched.testing.parity import toy_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import Timer

SHAPES = ((1, 4, 128, 128), (8, 4, 64, 64), (1, 16, 21, 60, 104))


def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return toy_model(x, sigma)


class Captured:
    """`calls` calls of (timestep, model, step), compiled with `fullgraph=True`, captured in one CUDA graph with
    static input buffers (a state without its cursor, and the sample); on the CPU the compiled loop itself."""

    def __init__(self, sched: Any, state: Any, sample: torch.Tensor, calls: int) -> None:
        # DPM-fast takes noise at every interval's end (times eta = 0 here): zeros.
        noise = torch.zeros_like(sample) if sched.stochastic else None

        def call(state: Any, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
            return sched.step(state, model(x, sched.timestep(state)), x, noise=noise)

        self.step = torch.compile(call, fullgraph=True, options={"combo_kernels": True})
        self.calls = calls
        self.state = pytree.tree_map(lambda leaf: leaf.clone(), state.replace(cursor=None))
        self.sample = sample.clone()
        self.graph = None
        if sample.is_cuda:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._run()
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self._run()
        else:
            self._run()

    def _run(self) -> tuple[torch.Tensor, Any]:
        x, state = self.sample, self.state
        for _ in range(self.calls):
            x, state = self.step(state, x)
        return x, state

    def __call__(self, state: Any, sample: torch.Tensor) -> tuple[torch.Tensor, Any]:
        for static, leaf in zip(pytree.tree_leaves(self.state), pytree.tree_leaves(state), strict=True):
            static.copy_(leaf)
        self.sample.copy_(sample)
        if self.graph is None:
            return self._run()
        self.graph.replay()
        return self.out


def k_diffusion(sched: Any, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """k-diffusion's loop on the batch, as its users run it (one solve: its error norm over the whole batch): the
    final sample and its calls."""
    final, info = sampler("sample_dpm_adaptive")(
        model, x, sched.sigma_min, sched.sigma_max, disable=True, return_info=True
    )
    return final, info["nfe"]


def k_diffusion_rows(sched: Any, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """k-diffusion's loop on each row alone (its error norm the row's, as ours): the final samples and the most calls
    of a row (what ours, whose rows are separate solves, is compared with)."""
    finals, nfes = zip(*(k_diffusion(sched, x[row : row + 1]) for row in range(x.shape[0])), strict=True)
    return torch.cat(finals), max(nfes)


def ours_eager(sched: Any, x: torch.Tensor, attempts: int) -> tuple[torch.Tensor, int]:
    state = sched.init(attempts, sample=x)
    calls = 0
    while sched.steps_left(state):
        x, state = sched.step(state, model(x, sched.timestep(state)), x)
        calls += 1
    return x, calls


def chunked(capture: Captured, sched: Any, state: Any, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    calls = 0
    while True:
        x, state = capture(state, x)
        calls += capture.calls
        if bool(sched.finished(state).all()):
            return x, calls


def rows_alike(device: torch.device) -> list[tuple[str, bool]]:
    """Whether requests stacked at different calls step bit for bit as each alone, eagerly (three configs, three
    requests of one row at calls 0, 2 and 4, to the end): the host decides every row's attempt either way."""
    found = []
    for options in ({}, {"order": 2}, {"pcoeff": 0.3, "icoeff": 0.9, "dcoeff": 0.2}):
        sched = fs.DPMSolverAdaptive(**options)
        generator = torch.Generator().manual_seed(0)
        xs = [
            (torch.randn((1, 4, 32, 32), generator=generator) * sched.sigma_max * scale).to(device)
            for scale in (1, 2, 0.7)
        ]
        states = [sched.init(30, sample=x) for x in xs]
        for request, calls in ((1, 2), (2, 4)):
            for _ in range(calls):
                xs[request], states[request] = sched.step(
                    states[request], model(xs[request], sched.timestep(states[request])), xs[request]
                )
        batch, together = fs.batching.stack(states), torch.cat(xs)
        alike = True
        while sched.steps_left(batch):
            together, batch = sched.step(batch, model(together, sched.timestep(batch)), together)
            for request, state in enumerate(states):
                if state.step_index[0] < state.plan.num_steps[0]:
                    xs[request], states[request] = sched.step(
                        state, model(xs[request], sched.timestep(state)), xs[request]
                    )
            alike &= torch.equal(together, torch.cat(xs))
        found.append((str(options or "defaults"), alike))
    return found


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() / b.double().abs().max().item()


def measure(
    shape: tuple[int, ...], device: torch.device, timer: Timer, repeats: int, chunk: int, eager_only: bool = False
) -> list[dict]:
    sched = fs.DPMSolverAdaptive()
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=generator) * sched.sigma_max).to(device)
    reference, nfe = k_diffusion_rows(sched, x)
    attempts = nfe // sched.order
    budget = 4 * attempts  # room for any row: the eager loop stops where they are all finished
    rows: list[dict] = []

    def row(name: str, seconds: float, calls: int, final: torch.Tensor) -> None:
        rows.append(
            {
                "shape": "x".join(map(str, shape)),
                "loop": name,
                "model calls": calls,
                "ms per image": 1e3 * seconds / shape[0],
                "us per call": 1e6 * seconds / calls,
                "vs k-diffusion": relative(final, reference),
            }
        )

    batch, batch_nfe = k_diffusion(sched, x)
    final, calls = ours_eager(sched, x, budget)
    # The two eager loops take turns (`Timer.interleaved`), so that the host's drift hits both alike.
    theirs, ours = timer.interleaved(
        [lambda: lambda: k_diffusion(sched, x), lambda: lambda: ours_eager(sched, x, budget)], 2 * repeats, warmup=3
    )
    row("k-diffusion eager" + (" (the batch as one solve)" if shape[0] > 1 else ""), theirs, batch_nfe, batch)
    row("ours eager", ours, calls, final)
    if eager_only:
        return rows
    for margin in (1, 2):
        state = sched.init(margin * attempts, sample=x)
        capture = Captured(sched, state, x, margin * nfe)
        final = capture(state, x)[0].clone()
        seconds = timer.seconds(lambda capture=capture, state=state: lambda: capture(state, x), repeats)
        row(f"ours, one graph, budget {margin}x", seconds, margin * nfe, final)
    state = sched.init(budget, sample=x)
    capture = Captured(sched, state, x, chunk * sched.order)
    final, calls = chunked(capture, sched, state, x)
    seconds = timer.seconds(lambda: lambda: chunked(capture, sched, state, x), repeats)
    row(f"ours, graphs of {chunk} attempts until finished", seconds, calls, final)
    fast = fs.DPMSolverFast()
    state = fast.init(nfe, sample=x)
    capture = Captured(fast, state, x, nfe)
    final = capture(state, x)[0].clone()
    seconds = timer.seconds(lambda: lambda: capture(state, x), repeats)
    row("fixed steps: DPM-fast, one graph, same calls", seconds, nfe, final)
    return rows


def table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for entry in rows:
        cells = [
            f"{value:.3g}" if isinstance(value, float) and not math.isnan(value) else str(value)
            for value in entry.values()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=2, help="attempts per graph in the early-exit loop")
    parser.add_argument("--shapes", default=",".join("x".join(map(str, shape)) for shape in SHAPES))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--eager-only", action="store_true", help="the two eager loops alone (no graphs)")
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads")
    parser.add_argument("--rows-only", action="store_true", help="only whether stacked requests step as each alone")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    timer = Timer(device)
    alike = ", ".join(f"{options}: {same}" for options, same in rows_alike(device))
    print(f"requests stacked at different calls, eager, bit for bit as each alone: {alike}")
    if args.rows_only:
        return
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    rows = [
        entry for shape in shapes for entry in measure(shape, device, timer, args.repeats, args.chunk, args.eager_only)
    ]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    text = f"{name}, torch {torch.__version__}, medians of {args.repeats}\n\n{table(rows)}"
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "adaptive_graph.json").write_text(json.dumps(rows, indent=1))
        (args.out / "adaptive_graph.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
