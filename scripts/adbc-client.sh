#!/usr/bin/env bash
# An independent Flight SQL client (PyPI `adbc-driver-flightsql`, the ADBC driver BI tools and
# notebooks use) running scripts/adbc-client.py; tests/flight.rs drives `sluice serve --flight`
# with it.
#   scripts/adbc-client.sh URI USER PASSWORD MODEL TOKEN   prints what it saw as JSON
exec bash "$(dirname "${BASH_SOURCE[0]}")/python-tool.sh" adbc-client "adbc_driver_flightsql.dbapi, pyarrow" \
  "adbc-driver-flightsql==1.13.0 adbc-driver-manager==1.13.0 pyarrow==26.0.1" adbc-client.py "$@"
