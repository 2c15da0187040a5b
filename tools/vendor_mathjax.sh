#!/usr/bin/env bash
# Vendor MathJax 3 from the npm registry, so that the built book renders math without
# fetching anything from a CDN when a page is viewed.
#
# Result (git-ignored, like all of vendor/):
#   vendor/npm/node_modules/mathjax/        the npm package as installed
#   vendor/mathjax/_static/mathjax/         its es5/ build (tex-chtml.js, fonts, extensions)
#
# _config.yml lists vendor/mathjax in `html_extra_path`, so Sphinx merges it into the
# site root, and the pages load `_static/mathjax/tex-chtml.js` (the config's
# `mathjax_path: mathjax/tex-chtml.js`; Sphinx makes a relative mathjax_path relative
# to _static/). It is deliberately not in the repository's own `_static/` folder:
# jupyter-book adds a <script> tag for every .js file it finds there.
#
# Idempotent: does nothing if the wanted version is already in place.
set -euo pipefail

MATHJAX_VERSION="${MATHJAX_VERSION:-3.2.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NPM_PREFIX="$ROOT/vendor/npm"
DEST="$ROOT/vendor/mathjax"
STAMP="$ROOT/vendor/.mathjax-version"

if [[ -f "$DEST/_static/mathjax/tex-chtml.js" && -f "$STAMP" \
      && "$(cat "$STAMP")" == "$MATHJAX_VERSION" ]]; then
    echo "MathJax $MATHJAX_VERSION already vendored in $DEST"
    exit 0
fi

command -v npm >/dev/null || { echo "error: npm is needed to vendor MathJax" >&2; exit 1; }

mkdir -p "$NPM_PREFIX"
npm install --prefix "$NPM_PREFIX" --no-audit --no-fund --no-save --ignore-scripts \
    --loglevel=error "mathjax@$MATHJAX_VERSION"

SRC="$NPM_PREFIX/node_modules/mathjax/es5"
[[ -f "$SRC/tex-chtml.js" ]] || { echo "error: $SRC/tex-chtml.js missing" >&2; exit 1; }

# Build next to the destination, then swap it in, so an interrupted run leaves no
# half-copied tree behind that the check above would accept.
TMP="$DEST.tmp.$$"
rm -rf "$TMP"
mkdir -p "$TMP/_static/mathjax"
cp -R "$SRC/." "$TMP/_static/mathjax/"
rm -rf "$DEST"
mv "$TMP" "$DEST"
echo "$MATHJAX_VERSION" > "$STAMP"
echo "Vendored MathJax $MATHJAX_VERSION into $DEST"
