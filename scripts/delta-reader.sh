#!/usr/bin/env bash
# An independent Delta Lake reader (PyPI `deltalake` + `pyarrow`) running scripts/delta-read.py.
# Tests use it to check that assets written by Sluice read the same in another engine.
#   scripts/delta-reader.sh TABLE_URI [VERSION]   prints {"version", "rows", "columns", "sums"} as JSON
exec bash "$(dirname "${BASH_SOURCE[0]}")/python-tool.sh" delta-reader "deltalake, pyarrow" \
  "deltalake==1.6.6 pyarrow==26.0.1" delta-read.py "$@"
