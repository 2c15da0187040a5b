#!/usr/bin/env bash
# Check that a built book renders its math in a real browser, with no network.
#
#   tools/check_rendered.sh [HTML_DIR] [PAGE] [OUT_DIR]
#
#   HTML_DIR  the built site (default: _build/html); this script builds nothing
#   PAGE      a page with math, relative to HTML_DIR
#             (default: chapters/01_foundations/index.html)
#   OUT_DIR   where screenshot.png and dom.html go (default: _build/rendered)
#
# Serves HTML_DIR with `python3 -m http.server` on 127.0.0.1, loads PAGE in headless
# Chromium with every host other than 127.0.0.1 unresolvable (so a CDN dependency
# would show up as unrendered math), takes a screenshot and dumps the DOM after
# MathJax has run, then checks the DOM: MathJax containers present, at least one per
# math element of the page, and no TeX errors.
#
# Needs Chromium: `apt-get update && apt-get install -y chromium` on Debian; set
# CHROMIUM=/path/to/browser to use another one.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HTML_DIR="$(cd "${1:-$ROOT/_build/html}" && pwd)"
PAGE="${2:-chapters/01_foundations/index.html}"
OUT_DIR="${3:-$ROOT/_build/rendered}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"

[[ -f "$HTML_DIR/$PAGE" ]] || { echo "error: $HTML_DIR/$PAGE not found (build the book first)" >&2; exit 2; }

BROWSER="${CHROMIUM:-}"
if [[ -z "$BROWSER" ]]; then
    for candidate in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$candidate" >/dev/null; then BROWSER="$(command -v "$candidate")"; break; fi
    done
fi
[[ -n "$BROWSER" ]] || { echo "error: no Chromium found; apt-get install -y chromium" >&2; exit 2; }

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$HTML_DIR" >"$OUT_DIR/http.log" 2>&1 &
SERVER_PID=$!
PROFILE="$(mktemp -d)"
cleanup() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    rm -rf "$PROFILE"
}
trap cleanup EXIT

URL="http://127.0.0.1:$PORT/$PAGE"
for _ in $(seq 50); do
    python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$URL" 2>/dev/null && break
    sleep 0.2
done

FLAGS=(
    --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --disable-dev-shm-usage --hide-scrollbars
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
    --user-data-dir="$PROFILE"
    --virtual-time-budget=10000 --window-size=1280,2000
)

timeout 120 "$BROWSER" "${FLAGS[@]}" --screenshot="$OUT_DIR/screenshot.png" "$URL" \
    >"$OUT_DIR/chromium-screenshot.log" 2>&1
timeout 120 "$BROWSER" "${FLAGS[@]}" --dump-dom "$URL" \
    >"$OUT_DIR/dom.html" 2>"$OUT_DIR/chromium-dom.log"

python3 - "$HTML_DIR/$PAGE" "$OUT_DIR/dom.html" "$OUT_DIR/screenshot.png" <<'EOF'
import re
import sys
from pathlib import Path

static, dom, shot = (Path(p) for p in sys.argv[1:4])
source = static.read_text(encoding="utf-8")
rendered = dom.read_text(encoding="utf-8", errors="replace")
math_nodes = len(re.findall(r'class="math\b', source))
containers = len(re.findall(r"<mjx-container\b", rendered))
errors = len(re.findall(r"<mjx-merror\b", rendered))
print(f"page:           {static}")
print(f"math elements:  {math_nodes}")
print(f"mjx-container:  {containers}")
print(f"mjx-merror:     {errors}")
print(f"screenshot:     {shot} ({shot.stat().st_size if shot.exists() else 0} bytes)")
problems = []
if math_nodes == 0:
    problems.append("the page has no math; pick another page")
if containers == 0 or containers < math_nodes:
    problems.append("MathJax did not render every math element")
if errors:
    problems.append("MathJax reported TeX errors (mjx-merror)")
if not shot.exists() or shot.stat().st_size == 0:
    problems.append("no screenshot was written")
if problems:
    print("FAIL: " + "; ".join(problems))
    sys.exit(1)
print("OK: math rendered by the local MathJax")
EOF
