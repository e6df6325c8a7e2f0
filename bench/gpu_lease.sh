#!/usr/bin/env bash
# The GPU benchmark on a lent H200, in one device call (docs/benchmarks.md, "Running it on a lent GPU").
#
#   bash bench/gpu_lease.sh prepare    # here, once: the wheels and packages the device lacks
#   bash bench/gpu_lease.sh run        # there: carry [".whl", ".gpu_site"], timeout 600 s
#
# The lent machine has torch (2.11, CUDA) but an older transformers and no gptqmodel, and no
# network. `prepare` downloads the pinned transformers, optimum, datasets, dill, multiprocess and
# torchao as Python 3.12 wheels into .whl/, and copies gptqmodel and its pure-Python dependencies
# (published as source only) from this machine's .venv into .gpu_site/, with a stand-in for
# PyPcre (a C extension with no wheel, of which gptqmodel uses `compile`, `escape`, `split`:
# Python's `re` serves those). Both folders are ignored by git (.git/info/exclude).
#
# `run` installs them under /tmp/site and runs bench/gpu.py once: our engine (`dense`) at 1, 64
# and 256 sessions, then the worker's own path (engine process, the worker's loading code) at 1
# and 256 sessions unquantized (bf16, as R1-Distill's checkpoints are) and as a 4-bit GPTQ
# checkpoint served by the Triton kernel and by gptqmodel's own choice (`auto`: on an H200 offline
# it chose Machete, whose build fetches CUTLASS's sources, and the row failed, 2026-12-04). Marlin
# (`worker-gptq-marlin`) builds with nvcc at its first load, 339 s there: a run of its own, with
# BENCH_VARIANTS. Its logs and JSON land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    site=.venv/lib/python3.11/site-packages
    grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >>.git/info/exclude
    grep -qx "/.gpu_site/" .git/info/exclude 2>/dev/null || echo "/.gpu_site/" >>.git/info/exclude
    platforms=()
    for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
        platforms+=(--platform "${p}_x86_64")
    done
    rm -rf .whl .gpu_site && mkdir -p .whl .gpu_site/pcre
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" --platform any -d .whl transformers==5.24.0 optimum==2.3.0 datasets==5.2.0 \
        dill==0.4.1 multiprocess==0.70.19 torchao==0.18.0 || exit 1
    for name in gptqmodel gptqmodel_ext defuser device_smi logbar tokenicer; do
        cp -r "$site/$name" .gpu_site/ || exit 1
    done
    cp -r "$site"/gptqmodel-*.dist-info "$site"/defuser-*.dist-info "$site"/device_smi-*.dist-info \
        "$site"/logbar-*.dist-info "$site"/tokenicer-*.dist-info .gpu_site/
    find .gpu_site -name __pycache__ -type d -prune -exec rm -rf {} +
    cat >.gpu_site/pcre/__init__.py <<'EOF'
"""Stand-in for PyPcre on the lent GPU machine only (bench/gpu_lease.sh): gptqmodel's patterns
through Python's `re`. Not part of the product."""

import re
from re import Pattern, compile, escape, split  # noqa: F401


class Flag:
    CASELESS = re.IGNORECASE
    MULTILINE = re.MULTILINE
    DOTALL = re.DOTALL
EOF
    du -sh .whl .gpu_site
    ;;
run)
    out="${OUT:-/tmp/gpu-out}"
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    cp -r .gpu_site/. /tmp/site/
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 GPTQMODEL_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
    export MAX_JOBS="${MAX_JOBS:-16}"
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
        python3 -c "import torch, transformers, gptqmodel; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'gptqmodel', gptqmodel.__version__, 'nvcc' if __import__('shutil').which('nvcc') else 'no nvcc')"
    } 2>&1 | tee "$out/env.txt"
    timeout "${BENCH_TIMEOUT_S:-500}" python3 bench/gpu.py --sequential-requests 1 --row-seconds 30 \
        --budget-seconds "${BENCH_BUDGET_S:-400}" --profile \
        --variants "${BENCH_VARIANTS:-dense,worker,worker-gptq-triton,worker-gptq-auto}" \
        --out "$out/gpu.json" >"$out/gpu.log" 2>&1
    echo "bench/gpu.py exit $?"
    grep -v '^{' "$out/gpu.log" | grep -v -i "warn" | sed -n '/geometry, random bf16 weights/q;p' | tail -15
    sed -n '/geometry, random bf16 weights/,$p' "$out/gpu.log"
    ;;
*)
    echo "usage: bash bench/gpu_lease.sh prepare|run" >&2
    exit 2
    ;;
esac
