#!/usr/bin/env bash
# The peers of the batch-scoring bench, from PyPI, in their own venv (idempotent):
# PyTorch (full wheel with its CUDA runtime libraries; the CPU is used), pyarrow, Spark 4.3,
# Ray Data 2.60 and Daft 0.7.26.
set -euo pipefail
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
venv="$cache/bench-venv"
if [ -f "$venv/.done-2" ]; then exit 0; fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet torch==2.13.0 pyarrow numpy "pandas<3" pyspark==4.3.0 "ray[data]==2.60.0" daft==0.7.26
"$venv/bin/python" -c "import torch, pyarrow, pyspark, ray, daft; print('bench venv ready:', torch.__version__)"
touch "$venv/.done-2"
