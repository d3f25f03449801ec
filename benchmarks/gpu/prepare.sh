#!/usr/bin/env bash
# Fetch the wheels the GPU check machine lacks into .whl/ (git-ignored; it travels with the
# working tree when the run tool names it in `carry`). Needs PyPI; run it here, not there.
#   bash benchmarks/gpu/prepare.sh          # then: du -sh .whl (must stay well under 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=${WHEELS:-.whl}
PYTHON=${PYTHON:-python3}
mkdir -p "$WHEELS"
# pip matches manylinux tags exactly: list the ones these packages publish.
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux2010_x86_64
           --platform manylinux1_x86_64)
grep -v '^#' benchmarks/gpu/requirements.txt | grep . > "$WHEELS/requirements.txt"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none "${PLATFORMS[@]}" \
    -d "$WHEELS" -r "$WHEELS/requirements.txt"
# hydra's parser runtime is published as an sdist only: build its (pure-Python) wheel here.
if ! ls "$WHEELS"/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip wheel --quiet --no-deps --no-binary=:all: -w "$WHEELS" \
        antlr4-python3-runtime==4.9.3
fi
rm "$WHEELS/requirements.txt"
ls -1 "$WHEELS"
du -sh "$WHEELS"
