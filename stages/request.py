"""`Req`: one request as an immutable record; stages map a request to a new one (`req.evolve(...)`).

Every field is checked when a request is made, and again for the fields `evolve` replaces (the denoising loop
evolves a request every step, so a field's check is a type test on its fast path, and lists already converted are
kept as they are): a bad request fails where it is made, with an error naming the field, never in a model call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from types import MappingProxyType
from typing import Any

import attrs
import torch

from functional_sched.machinery import checks
from functional_sched.machinery.scheduler import Scheduler

#: The seeds `torch.Generator.manual_seed` takes (a negative seed s seeds the generator as 2**64 + s).
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)


class _Floats(tuple):
    """A tuple of floats this module made (`float_list`): a field given one again (`evolve` passes every field) keeps
    it as it is. It equals, hashes and prints as the plain tuple."""

    __slots__ = ()


class _Shape(tuple):
    """A shape this module made and checked (`shape`), kept as it is like `_Floats`."""

    __slots__ = ()


def _real(name: str, low: float | None = None, high: float | None = None) -> Callable[[Any], float]:
    """The converter of a finite real field (a Python, numpy or 0-d tensor number), stored as a float."""

    def convert(value: Any) -> float:
        if type(value) is not float or not math.isfinite(value):
            value = checks.real("Req", name, value)
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"Req: {name} must be in [{low}, {high}], got {value!r}.")
        return value

    return convert


def _optional_real(name: str) -> Callable[[Any], float | None]:
    convert = _real(name)
    return lambda value: None if value is None else convert(value)


def _seed(value: Any) -> int:
    seed = value if type(value) is int else checks.as_integer(value)
    if seed is None:
        raise TypeError(f"Req: seed must be an integer, got {checks.shown(value)}.")
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(
            f"Req: seed must be in [-2**63, 2**64 - 1] (the seeds torch.Generator.manual_seed takes), got {seed}."
        )
    return seed


def _steps(value: Any) -> int | None:
    if value is None or (type(value) is int and value > 0):
        return value
    return checks.integer("Req", "num_inference_steps", value, minimum=1)


def _sequence(owner: str, name: str, value: Any) -> list[Any]:
    """The items of a list-like `value` (a 1-D tensor's as Python numbers), or an error naming `name`: unordered or
    not iterable, a TypeError; an array (tensor, numpy) of other than one dim, a ValueError."""
    if isinstance(value, (str, bytes, Mapping, AbstractSet)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{owner}: {name} must be a list, tuple or 1-D tensor of numbers, got {checks.shown(value)}.")
    if getattr(value, "ndim", 1) != 1:
        raise ValueError(f"{owner}: {name} must be 1-D, got an array of shape {tuple(value.shape)}.")
    return value.detach().cpu().tolist() if isinstance(value, torch.Tensor) else list(value)


def float_list(owner: str, name: str, value: Any) -> tuple[float, ...]:
    """A list of real numbers (a list, tuple or 1-D tensor) as a tuple of floats; an error names `name` and the item.
    Finiteness, range and order are the scheduler's to check (`sched.schedule`), with the reason."""
    if type(value) is _Floats:
        return value
    floats = []
    for index, item in enumerate(_sequence(owner, name, value)):
        number = item if type(item) is float else checks.as_real(item)
        if number is None:
            raise TypeError(f"{owner}: {name}[{index}] must be a real number, got {checks.shown(item)}.")
        floats.append(number)
    return _Floats(floats)


def shape(owner: str, name: str, value: Any) -> tuple[int, ...]:
    """A shape (rows first): a non-empty list of positive integers (Python, numpy, 0-d tensors) as a tuple of ints."""
    if type(value) is _Shape:
        return value
    sizes = _sequence(owner, name, value)
    if not sizes:
        raise ValueError(f"{owner}: {name} is empty; give the shape with its rows first, e.g. (1, 4, 64, 64).")
    for index, size in enumerate(sizes):
        if type(size) is not int or size < 1:
            sizes[index] = checks.integer(owner, f"{name}[{index}]", size, minimum=1)
    return _Shape(sizes)


def _optional(convert: Callable[[str, str, Any], Any], name: str) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert("Req", name, value)


def _tensor(name: str, floating: bool) -> Callable[[Any], torch.Tensor | None]:
    """The converter of a tensor field with a leading rows dim (None allowed)."""

    def convert(value: Any) -> torch.Tensor | None:
        if value is None:
            return None
        if type(value) is torch.Tensor and value.ndim and (not floating or value.is_floating_point()):
            return value
        checks.tensor("Req", name, value, floating=floating)
        if value.dim() == 0:
            raise ValueError(f"Req: {name} must have a leading rows dim, got a 0-d tensor.")
        return value

    return convert


def _dtype(value: Any) -> torch.dtype:
    if type(value) is not torch.dtype or not value.is_floating_point:
        raise TypeError(
            f"Req: dtype must be a floating-point torch.dtype (e.g. torch.float32), got {checks.shown(value)}."
        )
    return value


def _device(value: Any) -> torch.device:
    return value if type(value) is torch.device else checks.device("Req", "device", value)


def scheduler_error(owner: str, name: str, value: Any) -> TypeError:
    """The error for a `name` that is not a functional_sched scheduler."""
    return TypeError(
        f"{owner}: {name} must be a functional_sched scheduler (e.g. functional_sched.UniPCMultistep(...); for a "
        f"diffusers one, functional_sched.adapters.from_diffusers(scheduler)), got {checks.shown(value)}."
    )


def _scheduler(value: Any) -> Any:
    if value is not None and not isinstance(value, Scheduler):
        raise scheduler_error("Req", "scheduler", value)
    return value


def _frozen_mapping(value: Any) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if type(value) not in (dict, MappingProxyType) and not isinstance(value, Mapping):
        raise TypeError(f"Req: extras must be a mapping (a dict), got {checks.shown(value)}.")
    return MappingProxyType(dict(value))


@attrs.frozen(eq=False, kw_only=True)
class Req:
    """One request, its inputs and what the stages made of it so far; every field is keyword-only.

    Inputs: the conditioning (`prompt_embeds`, and `negative_prompt_embeds` for classifier-free guidance, combined
    with `guidance_scale` and `guidance_rescale` in [0, 1] as diffusers' `rescale_noise_cfg`), `seed` (the initial
    noise, and one generator per step for stochastic schedulers; any seed `torch.Generator.manual_seed` takes), the
    schedule (`num_inference_steps`, or custom `timesteps` / `sigmas`, and `mu` for dynamically shifted schedules;
    left `None`, the timestep stage computes it from the image sequence length) and the latents' `latent_shape`,
    `dtype` (floating point) and `device` (rows first). `scheduler` is the request's own sampler choice, used by
    every stage instead of the stage's.
    Made by the stages: `latents` and the scheduler `state` (R rows each), and the decoded `output`.
    `extras` holds what a particular stage needs beyond these (a second guidance scale, audio latents, ...): a
    read-only mapping, replaced as a whole with `req.with_extras(...)`.

    Checked here: each field's type and range (integers may be numpy integers or 0-d integer tensors, numbers numpy
    or 0-d tensors; they are stored as Python ints and floats), `negative_prompt_embeds` only with `prompt_embeds`,
    and one row of each embedding per latent row. Stages check the rest (a state of their scheduler, prepared before
    it is stepped) before they call a model.
    """

    prompt_embeds: torch.Tensor | None = attrs.field(default=None, converter=_tensor("prompt_embeds", floating=False))
    negative_prompt_embeds: torch.Tensor | None = attrs.field(
        default=None, converter=_tensor("negative_prompt_embeds", floating=False)
    )
    guidance_scale: float = attrs.field(default=1.0, converter=_real("guidance_scale"))
    guidance_rescale: float = attrs.field(default=0.0, converter=_real("guidance_rescale", 0.0, 1.0))
    seed: int = attrs.field(default=0, converter=_seed)
    num_inference_steps: int | None = attrs.field(default=None, converter=_steps)
    timesteps: tuple[float, ...] | None = attrs.field(default=None, converter=_optional(float_list, "timesteps"))
    sigmas: tuple[float, ...] | None = attrs.field(default=None, converter=_optional(float_list, "sigmas"))
    mu: float | None = attrs.field(default=None, converter=_optional_real("mu"))
    latent_shape: tuple[int, ...] | None = attrs.field(default=None, converter=_optional(shape, "latent_shape"))
    dtype: torch.dtype = attrs.field(default=torch.float32, converter=_dtype)
    device: torch.device = attrs.field(default="cpu", converter=_device)
    scheduler: Any = attrs.field(default=None, converter=_scheduler)
    latents: torch.Tensor | None = attrs.field(default=None, converter=_tensor("latents", floating=True))
    state: Any = None
    output: Any = None
    extras: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)

    def __attrs_post_init__(self) -> None:
        prompt, negative = self.prompt_embeds, self.negative_prompt_embeds
        if negative is not None and prompt is None:
            raise ValueError(
                "Req: negative_prompt_embeds without prompt_embeds; classifier-free guidance needs both (give "
                "prompt_embeds too, or leave negative_prompt_embeds None)."
            )
        latents, latent_shape = self.latents, self.latent_shape
        if latents is not None:
            rows, source = latents.shape[0], "latents"
            if latent_shape is not None and latent_shape[0] != rows:
                raise ValueError(
                    f"Req: latents have {rows} rows but latent_shape {latent_shape} has {latent_shape[0]}; give them "
                    "the same rows (leading dim)."
                )
        elif latent_shape is not None:
            rows, source = latent_shape[0], "latent_shape"
        elif prompt is not None:
            rows, source = prompt.shape[0], "prompt_embeds"
        else:
            return
        for name, embeds in (("prompt_embeds", prompt), ("negative_prompt_embeds", negative)):
            if embeds is not None and embeds.shape[0] != rows:
                raise ValueError(
                    f"Req: {name} has {embeds.shape[0]} rows but {source} {rows}; give one embedding row per latent "
                    "row (repeat the prompt's embeddings for each image of it)."
                )

    @property
    def rows(self) -> int:
        if self.latents is not None:
            return self.latents.shape[0]
        if self.latent_shape is None:
            raise ValueError("Req.rows: the request has neither latents nor a latent_shape.")
        return self.latent_shape[0]

    @property
    def guided(self) -> bool:
        return self.negative_prompt_embeds is not None

    def evolve(self, **changes: Any) -> Req:
        """A copy with some fields replaced (checked as `Req(...)` checks them: the replaced fields converted, the
        rows of the latents and embeddings compared). The fields kept were checked when this request was made, and
        are not converted again (the denoising loop evolves every request every step)."""
        converters = _CONVERTERS
        new = object.__new__(Req)
        for name in _FIELDS:
            if name in changes:
                value = changes.pop(name)
                convert = converters[name]
                object.__setattr__(new, name, value if convert is None else convert(value))
            else:
                object.__setattr__(new, name, getattr(self, name))
        if changes:
            raise TypeError(f"Req.evolve: unknown field(s) {sorted(changes)}; a Req has {', '.join(_FIELDS)}.")
        new.__attrs_post_init__()
        return new

    def with_extras(self, **values: Any) -> Req:
        """A copy whose `extras` has these entries added or replaced."""
        return self.evolve(extras={**self.extras, **values})


_FIELDS = tuple(field.name for field in attrs.fields(Req))
_CONVERTERS = {field.name: field.converter for field in attrs.fields(Req)}
