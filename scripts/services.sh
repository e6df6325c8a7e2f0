#!/usr/bin/env bash
# Makes sure Redis (and, for the tests, PostgreSQL) answer on localhost; starts them if they are
# installed but down, installs Redis with apt-get where that is allowed, else says what to do.
set -euo pipefail
need_pg="${1:-}"

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
if ! redis_up; then
  if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "==> installing redis-server"
      apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }
    else
      echo "Redis is not running and not installed: run 'sudo apt-get install redis-server' (or set REDIS_URL)" >&2
      exit 1
    fi
  fi
  echo "==> starting Redis on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
fi

if [ "$need_pg" = postgres ]; then
  pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
  if ! pg_up; then
    echo "==> starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 100); do pg_up && break; sleep 0.1; done
  fi
fi
