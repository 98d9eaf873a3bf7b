"""Run one grid case with its reference and with functional_sched side by side: parity over a full loop, step times.

Both sides run the loop the case's pipeline runs (`set_timesteps`, `set_begin_index(0)` as Flux and Wan do, then
`scale_model_input`, model, `step` per timestep) with a deterministic toy denoiser in place of the model. The
reference is diffusers' class or sglang's (`Case.library`); where its API is not diffusers' (sglang's MOVA schedulers,
Helios' stages and DMD step, pi-Flow's grid of predictions) `pipeline_set_timesteps`, `pipeline_timesteps`,
`pipeline_model_output` and `pipeline_step` call it as its pipeline does. Flow-GRPO's SDE step
(`adapters.flow_grpo.FlowGRPOReference`) steps like diffusers' class, its `noise_level` a `step()` argument. A
k-diffusion case's reference is a whole loop (`sample_dpmpp_2s_ancestral(model, x, sigmas, ...)`): `LoopRun` runs it
once with the toy denoiser as its model, recording every model call, and holds our loop (one `step` per call) to each
call's input; `prepare` picks the kind of run a case needs.
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import attrs
import diffusers
import numpy as np
import torch

import functional_sched as fs
from functional_sched.machinery import options
from functional_sched.machinery.scheduler import Scheduler

from . import k_diffusion
from ._cases import Case, scheduler_class
from .diffusers import from_diffusers
from .flow_grpo import FlowGRPOReference
from .sglang import from_sglang, sglang_class

SEED = 0


def toy_denoiser(sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """A smooth, deterministic stand-in for a model: equal inputs give bit-equal outputs on either side.

    `timestep` is diffusers' 0-d tensor or our per-row [R] one; both broadcast over the rows the same way.
    """
    t = timestep.to(device=sample.device, dtype=sample.dtype).reshape(-1, *([1] * (sample.dim() - 1))) / 1000
    return 0.8 * torch.tanh(sample) + 0.2 * torch.cos(3 * t) * sample


@dataclass(frozen=True)
class Parity:
    table_equal: bool  # timesteps equal diffusers' in values and dtype
    worst_error: float  # max over steps of max|ours - diffusers|, over max|sample| along diffusers' trajectory
    identical_steps: int  # steps whose output is bit-identical to diffusers'
    steps: int


def _is(reference: Any, name: str, library: str = "sglang") -> bool:
    """Whether `reference`'s class is (or subclasses) `library`'s class `name` (sglang's need not be loadable)."""
    return any(cls.__name__ == name and cls.__module__.split(".")[0] == library for cls in type(reference).__mro__)


def _helios(reference: Any) -> bool:
    return any(
        _is(reference, name, library)
        for name in ("HeliosScheduler", "HeliosDMDScheduler")
        for library in ("diffusers", "sglang")
    )


#: What MOVA's stage passes to `set_pair_postprocess_by_name("dual_sigma_shift", ...)`.
_DUAL_SIGMA_SHIFT = (
    "visual_shift",
    "audio_shift",
    "visual_denoising_strength",
    "audio_denoising_strength",
    "visual_exponential_shift_mu",
    "audio_exponential_shift_mu",
)


def step_arguments(case: Case) -> dict[str, Any]:
    """The case's options that its reference takes as `step()` arguments (`Option.step_argument`: Flow-GRPO's
    `noise_level`), passed to every reference step rather than to its constructor."""
    declared = options.declared(scheduler_class(case))
    return {key: value for key, value in case.config.items() if key in declared and declared[key].step_argument}


def build_reference(case: Case) -> Any:
    """The case's reference object as its pipeline builds it: the constructor takes the config but for the options a
    method sets (`Option.set_by`: sglang's loader calls `set_shift(flow_shift)`), called after it, registered ones
    (`Option.registered`), registered after it, and `step()` arguments (`step_arguments`)."""
    if case.library == "sglang":
        reference_class = sglang_class(case.diffusers_name)
    elif case.library == "flow_grpo":
        reference_class = FlowGRPOReference
    else:
        reference_class = getattr(diffusers, case.diffusers_name)
    declared = options.declared(scheduler_class(case))
    given = {key: value for key, value in case.config.items() if key not in step_arguments(case)}
    registered = {key: given.pop(key) for key in list(given) if key in declared and declared[key].registered}
    set_by = {key: given.pop(key) for key in list(given) if key in declared and declared[key].set_by is not None}
    reference = reference_class(**given)
    if registered:
        reference.register_to_config(**registered)
    for key, value in set_by.items():
        getattr(reference, declared[key].set_by)(value)
    return reference


def pipeline_set_timesteps(
    reference: Any, device: torch.device, pipeline: Mapping[str, Any] | None = None, **args: Any
) -> None:
    """`set_timesteps` as the reference's pipeline calls it; `pipeline` holds what the pipeline passes besides the
    schedule (`Case.pipeline`): MOVA's stage sets the pair post-processing after the timesteps (sglang's
    FlowMatchScheduler takes no device), self-forcing passes its denoising strength, Helios its stage index and
    whether the chunk is amplified (and a step count with its sigmas)."""
    pipeline = pipeline or {}
    steps = args.get("num_inference_steps")
    if _is(reference, "FlowMatchPairScheduler"):
        reference.set_timesteps(steps, denoising_strength=pipeline.get("denoising_strength", 1.0))
        if pipeline.get("pair_postprocess") is None:
            reference.set_pair_postprocess(None)
        else:
            given = {key: pipeline[key] for key in _DUAL_SIGMA_SHIFT if pipeline.get(key) is not None}
            reference.set_pair_postprocess_by_name(pipeline["pair_postprocess"], **given)
    elif _is(reference, "FlowMatchScheduler"):
        reference.set_timesteps(steps)
    elif _is(reference, "SelfForcingFlowMatchScheduler"):
        reference.set_timesteps(steps, denoising_strength=pipeline.get("denoising_strength", 1.0))
    elif _helios(reference):
        reference.set_timesteps(
            steps if steps is not None else len(args["sigmas"]),
            pipeline.get("stage_index", 0),
            device=device,
            sigmas=args.get("sigmas"),
            mu=args.get("mu"),
            is_amplify_first_chunk=pipeline.get("is_amplify_first_chunk", False),
        )
    else:
        reference.set_timesteps(device=device, **args)


def pipeline_timesteps(reference: Any, pipeline: Mapping[str, Any] | None = None) -> torch.Tensor:
    """The timesteps a pipeline loops over (Stable Cascade's, all but DDPMWuerstchenScheduler's last; MOVA's, the
    column of the pair table its modality steps)."""
    if isinstance(reference, diffusers.DDPMWuerstchenScheduler):
        return reference.timesteps[:-1]
    if _is(reference, "FlowMatchPairScheduler"):
        return reference.get_pairs("timesteps")[:, 0 if (pipeline or {}).get("modality", "visual") == "visual" else 1]
    return reference.timesteps


def pipeline_model_output(reference: Any, output: torch.Tensor) -> torch.Tensor:
    """A toy model's sample-shaped output in the layout the reference's model gives: pi-Flow's `n_grid` x0
    predictions per channel, `[..., n_grid * C]` (here the same prediction at each grid point); ours reads it too."""
    if any(_is(reference, "PiflowScheduler", library) for library in ("diffusers", "sglang")):
        return output.repeat(*([1] * (output.dim() - 1)), reference.config.n_grid)
    return output


def _helios_dmd(reference: Any) -> bool:
    return _helios(reference) and (
        _is(reference, "HeliosDMDScheduler", "diffusers") or reference.config.scheduler_type == "dmd"
    )


def pipeline_takes_generator(reference: Any) -> bool:
    """Whether `pipeline_step` draws noise from a `generator=` for the reference: its `step` takes one, or it is a
    Helios DMD step (whose start points `pipeline_step` draws)."""
    return "generator" in inspect.signature(reference.step).parameters or _helios_dmd(reference)


def pipeline_step(
    reference: Any,
    model_output: torch.Tensor,
    t: torch.Tensor,
    sample: torch.Tensor,
    threaded: dict,
    pipeline: Mapping[str, Any] | None = None,
    **extra: Any,
) -> torch.Tensor:
    """One `step` of the reference as its pipelines call it; `threaded` holds what a pipeline carries from step to
    step (an empty dict at a loop's start): CogVideoX's last x0 and timestep, MOVA's timestep column and step index
    (its stage steps `step_from_to(output, t, next t or None, x)`), Helios-Distilled's step index (its DMD step takes
    the stage's tables and the start point of the next step, drawn here from the generator as ours draws it, but
    at the last step; its tables are shaped for video latents, so an image sample gets a frame dim)."""
    if _is(reference, "FlowMatchPairScheduler"):  # as MOVA's denoising stage calls it
        column = threaded.get("column")
        if column is None:
            column = threaded["column"] = pipeline_timesteps(reference, pipeline)
        index = threaded["index"] = threaded.get("index", -1) + 1
        following = column[index + 1] if index + 1 < len(column) else None
        return reference.step_from_to(model_output, t, following, sample)
    if _is(reference, "FlowMatchScheduler"):  # returns the sample itself
        return reference.step(model_output, t, sample)
    if _helios_dmd(reference):
        index = threaded["index"] = threaded.get("index", -1) + 1
        noise = None
        if index < len(reference.timesteps) - 1:
            generator = extra.get("generator")
            noise = fs.randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=model_output.dtype)
        image = sample.dim() != 5
        view = (lambda x: x.unsqueeze(2)) if image else (lambda x: x)
        out = reference.step(
            view(model_output),
            t,
            view(sample),
            return_dict=False,
            cur_sampling_step=index,
            dmd_noisy_tensor=None if noise is None else view(noise),
            dmd_sigmas=reference.sigmas,
            dmd_timesteps=reference.timesteps,
            all_timesteps=reference.timesteps,
        )[0]
        return out.squeeze(2) if image else out
    if isinstance(reference, diffusers.CogVideoXDPMScheduler):  # as pipeline_cogvideox.py calls it
        x0, back = threaded.get("x0"), threaded.get("t")
        sample, threaded["x0"] = reference.step(model_output, x0, t, back, sample, **extra)
        threaded["t"] = t
        return sample
    if isinstance(reference, diffusers.DDPMWuerstchenScheduler):  # as Stable Cascade calls it: a timestep per row
        t = t.expand(sample.shape[0]).to(sample.dtype)
    return reference.step(model_output, t, sample, return_dict=False, **extra)[0]


class _Timed:
    """Median eager seconds per model call of a run's two loops (`reference_loop`, `our_loop`)."""

    sample: torch.Tensor

    def reference_loop(self, model_outputs: list[torch.Tensor]) -> Callable[[], None]:
        raise NotImplementedError

    def our_loop(self, model_outputs: list[torch.Tensor]) -> Callable[[], None]:
        raise NotImplementedError

    def time_steps(
        self, reference_outputs: list[torch.Tensor], our_outputs: list[torch.Tensor], repeats: int
    ) -> tuple[float, float]:
        """Median seconds per model call (one `step` of ours; one `step` of a stepping reference, a whole loop's time
        over its calls for k-diffusion's) of the reference and of ours, over `repeats` loops each after a warm-up one.

        The two sides' loops alternate, so both see the same machine load.
        """
        sides = ((self.reference_loop, reference_outputs), (self.our_loop, our_outputs))
        times: tuple[list[float], list[float]] = ([], [])
        for repeat in range(repeats + 1):
            for (make_loop, model_outputs), side_times in zip(sides, times, strict=True):
                elapsed = _timed(make_loop(model_outputs), self.sample.device)
                if repeat:
                    side_times.append(elapsed / len(model_outputs))
        return statistics.median(times[0]), statistics.median(times[1])


@dataclass(frozen=True)
class Run(_Timed):
    """One case prepared on one device: both schedulers, the timestep arguments and the initial noise."""

    case: Case
    reference: Any  # the diffusers scheduler
    ours: Scheduler
    timestep_args: dict[str, Any]
    sample: torch.Tensor
    #: What the CogVideoX pipeline threads through CogVideoXDPMScheduler.step: the last x0 and timestep.
    threaded: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def prepare(cls, case: Case, steps: int, shape: tuple[int, ...], device: torch.device) -> Run:
        """Both schedulers for `case` (`steps`, or fewer where the pipeline fixes its own count): ours is mapped from
        the reference as constructed (`from_diffusers` or `from_sglang`), with what the pipeline passes at run time
        (`Case.pipeline`: MOVA's pair post-processing, Helios' stage, ...) as options; the reference's timesteps are
        then set as the pipeline sets them."""
        steps = min(case.steps or steps, steps)
        reference = build_reference(case)
        args: dict[str, Any] = {"mu": case.mu} if case.mu is not None else {}
        if case.custom is not None:
            args.update(case.custom(steps))
        elif case.pipeline_sigmas:
            args["sigmas"] = np.linspace(1.0, 1 / steps, steps).tolist()
        else:
            args["num_inference_steps"] = steps
        if case.library in ("diffusers", "sglang"):
            ours = (from_sglang if case.library == "sglang" else from_diffusers)(reference)  # as constructed
        else:  # a reference of no diffusers-like config (Flow-GRPO's step on diffusers' class): the case's options
            ours = scheduler_class(case)(**case.config)
        pipeline_set_timesteps(reference, device, case.pipeline, **args)
        if case.pipeline:
            ours = attrs.evolve(ours, **case.pipeline)
        generator = torch.Generator("cpu").manual_seed(SEED)
        sample = torch.randn(shape, generator=generator).to(device)
        return cls(case, reference, ours, args, sample)

    def start_reference(self) -> torch.Tensor:
        """Reset the reference scheduler for a new loop; returns its timesteps."""
        pipeline_set_timesteps(self.reference, self.sample.device, self.case.pipeline, **self.timestep_args)
        self.threaded.clear()
        if hasattr(self.reference, "set_begin_index"):  # PNDM, DDIM and DDPM have none: pipelines never call it
            self.reference.set_begin_index(0)
        return pipeline_timesteps(self.reference, self.case.pipeline)

    def start_ours(self) -> Any:
        return self.ours.init(sample=self.sample, **self.timestep_args)

    def noise_source(self) -> torch.Generator | None:
        return torch.Generator(self.sample.device).manual_seed(SEED) if self.case.stochastic else None

    def step_reference(
        self, model_output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        extra = {"generator": generator} if generator is not None and not self.seeded_tree else {}
        extra.update(step_arguments(self.case))
        return pipeline_step(self.reference, model_output, t, sample, self.threaded, self.case.pipeline, **extra)

    @property
    def brownian(self) -> bool:
        """DPM++ SDE, Cosine DPM: the noise comes from a Brownian tree, on both sides."""
        return hasattr(self.ours, "_brownian_queries")

    @property
    def seeded_tree(self) -> bool:
        """DPM++ SDE: its tree is seeded by `noise_sampler_seed` (Cosine DPM's by `generator.initial_seed()`)."""
        return self.brownian and hasattr(self.ours, "noise_sampler_seed")

    def step_ours(
        self, state: Any, model_output: torch.Tensor, sample: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, Any]:
        if generator is None:
            return self.ours.step(state, model_output, sample)
        if self.brownian:
            seed = None if self.seeded_tree else generator.initial_seed()
            return self.ours.step(state, model_output, sample, noise=fs.brownian_noise(self.ours, state, sample, seed))
        if isinstance(self.ours, fs.CogVideoXDPM):  # draws twice at a second-order step, as diffusers does
            return self.ours.step(state, model_output, sample, noise=self.ours.noise(state, sample, generator))
        if self.ours._draws_noise(state):  # drawn where diffusers draws, so both generators keep one stream
            noise = fs.randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=model_output.dtype)
        else:
            noise = torch.zeros_like(sample)
        return self.ours.step(state, model_output, sample, noise=noise)

    # ------------------------------------------------------------------------------------------------ parity
    def parity(self) -> tuple[Parity, list[torch.Tensor], list[torch.Tensor]]:
        """Both full loops, each fed by its own trajectory; also returns each side's model outputs for replay."""
        timesteps = self.start_reference()
        state = self.start_ours()
        table_equal = timesteps.dtype == self.ours.timesteps(state).dtype and torch.equal(
            timesteps.cpu(), self.ours.timesteps(state).cpu()
        )
        reference_sample = our_sample = self.sample
        scale = reference_sample.abs().max().item()
        worst, identical = 0.0, 0
        reference_outputs, our_outputs = [], []
        reference_noise, our_noise = self.noise_source(), self.noise_source()
        scaled_input = getattr(self.reference, "scale_model_input", lambda sample, _t: sample)
        for t in timesteps:
            output = toy_denoiser(scaled_input(reference_sample, t), t)
            reference_outputs.append(pipeline_model_output(self.reference, output))
            reference_sample = self.step_reference(reference_outputs[-1], t, reference_sample, reference_noise)

            output = toy_denoiser(self.ours.scale_model_input(state, our_sample), self.ours.timestep(state))
            our_outputs.append(pipeline_model_output(self.reference, output))
            our_sample, state = self.step_ours(state, our_outputs[-1], our_sample, our_noise)

            scale = max(scale, reference_sample.abs().max().item())
            error = (our_sample.double() - reference_sample.double()).abs().max().item()
            worst = max(worst, error if math.isfinite(error) else math.inf)  # NaN on either side fails
            identical += int(our_sample.dtype == reference_sample.dtype and torch.equal(our_sample, reference_sample))
        return Parity(table_equal, worst / scale, identical, len(timesteps)), reference_outputs, our_outputs

    # ------------------------------------------------------------------------------------------------ timing
    def reference_loop(self, model_outputs: list[torch.Tensor]) -> Callable[[], None]:
        """diffusers' loop, set up (untimed) and ready to run: one `step` per recorded model output."""
        timesteps = list(self.start_reference())
        generator = self.noise_source()

        def run() -> None:
            sample = self.sample
            for t, model_output in zip(timesteps, model_outputs, strict=True):
                sample = self.step_reference(model_output, t, sample, generator)

        return run

    def our_loop(self, model_outputs: list[torch.Tensor]) -> Callable[[], None]:
        """Our loop, set up (untimed) and ready to run: one `step` per recorded model output."""
        state = self.start_ours()
        generator = self.noise_source()

        def run() -> None:
            sample, loop_state = self.sample, state
            for model_output in model_outputs:
                sample, loop_state = self.step_ours(loop_state, model_output, sample, generator)

        return run


@dataclass(frozen=True)
class LoopRun(_Timed):
    """A case whose reference is a whole loop (k-diffusion's `sample_*(model, x, sigmas or range, ...)`), prepared on
    one device: our scheduler (the case's options), its `init` arguments, the standard normal latents.

    Parity: the reference loop runs once with `toy_denoiser` as its model (the denoiser's x0 at the sample's sigma),
    recording each call's input and sigma; our loop from the same latents (times `init_noise_sigma`) then calls the
    same model once per `step`, and each call's input, then the final sample, is held to the reference's. Noise: a
    generator seeded `SEED` on each side, drawn where the reference asks its `noise_sampler` and where ours draws
    (`_draws_noise`); Brownian noise (3M SDE) from k-diffusion's `BrownianTreeNoiseSampler` and from
    `brownian_noise`, both seeded with the config's `noise_sampler_seed`. Timing: the reference's whole loop with a
    model that hands back the recorded outputs, per call, beside our eager `step` per call."""

    case: Case
    reference: Callable[..., torch.Tensor]  # k-diffusion's sampler function
    ours: Scheduler
    timestep_args: dict[str, Any]
    sample: torch.Tensor

    @classmethod
    def prepare(cls, case: Case, steps: int, shape: tuple[int, ...], device: torch.device) -> LoopRun:
        steps = min(case.steps or steps, steps)
        args: dict[str, Any] = dict(case.custom(steps)) if case.custom is not None else {"num_inference_steps": steps}
        generator = torch.Generator("cpu").manual_seed(SEED)
        sample = torch.randn(shape, generator=generator).to(device)
        return cls(case, k_diffusion.sampler(case.diffusers_name), scheduler_class(case)(**case.config), args, sample)

    @property
    def takes_table(self) -> bool:
        """Whether the sampler takes a sigma table (most), or a range and a call count (`sample_dpm_fast`)."""
        return "sigmas" in inspect.signature(self.reference).parameters

    def reference_sigmas(self) -> torch.Tensor:
        """The sigma table as a k-diffusion user makes it: the custom one as float32, or `get_sigmas_karras` of the
        config's range and rho (on the CPU, then moved to the sample's device)."""
        custom = self.timestep_args.get("sigmas")
        if custom is not None:
            sigmas = torch.tensor(np.asarray(custom, dtype=np.float64).tolist(), dtype=torch.float32)
        else:
            karras = k_diffusion.sampler("get_sigmas_karras")
            ours = self.ours
            sigmas = karras(self.timestep_args["num_inference_steps"], ours.sigma_min, ours.sigma_max, ours.rho)
        return sigmas.to(self.sample.device)

    def _seed(self) -> int | None:
        """The Brownian tree's seed where ours queries one (3M SDE): the config's `noise_sampler_seed` (0 unset)."""
        if not hasattr(self.ours, "_brownian_queries") or not self.ours.stochastic:
            return None
        return getattr(self.ours, "noise_sampler_seed", None) or 0

    def _start(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The reference's table (None for a range sampler) and its first sample, scaled as its callers scale it."""
        if not self.takes_table:
            return None, self.sample * self.ours.sigma_max
        sigmas = self.reference_sigmas()
        return sigmas, self.sample * sigmas[0]

    def noise_sampler(self, sigmas: torch.Tensor | None, x: torch.Tensor) -> Callable[..., torch.Tensor]:
        """The reference's `noise_sampler(sigma, sigma_next)`: a seeded tree (Brownian noise), or draws from a
        generator seeded `SEED`."""
        seed = self._seed()
        if seed is not None:
            assert sigmas is not None
            tree = k_diffusion.sampler("BrownianTreeNoiseSampler")
            return tree(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed)
        generator = torch.Generator(x.device).manual_seed(SEED)
        return lambda sigma, sigma_next: fs.randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def _run_reference(
        self, model: Callable[..., torch.Tensor], sigmas: torch.Tensor | None, x: torch.Tensor, noise_sampler: Any
    ) -> torch.Tensor:
        ours = self.ours
        if self.case.diffusers_name == "sample_dpm_adaptive":  # each row alone, with our budget (its eta is 0)
            return k_diffusion.sample_dpm_adaptive_rows(model, x, ours, self.timestep_args["num_inference_steps"])[0]
        with warnings.catch_warnings():  # torchsde warns where a float32 sigma lies a rounding outside its range
            warnings.simplefilter("ignore", UserWarning)
            if sigmas is None:
                where: tuple[Any, ...] = (ours.sigma_min, ours.sigma_max, self.timestep_args["num_inference_steps"])
            else:
                where = (sigmas,)
            return self.reference(
                model, x, *where, disable=True, eta=ours.eta, s_noise=ours.s_noise, noise_sampler=noise_sampler
            )

    def start_ours(self) -> Any:
        return self.ours.init(sample=self.sample, **self.timestep_args)

    def _our_noise(self, state: Any, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """Our step's noise beside the reference's: drawn where it draws (from the tree of its seed, or the
        generator), zeros where it draws none."""
        if not self.ours.stochastic:
            return None
        if not self.ours._draws_noise(state):
            return torch.zeros_like(x)
        seed = self._seed()
        if seed is not None:
            return fs.brownian_noise(self.ours, state, x, seed)
        return fs.randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def parity(self) -> tuple[Parity, list[torch.Tensor], list[torch.Tensor]]:
        """The reference's loop, then ours against each of its calls; each side's model outputs for replay. The
        table is equal where ours calls the model at the reference's sigmas (values and dtype); the first input
        (the scaled latents) counts in the error, and each later call's input and the final sample in both."""
        inputs: list[torch.Tensor] = []
        sigmas_called: list[torch.Tensor] = []
        reference_outputs: list[torch.Tensor] = []

        def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            inputs.append(x.clone())
            sigmas_called.append(torch.as_tensor(sigma).clone())
            reference_outputs.append(toy_denoiser(x, sigma))
            return reference_outputs[-1]

        sigmas, x = self._start()
        final = self._run_reference(model, sigmas, x.clone(), self.noise_sampler(sigmas, x))

        state = self.start_ours()
        rows = self.sample.shape[0]
        ours = self.sample * self.ours.init_noise_sigma(state).to(self.sample.dtype).view(rows, *[1] * (x.dim() - 1))
        generator = torch.Generator(self.sample.device).manual_seed(SEED)
        our_outputs, ours_samples, table_equal = [], [ours], True
        for index in range(min(len(inputs), self.ours.steps_left(state))):
            timestep = self.ours.timestep(state)
            called = sigmas_called[index].reshape(-1).expand(rows)
            table_equal &= timestep.dtype == called.dtype and torch.equal(timestep.cpu(), called.cpu())
            our_outputs.append(toy_denoiser(self.ours.scale_model_input(state, ours), timestep))
            drawn = self._our_noise(state, ours, generator)
            ours, state = self.ours.step(state, our_outputs[-1], ours, noise=drawn)
            ours_samples.append(ours)
        table_equal &= len(our_outputs) == len(inputs) and not self.ours.steps_left(state)
        reference_samples = [*inputs, final]
        scale = max(sample.abs().max().item() for sample in reference_samples)
        worst, identical = 0.0, 0
        for index, (a, b) in enumerate(zip(ours_samples, reference_samples, strict=False)):
            error = (a.double() - b.double()).abs().max().item()
            worst = max(worst, error if math.isfinite(error) else math.inf)
            identical += int(index > 0 and a.dtype == b.dtype and torch.equal(a, b))
        if len(ours_samples) != len(reference_samples):
            worst = math.inf
        return Parity(bool(table_equal), worst / scale, identical, len(inputs)), reference_outputs, our_outputs

    def reference_loop(self, model_outputs: list[torch.Tensor]) -> Callable[[], None]:
        """The reference's whole loop, set up (untimed: its table, its noise sampler) and ready to run, its model
        handing back the recorded outputs in turn. A Brownian tree is built once per run (ours are cached too)."""
        sigmas, x = self._start()
        seed = self._seed()
        tree = self.noise_sampler(sigmas, x) if seed is not None else None

        def run() -> None:
            outputs = iter(model_outputs)
            noise_sampler = tree or self.noise_sampler(sigmas, x)
            self._run_reference(lambda _x, _sigma: next(outputs), sigmas, x, noise_sampler)

        return run

    def our_loop(self, model_outputs: list[torch.Tensor]) -> Callable[[], None]:
        """Our loop, set up (untimed) and ready to run: one eager `step` per recorded output, noise drawn as in
        `parity`."""
        state = self.start_ours()
        rows = self.sample.shape[0]
        start = self.sample * self.ours.init_noise_sigma(state).to(self.sample.dtype).view(
            rows, *[1] * (self.sample.dim() - 1)
        )

        def run() -> None:
            generator = torch.Generator(self.sample.device).manual_seed(SEED)
            sample, loop_state = start, state
            for model_output in model_outputs:
                noise = self._our_noise(loop_state, sample, generator)
                sample, loop_state = self.ours.step(loop_state, model_output, sample, noise=noise)

        return run


#: Reference libraries whose references are whole loops (`LoopRun`); the others step (`Run`).
LOOP_LIBRARIES = ("k-diffusion",)


def prepare(case: Case, steps: int, shape: tuple[int, ...], device: torch.device) -> Run | LoopRun:
    """The case's run: a whole-loop reference's (`LoopRun`) or a stepping one's (`Run`)."""
    return (LoopRun if case.library in LOOP_LIBRARIES else Run).prepare(case, steps, shape, device)


def _timed(run: Callable[[], None], device: torch.device) -> float:
    """Wall seconds of `run()`; on CUDA, between events recorded around it, after the queue is drained."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    run()
    return time.perf_counter() - begin
