#!/usr/bin/env bash
# Installs the Debian 12 packages tillsync needs to build and test.
# Idempotent: packages already present are not touched, and nothing is printed
# when everything is installed. Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  g++ cmake ninja-build git pkg-config ca-certificates
  libsqlite3-dev sqlite3
  libboost-dev
  libcereal-dev
  libzmq3-dev cppzmq-dev
  libgtest-dev libgmock-dev
  libcli11-dev nlohmann-json3-dev
  libbenchmark-dev
  libpq-dev postgresql-15  # PostgreSQL HQ backend; the server runs the pg-labelled tests
  clang libclang-rt-14-dev  # libFuzzer targets (tests/fuzz), run by .ci/run
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
