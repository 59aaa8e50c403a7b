# Shared by tools/walkthrough and tools/contract-check (sourced): the product's address, and
# curl helpers that check every answer. Environment: ORIGIN (https://localhost:8443), CACERT
# (data/tls/cert.pem), OUTBOX (data/outbox). Needs curl and python3 (for JSON).
# shellcheck shell=bash

O=${ORIGIN:-https://localhost:8443}
CACERT=${CACERT:-data/tls/cert.pem}
OUTBOX=${OUTBOX:-data/outbox}
JAR=$(mktemp)
trap 'rm -f "$JAR"' EXIT

ME=$(basename "$0")
say() { printf '%s\n' "$*" >&2; }

# call EXPECTED-STATUS METHOD PATH [curl args]: the answer's body, or stop if the status differs.
call() {
  local want=$1 method=$2 path=$3 out status body
  shift 3
  out=$(curl -sS --cacert "$CACERT" -H "Origin: $O" -H "Content-Type: application/json" \
    -X "$method" -w '\n%{http_code}' "$@" "$O$path")
  status=${out##*$'\n'}
  body=${out%$'\n'*}
  if [ "$status" != "$want" ]; then
    say "$ME: $method $path answered $status, expected $want: $body"
    exit 1
  fi
  say "$method $path -> $status"
  printf '%s' "$body"
}

# The same with the browser session: its cookies, and the CSRF header a page would send.
session() {
  local want=$1 method=$2 path=$3 csrf
  shift 3
  csrf=$(awk '$6 == "__Host-zonegate-csrf" {print $7}' "$JAR")
  call "$want" "$method" "$path" -b "$JAR" -c "$JAR" -H "X-CSRF-Token: $csrf" "$@"
}

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# The token in the newest mail to $EMAIL, waiting up to 10 s for it to arrive (the account and
# its mail are made just after the answer).
mailed_token() {
  local mail
  for _ in $(seq 50); do
    mail=$(grep -l -F "To: $EMAIL" "$OUTBOX"/*.eml 2>/dev/null | xargs -r ls -t | head -1 || true)
    if [ -n "$mail" ]; then
      grep -o 'token=[A-Za-z0-9_-]*' "$mail" | head -1 | cut -d= -f2
      return
    fi
    sleep 0.2
  done
  say "$ME: no mail to $EMAIL in $OUTBOX"
  exit 1
}

