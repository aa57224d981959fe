#!/usr/bin/env bash
# capstan's whole test suite: formatting, lints, and every test — the store and API
# suites against SQLite and against PostgreSQL, the providers against their emulators,
# the CLI against a real server — then a schema-driven fuzz run of the API and the
# browser tests of the dashboard and the HTML reports.
#
#   scripts/test.sh            # what CI runs (after .ci/run installs the emulators)
#
# PostgreSQL: CAPSTAN_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres)
# names a server where tests may create and drop databases; if it is a local server
# that is down, it is started. Emulators: moto_server and gcplocal are taken from PATH,
# from CAPSTAN_MOTO_SERVER / CAPSTAN_GCPLOCAL, or from ./.venv (see
# .ci/install-emulators, which also installs schemathesis). Without them, or without
# PostgreSQL, those tests are skipped
# with a printed reason — except under CI=true, where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

export CAPSTAN_TEST_POSTGRES_URL="${CAPSTAN_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "test.sh: PostgreSQL is down; starting the local cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi

if [ -d .venv/bin ]; then
  export PATH="$PWD/.venv/bin:$PATH"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
echo "== issue 11's policy claims on the full workload suite and SDSC (optimised: a few minutes)"
cargo test --release -p simulations --test suite_claims -- --ignored 2>&1 | tee -a "$log"
echo "== API fuzz: schemathesis against a running capstan serve (scripts/fuzz-api.sh)"
CAPSTAN_BIN="$PWD/target/debug/capstan" scripts/fuzz-api.sh
echo "== browser tests: playwright-core + chromium against capstan demo and a report (scripts/browser-tests.sh)"
CAPSTAN_BIN="$PWD/target/debug/capstan" scripts/browser-tests.sh

# One closing line over every cargo test binary (set -o pipefail stopped us above if
# any failed).
awk '/^test result:/ { p += $4; f += $6 } END { printf "cargo test: %d passed, %d failed\n", p, f }' "$log"
