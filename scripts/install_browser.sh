#!/usr/bin/env bash
# Debian's Chromium for the browser test (tests/test_browser_viewer.py), installed only when missing.
# Playwright drives this binary directly; it never downloads a browser of its own.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser.sh: /usr/bin/chromium missing and apt-get unavailable (not root?); the browser test will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium >/dev/null
echo "installed $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
