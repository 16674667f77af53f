#!/usr/bin/env bash
# Makes sure Debian's Chromium and its chromedriver are installed, for the tests of the pages
# (tests/browser: Selenium drives /usr/bin/chromium, headless, through /usr/bin/chromedriver).
# Debian's packages only: no browser build is downloaded. Safe to run again.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi
echo "Chromium $(dpkg-query -W -f='${Version}' chromium) and its chromedriver are installed"
