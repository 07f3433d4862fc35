#!/usr/bin/env bash
# Downloads into .whl/ the wheels experiments/bench/gpu.sh needs on the lent GPU machine (Python 3.12, x86-64):
# keras and its two dependencies that machine lacks. Its image holds torch, jax with CUDA, numpy, pandas, pillow,
# scikit-learn, scipy, matplotlib, click, h5py, ml-dtypes, rich and absl-py; it has no TensorFlow, whose CUDA wheel
# (over 500 MB) cannot travel within the 64 MiB the working tree may carry, so gpu.sh skips it with a note.
#
#   bash experiments/bench/gpu-wheels.sh && echo /.whl/ >> .git/info/exclude
#   then run gpu.sh on the device with carry [".whl"]
set -eu
cd "$(dirname "$0")/../.."
KERAS=$(.venv/bin/python -c "import keras; print(keras.__version__)" 2>/dev/null || echo 3.15.1)
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for pkg in "keras==$KERAS" namex optree; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$pkg"
done
ls -la .whl
