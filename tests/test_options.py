"""`functional_sched.machinery.options`: a declared option becomes a field in declaration order (inherited ones
first), with diffusers' default; values are stored as their domain converts them; a shared declaration changes its
default for one family without changing it for the others. (That every bad value of every option of every class is
refused by name is the conformance suite's hostile-inputs column.)"""

from __future__ import annotations

import attrs
import numpy as np
import pytest

import functional_sched as fs
from functional_sched.machinery import options
from functional_sched.machinery.options import Choice, Flag, Integer, Integers, Numbers, Option, Optional, Real
from functional_sched.schedulers import common


@options.config
class Example(fs.Scheduler):
    """A config class of every domain (a scheduler needs no more to be validated)."""

    count: int = Option(2, Integer(minimum=1, maximum=3), examples=(1, 3))
    kind: str | None = Option(None, Choice(None, "a", "b"))
    flag: bool = Option(False, Flag(), exclusive="one")
    other_flag: bool = Option(False, Flag(), exclusive="one")
    scale: float = Option(1.0, Real(above=0, at_most=2))
    limit: float | None = Option(None, Optional(Real(below=1)))
    values: tuple[float, ...] | None = Option(None, Optional(Numbers()))
    indices: tuple[int, ...] = Option((), Integers())
    spacing: str = common.TIMESTEP_SPACING.but(default="leading")
    per_step: float = Option(0.0, Real(), step_argument=True)


def test_declarations_become_fields_in_order_with_defaults() -> None:
    declared = options.declared(Example)
    assert list(declared) == [field.name for field in attrs.fields(Example)]
    assert list(declared)[:3] == ["count", "kind", "flag"]
    assert Example().spacing == "leading" and common.TIMESTEP_SPACING.default == "linspace"
    assert declared["per_step"].step_argument and not declared["scale"].step_argument
    # Inherited declarations come first, in the base's order: the multistep solvers begin with the same options.
    assert list(options.declared(fs.UniPCMultistep))[:3] == ["num_train_timesteps", "beta_start", "beta_end"]


def test_values_are_stored_as_the_domain_converts_them() -> None:
    built = Example(
        count=np.int64(3), scale=1, limit=np.float32(0.5), values=np.array([0.1, 0.2]), indices=[np.int64(4), 5]
    )
    assert type(built.count) is int and built.count == 3
    assert type(built.scale) is float and type(built.limit) is float
    assert built.values == (0.1, 0.2) and built.indices == (4, 5)
    assert hash(built) == hash(Example(count=3, scale=1.0, limit=0.5, values=(0.1, 0.2), indices=(4, 5)))


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"kind": True}, ValueError, r"kind=True is not supported; choose one of None, 'a', 'b'"),  # not a == check
        ({"count": 4}, ValueError, r"count=4 is not supported; the largest is 3"),
        ({"scale": 2.5}, ValueError, r"scale must be <= 2, got 2.5"),
        ({"limit": 1.0}, ValueError, r"limit must be < 1, got 1.0"),
        ({"flag": True, "other_flag": True}, ValueError, r"only one of flag, other_flag can be True"),
    ],
)
def test_refusals_name_the_option_and_what_it_accepts(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=rf"^Example: {message}"):
        Example(**changes)
