#!/usr/bin/env bash
# A second Docker host on this machine, reached over SSH the way a real remote host is.
#
#   dockerd #2  --host unix:///run/nocturna-host2/docker.sock, its own data-root, exec-root,
#               pidfile, key and daemon.json; its own default bridge (nocturna-h2, 10.213.0.1/24)
#               and no iptables rules; ports published on 127.0.0.2 by the userland proxy.
#   sshd        127.0.0.2:2222 only, own config and host key, key auth only, no PAM; it lets in
#               one user, nocturna-host2, in the socket's group; its key may only run
#               `docker system dial-stdio` (what `DOCKER_HOST=ssh://...` runs), and its sessions
#               get DOCKER_HOST=<the socket above>, so that reaches dockerd #2.
#   client      an ed25519 key, a known_hosts entry, and bin/ssh: a wrapper adding the options
#               below, for the docker CLI, which takes no SSH options of its own.
#
# Usage (as root):
#   scripts/second-docker-host.sh start [--lease PID]  start what is not running (idempotent);
#                                                      with --lease, a test session's claim
#   scripts/second-docker-host.sh release PID          drop that claim; stops everything when the
#                                                      last claim goes and no person ran `start`
#   scripts/second-docker-host.sh stop                 stop sshd and dockerd #2 (claims or not)
#   scripts/second-docker-host.sh down daemon|ssh|hang simulate a host outage: stop dockerd #2
#                                                      (its containers stop too), or only its sshd
#                                                      (containers keep serving; connections are
#                                                      refused), or freeze sshd (connections hang
#                                                      like a host gone dark); `start` undoes it
#   scripts/second-docker-host.sh status               what runs; exit 0 only if both do
#   scripts/second-docker-host.sh env                  shell exports to use the host by hand:
#                                                      eval "$(scripts/second-docker-host.sh env)"
#   scripts/second-docker-host.sh purge                stop, then delete its data, keys and user
#
# Never touches the first dockerd, its bridge docker0 or its iptables rules. (`dockerd --bridge
# none`, the obvious choice, deletes any link named docker0 at start-up, and so does a restart
# with --default-address-pool: moby daemon/daemon_unix.go, removeDefaultBridgeInterface. Hence
# a default bridge of our own and no address pools.)
# The data-root is kept between runs, so the base image is loaded only once.
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin # dockerd, sshd, useradd, ip

NAME=nocturna-host2
RUN_DIR=/run/$NAME
STATE_DIR=/var/lib/$NAME
ADDRESS=${NOCTURNA_HOST2_ADDRESS:-127.0.0.2}
SSH_PORT=${NOCTURNA_HOST2_SSH_PORT:-2222}
SSH_USER=$NAME
BRIDGE=nocturna-h2
BRIDGE_CIDR=10.213.0.1/24
BASE_IMAGE=${NOCTURNA_BASE_IMAGE:-local/node:20-slim}
DOCKER=${DOCKER:-/usr/bin/docker}
REPO=$(cd "$(dirname "$0")/.." && pwd)
# `docker` below means the first (local, default) engine; the second is always named with -H.
# A shell that ran `eval "$(... env)"` must not turn the first into the second.
unset DOCKER_HOST DOCKER_CONTEXT

SOCKET=$RUN_DIR/docker.sock
DOCKERD_PID=$RUN_DIR/dockerd.pid
SSHD_PID=$RUN_DIR/sshd.pid
LEASES=$RUN_DIR/leases
MANUAL=$RUN_DIR/started-by-hand
LOCK=/run/$NAME.lock
LOG_DIR=$STATE_DIR/log
SSH_DIR=$STATE_DIR/ssh
CLIENT_DIR=$STATE_DIR/client
KEY=$CLIENT_DIR/id_ed25519
KNOWN_HOSTS=$CLIENT_DIR/known_hosts
WRAPPER_DIR=$CLIENT_DIR/bin
DOCKER_URL=ssh://$SSH_USER@$ADDRESS:$SSH_PORT
# The options a docker provider needs (pulumi-docker `docker:sshOpts`, or DOCKER_SSH_OPTS which
# terraform-provider-docker reads). ConnectTimeout comes before the CLI's own 30 s, so it wins.
SSH_OPTS=(-o "IdentityFile=$KEY" -o IdentitiesOnly=yes -o "UserKnownHostsFile=$KNOWN_HOSTS"
  -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR)

die() {
  echo "second-docker-host: $*" >&2
  exit 1
}
log() { echo "second-docker-host: $*" >&2; }

h2() { "$DOCKER" -H "unix://$SOCKET" "$@"; }

# pid from a pidfile if that process is alive and is the expected program, else nothing
live_pid() {
  local file=$1 comm=$2 pid
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
  echo "$pid"
}

daemon_up() { h2 version --format '{{.Server.Version}}' >/dev/null 2>&1; }
sshd_up() { live_pid "$SSHD_PID" sshd >/dev/null; }

preflight() {
  [[ $EUID -eq 0 ]] || die "must run as root (it starts dockerd and sshd)"
  local tool
  for tool in dockerd sshd ssh ssh-keygen ip useradd flock; do
    command -v "$tool" >/dev/null ||
      die "$tool not found; install docker.io, openssh-server and iproute2 (see .ci/run)"
  done
  [[ -x $DOCKER ]] || die "docker CLI $DOCKER not found"
}

ensure_user() {
  getent group "$SSH_USER" >/dev/null || groupadd --system "$SSH_USER"
  if ! id -u "$SSH_USER" >/dev/null 2>&1; then
    useradd --system --gid "$SSH_USER" --home-dir "$STATE_DIR/home" --shell /bin/sh "$SSH_USER"
  fi
  # No password, but not locked: without PAM, sshd refuses a locked account ("!") even by key.
  [[ $(getent shadow "$SSH_USER" | cut -d: -f2) == '*' ]] || usermod -p '*' "$SSH_USER"
  install -d -m 0750 -o "$SSH_USER" -g "$SSH_USER" "$STATE_DIR/home"
}

ensure_files() {
  install -d -m 0755 "$RUN_DIR" "$STATE_DIR" "$SSH_DIR" "$CLIENT_DIR" "$WRAPPER_DIR"
  install -d -m 0700 "$LOG_DIR" "$LEASES"
  install -d -m 0755 /run/sshd # sshd's privilege separation directory (Debian)
  # The engine ID comes from this key; without its own, dockerd #2 would share the first's
  # /etc/docker/key.json and report the same ID. (dockerd 20.10 has no flag for it.)
  printf '{"deprecated-key-path": "%s"}\n' "$STATE_DIR/key.json" >"$STATE_DIR/daemon.json"
  [[ -s $SSH_DIR/ssh_host_ed25519_key ]] ||
    ssh-keygen -q -t ed25519 -N '' -C "$NAME-host" -f "$SSH_DIR/ssh_host_ed25519_key"
  [[ -s $KEY ]] || ssh-keygen -q -t ed25519 -N '' -C "$NAME-client" -f "$KEY"
  # The key can do one thing: what DOCKER_HOST=ssh://... runs. Any other command runs that too.
  echo "restrict,command=\"docker system dial-stdio\" $(cat "$KEY.pub")" >"$SSH_DIR/authorized_keys"
  chmod 0644 "$SSH_DIR/authorized_keys"
  echo "[$ADDRESS]:$SSH_PORT $(cut -d' ' -f1,2 "$SSH_DIR/ssh_host_ed25519_key.pub")" >"$KNOWN_HOSTS"
  cat >"$SSH_DIR/sshd_config" <<EOF
# sshd for the second test Docker host; written by scripts/second-docker-host.sh
ListenAddress $ADDRESS:$SSH_PORT
HostKey $SSH_DIR/ssh_host_ed25519_key
PidFile $SSHD_PID
UsePAM no
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile $SSH_DIR/authorized_keys
AllowUsers $SSH_USER
PermitRootLogin no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
PrintMotd no
# What a real host's docker CLI finds by default: the engine's socket.
SetEnv DOCKER_HOST=unix://$SOCKET
LogLevel VERBOSE
EOF
  cat >"$WRAPPER_DIR/ssh" <<EOF
#!/bin/sh
# ssh with the second test host's key and known_hosts; put this directory first on PATH
exec /usr/bin/ssh $(printf '%q ' "${SSH_OPTS[@]}")"\$@"
EOF
  chmod 0755 "$WRAPPER_DIR/ssh"
}

ensure_bridge() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip -4 addr show dev "$BRIDGE" | grep -q "inet $BRIDGE_CIDR" ||
    ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

start_daemon() {
  daemon_up && return 0
  ensure_bridge
  log "starting dockerd on $SOCKET (log: $LOG_DIR/dockerd.log)"
  # setsid + closed lock fd: the daemon outlives this script and does not hold its lock.
  env -u NOTIFY_SOCKET setsid dockerd \
    --config-file "$STATE_DIR/daemon.json" \
    --host "unix://$SOCKET" --group "$SSH_USER" \
    --data-root "$STATE_DIR/docker" --exec-root "$RUN_DIR/exec" --pidfile "$DOCKERD_PID" \
    --bridge "$BRIDGE" --iptables=false --ip-forward=false --ip-masq=false \
    --shutdown-timeout 5 \
    </dev/null >>"$LOG_DIR/dockerd.log" 2>&1 9>&- &
  local pid=$! _
  for _ in $(seq 1 120); do
    daemon_up && return 0
    [[ -d /proc/$pid ]] || break
    sleep 0.5
  done
  tail -n 30 "$LOG_DIR/dockerd.log" >&2
  die "dockerd did not answer on $SOCKET (log above)"
}

load_base_image() {
  local want have
  if ! want=$("$DOCKER" image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null); then
    "$REPO/scripts/make-base-image.sh" >&2
    want=$("$DOCKER" image inspect -f '{{.Id}}' "$BASE_IMAGE")
  fi
  have=$(h2 image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
  [[ $have == "$want" ]] && return 0
  log "loading $BASE_IMAGE into the second daemon"
  "$DOCKER" save "$BASE_IMAGE" | h2 load -q >&2
}

start_sshd() {
  sshd_up && return 0
  local sshd
  sshd=$(command -v sshd) # sshd wants to be started by its full path
  "$sshd" -t -f "$SSH_DIR/sshd_config" || die "sshd rejected $SSH_DIR/sshd_config"
  log "starting sshd on $ADDRESS:$SSH_PORT (log: $LOG_DIR/sshd.log)"
  # sshd binds before it daemonises, so its exit status tells whether it listens.
  env -u NOTIFY_SOCKET "$sshd" -f "$SSH_DIR/sshd_config" -E "$LOG_DIR/sshd.log" 9>&- ||
    { tail -n 20 "$LOG_DIR/sshd.log" >&2; die "sshd did not start"; }
  local _
  for _ in $(seq 1 50); do
    sshd_up && return 0
    sleep 0.1
  done
  die "sshd wrote no pidfile $SSHD_PID"
}

# Undo `down hang`: a stopped sshd still has its pidfile, so start_sshd alone would not see it.
thaw_sshd() {
  local pid
  if pid=$(live_pid "$SSHD_PID" sshd); then kill -CONT "$pid"; fi
}

stop_pid() {
  local file=$1 comm=$2 what=$3 pid _
  pid=$(live_pid "$file" "$comm") || return 0
  log "stopping $what (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || return 0
  kill -CONT "$pid" 2>/dev/null || true # a frozen (`down hang`) process acts on TERM only then
  for _ in $(seq 1 300); do
    [[ -d /proc/$pid ]] || return 0
    sleep 0.1
  done
  log "$what did not stop within 30s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

stop_daemon() {
  stop_pid "$DOCKERD_PID" dockerd "dockerd #2"
  # dockerd stops its own containerd; wait for it, so a quick restart finds the socket free.
  local _
  for _ in $(seq 1 100); do
    pgrep -f "containerd --config $RUN_DIR/exec/containerd/containerd.toml" >/dev/null || break
    sleep 0.1
  done
}

stop_all() {
  stop_pid "$SSHD_PID" sshd "sshd"
  stop_daemon
  rm -f "$MANUAL" "$LEASES"/* 2>/dev/null || true
  if ip link show "$BRIDGE" >/dev/null 2>&1 && ! daemon_up; then ip link del "$BRIDGE"; fi
}

# Claims of test sessions whose process is gone no longer count.
prune_leases() {
  local lease
  for lease in "$LEASES"/*; do
    [[ -e $lease ]] || continue
    [[ -d /proc/$(basename "$lease") ]] || rm -f "$lease"
  done
}

with_lock() {
  mkdir -p "$(dirname "$LOCK")"
  exec 9>"$LOCK"
  flock -w 300 9 || die "another second-docker-host command holds $LOCK"
}

cmd_start() {
  local lease=
  if [[ ${1:-} == --lease ]]; then
    lease=${2:?--lease needs a process id}
    [[ $lease =~ ^[0-9]+$ ]] || die "--lease: expected a process id, got '$lease'"
  fi
  preflight
  with_lock
  ensure_user
  ensure_files
  start_daemon
  load_base_image
  thaw_sshd
  start_sshd
  if [[ -n $lease ]]; then : >"$LEASES/$lease"; else : >"$MANUAL"; fi
  cmd_status >/dev/null || die "started, but status disagrees; see $LOG_DIR"
}

cmd_release() {
  local lease=${1:?release needs the process id given to start --lease}
  with_lock
  rm -f "$LEASES/$lease"
  prune_leases
  if [[ -e $MANUAL ]] || compgen -G "$LEASES/*" >/dev/null; then return 0; fi
  stop_all
}

cmd_status() {
  local rc=0 pid
  if pid=$(live_pid "$DOCKERD_PID" dockerd) && daemon_up; then
    echo "dockerd: running (pid $pid, unix://$SOCKET, data-root $STATE_DIR/docker)"
  else
    echo "dockerd: stopped"
    rc=3
  fi
  if pid=$(live_pid "$SSHD_PID" sshd); then
    echo "sshd: running (pid $pid, $ADDRESS:$SSH_PORT)"
  else
    echo "sshd: stopped"
    rc=3
  fi
  local claims=() lease
  for lease in "$LEASES"/*; do
    [[ -e $lease ]] && claims+=("$(basename "$lease")")
  done
  echo "claims: ${claims[*]:-none}$([[ -e $MANUAL ]] && echo ' (started by hand: stays up)')"
  return $rc
}

cmd_env() {
  cat <<EOF
export DOCKER_HOST=$DOCKER_URL
export PATH=$WRAPPER_DIR:\$PATH
export DOCKER_SSH_OPTS='${SSH_OPTS[*]}'
export NOCTURNA_HOST2_SOCKET=unix://$SOCKET
export NOCTURNA_HOST2_ADDRESS=$ADDRESS
export NOCTURNA_HOST2_SSH_PORT=$SSH_PORT
export NOCTURNA_HOST2_USER=$SSH_USER
export NOCTURNA_HOST2_KEY=$KEY
export NOCTURNA_HOST2_KNOWN_HOSTS=$KNOWN_HOSTS
export NOCTURNA_HOST2_WRAPPER_DIR=$WRAPPER_DIR
export NOCTURNA_HOST2_LOG_DIR=$LOG_DIR
EOF
}

cmd_down() {
  with_lock
  case ${1:-} in
  daemon) stop_daemon ;;
  ssh) stop_pid "$SSHD_PID" sshd "sshd" ;;
  hang)
    local pid
    pid=$(live_pid "$SSHD_PID" sshd) || die "down hang: sshd is not running"
    log "freezing sshd (pid $pid): connections are accepted by the kernel, then nothing"
    kill -STOP "$pid"
    ;;
  *) die "down: expected 'daemon', 'ssh' or 'hang', got '${1:-}'" ;;
  esac
}

cmd_purge() {
  preflight
  with_lock
  stop_all
  rm -rf --one-file-system "$STATE_DIR" "$RUN_DIR"
  if id -u "$SSH_USER" >/dev/null 2>&1; then userdel "$SSH_USER"; fi
  if getent group "$SSH_USER" >/dev/null; then groupdel "$SSH_USER"; fi
}

case ${1:-} in
start) cmd_start "${@:2}" ;;
release) cmd_release "${@:2}" ;;
stop) with_lock && stop_all ;;
down) cmd_down "${@:2}" ;;
status) cmd_status ;;
env) cmd_env ;;
purge) cmd_purge ;;
*) die "usage: $0 start [--lease PID] | release PID | stop | down daemon|ssh|hang | status | env | purge" ;;
esac
