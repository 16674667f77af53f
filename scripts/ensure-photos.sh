#!/usr/bin/env bash
# Makes sure the Debian packages that bench/dedup_quality.py takes its pictures from are
# installed: gnome-backgrounds and sway-backgrounds (wallpapers under /usr/share/backgrounds),
# palapeli-data (five photographs of real scenes, a jigsaw game's puzzles), gcompris-qt-data
# (a few hundred photographs of monuments, animals, fish, tools, windmills... inside its Qt
# resource bundles) and jigzo-data (twelve photographs inside a jigsaw game's puzzles); the
# last two are read by bench/_more_pictures.py. Debian's packages only: nothing is downloaded
# from elsewhere. Safe to run again.
set -euo pipefail

bash "$(dirname "$0")/ensure-debian-packages.sh" \
  gnome-backgrounds sway-backgrounds palapeli-data gcompris-qt-data jigzo-data
