#!/bin/sh
# Refresh the chart library vendored into the dashboard (beacon/dashboard/static/vendor/).
# Usage: scripts/update_vendor.sh [version]   (default: the pinned version below)
# Needs npm (only here, never to install or run Beacon): `npm pack` fetches the published
# tarball from the npm registry and checks its integrity hash.
set -eu
VERSION="${1:-1.6.32}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$HERE/beacon/dashboard/static/vendor"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
npm pack --silent "uplot@$VERSION" >/dev/null
tar -xzf "uplot-$VERSION.tgz"
mkdir -p "$DEST"
cp package/dist/uPlot.iife.min.js "$DEST/uPlot.iife.min.js"
cp package/dist/uPlot.min.css "$DEST/uPlot.min.css"
cp package/LICENSE "$DEST/uPlot.LICENSE"
echo "uplot $VERSION $(sha256sum "uplot-$VERSION.tgz" | cut -d' ' -f1)" > "$DEST/VERSION"
echo "vendored uPlot $VERSION into $DEST"
