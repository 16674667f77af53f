#!/usr/bin/env bash
# Makes sure the Debian packages that bench/dedup_quality.py takes its pictures from are
# installed: gnome-backgrounds and sway-backgrounds (wallpapers under /usr/share/backgrounds),
# palapeli-data (five photographs of real scenes, a jigsaw game's puzzles), gcompris-qt-data
# (a few hundred photographs of monuments, animals, fish, tools, windmills... inside its Qt
# resource bundles) and jigzo-data (twelve photographs inside a jigsaw game's puzzles); the
# last two are read by bench/_more_pictures.py. Debian's packages only: nothing is downloaded
# from elsewhere. Safe to run again.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(gnome-backgrounds sway-backgrounds palapeli-data gcompris-qt-data jigzo-data)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
for package in "${packages[@]}"; do
  echo "$package $(dpkg-query -W -f='${Version}' "$package") is installed"
done
