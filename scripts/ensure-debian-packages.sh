#!/usr/bin/env bash
# Installs those of the Debian packages named as arguments that are missing (with sudo unless
# root) and says each one's version: what the scripts fetching test and benchmark photos share.
# Safe to run again.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for package in "$@"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
for package in "$@"; do
  echo "$package $(dpkg-query -W -f='${Version}' "$package") is installed"
done
