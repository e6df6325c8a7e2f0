#!/usr/bin/env bash
# Keeps a command running: whenever it exits it is started again, after 1 s, then 2, 4, 8, 16 and
# at most 30 s while it keeps dying, back to 1 s once a run lasted a minute. TERM or INT stops the
# command and the loop. `make run` runs the worker under it, so a worker that dies (killed, out
# of memory, a crash at start) comes back while the web server stays up.
#
#   scripts/supervise.sh NAME LOG -- COMMAND [ARGS...]
#
# The command's output is appended to LOG; each start and exit is written to stderr with NAME.
set -uo pipefail
name="$1"
log="$2"
shift 2
[ "${1:-}" = "--" ] && shift
first_delay_s=1
max_delay_s=30
stable_after_s=60

child=
stop() {
  trap - TERM INT
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null
    wait "$child" 2>/dev/null
  fi
  exit 0
}
trap stop TERM INT

delay="$first_delay_s"
while true; do
  started=$SECONDS
  "$@" >>"$log" 2>&1 &
  child=$!
  echo "supervise: $name started (pid $child, log: $log)" >&2
  wait "$child"
  status=$?
  child=
  if [ $((SECONDS - started)) -ge "$stable_after_s" ]; then
    delay="$first_delay_s"
  fi
  echo "supervise: $name exited with status $status; starting it again in ${delay} s" >&2
  # sleep in the background, so that TERM or INT is handled at once
  sleep "$delay" &
  child=$!
  wait "$child"
  child=
  delay=$((delay * 2 > max_delay_s ? max_delay_s : delay * 2))
done
