#!/usr/bin/env bash
# Debian packages the tests use, installed once when missing (needs root or sudo and apt):
# chromium and chromium-driver (annotator tests in a real browser, no browser download) and
# postgresql (the team servers' database, started by infra/postgres/server.sh).
# Called by scripts/test.sh; a package that cannot be installed skips its tests, with a warning.
set -uo pipefail
sudo=""
[ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo="sudo -n"
updated=""

install_once() {  # what-for check-command package...
  local what=$1 check=$2; shift 2
  eval "$check" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ] && [ -z "$sudo" ]; then
    echo "warning: $* not installed and this user cannot install them; the $what tests will be skipped" >&2
    return 0
  fi
  echo "installing Debian's $* for the $what tests (once)" >&2
  if ! $sudo apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; then
    [ -z "$updated" ] && $sudo apt-get update >/dev/null 2>&1 && updated=1
    $sudo apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
      || echo "warning: apt could not install $*; the $what tests will be skipped (install them, then rerun)" >&2
  fi
}

install_once browser "command -v chromium && command -v chromedriver" chromium chromium-driver
install_once "team-server" "ls /usr/lib/postgresql/*/bin/initdb" postgresql
exit 0
