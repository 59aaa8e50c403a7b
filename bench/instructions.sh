#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: zonegate's pass-through
# route, and its zone route with an API key and with a dashboard session, against nginx
# proxying the same static upstream over TLS. Unlike req/s and CPU time,
# an instruction count does not move with whatever else this shared machine is doing, so it
# is the measure to compare two builds by (A/B) or to check an optimisation before a full
# `bench/run.sh`.
#
#   bench/instructions.sh                        # target/release/zonegate against nginx
#   B=/tmp/old/zonegate bench/instructions.sh    # and a second build of zonegate, side by side
#   REQUESTS=2000 TOP=25 bench/instructions.sh   # more requests; more profile lines
#
# The account, org, session and API key are made first through the public API (as in
# bench/run.sh), by the first build running normally; every build counted then serves the same
# database and keys (so a `B=` build must know every migration the first build applied, as in
# bench/run.sh). For each target: start it under callgrind; then for each of its paths, warm
# up, zero the counters, send REQUESTS requests at a fixed rate over 2 keep-alive TLS
# connections (bench/loadgen), dump; then zero, stay idle as long, dump again. Per request =
# (loaded - idle) / REQUESTS: background timers cancel out; the 2 TLS handshakes stay in (about
# 1% at 1000 requests). Writes the per-function profile of each build and path to
# bench/results/instructions-<target>-<path>.txt (the whole callgrind file beside it, for
# callgrind_annotate or kcachegrind).
#
# valgrind hides SHA-NI from the program, so SHA-256 (the API key's HMAC, the identity
# assertion's) runs in software here and counts several times what it costs natively.
#
# Needs valgrind, nginx and curl. No test asserts any of it.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

REQUESTS=${REQUESTS:-1000}
RATE=${RATE:-100}
TOP=${TOP:-15}
A=${A:-target/release/zonegate}
B=${B:-}

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v valgrind >/dev/null || need+=(valgrind)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release -q -p zonegate -p zonegate-loadgen
fi
loadgen=target/release/zonegate-loadgen

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx-static.pid" ] && kill "$(cat "$work/nginx-static.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

STATIC=$(port)

bench_certificate "$work"

static_upstream_conf "$work" "$STATIC" >"$work/static.conf"
nginx -c "$work/static.conf" -p "$work"

# The peer: nginx as bench/run.sh runs it, but one process (no master), so that callgrind sees
# every instruction of the proxied request.
nginx_conf() {
  nginx_proxy_conf "$work" "$1" "$STATIC" "daemon off;
master_process off;
worker_processes 1;"
}

# The gateway as bench/run.sh configures it, with one runtime thread (callgrind runs one
# thread at a time anyway).
gateway_conf() {
  local port=$1 dir=$work/gateway
  mkdir -p "$dir"
  cat <<TOML
public_origin = "https://localhost:$port"
[listen]
https = "127.0.0.1:$port"
admin = "127.0.0.1:$(port)"
platform = "127.0.0.1:$(port)"
[server]
threads = 1
user = "$(id -un)"
shutdown_grace_seconds = 0
upstream_keepalive_pool = 16
[tls]
cert = "$work/cert.pem"
key = "$work/key.pem"
[paths]
data_dir = "$dir"
key_dir = "$work/keys"
policies = "policies"
routes = "bench/routes.toml"
[upstreams.zones]
address = "127.0.0.1:$STATIC"
[log]
level = "warn"
format = "json"
[mail]
outbox_dir = "$dir/outbox"
$(bench_limits_toml)
TOML
}

# "total_instructions" of a callgrind dump file.
total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

# Count one target: $1 name, $2 port, $3 its paths (pass, apikey, session), then the command
# that serves it.
count() {
  local name=$1 port=$2 paths=$3
  shift 3
  valgrind --tool=callgrind --callgrind-out-file="$work/cg-$name.%p" "$@" \
    >"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  local url="https://127.0.0.1:$port/bench/pass"
  for _ in $(seq 1 600); do curl -skf "$url" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -skf "$url" >/dev/null || { echo "$name did not start:"; cat "$work/$name.log"; exit 1; }
  local seconds path out loaded idle sent ok
  seconds=$(python3 -c "print($REQUESTS / $RATE)")
  for path in $paths; do
    local load=("$loadgen" rate --addr "127.0.0.1:$port" --ca "$work/cert.pem" --connections 2)
    case $path in
      pass) load+=(--path /bench/pass --header "X-Bench: 1") ;;
      apikey) load+=(--path "$ZONES" --header "Authorization: Bearer $KEY") ;;
      session) load+=(--path "$ZONES" --header "Cookie: __Host-zonegate-session=$SESSION") ;;
    esac
    "${load[@]}" --rate 50 --seconds 2 >/dev/null # warm-up: pools, caches, first allocations
    callgrind_control -z "$pid" >/dev/null 2>&1
    out=$("${load[@]}" --rate "$RATE" --seconds "$seconds")
    callgrind_control -d "$pid" >/dev/null 2>&1
    loaded=$(ls -t "$work"/cg-"$name".*.* | head -1)
    mv "$loaded" "$work/loaded-$name-$path"
    sent=$(awk '{print $1}' <<<"$out")
    ok=$(awk '{print $2}' <<<"$out")
    [ "$ok" = "$sent" ] || { echo "$name $path: $ok of $sent requests answered 2xx: $out"; exit 1; }
    echo "$sent" >"$work/sent-$name-$path"
  done
  callgrind_control -z "$pid" >/dev/null 2>&1
  sleep "$seconds"
  callgrind_control -d "$pid" >/dev/null 2>&1
  idle=$(ls -t "$work"/cg-"$name".*.* | head -1)
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  mkdir -p bench/results
  for path in $paths; do
    python3 -c 'import sys; a, b, n = map(int, sys.argv[1:]); print(round((a - b) / n))' \
      "$(total "$work/loaded-$name-$path")" "$(total "$idle")" "$(cat "$work/sent-$name-$path")" \
      >"$work/per-$name-$path"
    cp "$work/loaded-$name-$path" "bench/results/callgrind-$name-$path.out"
    # Self cost by function. The thread roots (clone, start_thread, ...) come out at 100% in a
    # dump taken mid-run; they are not where the time goes, so they are left out, with the total.
    callgrind_annotate --threshold=100 "$work/loaded-$name-$path" 2>/dev/null \
      | grep -E '^ *[0-9,]+ \(' | grep -v '(100.0%)' | sed -n "1,${TOP}p" \
      >"bench/results/instructions-$name-$path.txt"
  done
}

echo "counting nginx (callgrind, $REQUESTS requests)..." >&2
NGINX=$(port)
nginx_conf "$NGINX" >"$work/proxy.conf"
count nginx "$NGINX" pass nginx -c "$work/proxy.conf" -p "$work"

# The integrator's account, org, session and key, made by the first build running normally.
"$A" keys init --dir "$work/keys" >/dev/null
p=$(port)
gateway_conf "$p" >"$work/zonegate-setup.toml"
"$A" serve --config "$work/zonegate-setup.toml" >"$work/setup.log" 2>&1 &
setup_pid=$!
pids+=("$setup_pid")
for _ in $(seq 1 100); do curl -skf "https://127.0.0.1:$p/bench/pass" >/dev/null 2>&1 && break; sleep 0.1; done
curl -skf "https://127.0.0.1:$p/bench/pass" >/dev/null || { echo "the setup gateway did not start:"; cat "$work/setup.log"; exit 1; }
integrator_setup "$work" "$p" "$work/gateway/outbox"
kill "$setup_pid"
wait "$setup_pid" 2>/dev/null || true

targets=(nginx a)
declare -A bin=([a]=$A)
[ -n "$B" ] && targets+=(b) && bin[b]=$B
for t in "${targets[@]:1}"; do
  echo "counting zonegate $t (${bin[$t]}, callgrind, $REQUESTS requests of each path)..." >&2
  p=$(port)
  gateway_conf "$p" >"$work/zonegate-$t.toml"
  count "$t" "$p" "pass apikey session" "${bin[$t]}" serve --config "$work/zonegate-$t.toml"
done

per() { cat "$work/per-$1-$2"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo
echo "| target | pass-through | API key | session | pass-through vs nginx | API key vs pass-through | session vs pass-through |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
n=$(per nginx pass)
echo "| nginx | $n | | | 1.00 | | |"
for t in "${targets[@]:1}"; do
  label="zonegate (${bin[$t]})"
  pass=$(per "$t" pass) key=$(per "$t" apikey) session=$(per "$t" session)
  echo "| $label | $pass | $key | $session | $(ratio "$pass" "$n") | $(ratio "$key" "$pass") | $(ratio "$session" "$pass") |"
done
echo
echo "Instructions per request, each path's loaded window less an idle one. Profiles (self"
echo "instructions by function): bench/results/instructions-<target>-<path>.txt"
