#!/usr/bin/env bash
# One device call, before and after: the earlier commit's tree in .before/ (`git archive <commit> | tar -x -C
# .before`, carried with .whl/), and this tree, each installed into its own folder (diffusers from the carried
# wheels, as device.sh does). Checks first (the CUDA memory test; loops under inference_mode on CUDA equal to plain
# ones), then the checkpointing memory benchmark, then benchmarks/suite.py of each side alternately, ROUNDS times,
# with the arguments given; each run's results.md is collected into $OUT/suite.md, and the before/after summary
# (benchmarks/compare_suites.py) printed last.
set -euo pipefail
repo=$PWD
out=${OUT:-/tmp/out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/after .
python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/before .before
cd /tmp
after=/tmp/after:/tmp/site
PYTHONPATH=$after python3 -m pytest -q -p no:cacheprovider "$repo/tests/test_host.py" -k cuda 2>&1 | tail -3
PYTHONPATH=$after python3 - <<'PY'
import torch, functional_sched as fs
model = lambda x, t: torch.tanh(x) * (0.5 + t.view(-1, 1, 1, 1) / 1000)
for sched in (fs.FlowMatchEulerDiscrete(shift=3.0), fs.DPMSolverMultistep(algorithm_type="sde-dpmsolver++"), fs.UniPCMultistep()):
    x = torch.randn(2, 16, 32, 32, device="cuda")
    noise = torch.randn(25, *x.shape, device="cuda") if sched.stochastic else None
    plain = fs.denoise(sched, model, x, num_inference_steps=25, noise=noise)
    with torch.inference_mode():
        inside = fs.denoise(sched, model, x, num_inference_steps=25, noise=noise)
    print(f"{sched.name}: inference_mode loop on CUDA equal to plain: {torch.equal(inside, plain)}")
PY
PYTHONPATH=$after python3 "$repo/benchmarks/checkpoint_memory.py" --device cuda --steps 25 --shape 4x4x64x64 | tee "$out/checkpoint.md"
for round in $(seq "${ROUNDS:-2}"); do
    for side in before after; do
        tree=$repo
        [ "$side" = before ] && tree=$repo/.before
        PYTHONPATH=/tmp/$side:/tmp/site python3 "$tree/benchmarks/suite.py" --device cuda --out "/tmp/bench/$side$round" "$@" \
            > "/tmp/bench-$side$round.log" 2>&1 || { tail -30 "/tmp/bench-$side$round.log"; exit 1; }
        { echo "## $side, round $round"; cat "/tmp/bench/$side$round/results.md"; } >> "$out/suite.md"
        echo "$side round $round done"
    done
done
python3 "$repo/benchmarks/compare_suites.py" "$out/suite.md" | tee "$out/summary.md"
