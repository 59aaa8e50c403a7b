#!/bin/sh
# CI for a pull request on the policies: validate the candidate set, run its decision tables,
# then replay decisions exported from production against it (`zonegate policy diff --input`),
# so reviewers see whose requests the change would allow or deny before it is merged. Runs
# where the production database is not reachable: it needs only files.
#
# Usage: tools/policy-ci.sh CANDIDATE_DIR BASELINE_DIR ROUTES_FILE DECISIONS_FILE
#   CANDIDATE_DIR   the pull request's policies (schema.cedarschema, *.cedar, tests/*.toml)
#   BASELINE_DIR    the policies in force (the target branch's checkout)
#   ROUTES_FILE     the route table the gateway runs with
#   DECISIONS_FILE  from production: zonegate decisions export --from 14d --out decisions.jsonl
#
# Environment:
#   ZONEGATE        the zonegate binary (default: zonegate on PATH)
#   ALLOW_WIDENING  1 to pass --allow-widening (after a human has looked, e.g. a review label)
#
# Exit: 0 pass; 1 a table mismatch, or the candidate allows requests the baseline denies
# (without ALLOW_WIDENING=1); 2 invalid policies, tables, routes or decisions file.
set -eu

if [ "$#" -ne 4 ]; then
    sed -n '7,11p' "$0" >&2
    exit 2
fi
candidate=$1
baseline=$2
routes=$3
decisions=$4
zonegate=${ZONEGATE:-zonegate}
# Policies and routes are given explicitly: no gateway config is read.
no_config=$(mktemp -u)

echo "== validate the candidate"
"$zonegate" policy validate --policies "$candidate" --routes "$routes" --config "$no_config"

if [ -d "$candidate/tests" ]; then
    echo "== decision tables"
    "$zonegate" policy test --policies "$candidate" --routes "$routes" --config "$no_config"
else
    echo "== decision tables: none in $candidate/tests, skipped"
fi

echo "== replay $(wc -l < "$decisions") logged decisions against the candidate"
widening=""
if [ "${ALLOW_WIDENING:-0}" = 1 ]; then
    widening="--allow-widening"
fi
# shellcheck disable=SC2086 # $widening is empty or one flag
"$zonegate" policy diff --policies "$baseline" --routes "$routes" --config "$no_config" \
    --candidate "$candidate" --input "$decisions" $widening
