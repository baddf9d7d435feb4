#!/usr/bin/env bash
# System libraries for the napari plugin's headless tests (tests/test_napari.py), installed only
# when missing: Qt 6's shared-library needs (the PyQt6 wheel brings Qt itself), Mesa's software
# OpenGL, fonts, and Xvfb. Qt's offscreen platform draws napari's canvas through GLX, which needs
# an X display: the tests start a private Xvfb when DISPLAY is unset.
set -euo pipefail
packages=(
  xvfb                                                   # the X server the offscreen GL context lives on
  libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri            # OpenGL (llvmpipe software rendering)
  libglib2.0-0 libfontconfig1 libfreetype6 fonts-dejavu-core libdbus-1-3
  libx11-6 libx11-xcb1 libxkbcommon0 libxkbcommon-x11-0  # Qt's xcb platform too (QT_QPA_PLATFORM=xcb)
  libxcb1 libxcb-cursor0 libxcb-glx0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render0
  libxcb-render-util0 libxcb-shape0 libxcb-shm0 libxcb-sync1 libxcb-util1 libxcb-xfixes0
  libxcb-xinerama0 libxcb-xkb1
)
if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install_qt_libs.sh: not a Debian-like system; install Xvfb, Mesa OpenGL and Qt 6's X11 libraries yourself" >&2
  exit 0
fi
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_qt_libs.sh: missing ${missing[*]} and apt-get unavailable (not root?); the napari tests may be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed ${missing[*]}"
