# Shared by the bench scripts (sourced, not run).

# A free loopback TCP port.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A P-256 key and certificate for localhost in $1 (key.pem, cert.pem): an end-entity
# certificate, not a CA, since rustls clients refuse a CA as a server's certificate.
bench_certificate() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$1/key.pem" 2>/dev/null
  openssl req -new -x509 -key "$1/key.pem" -out "$1/cert.pem" -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
    -addext keyUsage=digitalSignature -addext extendedKeyUsage=serverAuth 2>/dev/null
}

# nginx config for the static upstream every proxy forwards to, listening on 127.0.0.1:$2,
# with its pid and log in $1: one worker, a fixed small JSON answer, and a collector that
# accepts an OTLP trace export and discards it (for the traced gateway).
static_upstream_conf() {
  cat <<NGINX
worker_processes 1;
pid $1/nginx-static.pid;
error_log $1/static-error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$2;
    location / { default_type application/json; return 200 '{"zones":[]}'; }
    location = /v1/traces { default_type application/x-protobuf; return 200 ''; }
  }
}
NGINX
}

# nginx as the peer, with its files in $1: TLS on 127.0.0.1:$2 with $1/cert.pem, proxy_pass
# with keepalive 128 to the static upstream on 127.0.0.1:$3. $4 holds the process directives
# (worker count, and for callgrind one process in the foreground).
nginx_proxy_conf() {
  cat <<NGINX
$4
pid $1/nginx-proxy.pid;
error_log $1/proxy-error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $1/nginx-body;
  proxy_temp_path $1/nginx-proxy;
  upstream static { server 127.0.0.1:$3; keepalive 128; }
  server {
    listen 127.0.0.1:$2 ssl;
    ssl_certificate $1/cert.pem;
    ssl_certificate_key $1/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://static;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
}

# The bench gateways' [accounts] and [rate_limits]: a session outlives the run, and the limits
# are raised so that only the proxy is measured (in the bench config only); everything else as
# shipped.
bench_limits_toml() {
  cat <<'TOML'
[accounts]
session_ttl_seconds = 3600
refresh_idle_seconds = 3600
[rate_limits]
auth = { requests = 100000, window_seconds = 60 }
api_key = { requests = 100000000, window_seconds = 60 }
org = { requests = 100000000, window_seconds = 60 }
user = { requests = 100000000, window_seconds = 60 }
org_sessions = { requests = 100000000, window_seconds = 60 }
TOML
}

# An integrator's setup through the public API of the gateway on 127.0.0.1:$2, whose
# certificate is $1/cert.pem and outbox $3 (default $1/outbox); the cookie jar goes in $1.
# Sign up, verify the email by the mailed link's
# token, log in, make an org and an API key for its zones. Sets BENCH_EMAIL and
# BENCH_PASSWORD (the account's), SESSION (the dashboard session cookie's value), ORG, KEY
# and ZONES (the org's zone list path).
integrator_setup() {
  local work=$1 G="https://localhost:$2" outbox=${3:-$1/outbox}
  local C=(curl -sf --cacert "$work/cert.pem" --resolve "localhost:$2:127.0.0.1" -H "Origin: $G" -H 'Content-Type: application/json')
  BENCH_EMAIL=bench@example.com
  BENCH_PASSWORD='correct horse battery staple'
  local email=$BENCH_EMAIL pass=$BENCH_PASSWORD token csrf
  "${C[@]}" "$G/auth/signup" -d "{\"email\":\"$email\",\"password\":\"$pass\"}" >/dev/null
  # Signup answers before it makes the account and its mail: wait for the mail.
  for _ in $(seq 1 100); do ls "$outbox"/*.eml >/dev/null 2>&1 && break; sleep 0.1; done
  token=$(grep -ho 'token=[A-Za-z0-9_-]*' "$outbox"/*.eml | tail -1 | cut -d= -f2)
  "${C[@]}" "$G/auth/verify-email" -d "{\"token\":\"$token\"}" >/dev/null
  "${C[@]}" -c "$work/jar" "$G/auth/login" -d "{\"email\":\"$email\",\"password\":\"$pass\"}" >/dev/null
  SESSION=$(awk '/zonegate-session/ {print $7}' "$work/jar")
  csrf=$(awk '/zonegate-csrf/ {print $7}' "$work/jar")
  ORG=$("${C[@]}" -b "$work/jar" -H "X-CSRF-Token: $csrf" "$G/v1/orgs" -d '{"name":"Bench"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  KEY=$("${C[@]}" -b "$work/jar" -H "X-CSRF-Token: $csrf" "$G/v1/orgs/$ORG/api-keys" \
    -d '{"name":"bench","scopes":["zones:read"]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  ZONES="/v1/orgs/$ORG/zones"
}
