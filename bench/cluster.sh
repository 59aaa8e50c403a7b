#!/usr/bin/env bash
# Three gateway instances on one PostgreSQL database, as a fleet runs behind a load balancer:
# the invalidation delay (200 revocations on A, each seen refused on B and C) and the admitted
# rate of one API key's limit under load from all three, as a percentage of the configured
# rate (bench/cluster.py). The last line reads
#   invalidation p99 <N> ms, shared limit within <P>% of the configured rate
#
#   bench/cluster.sh                       # release build
#   BIN=target/debug BUILD=0 bench/cluster.sh
#
# Needs PostgreSQL (PG_URL, default postgres://postgres@127.0.0.1:5432/test: scratch databases
# are created beside it and dropped afterwards) and Redis (REDIS_URL, default
# redis://127.0.0.1:6379: the shared limits, under a key prefix of this run's own).
# No test asserts any of it.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

PG_URL=${PG_URL:-${ZONEGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
REDIS_URL=${REDIS_URL:-${ZONEGATE_TEST_REDIS_URL:-redis://127.0.0.1:6379}}
BIN=${BIN:-target/release}
if [ "${BUILD:-1}" = 1 ]; then
  if [ "$BIN" = target/release ]; then
    cargo build --release -q -p zonegate -p zone-backend
  else
    cargo build -q -p zonegate -p zone-backend
  fi
fi

work=$(mktemp -d)
pids=()
base=${PG_URL%/*}
suffix=$(date +%s)$$
gdb=zg_cluster_$suffix
zdb=zb_cluster_$suffix
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $gdb WITH (FORCE)" -c "DROP DATABASE IF EXISTS $zdb WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql "$PG_URL" -qc "CREATE DATABASE $gdb" -c "CREATE DATABASE $zdb" >/dev/null

"$BIN/zonegate" keys init --dir "$work/keys" >/dev/null
backend=$(port)
ZONE_BACKEND_DATABASE="$base/$zdb" "$BIN/zone-backend" serve --listen "127.0.0.1:$backend" \
  --key-dir "$work/keys" >"$work/backend.log" 2>&1 &
pids+=($!)

# The limit measured: 100 requests a key, refilling over 10 s (10 a second).
LIMIT_REQUESTS=100
LIMIT_WINDOW=10
origins=()
first_https=
for i in 1 2 3; do
  https=$(port); admin=$(port)
  [ -n "$first_https" ] || first_https=$https
  cat >"$work/gateway-$i.toml" <<TOML
public_origin = "https://localhost:$first_https"
[listen]
https = "127.0.0.1:$https"
admin = "127.0.0.1:$admin"
platform = "127.0.0.1:$(port)"
[server]
threads = 2
user = "$(id -un)"
[tls]
cert = "$work/tls/cert.pem"
key = "$work/tls/key.pem"
[paths]
data_dir = "$work"
key_dir = "$work/keys"
policies = "policies"
routes = "policies/routes.toml"
[upstreams.zones]
address = "127.0.0.1:$backend"
[log]
level = "warn"
[mail]
outbox_dir = "$work/outbox"
[accounts]
bcrypt_cost = 4
[database]
url = "$base/$gdb"
[rate_limits]
auth_strict = { requests = 100000, window_seconds = 1 }
auth = { requests = 100000, window_seconds = 1 }
api_key = { requests = $LIMIT_REQUESTS, window_seconds = $LIMIT_WINDOW }
org = { requests = 100000, window_seconds = 1 }
user = { requests = 100000, window_seconds = 1 }
org_sessions = { requests = 100000, window_seconds = 1 }
[redis]
url = "$REDIS_URL"
instances = 3
key_prefix = "zonegate-bench-$suffix"
TOML
  origins+=("https://localhost:$https")
  admins+=("$admin")
done
# The dev certificate (localhost), made once by the first check-config of a config naming it.
mkdir -p "$work/tls"
python3 - "$work/tls" <<'PY'
import subprocess, sys
d = sys.argv[1]
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"], check=True, capture_output=True)
PY
chmod 600 "$work/tls/key.pem"
for i in 1 2 3; do
  "$BIN/zonegate" serve --config "$work/gateway-$i.toml" >"$work/gateway-$i.log" 2>&1 &
  pids+=($!)
done
for admin in "${admins[@]}"; do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$admin/readyz" | grep -Eq '"limits": ?"shared"' && break
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$admin/readyz" | grep '"listening"' | grep -Eq '"limits": ?"shared"' || {
    echo "an instance did not become ready:"; tail -5 "$work"/gateway-*.log; exit 1; }
done

echo "## $(date -u +%Y-%m-%d), cluster ($(nproc) cores, $BIN)"
echo
ADMINS=$(IFS=,; echo "${admins[*]}") ORIGINS=$(IFS=,; echo "${origins[*]}") CACERT="$work/tls/cert.pem" OUTBOX="$work/outbox" \
  LIMIT_REQUESTS=$LIMIT_REQUESTS LIMIT_WINDOW=$LIMIT_WINDOW python3 bench/cluster.py
