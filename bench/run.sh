#!/usr/bin/env bash
# The speed table: backend direct, zonegate on a pass-through route, and nginx proxy_pass to
# the same backend, measured with wrk in one run on this machine, rounds interleaved.
#
#   bench/run.sh                 # defaults: 3 rounds of 8 s, 2 threads, 50 connections
#   ROUNDS=5 DURATION=10s bench/run.sh
#
# Installs nginx and wrk from Debian's packages when missing. Prints a Markdown table and
# writes it to bench/results/latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-50}

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release -q -p zonegate -p zone-backend
bin=target/release

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND=$(port); GATEWAY=$(port); ADMIN=$(port); NGINX=$(port)

"$bin/zonegate" keys init --dir "$work/keys" >/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$work/key.pem" 2>/dev/null
openssl req -new -x509 -key "$work/key.pem" -out "$work/cert.pem" -days 2 -subj /CN=localhost 2>/dev/null

cat > "$work/zonegate.toml" <<TOML
public_origin = "https://localhost:$GATEWAY"
[listen]
https = "127.0.0.1:$GATEWAY"
admin = "127.0.0.1:$ADMIN"
[server]
threads = 2
shutdown_grace_seconds = 0
[tls]
cert = "$work/cert.pem"
key = "$work/key.pem"
[paths]
data_dir = "$work"
key_dir = "$work/keys"
policies = "policies"
routes = "bench/routes.toml"
[upstreams.zones]
address = "127.0.0.1:$BACKEND"
[log]
level = "warn"
format = "json"
[mail]
outbox_dir = "$work/outbox"
TOML

cat > "$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx-body;
  proxy_temp_path $work/nginx-proxy;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX

RUST_LOG=warn "$bin/zone-backend" serve --listen "127.0.0.1:$BACKEND" \
  --database "sqlite://$work/zones.db" --key-dir "$work/keys" >"$work/backend.log" 2>&1 &
pids+=($!)
"$bin/zonegate" serve --config "$work/zonegate.toml" >"$work/gateway.log" 2>&1 &
pids+=($!)
nginx -c "$work/nginx.conf" -p "$work"

for url in "http://127.0.0.1:$BACKEND/healthz" "https://127.0.0.1:$GATEWAY/healthz" "https://127.0.0.1:$NGINX/healthz"; do
  for _ in $(seq 1 100); do curl -skf "$url" >/dev/null && break; sleep 0.1; done
  curl -skf "$url" >/dev/null || { echo "not ready: $url"; cat "$work"/*.log; exit 1; }
done

# wrk output -> "rps p50_ms p99_ms"
measure() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1" | python3 -c '
import re, sys
text = sys.stdin.read()
def ms(label):
    m = re.search(r"^\s*" + label + r"\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if errors: sys.exit("non-2xx responses: " + errors.group(1))
p50, p99 = ms("50%"), ms("99%")
print("%.0f %.3f %.3f" % (rps, p50, p99))'
}

declare -A results
targets=(backend gateway nginx)
declare -A urls=(
  [backend]="http://127.0.0.1:$BACKEND/healthz"
  [gateway]="https://127.0.0.1:$GATEWAY/healthz"
  [nginx]="https://127.0.0.1:$NGINX/healthz"
)
for target in "${targets[@]}"; do measure "${urls[$target]}" >/dev/null; done  # warm up
for round in $(seq 1 "$ROUNDS"); do
  for target in "${targets[@]}"; do
    results[$target]+="$(measure "${urls[$target]}")"$'\n'
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
col() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF {print $c}' | median; }

mkdir -p bench/results
{
  echo "$(date -u +%Y-%m-%d) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -srm)"
  echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS interleaved rounds; gateway and nginx terminate TLS, backend direct is plain HTTP"
  echo
  echo "| target | req/s | p50 ms | p99 ms | req/s vs nginx |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  nginx_rps=$(col nginx 1)
  for target in "${targets[@]}"; do
    rps=$(col "$target" 1)
    ratio=$(python3 -c "print(f'{$rps / $nginx_rps:.2f}')")
    echo "| $target | $rps | $(col "$target" 2) | $(col "$target" 3) | $ratio |"
  done
} | tee bench/results/latest.md

# Login cost: bcrypt (cost 12, the default) on the blocking pool, and what it does to the
# proxy path while logins run.
G="https://127.0.0.1:$GATEWAY"
EMAIL=bench@example.com
PASS='correct horse battery staple'
curl -sk -H 'content-type: application/json' -d "{\"email\":\"$EMAIL\",\"password\":\"$PASS\"}" "$G/auth/signup" >/dev/null
TOKEN=$(grep -ho 'token=[A-Za-z0-9_-]*' "$work"/outbox/*.eml | tail -1 | cut -d= -f2)
curl -skf -H 'content-type: application/json' -d "{\"token\":\"$TOKEN\"}" "$G/auth/verify-email" >/dev/null
cat > "$work/login.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"email":"$EMAIL","password":"$PASS"}'
wrk.headers["Content-Type"] = "application/json"
LUA
logins() {
  wrk -t1 -c4 -d"$DURATION" -s "$work/login.lua" "$G/auth/login" | python3 -c '
import re, sys
text = sys.stdin.read()
if re.search(r"Non-2xx or 3xx responses", text): sys.exit("login failed: " + text)
print("%.1f" % float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)))'
}
alone=$(measure "${urls[gateway]}")
logins > "$work/logins.txt" &
login_pid=$!
sleep 1
during=$(measure "${urls[gateway]}")
wait "$login_pid"
{
  echo
  echo "| login cost | value |"
  echo "| --- | ---: |"
  echo "| logins/s (wrk -t1 -c4, bcrypt cost 12) | $(cat "$work/logins.txt") |"
  echo "| gateway pass-through p99 ms, alone | $(echo "$alone" | awk '{print $3}') |"
  echo "| gateway pass-through p99 ms, during logins | $(echo "$during" | awk '{print $3}') |"
  echo "| gateway pass-through req/s, alone / during logins | $(echo "$alone" | awk '{print $1}') / $(echo "$during" | awk '{print $1}') |"
} | tee -a bench/results/latest.md
