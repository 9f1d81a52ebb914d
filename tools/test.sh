#!/usr/bin/env bash
# The project's test command (README, .ci/run): set up .venv if needed, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec .venv/bin/python -m pytest tests training/tests "$@"
