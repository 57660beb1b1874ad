#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing
# (redis-server through apt, Node packages through `npm ci` from the committed
# lockfiles), then runs vet, the unit and integration tests on the embedded
# Redis and again on a real redis-server (the packages whose tests use
# upstashtest), the official-client checks and the TypeScript interop, and the
# example bot flow. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints the seconds since the start, so a slow step shows.
log() { printf '\n==> [%ds] %s\n' "$SECONDS" "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The Debian package may start a system instance; the tests start their own
  # on free ports, so stop it rather than leave it running.
  if [[ " ${missing[*]} " == *" redis-server "* ]]; then
    as_root service redis-server stop >/dev/null 2>&1 || true
  fi
fi
command -v go >/dev/null 2>&1 || { echo "Go is not installed: see https://go.dev/doc/install" >&2; exit 1; }

# Node packages for the official-client checks and the interop tests.
for dir in $(find . -name package-lock.json -not -path '*/node_modules/*' -exec dirname {} \; | sort); do
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    log "npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done

log "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path '*/node_modules/*'))
if [ -n "$unformatted" ]; then echo "not gofmt-formatted:"; echo "$unformatted"; exit 1; fi

log "go vet"
go vet ./...

log "go test on the embedded Redis (miniredis)"
go test -race -count=1 ./...

# The second pass only runs what UPSTASHTEST_REDIS changes: the packages
# whose tests use upstashtest (directly or through a package they import),
# except the two that choose their backend themselves and already ran on a
# redis-server above: interop (always its own redis-server) and
# cmd/upstash-local (pins the embedded backend or -redis-server per test).
module=$(go list -m)
redis_pkgs=$(go list -test -f '{{if .ForTest}}{{.ForTest}}{{range .Deps}} {{.}}{{end}}{{end}}' ./... |
  awk -v ut="$module/upstashtest" '$1 == ut { print $1; next } { for (i = 2; i <= NF; i++) if ($i == ut) { print $1; break } }' |
  grep -vxF -e "$module/interop" -e "$module/cmd/upstash-local" | sort -u)
log "go test on a real redis-server ($(echo "$redis_pkgs" | wc -l) packages that use upstashtest)"
# shellcheck disable=SC2086 # one package per word
UPSTASHTEST_REDIS=redis-server go test -race -count=1 $redis_pkgs

log "example bot flow (go run ./examples/lambda)"
if [ -d examples/lambda ]; then
  env -u UPSTASH_REDIS_REST_URL -u UPSTASH_REDIS_REST_TOKEN go run ./examples/lambda >/dev/null
  echo "examples/lambda ran and exited 0"
fi

log "all tests passed in ${SECONDS} s"
