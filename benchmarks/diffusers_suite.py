"""diffusers' own scheduler tests against the drop-ins: the same modules run on unpatched diffusers, then with
`functional_sched.adapters.drop_in`'s classes patched into `diffusers`, and the outcomes compared test by test.

    python benchmarks/diffusers_suite.py --repo /path/to/diffusers        # a checkout, or a bare git directory
    python benchmarks/diffusers_suite.py --repo ... --modules test_scheduler_unipc.py -k test_step_shape

Nothing of diffusers is vendored: its `tests/` (the scheduler modules, and the helpers they import) are copied from
the given repository into a temporary folder for the run. The modules are those of the drop-ins' classes and those
whose `test_switch` converts into them. The installed diffusers (0.42.1) is what runs; tests newer than it may fail
on it unpatched, so the baseline is what unpatched diffusers passes. Prints the counts, then each test whose outcome
differs; exits 1 if a test that passes unpatched fails patched.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

MODULES = (
    "test_scheduler_dpm_multi.py",
    "test_scheduler_unipc.py",
    "test_scheduler_deis.py",  # test_switch: DEIS <-> DPM-Solver multistep / single, UniPC
    "test_scheduler_dpm_single.py",
    "test_scheduler_dpm_multi_inverse.py",
    "test_schedulers.py",  # the common tests, and the classes' config round trips
)
HELPERS = (
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/testing_utils.py",
    "tests/others/__init__.py",
    "tests/others/test_utils.py",
    "tests/schedulers/__init__.py",
)

# Loaded by pytest (`-p`) before the test modules import diffusers' classes.
PLUGIN = """
import diffusers
import diffusers.schedulers
from functional_sched.adapters import drop_in

for name, cls in drop_in.DROP_INS.items():
    for module in (diffusers, diffusers.schedulers):
        setattr(module, name, cls)
"""


def export(repo: Path, folder: Path, modules: tuple[str, ...]) -> None:
    """`tests/`'s helpers and the scheduler modules of `repo` (a checkout, or a git directory) into `folder`."""
    paths = [*HELPERS, *(f"tests/schedulers/{module}" for module in modules)]
    if (repo / "tests").is_dir():
        for path in paths:
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((repo / path).read_bytes())
        return
    archive = subprocess.run(
        ["git", "--git-dir", str(repo), "archive", "HEAD", *paths], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)


def run(folder: Path, modules: tuple[str, ...], patched: bool, extra: list[str]) -> dict[str, str]:
    """Each test's outcome (passed, failed, error, skipped) in one pytest run over `modules`."""
    report = folder / ("patched.xml" if patched else "plain.xml")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
    if patched:
        (folder / "functional_sched_patch.py").write_text(PLUGIN)
        command += ["-p", "functional_sched_patch"]
    command += [f"tests/schedulers/{module}" for module in modules] + extra
    subprocess.run(command, cwd=folder, env={**_environment(), "PYTHONPATH": str(folder)}, capture_output=True)
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcomes[name] = next((kind for kind in ("failure", "error", "skipped") if kind in kinds), "passed")
    return outcomes


def _environment() -> dict[str, str]:
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1", "DIFFUSERS_TEST_DEVICE": "cpu"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="a diffusers checkout or git directory")
    parser.add_argument("--modules", nargs="+", default=list(MODULES))
    args, extra = parser.parse_known_args(argv)
    modules = tuple(args.modules)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        export(args.repo, folder, modules)
        plain = run(folder, modules, patched=False, extra=extra)
        patched = run(folder, modules, patched=True, extra=extra)
    print(f"unpatched diffusers: {dict(Counter(plain.values()))}")
    print(f"drop-ins patched in: {dict(Counter(patched.values()))}")
    changed = sorted(name for name in plain.keys() | patched.keys() if plain.get(name) != patched.get(name))
    for name in changed:
        print(f"  {plain.get(name, 'absent')} -> {patched.get(name, 'absent')}: {name}")
    lost = [name for name in changed if plain.get(name) == "passed"]
    print(f"{len(lost)} test(s) pass on diffusers and not with the drop-ins")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
