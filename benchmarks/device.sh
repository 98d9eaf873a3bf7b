#!/usr/bin/env bash
# The H100 run (see RESULTS.md): the device image has torch 2.11 and no network, so diffusers travels as wheels in
# .whl/ (pip download --no-deps diffusers==0.42.1 importlib_metadata zipp torchsde==0.2.6 trampoline -d .whl: torchsde
# for DPM++ SDE, whose diffusers class is a dummy without it) and the package is installed
# without build isolation, then run from outside the checkout. Arguments go to benchmarks/suite.py.
set -euo pipefail
repo=$PWD
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-deps --no-build-isolation .
cd /tmp
python3 "$repo/benchmarks/suite.py" --device cuda --out "${OUT:-/tmp}/bench" "$@" 2>&1 | tee "${OUT:-/tmp}/bench.log"
