#!/bin/sh
# The restic-manager agent installer, as served by a restic-manager server
# at /install.sh (docs/install.md). Usage:
#
#   curl -fsSL <server>/install.sh | sudo sh -s -- --token rme.… [--name N] [--labels k=v,…]
#
# It downloads the agent for this machine from the server, checks its
# SHA-256, installs it, installs restic when missing, enrols this host
# (unless it already is: then it upgrades in place and keeps the state),
# and installs and starts the systemd unit. Run it with --help for the flags.
set -eu

# Filled in by the server that served this script.
SERVER_URL=@@SERVER_URL@@
# The server's TLS certificate fingerprint (empty without TLS): the agent
# pins it, so everything after the enrolment is checked against it.
SERVER_FINGERPRINT=@@SERVER_FINGERPRINT@@
# SHA-256 of every agent binary the server offered when it served this
# script: a download is checked against these (and the server's
# SHA256SUMS), so the binary is as trusted as this script.
EMBEDDED_SUMS=@@EMBEDDED_SUMS@@
SERVER_VERSION=@@SERVER_VERSION@@
DEFAULT_STATE_DIR=@@DEFAULT_STATE_DIR@@

UNIT=restic-manager-agent.service

TOKEN=${RM_TOKEN:-}
NAME=
LABELS=
PREFIX=/usr/local
UNIT_DIR=/etc/systemd/system
STATE_DIR=$DEFAULT_STATE_DIR
DOWNLOAD_URL=
DRY_RUN=0
NO_START=0

say() {
    printf 'restic-manager install: %s\n' "$*"
}

die() {
    printf 'restic-manager install: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat <<EOF
restic-manager agent installer (server $SERVER_URL, version $SERVER_VERSION)

usage: curl -fsSL $SERVER_URL/install.sh | sudo sh -s -- [flags]

  --token TOKEN       the enrolment token (required unless this host is
                      already enrolled; also read from RM_TOKEN)
  --name NAME         the host's name on the server (default: the token's,
                      then the machine's host name)
  --labels k=v,...    labels the host gets besides the token's
  --prefix DIR        install the binary as DIR/bin/restic-manager
                      (default /usr/local)
  --unit-dir DIR      write the systemd unit there (default /etc/systemd/system)
  --state-dir DIR     the agent's state directory (default $DEFAULT_STATE_DIR)
  --download-url URL  fetch SHA256SUMS and the agent from URL/SHA256SUMS and
                      URL/linux-<arch> (a mirror; default the server's
                      /download/agent); checked against the sums in this script
  --no-start          write the unit, but neither enable nor start it
  --dry-run           download and check the agent, print every other step,
                      change nothing
  -h, --help          this text
EOF
}

# "$1" is the flag, "$2" what follows it: refuses a missing value.
need_value() {
    [ "$#" -ge 2 ] || die "$1 needs a value"
}

while [ "$#" -gt 0 ]; do
    case $1 in
        --token) need_value "$@"; TOKEN=$2; shift 2 ;;
        --token=*) TOKEN=${1#*=}; shift ;;
        --name) need_value "$@"; NAME=$2; shift 2 ;;
        --name=*) NAME=${1#*=}; shift ;;
        --labels) need_value "$@"; LABELS=$2; shift 2 ;;
        --labels=*) LABELS=${1#*=}; shift ;;
        --prefix) need_value "$@"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --unit-dir) need_value "$@"; UNIT_DIR=$2; shift 2 ;;
        --unit-dir=*) UNIT_DIR=${1#*=}; shift ;;
        --state-dir) need_value "$@"; STATE_DIR=$2; shift 2 ;;
        --state-dir=*) STATE_DIR=${1#*=}; shift ;;
        --download-url) need_value "$@"; DOWNLOAD_URL=$2; shift 2 ;;
        --download-url=*) DOWNLOAD_URL=${1#*=}; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --no-start) NO_START=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

for pair in "--prefix:$PREFIX" "--unit-dir:$UNIT_DIR" "--state-dir:$STATE_DIR"; do
    case ${pair#*:} in
        /*) ;;
        *) die "${pair%%:*} must be an absolute path, not '${pair#*:}'" ;;
    esac
done
PREFIX=${PREFIX%/}
DOWNLOAD_URL=${DOWNLOAD_URL%/}
[ -n "$DOWNLOAD_URL" ] || DOWNLOAD_URL=$SERVER_URL/download/agent
BIN=$PREFIX/bin/restic-manager

# Runs a step, or with --dry-run only says what it would run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        say "[dry run] would run: $*"
    else
        "$@"
    fi
}

[ "$(uname -s)" = Linux ] || die "this installer is for Linux; this machine runs $(uname -s)"
machine=$(uname -m)
case $machine in
    x86_64|amd64) ARCH=x86_64 ;;
    aarch64|arm64) ARCH=aarch64 ;;
    armv7l|armv7) ARCH=armv7 ;;
    *) die "there is no restic-manager agent for this machine's architecture ($machine); there are builds for x86_64, aarch64 and armv7" ;;
esac
PLATFORM=linux-$ARCH

if [ "$(id -u)" != 0 ] && [ "$DRY_RUN" = 0 ]; then
    die "run this as root (curl -fsSL $SERVER_URL/install.sh | sudo sh -s -- ...)"
fi

# An enrolled host keeps its enrolment: running this again upgrades the
# binary and the unit in place.
ENROLLED=0
if [ -f "$STATE_DIR/agent.json" ]; then
    ENROLLED=1
    say "this host is already enrolled ($STATE_DIR/agent.json): upgrading in place, keeping its state"
    [ -z "$TOKEN" ] || say "--token is not used: the existing enrolment is kept"
elif [ -z "$TOKEN" ]; then
    die "--token is required: this host is not enrolled yet (no $STATE_DIR/agent.json)"
fi

# Whether downloads skip the CA check: only for a server with its own
# (possibly self-signed) certificate, and only because every byte
# downloaded is then checked against the hashes in this script.
INSECURE_DOWNLOAD=0
[ -z "$SERVER_FINGERPRINT" ] || INSECURE_DOWNLOAD=1

# fetch URL FILE
fetch() {
    if command -v curl >/dev/null 2>&1; then
        if [ "$INSECURE_DOWNLOAD" = 1 ]; then
            curl -fsSL --insecure -o "$2" "$1"
        else
            curl -fsSL -o "$2" "$1"
        fi
    elif command -v wget >/dev/null 2>&1; then
        if [ "$INSECURE_DOWNLOAD" = 1 ]; then
            wget -q --no-check-certificate -O "$2" "$1"
        else
            wget -q -O "$2" "$1"
        fi
    else
        die "neither curl nor wget is installed; install one and run this again"
    fi
}

# sha256 FILE: its SHA-256 in lower-case hex.
sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d ' ' -f 1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d ' ' -f 1
    else
        echo "none"
    fi
}

# sum_for PLATFORM SUMS: the hash SUMS (sha256sum's format) gives PLATFORM.
sum_for() {
    printf '%s\n' "$2" | awk -v platform="$1" '$2 == platform { print $1; exit }'
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

say "downloading the agent for $PLATFORM from $DOWNLOAD_URL"
fetch "$DOWNLOAD_URL/SHA256SUMS" "$TMP/SHA256SUMS" || die "could not download $DOWNLOAD_URL/SHA256SUMS"
served=$(sum_for "$PLATFORM" "$(cat "$TMP/SHA256SUMS")")
embedded=$(sum_for "$PLATFORM" "$EMBEDDED_SUMS")
[ -n "$served" ] || die "the server has no agent for $PLATFORM ($DOWNLOAD_URL/SHA256SUMS does not list it); give it one with --agent-binaries DIR"
if [ -n "$embedded" ] && [ "$served" != "$embedded" ]; then
    die "checksum mismatch: $DOWNLOAD_URL/SHA256SUMS says $served for $PLATFORM, this script says $embedded; nothing was installed"
fi
if [ -z "$embedded" ] && [ "$INSECURE_DOWNLOAD" = 1 ]; then
    die "this script carries no checksum for $PLATFORM, and the server's certificate is not checked by the download; fetch install.sh again"
fi
fetch "$DOWNLOAD_URL/$PLATFORM" "$TMP/restic-manager" || die "could not download $DOWNLOAD_URL/$PLATFORM"
actual=$(sha256 "$TMP/restic-manager")
[ "$actual" != none ] || die "neither sha256sum nor shasum is installed, so the download cannot be checked; install coreutils and run this again"
if [ "$actual" != "$served" ]; then
    die "checksum mismatch: the downloaded $PLATFORM agent has SHA-256 $actual, SHA256SUMS says $served; nothing was installed"
fi
chmod 0755 "$TMP/restic-manager"
say "checked: SHA-256 $actual"

# restic, from the system's packages when it is missing.
if command -v restic >/dev/null 2>&1; then
    say "restic: $(command -v restic)"
else
    say "restic is not installed: installing it with the system's package manager"
    if command -v apt-get >/dev/null 2>&1; then
        run apt-get update -q || die "apt-get update failed; install restic yourself (apt-get install restic) and run this again"
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y restic || die "apt-get install restic failed; install restic yourself and run this again"
    elif command -v dnf >/dev/null 2>&1; then
        run dnf install -y restic || die "dnf install restic failed (on RHEL and its rebuilds restic is in EPEL: dnf install -y epel-release first); run this again after"
    elif command -v yum >/dev/null 2>&1; then
        run yum install -y restic || die "yum install restic failed (restic is in EPEL: yum install -y epel-release first); run this again after"
    elif command -v zypper >/dev/null 2>&1; then
        run zypper --non-interactive install restic || die "zypper install restic failed; install restic yourself and run this again"
    elif command -v apk >/dev/null 2>&1; then
        run apk add restic || die "apk add restic failed; install restic yourself and run this again"
    elif command -v pacman >/dev/null 2>&1; then
        run pacman -S --noconfirm restic || die "pacman -S restic failed; install restic yourself and run this again"
    else
        die "restic is not installed and no known package manager (apt-get, dnf, yum, zypper, apk, pacman) was found: install restic 0.14 or newer from https://restic.readthedocs.io/en/stable/020_installation.html so that 'command -v restic' finds it, and run this again"
    fi
    if [ "$DRY_RUN" = 0 ]; then
        command -v restic >/dev/null 2>&1 || die "restic is still not on PATH after installing it; install it yourself and run this again"
    fi
fi

# The binary: a temporary file in the same folder, then a rename, so a
# running agent keeps its old file and nothing ever sees half a binary.
run mkdir -p "$PREFIX/bin"
run cp "$TMP/restic-manager" "$BIN.new"
run chmod 0755 "$BIN.new"
run mv -f "$BIN.new" "$BIN"
[ "$DRY_RUN" = 1 ] || say "installed $BIN"

if [ "$ENROLLED" = 0 ]; then
    set -- agent enroll "--server=$SERVER_URL" "--state-dir=$STATE_DIR"
    [ -z "$NAME" ] || set -- "$@" "--name=$NAME"
    [ -z "$LABELS" ] || set -- "$@" "--labels=$LABELS"
    [ -z "$SERVER_FINGERPRINT" ] || set -- "$@" "--server-fingerprint=$SERVER_FINGERPRINT"
    # The token goes in the environment, never on a command line.
    if [ "$DRY_RUN" = 1 ]; then
        say "[dry run] would run: RM_TOKEN=<token> $BIN $*"
    else
        RM_TOKEN=$TOKEN "$BIN" "$@" || die "enrolment failed (see above); nothing else was changed after installing $BIN"
    fi
fi

set -- agent install-service "--unit-dir=$UNIT_DIR" "--state-dir=$STATE_DIR"
[ "$NO_START" = 0 ] || set -- "$@" --no-start
run "$BIN" "$@"

if [ "$DRY_RUN" = 1 ]; then
    say "dry run: nothing was changed"
elif [ "$NO_START" = 1 ]; then
    say "done: the unit $UNIT_DIR/$UNIT is written; start it with: systemctl enable --now $UNIT"
else
    say "done: the agent runs as $UNIT (journalctl -u $UNIT)"
fi
