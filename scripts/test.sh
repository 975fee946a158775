#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Sets up a Debian machine and runs the whole test suite (privileged and boot
# tests too when run as root). Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest "$@"
