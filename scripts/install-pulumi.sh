#!/usr/bin/env bash
# Makes the Pulumi engine available for this program: the `pulumi` CLI, the Python language
# host and the docker and command provider plugins, at versions that match requirements.txt.
#
#   - A compatible `pulumi` already on PATH (installed the usual way) is used as it is.
#   - Otherwise each binary is built from a wrapper Go module in tools/pulumi-engine/ (see its
#     README for the pins and why), cached under $NOCTURNA_CACHE_DIR/pulumi/<cli version>/bin,
#     with the Go module and build caches beside it: a warm run builds nothing.
#   - Provider plugins are installed with `pulumi plugin install resource NAME VERSION --file`
#     into $PULUMI_HOME (default ~/.pulumi), so the engine resolves exactly the pinned
#     versions without downloading anything.
#   - A binary that cannot be produced is named, with the reason, and the script fails,
#     unless --allow-missing: then it installs what it can and says what is missing.
#
# Sets nothing global (no PATH or profile change, no link in /usr/local/bin). Idempotent.
# The last line printed is the bin directory: PATH="$(scripts/install-pulumi.sh | tail -n1):$PATH"
#
# Usage: scripts/install-pulumi.sh [--allow-missing] [--rebuild]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WRAPPERS=$ROOT/tools/pulumi-engine
CACHE=${NOCTURNA_CACHE_DIR:-/var/cache/nocturna-infra}/pulumi

# The CLI: the nearest version >= the Python SDK that the Go module proxy serves.
CLI_VERSION=3.274.1
# The Python language host: the last sdk/v3 module that still contained it (see the README).
LANGHOST_VERSION=3.68.0
# The program's pins, read from requirements.txt so the two cannot drift apart.
pin() { sed -n "s/^$1==\([0-9.]*\)\$/\1/p" "$ROOT/requirements.txt"; }
SDK_VERSION=$(pin pulumi)
DOCKER_VERSION=$(pin pulumi-docker)
COMMAND_VERSION=$(pin pulumi-command)
# The exec script the host runs comes from the sdk/v3 module of the SDK's own version;
# its go.sum hash, so a changed download is refused.
EXEC_MODULE_SUM="h1:MoJElH3Y/VwV1tfTVNCh2BJuc3HxB7OPmvvYzaDe89c="

allow_missing=false
rebuild=false
for arg in "$@"; do
  case $arg in
    --allow-missing) allow_missing=true ;;
    --rebuild) rebuild=true ;;
    *) echo "usage: $0 [--allow-missing] [--rebuild]" >&2; exit 2 ;;
  esac
done

export PULUMI_SKIP_UPDATE_CHECK=true
version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }
say() { echo "install-pulumi: $*" >&2; }
missing=()
miss() { missing+=("$1"); say "cannot produce $1"; }

# --- Go, only when something has to be built ------------------------------------------------
go_env() {
  command -v go >/dev/null || { say "no 'go' command on PATH (Debian: golang-go >= 1.26.6)"; return 1; }
  # The wrappers need Go >= 1.26.6: the machine's, else go1.27.3 from the Go module proxy.
  if version_ge "$(GOTOOLCHAIN=local go env GOVERSION | sed 's/^go//')" 1.26.6; then
    export GOTOOLCHAIN=local
  else
    export GOTOOLCHAIN=go1.27.3
  fi
  export GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build
  export GOFLAGS="-p=2 -trimpath -buildvcs=false -mod=readonly" CGO_ENABLED=0
  mkdir -p "$GOMODCACHE" "$GOCACHE"
}

# build NAME VERSION WRAPPER PACKAGE LDFLAGS: go build a wrapper's tool into $BIN/NAME,
# unless the binary there was built from the same go.mod, go.sum and flags.
build() {
  local name=$1 version=$2 wrapper=$WRAPPERS/$3 pkg=$4 ldflags=$5 stamp start out
  # What the binary is built from: go.mod and go.sum less comments, the package and flags.
  stamp=$({ grep -hv '^[[:space:]]*//' "$wrapper/go.mod" "$wrapper/go.sum"; echo "$pkg $ldflags"; } \
    | sha256sum | cut -c1-64)
  if [[ -x $BIN/$name && $(cat "$BIN/.$name.stamp" 2>/dev/null) == "$stamp" ]]; then
    say "$name $version: cached"
    return 0
  fi
  go_env || return 1
  say "$name $version: building from $3 (several minutes when cold)"
  start=$SECONDS
  if ! out=$(cd "$wrapper" && nice -n 10 go build -ldflags "-s -w $ldflags" -o "$BIN/.$name.tmp" "$pkg" 2>&1); then
    echo "$out" | tail -n 20 >&2
    rm -f "$BIN/.$name.tmp"
    return 1
  fi
  mv -f "$BIN/.$name.tmp" "$BIN/$name"
  echo "$stamp" >"$BIN/.$name.stamp"
  printf '%s %s %s built in %ss (%s bytes, %s)\n' "$(date -u +%FT%TZ)" "$name" "$version" \
    "$((SECONDS - start))" "$(stat -c %s "$BIN/$name")" "$(go version | cut -d' ' -f3)" \
    | tee -a "$CACHE/$CLI_VERSION/build-times.log" >&2
}

# served MODULE VERSION: why the proxy cannot give this module version ("" when it can).
served() {
  local out
  go_env >/dev/null 2>&1 || { echo "no 'go' command to ask the Go module proxy"; return; }
  if out=$(GOFLAGS='' go list -m -json "$1@$2" 2>&1); then return; fi
  echo "module $1 is not served by the Go module proxy at $2 ($(echo "$out" | tr -s '\n\t' ' ' | sed 's/ *$//'))"
}

# --- The CLI and the Python language host ------------------------------------------------------
BIN=""
if existing=$(command -v pulumi 2>/dev/null); then
  have=$(pulumi version 2>/dev/null | sed 's/^v//') || have=""
  dir=$(dirname "$(readlink -f "$existing")")
  if [[ $have == 3.* ]] && version_ge "$have" "$SDK_VERSION" \
    && { [[ -x $dir/pulumi-language-python ]] || command -v pulumi-language-python >/dev/null; }; then
    say "using pulumi $have on PATH ($dir)"
    BIN=$dir
  else
    say "ignoring pulumi '${have:-?}' at $existing: needs 3.x >= $SDK_VERSION with pulumi-language-python"
  fi
fi

if [[ -z $BIN ]]; then
  BIN=$CACHE/$CLI_VERSION/bin
  mkdir -p "$BIN"
  exec 9>"$CACHE/.lock"
  flock 9 # one build at a time on this machine
  if $rebuild; then rm -f "$BIN"/.*.stamp; fi
  version_pkg=github.com/pulumi/pulumi/sdk/v3/go/common/version.Version
  build pulumi "$CLI_VERSION" pulumi github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
    "-X $version_pkg=v$CLI_VERSION" || miss "pulumi $CLI_VERSION: the build failed (output above)"
  build pulumi-language-python "$LANGHOST_VERSION" pulumi-language-python \
    github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python "-X $version_pkg=v$LANGHOST_VERSION" \
    || miss "pulumi-language-python $LANGHOST_VERSION: the build failed (output above)"
  # The host runs this script with the program's Python, next to itself.
  if [[ ! -s $BIN/pulumi-language-python-exec ]]; then
    if go_env && dl=$(GOFLAGS='' go mod download -json "github.com/pulumi/pulumi/sdk/v3@v$SDK_VERSION" 2>&1) \
      && [[ $(sed -n 's/^\t"Sum": "\(.*\)",$/\1/p' <<<"$dl") == "$EXEC_MODULE_SUM" ]]; then
      install -m 0755 "$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$dl")/python/cmd/pulumi-language-python-exec" \
        "$BIN/pulumi-language-python-exec"
    else
      miss "pulumi-language-python-exec $SDK_VERSION: github.com/pulumi/pulumi/sdk/v3@v$SDK_VERSION could not be downloaded or its hash is not $EXEC_MODULE_SUM ($(tail -n 3 <<<"${dl:-}" | tr '\n' ' '))"
    fi
  fi
fi

# --- Provider plugins ----------------------------------------------------------------------
# plugin NAME VERSION MODULE MODULE_VERSION: installed already, built from its wrapper, or missing.
plugin() {
  local name=$1 version=$2 module=$3 module_version=$4 why
  if [[ ! -x $BIN/pulumi ]]; then
    miss "pulumi-resource-$name $version: no pulumi CLI to install it with"
    return
  fi
  if "$BIN/pulumi" plugin ls 2>/dev/null | grep -Eq "^$name +resource +$version( |\$)"; then
    say "pulumi-resource-$name $version: installed"
    return
  fi
  if [[ -d $WRAPPERS/pulumi-resource-$name ]]; then
    build "pulumi-resource-$name" "$version" "pulumi-resource-$name" "$module/cmd/pulumi-resource-$name" \
      "-X $module/pkg/version.Version=v$version" \
      && "$BIN/pulumi" plugin install resource "$name" "$version" --file "$BIN/pulumi-resource-$name" >&2 \
      && return
    miss "pulumi-resource-$name $version: the build or plugin install failed (output above)"
    return
  fi
  why=$(served "$module" "$module_version")
  miss "pulumi-resource-$name $version: ${why:-no wrapper module in tools/pulumi-engine/pulumi-resource-$name}"
}
plugin docker "$DOCKER_VERSION" github.com/pulumi/pulumi-docker/provider/v5 "v$DOCKER_VERSION"
# The repository tags v1.2.1, not provider/v1.2.1: its provider module has only pseudo-versions
# (this one is the v1.2.1 tag's commit).
plugin command "$COMMAND_VERSION" github.com/pulumi/pulumi-command/provider v0.0.0-20260303235922-7f3eb6f3b77c

if ((${#missing[@]})); then
  if ! $allow_missing; then
    say "FAILED: ${#missing[@]} binaries missing (--allow-missing installs the rest):"
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
  fi
  say "missing (--allow-missing):"
  printf '  %s\n' "${missing[@]}" >&2
fi
echo "$BIN"
