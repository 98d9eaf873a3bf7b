"""Drop-ins of MOVA's sglang schedulers: `FlowMatchScheduler` (on `SglangFlowMatch`) and `FlowMatchPairScheduler` (on
`FlowMatchPair`); defined only where sglang's wheel is installed (`functional_sched.adapters.sglang`), registered in
`drop_in.SGLANG_DROP_INS`.

sglang's classes are no diffusers ConfigMixins: their options are attributes (`shift`, `sigma_min`, ...; `set_shift`
and `set_timesteps(shift=...)` rewrite `shift`), read again at every `set_timesteps`, so the drop-ins keep them as
attributes too and map them (`from_sglang`) when they plan. Their tables are sglang's: `timesteps` and `sigmas` [N]
float32 (no final sigma) from the core's schedule (`linspace_sigmas`, with `set_timesteps`' `denoising_strength` and,
under `exponential_shift`, the mu of `dynamic_shift_len`), `train_timesteps`/`train_sigmas` the training grid of the
constructor's options. sglang's steps are stateless (each call looks its sigmas up): each drop-in call is one
functional step on a plan of that call's two sigmas (`Scheduler._tables_plan`):
- `step(model_output, timestep, sample, to_final=False)`: from the sigma of the table's timestep nearest `timestep` to
  the next one (the final sigma, 0 or 1 where the table rises, past the last or with `to_final`); one timestep for the
  batch, as sglang's lookup takes;
- `step_from_to(model_output, timestep_from, timestep_to, sample)` (the pair's, MOVA's loop): from the training grid's
  sigma nearest `timestep_from` (`timestep_to_sigma`) to that of `timestep_to` (the final sigma for None).
The result has sglang's dtype (the sample's and the model output's promoted; products with float32 sigmas, rounded
to the output's dtype). The pair's `get_pairs()` columns are the core's (`FlowMatchPair` of each modality): the
schedule, or with `set_pair_postprocess_by_name("dual_sigma_shift", ...)` each modality's; sglang's other
post-processings (no pipeline uses them) and a callable of the caller's (`set_pair_postprocess(fn)`) are refused by
name, as is a `set_timesteps(shift=...)` or `dynamic_shift_len` on the pair that moves the schedule off the
training grid it looks its sigmas up on. `add_noise` is sglang's formula at the sigma of the table's nearest timestep.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch

from functional_sched.machinery import checks
from functional_sched.schedulers.flow_pair import FlowMatchPair
from functional_sched.schedulers.self_forcing import SglangFlowMatch, linspace_sigmas

from .. import sglang
from ..drop_in import _DropIn

#: The options sglang's classes keep as attributes (what `from_sglang` reads).
_ATTRIBUTES = ("num_train_timesteps", "shift", "sigma_max", "sigma_min", "inverse_timesteps", "extra_one_step")
_ATTRIBUTES += ("reverse_sigmas", "exponential_shift", "exponential_shift_mu", "shift_terminal")


class _Linspace(_DropIn):
    """What both drop-ins share: sglang's attributes as options, the tables, the stateless Euler step."""

    def _configure(self, **options: Any) -> None:
        reference = self._diffusers_class(**options)  # sglang's checks and errors (exponential_shift without mu)
        for name in _ATTRIBUTES:
            object.__setattr__(self, name, getattr(reference, name))
        self.order = 1
        self._plan, self._request, self._state, self._begin_index = None, None, None, None
        self._tables: dict[str, torch.Tensor] = {}
        self._versions: dict[str, int] = {}
        self._exposed: dict[str, Any] = {}
        self._functional = sglang.from_sglang(reference)
        train = self._linspace(self.num_train_timesteps, 1.0, self.exponential_shift_mu)
        self.train_timesteps, self.train_sigmas = train
        self._set_timesteps(options.get("num_inference_steps", 100))

    # ---------------------------------------------------------------------------------------------- tables
    def _mapped(self) -> Any:
        """The functional scheduler of the attributes in effect (sglang's `set_timesteps` reads them each call)."""
        return sglang.from_sglang(self)

    def _linspace(self, steps: int, strength: float, mu: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        sigmas = linspace_sigmas(self, steps, self.shift, strength, mu)
        return sigmas * self.num_train_timesteps, sigmas

    def _set_timesteps(
        self,
        num_inference_steps: int = 100,
        denoising_strength: float = 1.0,
        shift: float | None = None,
        dynamic_shift_len: int | None = None,
    ) -> None:
        if shift is not None:
            self.shift = shift
        self._functional = self._mapped()
        mu = self.exponential_shift_mu
        if self.exponential_shift and dynamic_shift_len is not None:
            mu = self._dynamic_mu(dynamic_shift_len)
        self.timesteps, self.sigmas = self._linspace(num_inference_steps, denoising_strength, mu)

    def _dynamic_mu(self, dynamic_shift_len: int) -> float:
        return self.calculate_shift(dynamic_shift_len)

    @property  # type: ignore[override]
    def timesteps(self) -> torch.Tensor:
        return self._tables["timesteps"]

    @timesteps.setter
    def timesteps(self, value: torch.Tensor) -> None:
        self._tables["timesteps"] = value

    @property  # type: ignore[override]
    def sigmas(self) -> torch.Tensor:
        return self._tables["sigmas"]

    @sigmas.setter
    def sigmas(self, value: torch.Tensor) -> None:
        self._tables["sigmas"] = value

    def _final_sigma(self) -> float:
        return 1.0 if (self.inverse_timesteps or self.reverse_sigmas) else 0.0

    # ---------------------------------------------------------------------------------------------- steps
    def _euler(
        self, model_output: torch.Tensor, sample: torch.Tensor, timestep: Any, sigma: Any, sigma_next: Any
    ) -> torch.Tensor:
        """One functional step from `sigma` to `sigma_next` (plan of those two sigmas), in sglang's dtype."""
        owner = f"{type(self).__name__}.step"
        checks.tensor(owner, "model_output", model_output)
        checks.tensor(owner, "sample", sample)
        work = sample.to(torch.promote_types(sample.dtype, model_output.dtype))
        sigmas = torch.stack([torch.as_tensor(sigma), torch.as_tensor(sigma_next)]).to(torch.float32)
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(1).cpu()
        functional = self._functional
        with torch.inference_mode(False):
            host_plan = functional._tables_plan(t, sigmas, torch.float32)
        prev_sample, _ = functional.step(functional._init_on(host_plan, work, 0), model_output, work)
        return prev_sample

    def _step(self, model_output: Any, timestep: Any, sample: Any, to_final: bool = False, **_: Any) -> Any:
        if isinstance(timestep, torch.Tensor):
            timestep = timestep.cpu()
        index = int(torch.argmin((self.timesteps - timestep).abs()))  # sglang's lookup, whatever its shape
        last = to_final or index + 1 >= len(self.timesteps)
        sigma_next = self._final_sigma() if last else self.sigmas[index + 1]
        return self._euler(model_output, sample, self.timesteps[index], self.sigmas[index], sigma_next)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timestep: Any) -> torch.Tensor:
        """sglang's: `(1 - sigma) * x + sigma * noise` at the sigma of the table's timestep nearest `timestep`."""
        owner = f"{type(self).__name__}.add_noise"
        checks.tensor(owner, "original_samples", original_samples)
        checks.check_like(owner, "noise", noise, original_samples, "original_samples")
        if isinstance(timestep, torch.Tensor):
            timestep = timestep.cpu()
        sigma = self.sigmas[torch.argmin((self.timesteps - timestep).abs())]
        return (1 - sigma) * original_samples + sigma * noise

    # What sglang's instance has and the base drop-in would add.
    @property
    def step_index(self) -> int | None:  # type: ignore[override]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute 'step_index'")

    @property
    def begin_index(self) -> int | None:  # type: ignore[override]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute 'begin_index'")

    @property
    def num_inference_steps(self) -> int | None:  # type: ignore[override]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute 'num_inference_steps'")

    @property
    def set_begin_index(self) -> Any:  # type: ignore[override]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute 'set_begin_index'")

    def __len__(self) -> int:
        raise TypeError(f"object of type '{type(self).__name__}' has no len()")


if sglang.available():
    _MODULE = sglang.sglang_module(sglang.MODULES["FlowMatchScheduler"])

    class FlowMatchScheduler(_Linspace, _MODULE.FlowMatchScheduler):  # type: ignore[valid-type, misc]
        """sglang's `FlowMatchScheduler` (MOVA's base) on `functional_sched.SglangFlowMatch`."""

        _functional_class: ClassVar[type] = SglangFlowMatch

    class FlowMatchPairScheduler(_Linspace, _MODULE.FlowMatchPairScheduler):  # type: ignore[valid-type, misc]
        """sglang's `FlowMatchPairScheduler` (MOVA's paired sampler) on `functional_sched.FlowMatchPair`."""

        _functional_class: ClassVar[type] = FlowMatchPair

        def _configure(self, **options: Any) -> None:
            self._pair_postprocess_fn = None
            self._pair_postprocess_requires_source = False
            self.pair_timesteps: torch.Tensor | None = None
            self.pair_sigmas: torch.Tensor | None = None
            self._denoising_strength = 1.0
            super()._configure(**options)

        def _mapped(self) -> Any:
            # from_sglang reads the post-processing's closure and refuses a shift off the training grid by name.
            return attrs.evolve(sglang.from_sglang(self), denoising_strength=self._denoising_strength)

        def _set_timesteps(
            self,
            num_inference_steps: int = 100,
            denoising_strength: float = 1.0,
            shift: float | None = None,
            dynamic_shift_len: int | None = None,
        ) -> None:
            self._denoising_strength = denoising_strength
            super()._set_timesteps(num_inference_steps, denoising_strength, shift, dynamic_shift_len)

        def _dynamic_mu(self, dynamic_shift_len: int) -> float:
            raise NotImplementedError(
                "functional_sched does not support FlowMatchPairScheduler.set_timesteps(dynamic_shift_len=...) under "
                "exponential_shift: its schedule's mu would not be the training grid's (no pipeline passes it)."
            )

        def set_pair_postprocess(self, fn: Any) -> None:
            if fn is not None and getattr(fn, "__name__", None) != "_dual_sigma_shift":
                if "set_pair_postprocess_by_name" in getattr(fn, "__qualname__", ""):  # sglang's own: named
                    previous, self._pair_postprocess_fn = self._pair_postprocess_fn, fn
                    try:
                        sglang.from_sglang(self)  # refuses it by its name
                    finally:
                        self._pair_postprocess_fn = previous
                raise NotImplementedError(
                    "functional_sched does not support FlowMatchPairScheduler.set_pair_postprocess with a function of "
                    "the caller's; use set_pair_postprocess_by_name('dual_sigma_shift', ...) or None."
                )
            super().set_pair_postprocess(fn)  # records it (what from_sglang maps), then `_refresh_pair_cache`

        def _refresh_pair_cache(self) -> None:
            """The pair's columns from the core: each modality's `FlowMatchPair` column (the schedule's, without
            post-processing), timesteps and sigmas, as sglang's cache holds them."""
            if self._tables.get("timesteps") is None:
                raise RuntimeError("Scheduler not initialized; call set_timesteps() first")
            self._functional = self._mapped()
            steps = len(self.timesteps)
            if self._functional.pair_postprocess is None:
                columns = [self.sigmas, self.sigmas]
                timesteps = [self.timesteps, self.timesteps]
            else:
                columns = [attrs.evolve(self._functional, modality=m)._column(steps) for m in ("visual", "audio")]
                timesteps = [column * self.num_train_timesteps for column in columns]
            self.pair_timesteps = torch.stack(timesteps, dim=1)
            self.pair_sigmas = torch.stack(columns, dim=1)

        def step_from_to(
            self,
            model_output: torch.Tensor,
            timestep_from: torch.Tensor,
            timestep_to: torch.Tensor | None,
            sample: torch.Tensor,
        ) -> torch.Tensor:
            """sglang's: from the training grid's sigma nearest `timestep_from` to that of `timestep_to` (the final
            sigma for None), one functional step."""
            sigma_from = self.timestep_to_sigma(timestep_from)
            sigma_to = self._final_sigma() if timestep_to is None else self.timestep_to_sigma(timestep_to)
            return self._euler(model_output, sample, timestep_from, sigma_from, sigma_to)
