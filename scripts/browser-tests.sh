#!/usr/bin/env bash
# Browser tests: playwright-core (tests/browser, installed with `npm ci`) drives Debian's
# headless chromium against what users open —
#   - the dashboard of a running `capstan demo` (sign in, pools, a pool's live chart,
#     its plan report, its workers);
#   - the HTML report of the README's SDSC comparison (`capstan simulate --report`),
#     opened from a file.
#
#   scripts/browser-tests.sh                           # uses target/debug/capstan
#   CAPSTAN_SCREENSHOT_DIR=docs scripts/browser-tests.sh   # also refreshes docs/*.png
#
# Needs /usr/bin/chromium (Debian's `chromium`) and tests/browser/node_modules
# (`npm ci --prefix tests/browser`); .ci/run installs both. Without them the tests are
# skipped with a reason, except under CI=true, where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${CAPSTAN_BIN:-$PWD/target/debug/capstan}"
chromium="${CAPSTAN_CHROMIUM:-/usr/bin/chromium}"
missing=""
[ -x "$bin" ] || missing="$missing capstan binary ($bin; cargo build first)"
[ -x "$chromium" ] || missing="$missing chromium ($chromium; apt-get install chromium)"
[ -d tests/browser/node_modules/playwright-core ] || missing="$missing playwright-core (npm ci --prefix tests/browser)"
command -v node >/dev/null || missing="$missing node"
if [ -n "$missing" ]; then
  if [ "${CI:-}" = true ]; then
    echo "browser-tests: missing:$missing" >&2
    exit 1
  fi
  echo "browser-tests: SKIPPED, missing:$missing"
  exit 0
fi

work="$(mktemp -d)"
demo_pid=""
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -INT "$demo_pid" 2>/dev/null || true
    sleep 2
    kill -KILL "$demo_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The report of the README's SDSC comparison (a generated workload when the trace is
# not on this machine).
trace="${CAPSTAN_SDSC_TRACE:-../shared/traces/SDSC-BLUE-2000-4.2-cln.swf.gz}"
if [ -f "$trace" ]; then
  input=(--trace "$trace")
else
  echo "browser-tests: $trace not found; the report test uses --workload diurnal"
  input=(--workload diurnal)
fi
echo "browser-tests: capstan simulate ${input[*]} --compare reactive,forecast --report"
"$bin" simulate "${input[@]}" --compare reactive,forecast --report "$work/report.html" > "$work/simulate.out" 2> "$work/simulate.err" \
  || { cat "$work/simulate.err" >&2; exit 1; }

# A demo on a free port; its first lines are the dashboard URL and the sign-in token.
"$bin" demo --listen 127.0.0.1:0 > "$work/demo.out" 2> "$work/demo.err" &
demo_pid=$!
url="" token=""
for _ in $(seq 1 100); do
  url="$(grep -oE 'http://127\.0\.0\.1:[0-9]+/?' "$work/demo.out" | head -n1 || true)"
  token="$(grep -oE 'cap_[A-Za-z0-9_-]+' "$work/demo.out" | head -n1 || true)"
  [ -n "$url" ] && [ -n "$token" ] && break
  kill -0 "$demo_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$url" ] || [ -z "$token" ]; then
  echo "browser-tests: capstan demo printed no URL and token within 10 s" >&2
  tail -n 40 "$work/demo.out" "$work/demo.err" >&2
  exit 1
fi
echo "browser-tests: demo at $url"

status=0
CAPSTAN_DEMO_URL="$url" CAPSTAN_DEMO_TOKEN="$token" CAPSTAN_REPORT="$work/report.html" \
  CAPSTAN_CHROMIUM="$chromium" node --test --test-concurrency=1 tests/browser/ || status=$?

kill -INT "$demo_pid"
for _ in $(seq 1 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$demo_pid" 2>/dev/null; then
  echo "browser-tests: capstan demo did not stop within 10 s of Ctrl-C" >&2
  status=1
elif ! wait "$demo_pid"; then
  echo "browser-tests: capstan demo exited non-zero after Ctrl-C" >&2
  status=1
fi
demo_pid=""
if [ "$status" != 0 ]; then
  echo "--- demo log (tail)" >&2
  tail -n 60 "$work/demo.err" >&2
fi
exit "$status"
