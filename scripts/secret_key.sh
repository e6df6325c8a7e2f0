#!/usr/bin/env bash
# Prints the demo's own SECRET_KEY, kept in var/secret_key (under VAR_DIR when set; readable by
# this user only) and made at random the first time. `make run` and bench/path.sh use it when
# SECRET_KEY is not set; a real deployment sets SECRET_KEY itself (docs/deployment.md).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${VAR_DIR:-var}"
file="$dir/secret_key"
if [ ! -s "$file" ]; then
  mkdir -p "$dir"
  (umask 077 && head -c 48 /dev/urandom | base64 | tr -d '\n=' | tr '+/' '-_' >"$file.tmp" && mv "$file.tmp" "$file")
fi
cat "$file"
