#!/usr/bin/env bash
# Installs what flowtrain needs from Debian 12 (as root, or with sudo), skipping
# packages already present so a second run costs a second.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhdf5-openmpi-dev
      libopenblas-dev libdnnl-dev libcmocka-dev libcyaml-dev libspng-dev zlib1g-dev gnuplot-nox
      dataset-fashion-mnist python3-numpy python3-h5py slurm-wlm munge libpmix-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
