#!/usr/bin/env bash
# SciPy and NumPy running scripts/drift-reference.py: the independent implementation the drift
# metrics are checked against (jobs/monitor/tests/drift.rs).
#   scripts/drift-reference.sh INPUT.json    prints the metrics as JSON
exec bash "$(dirname "${BASH_SOURCE[0]}")/python-tool.sh" drift-reference "scipy, numpy" \
  "scipy==1.16.3 numpy==2.3.5" drift-reference.py "$@"
