#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Applies the bundled example profile (examples/) into a temporary root and
# shows what torcx did: builds the two example images into the root's vendor
# store with `torcx image pack`, installs a vendor and a user profile, selects
# the user profile for "next boot", then runs a real `torcx apply` (with the
# tmpfs and the read-only seal inside a private mount namespace when root,
# with --no-mount otherwise) and prints the summary, the status and the tree.
# KEEP=1 keeps the temporary root.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

torcx() { "$PYTHON" -m torcx --root "$ROOT" "$@"; }
step() { printf '\n== %s\n' "$*"; }

# What the booted system would see: status, the tree, the seal, the binaries.
show() {
    step "torcx status"
    torcx status || true
    step "what was created under $ROOT/run"
    find "$ROOT/run" -mindepth 1 \( -type l -printf '%P -> %l\n' \) -o -printf '%P\n' | sort
    step "the seal file /run/metadata/torcx"
    cat "$ROOT/run/metadata/torcx"
    step "running the propagated binaries (bin links point into /run/torcx/unpack)"
    sh "$ROOT/run/torcx/unpack/hello/bin/hello"
    sh "$ROOT/run/torcx/unpack/tools/usr/bin/greet" torcx
}

# Second stage, run by the first inside `unshare -m`: the mounts vanish with
# the namespace, so everything is shown from inside it.
if [ "${1:-}" = --inside ]; then
    ROOT=$2
    status=0
    torcx apply || status=$?
    show
    step "mounts made by the apply (gone when this namespace ends)"
    grep " $ROOT/" /proc/self/mountinfo | awk '{print $5, $9, $6}'
    exit $status
fi

sh scripts/setup.sh
ROOT=$(mktemp -d "${TMPDIR:-/tmp}/torcx-demo.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    trap 'echo "(temporary root kept in $ROOT)"' EXIT
else
    trap 'rm -rf "$ROOT"' EXIT
fi

step "building the example images into $ROOT/usr/share/torcx/store"
STORE="$ROOT/usr/share/torcx/store"
mkdir -p "$STORE" "$ROOT/usr/share/torcx/profiles" "$ROOT/etc/torcx/profiles"
# With --root, -o is a folder of the target system, under the root like every path.
torcx image pack examples/images/hello --name hello --reference 1.0 --format tgz \
    -o /usr/share/torcx/store
torcx image pack examples/images/tools --name tools --reference 1.0 --format tar.zst \
    -o /usr/share/torcx/store

step "profiles: vendor (hello) and user 'demo' (tools), demo selected for next boot"
cp examples/profiles/vendor.json "$ROOT/usr/share/torcx/profiles/vendor.json"
cp examples/profiles/demo.json "$ROOT/etc/torcx/profiles/demo.json"
torcx profile set-next demo
torcx profile list

step "torcx apply --dry-run (the plan; changes nothing)"
torcx apply --dry-run

if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1; then
    step "torcx apply (real tmpfs and read-only seal, in a private mount namespace)"
    PYTHON=$PYTHON unshare -m --propagation private sh "$0" --inside "$ROOT"
else
    step "torcx apply --no-mount (not root: everything but the mounts)"
    torcx apply --no-mount
    show
fi
