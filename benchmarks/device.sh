#!/usr/bin/env bash
# The H100 run (see RESULTS.md): the device image has torch 2.11 and no network, so diffusers travels as wheels in
# .whl/ (pip download --no-deps diffusers==0.42.1 importlib_metadata zipp torchsde==0.2.6 trampoline -d .whl: torchsde
# for DPM++ SDE, whose diffusers class is a dummy without it) and the package is installed
# without build isolation, then run from outside the checkout. Arguments go to benchmarks/suite.py (menu 3, sglang's
# classes: `bash benchmarks/device.sh --menu 3 --dtypes fp32 --steps 50 --repeats 10`).
set -euo pipefail
repo=$PWD
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
# sglang's wheel, for menu 3's references (--menu 3; its rows are skipped without it), in .whl/sglang/ (`mkdir -p
# .whl/sglang && cp /work/sglang/sglang-0.5.23-cp311-*.whl .whl/sglang/`, 39 MB of the 64 MiB a call carries). Its
# only tag is cp311 and the device's Python is 3.12, where `pip install --no-deps` refuses it ("not a supported
# wheel on this platform"): pip installs its files for 3.11 into the folder instead. The scheduler modules loaded
# (adapters/sglang.py) are plain Python; the wheel's cp311 Rust extensions, which would not load, are never imported.
sglang_wheels=(.whl/sglang/sglang-*.whl)
if [ -e "${sglang_wheels[0]}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site --python-version 3.11 \
        --implementation cp --abi cp311 --platform manylinux_2_34_x86_64 --only-binary=:all: "${sglang_wheels[@]}"
fi
python3 -m pip install -q --no-deps --no-build-isolation .
cd /tmp
python3 "$repo/benchmarks/suite.py" --device cuda --out "${OUT:-/tmp}/bench" "$@" 2>&1 | tee "${OUT:-/tmp}/bench.log"
