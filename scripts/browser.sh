#!/usr/bin/env bash
# The browser the tests drive: Debian's chromium and chromium-driver (no browser download).
# Called by scripts/test.sh; installs them once when missing (needs root or sudo and apt).
set -uo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo -n"; else
    echo "warning: chromium is not installed and this user cannot install it; the browser tests" \
         "will be skipped (install Debian's chromium and chromium-driver, then rerun)" >&2
    exit 0
  fi
fi
echo "installing Debian's chromium and chromium-driver for the browser tests (once)" >&2
if ! { $sudo apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
       || { $sudo apt-get update >/dev/null 2>&1 \
            && $sudo apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1; }; }; then
  echo "warning: apt could not install chromium and chromium-driver; the browser tests will be" \
       "skipped (install them, then rerun)" >&2
fi
exit 0
