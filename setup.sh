#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian machine: system packages, then tinyexit with dev extras.
set -euo pipefail
cd "$(dirname "$0")"

apt_packages=(gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm g++ cmake
              mosquitto redis-server)   # the edge cascade's broker and shared cache
missing=()
for p in "${apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[dev]"
python3 pio/bootstrap.py   # PlatformIO without its registry: tool-scons from PyPI, Debian's arm-none-eabi
echo "tinyexit: set-up done"
