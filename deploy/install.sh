#!/usr/bin/env bash
# Install, upgrade or remove energy-agent on a gateway (or the bridge on a central host).
# Debian 12, Ubuntu 22.04+, Raspberry Pi OS 64-bit; needs Python 3.11+ with venv.
#
#   sudo deploy/install.sh                     # from this source tree
#   sudo deploy/install.sh energy_agent-0.2.0-py3-none-any.whl     # upgrade (or roll back)
#   sudo deploy/install.sh --role bridge       # the central MQTT -> InfluxDB bridge
#   sudo deploy/install.sh --uninstall [--purge]
#   deploy/install.sh --root /tmp/tree         # lay everything out under /tmp/tree, touch
#                                              # no users, no systemd (tests, image builds)
#
# Running it again is safe: the virtualenv is reused and the package upgraded in it,
# the unit file replaced, and the config and secrets under /etc/energy-agent are never
# overwritten (only the secrets' modes are put back to 0600). See docs/deploy.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
USER_NAME=energy-agent

usage() {
  cat <<EOF
usage: $0 [options] [SOURCE]

SOURCE is a wheel, an sdist or a source tree (default: $REPO).

  --role gateway|bridge  what to install: the agent with energy-agent.service (default),
                         or the central bridge with energy-agent-bridge.service
  --python PYTHON        the interpreter the virtualenv is made from (default: python3)
  --pip-arg ARG          passed to pip install, repeatable; e.g. for gateways without
                         internet: --pip-arg=--no-index --pip-arg=--find-links=/media/wheels
  --no-start             enable the unit but do not (re)start it
  --root DIR             install under DIR instead of /: no user, no chown, no systemctl
  --uninstall            remove the units and the virtualenv; keep config and data
  --purge                with --uninstall: also remove config, data and the user
EOF
}

fail_usage() {
  echo "install.sh: $1" >&2
  echo "(see $0 --help)" >&2
  exit 2
}

say() { echo "install.sh: $*" >&2; }

ROOT=""
SOURCE="$REPO"
PYTHON=python3
ROLE=gateway
ACTION=install
PURGE=keep
START=start
PIP_ARGS=()

need_value() {
  [ "$2" -ge 2 ] || fail_usage "$1 needs a value"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --root) need_value "$1" $#; ROOT="$2"; shift 2 ;;
    --root=*) ROOT="${1#*=}"; shift ;;
    --python) need_value "$1" $#; PYTHON="$2"; shift 2 ;;
    --python=*) PYTHON="${1#*=}"; shift ;;
    --role) need_value "$1" $#; ROLE="$2"; shift 2 ;;
    --role=*) ROLE="${1#*=}"; shift ;;
    --pip-arg) need_value "$1" $#; PIP_ARGS+=("$2"); shift 2 ;;
    --pip-arg=*) PIP_ARGS+=("${1#*=}"); shift ;;
    --no-start) START=no-start; shift ;;
    --uninstall) ACTION=uninstall; shift ;;
    --purge) PURGE=purge; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) fail_usage "unknown option $1" ;;
    *) SOURCE="$1"; shift ;;
  esac
done

case "$ROLE" in
  gateway) UNIT=energy-agent.service; CONFIG=agent.yaml; EXAMPLE=gateway-example.yaml ;;
  bridge) UNIT=energy-agent-bridge.service; CONFIG=bridge.yaml; EXAMPLE=bridge-example.yaml ;;
  *) fail_usage "--role must be gateway or bridge, not '$ROLE'" ;;
esac
if [ "$PURGE" = purge ] && [ "$ACTION" != uninstall ]; then
  fail_usage "--purge only goes with --uninstall"
fi

if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT="$(cd "$ROOT" && pwd)"
  [ "$ROOT" != / ] || fail_usage "--root / is the live system: leave --root out"
  LIVE=no
else
  LIVE=yes
  [ "$(id -u)" = 0 ] || fail_usage "run as root (sudo), or lay out a tree with --root DIR"
fi

PREFIX="$ROOT/opt/energy-agent"
VENV="$PREFIX/venv"
ETC="$ROOT/etc/energy-agent"
STATE="$ROOT/var/lib/energy-agent"
UNITDIR="$ROOT/etc/systemd/system"

# systemctl only on the live system, and only when systemd is what booted it
# (not in a container or a chroot: there systemctl would fail or act on the host).
systemd_here() {
  [ "$LIVE" = yes ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null
}

# chown only on the live system: under --root the service user need not exist.
own() {
  if [ "$LIVE" = yes ]; then chown "$@"; fi
}

uninstall() {
  local unit
  for unit in energy-agent.service energy-agent-bridge.service; do
    if systemd_here; then
      systemctl disable --now "$unit" 2>/dev/null || true
    fi
    rm -f "$UNITDIR/$unit"
  done
  if systemd_here; then systemctl daemon-reload; fi
  rm -rf "$PREFIX"
  if [ "$PURGE" = purge ]; then
    rm -rf "$ETC" "$STATE"
    if [ "$LIVE" = yes ] && getent passwd "$USER_NAME" >/dev/null; then
      userdel "$USER_NAME"
    fi
    say "removed the program, the units, $ETC and $STATE"
  else
    say "removed the program and the units; kept $ETC and $STATE (--purge removes them)"
  fi
}

ensure_user() {
  if [ "$LIVE" = no ]; then
    return
  fi
  if ! getent passwd "$USER_NAME" >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/energy-agent --no-create-home \
      --shell /usr/sbin/nologin --comment "energy-agent service" "$USER_NAME"
    say "created system user $USER_NAME"
  fi
  # RS-485 adapters are group dialout; the unit adds it too (SupplementaryGroups), the
  # membership is for `energy-agent read/scan` run as this user by hand.
  if [ "$ROLE" = gateway ] && getent group dialout >/dev/null; then
    usermod -a -G dialout "$USER_NAME"
  fi
}

ensure_venv() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || fail_usage "--python $PYTHON: energy-agent needs Python 3.11 or newer"
  local want have=""
  want="$("$PYTHON" -c 'import sys; print(*sys.version_info[:2])')"
  if [ -x "$VENV/bin/python" ]; then
    have="$("$VENV/bin/python" -c 'import sys; print(*sys.version_info[:2])' 2>/dev/null || true)"
  fi
  if [ "$have" != "$want" ]; then
    # None yet, or made by another Python (an OS upgrade): a venv cannot be moved over.
    rm -rf "$VENV"
    mkdir -p "$PREFIX"
    if ! "$PYTHON" -m venv "$VENV"; then
      rm -rf "$VENV"
      fail_usage "cannot create a virtualenv with $PYTHON (on Debian: apt install python3-venv)"
    fi
    say "created $VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --upgrade \
    "${PIP_ARGS[@]}" "$SOURCE"
  say "installed $("$VENV/bin/energy-agent" --version) in $VENV"
}

# A secret file: created empty if absent, never overwritten, always 0600 for the service.
secret() {
  if [ ! -e "$1" ]; then
    install -m 0600 /dev/null "$1"
    say "created $1 (empty): put the secret in it"
  fi
  chmod 0600 "$1"
  own "$USER_NAME:$USER_NAME" "$1"
}

# Returns 0 if the config was created now (from the example, so not yet edited).
ensure_config() {
  install -d -m 0755 "$ETC"
  if [ -e "$ETC/$CONFIG" ]; then
    return 1
  fi
  [ -f "$REPO/configs/$EXAMPLE" ] || fail_usage "$REPO/configs/$EXAMPLE is missing"
  install -m 0640 "$REPO/configs/$EXAMPLE" "$ETC/$CONFIG"
  own "root:$USER_NAME" "$ETC/$CONFIG"
  say "created $ETC/$CONFIG from configs/$EXAMPLE: edit it, then check it with"
  say "  $VENV/bin/energy-agent check -c /etc/energy-agent/$CONFIG"
  return 0
}

# Compile the core's numba kernels into the cache the service will use
# (state_dir/numba-cache), so the first start after an install or upgrade does not spend
# seconds (more on small ARM boards) compiling. deploy/warmup/ is a few recorded
# minutes that, through `replay`, run every kernel the agent runs.
warm_numba_cache() {
  rm -rf "$STATE/numba-cache"
  if ! WARM_STATE_DIR="$STATE" NUMBA_CACHE_DIR="$STATE/numba-cache" \
    "$VENV/bin/energy-agent" replay "$HERE/warmup/warm.csv" -c "$HERE/warmup/warm.yaml" \
    >/dev/null; then
    say "could not warm the numba cache; the agent compiles the kernels at its first start"
    return 0
  fi
  # The ledger's bulk verification (a report's, `verify`'s) has kernels of its own.
  if ! NUMBA_CACHE_DIR="$STATE/numba-cache" "$VENV/bin/python" -P -c \
    'import sys; from agent.ledger import bulk_warm; sys.exit(0 if bulk_warm.warm() else 1)' >/dev/null; then
    say "could not warm the ledger's kernels; the first report compiles them"
  fi
  own -R "$USER_NAME:$USER_NAME" "$STATE/numba-cache"
  say "compiled the core's and the ledger's kernels into $STATE/numba-cache"
}

# Compile the core's kernels ahead of time into the installed package
# (agent/core/_kernel_aot*.so, from the kernel just installed): the agent then runs them
# without importing numba or LLVM, about 100 MB less memory (docs/performance.md). Needs a
# C compiler and Python's headers (Debian: apt install gcc python3-dev); without them the
# agent uses numba's JIT and the cache warmed above.
build_compiled_core() {
  local log="$PREFIX/build-core.log"
  # -P: `python -m` would put the current directory first on sys.path, and run from a
  # checkout it compiled the checkout's kernel into the checkout, not into the venv.
  if ! "$VENV/bin/python" -P -m agent.core.aot >"$log" 2>&1; then
    say "could not compile the core ahead of time (see $log; a C compiler and Python's"
    say "  headers are needed: apt install gcc python3-dev); the agent uses numba's JIT"
    return 0
  fi
  rm -f "$log"
  say "compiled the core ahead of time: the agent runs it without numba (docs/deploy.md)"
}

# The ledger (docs/ledger.md) signs with cryptography's Ed25519: installed if the
# platform has it (a gateway without it runs with the ledger off and says so).
install_ledger_extra() {
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    "${PIP_ARGS[@]}" "${SOURCE}[ledger]"; then
    say "could not install cryptography (the ledger extra): the agent runs with the ledger off"
  fi
}

# The gateway's ledger key: created once, never overwritten, 0600 for the service user.
ensure_ledger_key() {
  if [ -e "$STATE/ledger.key" ]; then
    own "$USER_NAME:$USER_NAME" "$STATE/ledger.key"
    chmod 0600 "$STATE/ledger.key"
    return
  fi
  if ! "$VENV/bin/energy-agent" keys init --state-dir "$STATE" >/dev/null; then
    say "no ledger key created (is cryptography installed?); the agent runs with the ledger off"
    return
  fi
  own "$USER_NAME:$USER_NAME" "$STATE/ledger.key" "$STATE/ledger-keys.pub"
  say "created the ledger key $STATE/ledger.key (0600); give the bridge its public key:"
  say "  $VENV/bin/energy-agent keys export -c /etc/energy-agent/$CONFIG"
}

install_unit() {
  local fresh_config=$1
  install -d -m 0755 "$UNITDIR"
  install -m 0644 "$HERE/systemd/$UNIT" "$UNITDIR/$UNIT"
  if ! systemd_here; then
    say "installed $UNITDIR/$UNIT; not enabled (no systemd here, or --root)"
    return
  fi
  systemctl daemon-reload
  systemctl enable "$UNIT" >/dev/null
  if [ "$fresh_config" = yes ] || [ "$START" = no-start ]; then
    say "enabled $UNIT; start it with: systemctl start $UNIT"
  else
    # restart, not start: an upgrade must replace the running old version.
    systemctl restart "$UNIT"
    say "enabled and (re)started $UNIT; see: systemctl status $UNIT"
  fi
}

if [ "$ACTION" = uninstall ]; then
  uninstall
  exit 0
fi

[ -e "$SOURCE" ] || fail_usage "$SOURCE does not exist (give a wheel, an sdist or a source tree)"
ensure_user
install -d -m 0755 "$PREFIX"
install -d -m 0750 "$STATE"
own "$USER_NAME:$USER_NAME" "$STATE"
ensure_venv
fresh_config=no
if ensure_config; then fresh_config=yes; fi
secret "$ETC/mqtt.pass"
if [ "$ROLE" = bridge ]; then
  secret "$ETC/influx.token"
else
  install_ledger_extra
  ensure_ledger_key
  warm_numba_cache
  build_compiled_core
fi
install_unit "$fresh_config"
