#!/usr/bin/env bash
# The project's two set-up commands:
#   ./dev.sh example   runs the example app and a Celery worker (embedded broker, no server needed)
#   ./dev.sh test      runs every check: ruff, mypy, import-linter and the whole test suite on real brokers
# Both create .venv (Python 3.11+) and install the project into it. `./dev.sh test` uses the Redis
# and RabbitMQ on 127.0.0.1 when they answer, and otherwise starts (installing with apt-get when
# run as root) what is missing, saying so. EVENTLIB_TEST_REDIS_URL / EVENTLIB_TEST_AMQP_URL point
# the tests at other servers.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '\033[1m[dev.sh]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

apt_install() {
  # apt_install PACKAGE...: install Debian packages when we can, or say what to install.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing $* with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    die "$* is needed and not installed; install it (e.g. sudo apt-get install $*) and run again"
  fi
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  local host=$1 port=$2 what=$3 deadline=$((SECONDS + ${4:-60}))
  until port_open "$host" "$port"; do
    [ $SECONDS -lt $deadline ] || die "$what did not start listening on $host:$port"
    sleep 0.2
  done
}

setup_python() {
  # setup_python EXTRAS: the project and its runtime dependencies, plus the extras named ("dev"
  # for the tests and linters). The example needs the runtime ones only: a fresh machine serves
  # it after a few seconds of pip instead of the minute the development tools take.
  local extras=${1:-}
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed"
  if [ ! -x "$PY" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
  fi
  # Reinstall only when the dependencies changed; an install with the dev extras serves the example too.
  local want stamp_dev="$VENV/.eventlib-installed-dev" stamp_runtime="$VENV/.eventlib-installed"
  want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp_dev" ] && [ "$(cat "$stamp_dev")" = "$want" ]; then
    return
  fi
  if [ -z "$extras" ]; then
    if [ ! -f "$stamp_runtime" ] || [ "$(cat "$stamp_runtime")" != "$want" ]; then
      say "installing flask-eventlib and its runtime dependencies into .venv"
      "$PY" -m pip install -q --disable-pip-version-check -e .
      echo "$want" >"$stamp_runtime"
    fi
    return
  fi
  say "installing flask-eventlib and its development dependencies into .venv"
  "$PY" -m pip install -q --disable-pip-version-check --upgrade pip
  "$PY" -m pip install -q --disable-pip-version-check -e ".[$extras]"
  echo "$want" >"$stamp_dev"
  echo "$want" >"$stamp_runtime"
}

PIDS=()
cleanup() { for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

ensure_redis() {
  if [ -n "${EVENTLIB_TEST_REDIS_URL:-}" ]; then
    say "Redis: $EVENTLIB_TEST_REDIS_URL (from EVENTLIB_TEST_REDIS_URL)"
    return
  fi
  if port_open 127.0.0.1 6379; then
    export EVENTLIB_TEST_REDIS_URL=redis://127.0.0.1:6379/0
    say "Redis: using the server on 127.0.0.1:6379"
    return
  fi
  local port=6390
  while port_open 127.0.0.1 $port; do port=$((port + 1)); done
  say "Redis: none on 127.0.0.1:6379, starting a private redis-server on port $port (stopped at exit)"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "${TMPDIR:-/tmp}" \
    >"${TMPDIR:-/tmp}/eventlib-test-redis.log" 2>&1 &
  PIDS+=($!)
  wait_port 127.0.0.1 "$port" "redis-server" 30
  export EVENTLIB_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
}

ensure_rabbitmq() {
  if [ -n "${EVENTLIB_TEST_AMQP_URL:-}" ]; then
    say "RabbitMQ: $EVENTLIB_TEST_AMQP_URL (from EVENTLIB_TEST_AMQP_URL)"
    return
  fi
  export EVENTLIB_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:5672//"
  if port_open 127.0.0.1 5672; then
    say "RabbitMQ: using the server on 127.0.0.1:5672"
    return
  fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  say "RabbitMQ: none on 127.0.0.1:5672, starting it (rabbitmq-server -detached; it keeps running, stop it with rabbitmqctl stop)"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port 127.0.0.1 5672 "RabbitMQ" 120
}

ensure_typescript() {
  # tests/test_schemas.py type-checks generated declarations with the TypeScript pinned there.
  local dir="$ROOT/tests/typescript" stamp want
  stamp="$dir/node_modules/.eventlib-installed"
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    command -v npm >/dev/null || apt_install nodejs npm
    say "installing the TypeScript compiler the tests use (npm ci --prefix tests/typescript)"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
    echo "$want" >"$stamp"
  fi
}

ensure_js() {
  # The JS client's build and test tools (package-lock.json at the root), and the browser of
  # tests/e2e: Debian's chromium, driven by the Python playwright package (no browser download).
  local stamp="$ROOT/node_modules/.eventlib-installed" want
  want=$(sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    command -v npm >/dev/null || apt_install nodejs npm
    say "installing the JS client's dev dependencies (npm ci)"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$ROOT" --no-audit --no-fund --loglevel=error >/dev/null
    echo "$want" >"$stamp"
  fi
  [ -x /usr/bin/chromium ] || [ -n "${EVENTLIB_TEST_CHROMIUM:-}" ] || apt_install chromium
}

run_tests() {
  setup_python dev
  ensure_typescript
  ensure_js
  # The chaos tests start (and kill) a redis-server of their own.
  command -v redis-server >/dev/null || apt_install redis-server
  ensure_redis
  ensure_rabbitmq
  say "ruff"
  "$VENV/bin/ruff" check .
  "$VENV/bin/ruff" format --check .
  say "mypy"
  "$VENV/bin/mypy"
  say "import-linter (the layer contracts in pyproject.toml)"
  "$VENV/bin/lint-imports"
  say "pytest"
  "$PY" -m pytest "$@"
}

run_example() {
  setup_python
  exec "$PY" -m example_app "$@"
}

case "${1:-}" in
  test) shift; run_tests "$@" ;;
  example) shift; run_example "$@" ;;
  *) echo "usage: ./dev.sh example | ./dev.sh test [pytest arguments]" >&2; exit 2 ;;
esac
