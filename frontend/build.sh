#!/usr/bin/env bash
# Build the viewer into the Python package (src/sammed/server/static), so pip installs need no npm.
# Run after editing frontend/src; commit the files it writes.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --silent --no-audit --no-fund
out=../src/sammed/server/static
mkdir -p "$out"
npx esbuild src/main.js --bundle --minify --format=esm --target=es2020 --metafile=node_modules/.meta.json --outfile="$out/viewer.js"
node third_party.mjs node_modules/.meta.json > "$out/THIRD_PARTY.txt"
cp src/index.html src/viewer.css "$out/"
echo "built $(du -h "$out/viewer.js" | cut -f1) into $out"
