#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs what torcx needs on a Debian machine (as root) and builds it in place.
set -eu
cd "$(dirname "$0")/.."

# Build: compiler and headers; run time: libarchive, libxxhash, libisal, libcrypto.
# Tests: tools used as baselines and to build fixtures (squashfs, erofs, gpg, nspawn);
# GNU time measures the benchmarks' peak RSS. OCI remote tests start their own registries
# (docker-registry, CNCF distribution) with htpasswd files made by apache2-utils; the
# README test brings up loopback (iproute2's ip) in a network namespace of its own.
# clang and its runtimes (libFuzzer, ASan, UBSan) fuzz the engine for a minute.
# strace injects faults (and SIGTERM) into the apply.
PACKAGES="build-essential libarchive-dev libxxhash-dev libisal-dev libssl-dev
  libarchive-tools pigz zstd xz-utils lz4 bzip2 xxhash squashfs-tools erofs-utils
  gnupg gpgv openssl util-linux iproute2 debootstrap systemd-container time strace
  docker-registry apache2-utils clang libclang-rt-14-dev"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages:$missing (run as root to install them)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # The tests run registries of their own; the package's system service is not wanted.
    case " $missing " in
    *" docker-registry "*)
        if [ -d /run/systemd/system ]; then
            systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
        fi ;;
    esac
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test]"
