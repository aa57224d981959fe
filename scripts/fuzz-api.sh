#!/usr/bin/env bash
# Schema-driven fuzzing of the operator API with schemathesis, against a real server.
#
# For each backend (SQLite always; PostgreSQL when CAPSTAN_TEST_POSTGRES_URL, default
# postgres://postgres@127.0.0.1:5432/postgres, answers) it:
#   1. bootstraps a `*` token on a fresh store: capstan clients create --database-url ...
#   2. starts `capstan serve` (reconcile loop every 5 s) on a free loopback port and
#      waits for /healthz; creates the seed pool `fuzz`, pushes a queue sample and waits
#      (up to 45 s) for its first plan, so the plan and forecast routes answer 200 too;
#   3. runs schemathesis on http://127.0.0.1:PORT/openapi.json with that token:
#      every phase (examples, coverage, fuzzing, stateful), a fixed seed, and the checks
#      below; then fuzzes DELETE /v1/clients/{client_id} on its own (see below); then
#      the worker agent's own routes (heartbeat, interruption) with a real worker
#      credential: a static machine of pool fuzz-static, leased by the loop, registers
#      with its secret as `capstan agent` does;
#   4. checks that the token still works, that no operation answered only 401/403,
#      and that at least CAPSTAN_FUZZ_MIN_REQUESTS requests were made (counted from
#      schemathesis' NDJSON report, every request of every phase).
# Nothing is built here: the binary is $CAPSTAN_BIN (default target/debug/capstan;
# build it with `cargo build -p capstan`). Only loopback is contacted.
#
# Why DELETE /v1/clients/{client_id} runs apart: in the stateful phase schemathesis
# follows GET /v1/clients -> DELETE /v1/clients/{id} with the ids it listed, which
# includes the fuzzer's own client; revoking it turns every later request into a 401
# and the run into a no-op. So the main run excludes that operation, and a second
# run fuzzes it alone (it sees no ids there, so it cannot find the fuzzer's own).
#
# Environment:
#   CAPSTAN_BIN                  server binary (default target/debug/capstan)
#   CAPSTAN_FUZZ_CHECKS          schemathesis --checks (default: the five below; `all` works)
#   CAPSTAN_FUZZ_MAX_EXAMPLES    --max-examples per operation (default 50)
#   CAPSTAN_FUZZ_SEED            --seed (default 20261130)
#   CAPSTAN_FUZZ_WORKERS         --workers (default 1: deterministic order)
#   CAPSTAN_FUZZ_MIN_REQUESTS    fail below this many requests per backend (default 1000)
#   CAPSTAN_FUZZ_BUDGET_SECS     wall-clock limit of one schemathesis run (default 240)
#   CAPSTAN_FUZZ_BACKENDS        sqlite,postgres (default both; postgres skipped if unreachable)
#   CAPSTAN_FUZZ_KEEP=1          keep the temp dir (reports, server logs) even on success
#   CAPSTAN_TEST_POSTGRES_URL    PostgreSQL admin URL for a throwaway database
#
# Exit 0 when every run passed. Without schemathesis: SKIPPED and exit 0, except under
# CI=true (exit 1). Install it with .ci/install-emulators.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

checks="${CAPSTAN_FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance}"
max_examples="${CAPSTAN_FUZZ_MAX_EXAMPLES:-50}"
seed="${CAPSTAN_FUZZ_SEED:-20261130}"
workers="${CAPSTAN_FUZZ_WORKERS:-1}"
min_requests="${CAPSTAN_FUZZ_MIN_REQUESTS:-1000}"
budget="${CAPSTAN_FUZZ_BUDGET_SECS:-240}"
backends="${CAPSTAN_FUZZ_BACKENDS:-sqlite,postgres}"
bin="${CAPSTAN_BIN:-target/debug/capstan}"
pg_admin="${CAPSTAN_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

# --- schemathesis -------------------------------------------------------------------
st=""
if command -v schemathesis >/dev/null 2>&1; then
  st="$(command -v schemathesis)"
elif [[ -x "$root/.venv/bin/schemathesis" ]]; then
  st="$root/.venv/bin/schemathesis"
elif command -v st >/dev/null 2>&1 && st --version 2>/dev/null | grep -qi schemathesis; then
  st="$(command -v st)"
fi
if [[ -z "$st" ]]; then
  echo "SKIPPED: schemathesis not installed (.ci/install-emulators installs it)"
  [[ "${CI:-}" == "true" ]] && exit 1
  exit 0
fi
# A Python to read the reports with: schemathesis' own, else the system's.
py="$(dirname "$st")/python"
[[ -x "$py" ]] || py="$(command -v python3)"

if [[ ! -x "$bin" ]]; then
  echo "error: $bin is not an executable; build it with: cargo build -p capstan (or set CAPSTAN_BIN)" >&2
  exit 1
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

echo "fuzz-api: $("$st" --version) at $st; server $bin"
echo "fuzz-api: checks=$checks max-examples=$max_examples seed=$seed workers=$workers"

# Only loopback: no proxy may intercept, nothing else is addressed.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

# --- cleanup ------------------------------------------------------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/capstan-fuzz.XXXXXX")"
server_pid=""
st_pid=""
pg_db=""
status=1
cleanup() {
  if [[ -n "$st_pid" ]]; then
    kill -INT "$st_pid" 2>/dev/null || true
    wait "$st_pid" 2>/dev/null || true
  fi
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ -n "$pg_db" ]]; then
    psql "$pg_admin" -qAt -v ON_ERROR_STOP=1 \
      -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 ||
      echo "warning: could not drop the PostgreSQL database $pg_db" >&2
  fi
  if [[ "$status" == 0 && "${CAPSTAN_FUZZ_KEEP:-}" != 1 ]]; then
    rm -rf "$tmp"
  else
    echo "fuzz-api: reports and server logs kept in $tmp"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server's reconcile loop on a short period, so that the seed pool is planned
# within seconds (and the loop works on it while the fuzzer runs).
cat >"$tmp/serve.toml" <<'TOML'
reconcile_interval_s = 5
lease_ttl_s = 15
TOML

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_server URL LOG: starts `capstan serve`, sets server_pid and base, waits for /healthz.
start_server() {
  local url="$1" log="$2" port i
  port="$(free_port)"
  base="http://127.0.0.1:$port"
  "$bin" serve --config "$tmp/serve.toml" --listen "127.0.0.1:$port" --database-url "$url" >"$log" 2>&1 &
  server_pid=$!
  for i in $(seq 1 150); do
    if curl -fsS --max-time 1 "$base/healthz" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "error: the server exited before answering /healthz; its log:" >&2
      tail -n 40 "$log" >&2
      server_pid=""
      return 1
    fi
    sleep 0.2
  done
  echo "error: $base/healthz did not answer within 30 s; server log:" >&2
  tail -n 40 "$log" >&2
  return 1
}

stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}

# run_st DIR ARGS...: one schemathesis run from DIR with the common options ("${common[@]}"
# of the caller) and ARGS, within the time budget. In the background, so that a signal
# to this script runs the cleanup at once instead of after schemathesis ends.
run_st() {
  local dir="$1"
  shift
  (cd "$dir" && exec timeout --signal=INT --kill-after=15 "$budget" \
    "$st" --config-file "$dir/schemathesis.toml" run "$base/openapi.json" "${common[@]}" "$@") &
  st_pid=$!
  local rc=0
  wait "$st_pid" || rc=$?
  st_pid=""
  return "$rc"
}

# summarize DIR: prints request counts and failures from the reports in DIR; prints
# the number of requests as the last line.
summarize() {
  "$py" - "$1" <<'PY'
import base64, collections, glob, json, sys

d = sys.argv[1]
requests = 0
statuses = collections.Counter()
per_op = collections.defaultdict(collections.Counter)
for path in sorted(glob.glob(f"{d}/*/ndjson-*.ndjson")):
    with open(path) as f:
        for line in f:
            event = json.loads(line)
            finished = event.get("ScenarioFinished")
            if not finished:
                continue
            recorder = finished["recorder"]
            cases = recorder.get("cases", {})
            for case_id, interaction in recorder.get("interactions", {}).items():
                requests += 1
                response = interaction.get("response")
                code = response["status_code"] if response else "no response"
                statuses[code] += 1
                case = cases.get(case_id, {}).get("value", {})
                op = f'{case.get("method", interaction["request"]["method"])} {case.get("path", "?")}'
                per_op[op][code] += 1
print("  requests by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str)))
for op in sorted(per_op):
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(per_op[op].items(), key=str))
    print(f"    {op:<45} {counts}")
missing_auth = set()
for path in sorted(glob.glob(f"{d}/*/json-*.json")):
    report = json.load(open(path))
    tc = report.get("test_cases", {})
    print(f"  {path.split('/')[-2]}: {tc.get('generated', 0)} test cases, "
          f"{tc.get('with_failures', 0)} with failures, {tc.get('unique_failures', 0)} unique failures, "
          f"{tc.get('errored', 0)} errored; exit code {report.get('exit_code')}")
    missing_auth.update(report.get("warnings", {}).get("missing_auth", []))
    for w, ops in report.get("warnings", {}).items():
        if ops and w != "missing_auth":
            print(f"    warning {w}: {ops}")
if missing_auth:
    print(f"  ERROR: operations that answered only 401/403: {sorted(missing_auth)}")
    print("MISSING_AUTH")
print(requests)
PY
}

# fuzz_backend NAME URL: one full run against a fresh store at URL.
fuzz_backend() {
  local name="$1" url="$2" dir="$tmp/$1" token rc=0 rc2=0 rc3=0 requests summary
  mkdir -p "$dir"
  echo
  echo "=== $name ==="
  # Bootstrap: the token is printed alone on stdout.
  token="$("$bin" clients create --name fuzz --scope '*' --database-url "$url" 2>"$dir/bootstrap.log")" || {
    echo "error: capstan clients create failed:" >&2
    cat "$dir/bootstrap.log" >&2
    return 1
  }
  if [[ ! "$token" =~ ^cap_[0-9a-f]{16}_[0-9a-f]{64}$ ]]; then
    echo "error: capstan clients create printed no token on stdout (got ${#token} characters)" >&2
    return 1
  fi
  start_server "$url" "$dir/server.log" || return 1
  echo "server: $base (pid $server_pid, log $dir/server.log)"

  # Something to find: pool `fuzz` (the id the dictionary below draws), on the fake
  # provider so the reconciler gives it workers; the fuzzer may change or delete it.
  local created
  created="$(curl -sS -o "$dir/seed.json" -w '%{http_code}' --max-time 10 -X PUT \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data '{"provider":"fake","min_capacity":2,"max_capacity":4,"launch_configs":[{"id":"a","instance_type":"t"}]}' \
    "$base/v1/pools/fuzz")"
  if [[ "$created" != 201 ]]; then
    echo "error: creating the seed pool fuzz answered $created: $(cat "$dir/seed.json")" >&2
    return 1
  fi
  # Demand for it, and its first plan: until the reconcile loop plans the pool, its
  # plan and forecast routes answer only 404, and their 200 bodies would go unchecked.
  # The loop takes a new pool at its next lease round and plans it at its next tick
  # (5 s each here), so wait up to 45 s; without a plan the run goes on, warned.
  curl -sS -o /dev/null --max-time 10 -X POST \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data '{"samples":[{"pending":3,"running":1}]}' "$base/v1/pools/fuzz/queue" || true
  local waited=0
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
    -H "Authorization: Bearer $token" "$base/v1/pools/fuzz/plan")" == 200 ]]; do
    if (( waited >= 45 )); then
      echo "warning: pool fuzz was not planned within 45 s; plan and forecast are fuzzed as 404s only"
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done

  # A worker credential for the worker agent's own routes (heartbeat, interruption):
  # a static machine of pool fuzz-static, leased by the loop once there is demand,
  # registers with its secret like `capstan agent` would.
  local worker_credential="" worker_id="" secret=""
  curl -sS -o /dev/null --max-time 10 -X PUT \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data '{"provider":"static","max_capacity":1,"launch_configs":[{"id":"hw","instance_type":"static"}]}' \
    "$base/v1/pools/fuzz-static" || true
  secret="$(curl -sS --max-time 10 -X POST \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data '{"name":"fuzz-m1","capacity":1}' "$base/v1/pools/fuzz-static/machines" |
    "$py" -c 'import json, sys; print(json.load(sys.stdin).get("secret", ""))' 2>/dev/null || true)"
  curl -sS -o /dev/null --max-time 10 -X POST \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data '{"samples":[{"pending":1,"running":0}]}' "$base/v1/pools/fuzz-static/queue" || true
  waited=0
  while [[ -n "$secret" ]] && (( waited < 45 )); do
    if [[ "$(curl -sS -o "$dir/register.json" -w '%{http_code}' --max-time 5 -X POST \
      -H 'Content-Type: application/json' \
      --data "{\"machine\":\"fuzz-m1\",\"secret\":\"$secret\"}" \
      "$base/v1/workers/register")" == 200 ]]; then
      worker_credential="$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["credential"])' "$dir/register.json")"
      worker_id="$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["worker_id"])' "$dir/register.json")"
      rm -f "$dir/register.json"
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done

  # Random strings are almost never valid pool ids or entity tags (the schema does not
  # spell out their patterns), so most generated requests would stop at 400 before
  # reaching a handler. Dictionaries of valid values, drawn most of the time, let the
  # rest of those requests reach the handlers and the store; one pool id for the path
  # and the body's `id` makes most generated specs name the pool they are PUT to. (An
  # id with a '/' would be filtered out of path parameters by schemathesis.)
  cat >"$dir/schemathesis.toml" <<'TOML'
[dictionaries.pool_ids]
values = ["fuzz"]

[dictionaries.etags]
values = ['"1"', '"2"', '"3"', 'W/"1"', '"1", "2"', '*']

[parameters]
"path.pool_id" = { dictionary = "pool_ids", probability = 0.8 }
"body.id" = { dictionary = "pool_ids", probability = 0.8 }
"header.If-Match" = { dictionary = "etags", probability = 0.8 }
"header.If-None-Match" = { dictionary = "etags", probability = 0.8 }
TOML
  local common=(
    --checks "$checks"
    --max-examples "$max_examples"
    --seed "$seed"
    --workers "$workers"
    --generation-database none
    --request-timeout 10
    --no-color
    --report json,ndjson
  )
  local worker_routes='^/v1/workers/[{]worker_id[}]/(heartbeat|interruption)$'
  # The worker's own routes first, while its machine, pool and credential are sure to
  # exist: the main run below may drain the worker or delete its pool.
  if [[ -n "$worker_credential" ]]; then
    echo "--- schemathesis: the worker's own routes, with worker $worker_id's credential"
    mkdir -p "$dir/worker"
    cat >"$dir/worker/schemathesis.toml" <<TOML
[dictionaries.worker_ids]
values = ["$worker_id"]

[parameters]
"path.worker_id" = { dictionary = "worker_ids", probability = 0.9 }
TOML
    run_st "$dir/worker" --report-dir "$dir/worker-report" \
      --header "Authorization: Bearer $worker_credential" \
      --include-path-regex "$worker_routes" || rc3=$?
  else
    echo "FAIL ($name): no worker credential; the worker's own routes were not fuzzed"
    rc3=1
  fi
  echo "--- schemathesis: every operation but DELETE /v1/clients/{client_id} and the worker's own routes"
  run_st "$dir" --report-dir "$dir/main" --header "Authorization: Bearer $token" \
    --exclude-path-regex '^/v1/clients/|/(heartbeat|interruption)$' || rc=$?
  echo "--- schemathesis: DELETE /v1/clients/{client_id} alone"
  run_st "$dir" --report-dir "$dir/revoke" --header "Authorization: Bearer $token" \
    --include-path-regex '^/v1/clients/[{]client_id[}]$' || rc2=$?
  [[ "$rc" == 124 || "$rc2" == 124 || "$rc3" == 124 ]] && echo "error: schemathesis ran over the ${budget} s budget" >&2

  # The token must have survived the run, or the later results are 401s.
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
    -H "Authorization: Bearer $token" "$base/v1/pools")"
  stop_server

  echo "--- summary ($name)"
  summary="$(summarize "$dir")"
  printf '%s\n' "$summary" | sed '$d'
  requests="$(printf '%s\n' "$summary" | tail -n 1)"
  echo "  requests made: $requests (minimum $min_requests)"
  local failed=0
  if [[ "$rc" != 0 || "$rc2" != 0 || "$rc3" != 0 ]]; then
    echo "FAIL ($name): schemathesis exited $rc (main run), $rc2 (DELETE /v1/clients run) and $rc3 (worker routes)"
    failed=1
  fi
  if [[ "$code" != 200 ]]; then
    echo "FAIL ($name): after the run the fuzz token gets $code on GET /v1/pools (revoked?)"
    failed=1
  fi
  if printf '%s\n' "$summary" | grep -qx MISSING_AUTH; then
    echo "FAIL ($name): some operations were only ever refused authentication"
    failed=1
  fi
  if (( requests < min_requests )); then
    echo "FAIL ($name): only $requests requests, fewer than $min_requests"
    failed=1
  fi
  [[ "$failed" == 0 ]] && echo "PASS ($name): $requests requests"
  return "$failed"
}

overall=0
results=()
if [[ ",$backends," == *,sqlite,* ]]; then
  if fuzz_backend sqlite "sqlite://$tmp/capstan.db"; then
    results+=("sqlite: passed")
  else
    results+=("sqlite: FAILED")
    overall=1
  fi
fi

if [[ ",$backends," == *,postgres,* ]]; then
  if ! command -v psql >/dev/null 2>&1; then
    echo "postgres: skipped (psql not installed)"
    results+=("postgres: skipped (no psql)")
  elif ! psql "$pg_admin" -qAt -c 'SELECT 1' >/dev/null 2>&1 </dev/null; then
    echo "postgres: skipped (no PostgreSQL answers at the URL in CAPSTAN_TEST_POSTGRES_URL)"
    results+=("postgres: skipped (unreachable)")
  else
    pg_db="capstan_fuzz_$$"
    PGOPTIONS='-c client_min_messages=warning' psql "$pg_admin" -qAt -v ON_ERROR_STOP=1 \
      -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" -c "CREATE DATABASE $pg_db" >/dev/null
    pg_base="${pg_admin%%\?*}"
    pg_query="${pg_admin#"$pg_base"}"
    if fuzz_backend postgres "${pg_base%/*}/$pg_db$pg_query"; then
      results+=("postgres: passed")
    else
      results+=("postgres: FAILED")
      overall=1
    fi
  fi
fi

echo
printf 'fuzz-api: %s\n' "${results[@]}"
status="$overall"
exit "$overall"
