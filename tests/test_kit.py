"""The conformance kit as a third party uses it: a scheduler class of their own, not in `functional_sched.SCHEDULERS`,
checked by subclassing `SchedulerConformance` in their own tests; and the kit's budget (one config per property in
the default run, the rest `slow`)."""

from __future__ import annotations

import pytest

import functional_sched as fs
from functional_sched.testing import Config, Order, SchedulerConformance, Spec

pytest_plugins = ["pytester"]


class RenamedFlowEuler(fs.FlowMatchEulerDiscrete):
    """What a third party's scheduler is to the suite: its own class, unregistered (flow-match Euler underneath, so
    diffusers' class of its `diffusers_name` is a runnable reference)."""


class TestThirdPartyScheduler(SchedulerConformance):
    specs = (
        Spec(
            RenamedFlowEuler,
            configs=(Config("sd3", {"shift": 3.0}), Config("stochastic", {"stochastic_sampling": True})),
            orders=(Order("euler", {}, 1),),
        ),
    )


THIRD_PARTY = """
import functional_sched as fs
from functional_sched.testing import Config, SchedulerConformance, Spec

class MyScheduler(fs.FlowMatchEulerDiscrete):
    pass

class TestMine(SchedulerConformance):
    specs = (Spec(MyScheduler, configs=(Config("a", {"shift": 3.0}), Config("b", {"shift": 5.0}))),)
"""


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", "-W", "error", *args)
    return [line for line in result.outlines if "::" in line]


def test_a_third_party_suite_runs_one_config_per_property_by_default(pytester: pytest.Pytester) -> None:
    """In a project of its own (no marker registered: the kit's pytest plugin registers `slow`, so `-W error` passes),
    the default run takes each property on the first config; `-m slow` takes the rest and the long grids."""
    pytester.makepyfile(test_mine=THIRD_PARTY)
    default = collected(pytester, "-m", "not slow")
    slow = collected(pytester, "-m", "slow")
    assert default and slow
    assert not any("-b]" in test for test in default), "the second config belongs to the slow run"
    assert any("test_parity[MyScheduler-a]" in test for test in default)
    assert any("test_parity[MyScheduler-b]" in test for test in slow)
    assert any("test_parity_grid_full[MyScheduler]" in test for test in slow)
    # Unregistered: no config mapping or drop-in columns (from_diffusers maps diffusers' classes to ours only).
    assert not any("test_drop_in" in test or "through_diffusers" in test for test in default + slow)
    one_class = collected(pytester, "-m", "not slow", "-k", "MyScheduler and parity")
    assert one_class and all("MyScheduler" in test and "parity" in test for test in one_class)
