#!/usr/bin/env bash
# Installs the Debian packages assay needs to build and test, only those missing.
# Works as root or through sudo. The CUDA toolkit is optional (/usr/local/cuda).
set -euo pipefail
pkgs=(build-essential pkg-config libcjson-dev libpcre2-dev libutf8proc-dev libopenblas-dev
      libcriterion-dev libcurl4-openssl-dev libsqlite3-dev curl ca-certificates unzip
      libopenmpi-dev openmpi-bin)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 2; }
  SUDO=sudo
fi
echo "deps: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
