#!/usr/bin/env bash
# The test suite: creates .venv with the test extras (and Debian's Chromium for the browser test,
# Xvfb and Qt's system libraries for the napari tests, when missing and apt-get is usable), then
# runs the lint and type checks (scripts/lint.sh) and pytest (slow parity tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_browser.sh
bash scripts/install_qt_libs.sh
bash scripts/setup_venv.sh test
bash scripts/lint.sh
exec .venv/bin/python -m pytest "$@"
