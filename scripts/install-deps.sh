#!/usr/bin/env bash
# Installs what tunlab's labs, tests and book need on a Debian or Ubuntu
# machine. The README, CI (.ci/run) and the dev container (.devcontainer/)
# all run this one script, so CI tests the install path that users run.
#
#   scripts/install-deps.sh              the lab tools (ip, ping, tcpdump, tshark, ...)
#   scripts/install-deps.sh --wireguard  also wg, wireguard-go and boringtun-cli
#                                        (labs 07 and 08 and `tunlab bench`)
#   scripts/install-deps.sh --book       also mdbook, to build and serve the book
#   scripts/install-deps.sh --browser    also chromium (the book's browser check)
#   scripts/install-deps.sh --fuzz       also cargo-fuzz (`tunlab fuzz`)
#   scripts/install-deps.sh --all        all of the above (what CI installs)
#   scripts/install-deps.sh --check      install nothing; list what is missing
#
# Run it as yourself: system packages are installed through sudo (or
# directly when you are root), Rust tools with `cargo install --locked`
# into your own ~/.cargo. Whatever is already installed is left alone, so
# running it again is quick.
set -euo pipefail

MDBOOK_VERSION=0.5.4
BORINGTUN_VERSION=0.7.1
CARGO_FUZZ_VERSION=0.13.2

usage() { sed -n '2,18s/^# \{0,1\}//p' "$0"; }

want_wireguard=false want_book=false want_browser=false want_fuzz=false check_only=false
for arg in "$@"; do
  case "$arg" in
    --wireguard) want_wireguard=true ;;
    --book) want_book=true ;;
    --browser) want_browser=true ;;
    --fuzz) want_fuzz=true ;;
    --all) want_wireguard=true want_book=true want_browser=true want_fuzz=true ;;
    --check) check_only=true ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install-deps: unknown option $arg" >&2; usage >&2; exit 2 ;;
  esac
done

say() { printf 'install-deps: %s\n' "$*"; }

# The lab tools, by Debian package. gcc and libc6-dev give cargo its linker.
packages=(
  iproute2 iputils-ping tcpdump tshark iperf3 nftables curl netcat-openbsd
  ethtool util-linux procps kmod python3 ca-certificates sudo gcc libc6-dev
)
$want_wireguard && packages+=(wireguard-tools wireguard-go)
$want_browser && packages+=(chromium)

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  say "this script knows Debian and Ubuntu (apt). On another distribution install"
  say "the equivalents of: ${packages[*]}"
  say "or use the dev container or a VM (book: Before you start > Setting up your machine)."
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  as_root=(missing-sudo)
fi

if [ ${#missing[@]} -gt 0 ]; then
  if $check_only; then
    say "missing packages: ${missing[*]}"
    incomplete=true
  elif [ "${as_root[0]:-}" = missing-sudo ]; then
    say "missing packages: ${missing[*]}; run this script as root (no sudo here)"
    exit 1
  else
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    # wireguard-go is packaged by Debian but not by every Ubuntu release.
    if [[ " ${missing[*]} " == *" wireguard-go "* ]] && ! apt-cache show wireguard-go >/dev/null 2>&1; then
      missing=("${missing[@]/wireguard-go/}")
      need_wireguard_go_from_source=true
    fi
    # --no-install-recommends: wireguard-tools would otherwise pull in a
    # kernel image, and tshark a desktop's worth of libraries.
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends ${missing[@]} >/dev/null
  fi
else
  say "system packages: all present"
fi

if [ "${need_wireguard_go_from_source:-false}" = true ]; then
  if command -v go >/dev/null; then
    say "wireguard-go is not packaged here; building it with go install"
    GOBIN=/tmp/tunlab-go-bin go install golang.zx2c4.com/wireguard@latest
    "${as_root[@]}" install -m 0755 /tmp/tunlab-go-bin/wireguard /usr/local/bin/wireguard-go
  else
    say "wireguard-go is not packaged here and Go is missing: install Go, then run this again"
    exit 1
  fi
fi

# Rust tools go into the user's own ~/.cargo, built as the user.
cargo_tool() { # cargo_tool BINARY VERSION-CHECK CRATE [VERSION]
  local bin=$1 check=$2 crate=$3 version=${4:-}
  if "$bin" --version 2>/dev/null | grep -q -- "$check"; then
    return
  fi
  if $check_only; then
    say "missing: $crate${version:+ $version}"
    incomplete=true
    return
  fi
  if ! command -v cargo >/dev/null; then
    say "cargo is missing: install Rust first (https://rustup.rs), then run this again"
    exit 1
  fi
  say "building $crate${version:+ $version} with cargo install (a few minutes)"
  cargo install --locked --quiet "$crate" ${version:+--version "$version"}
}

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
$want_book && cargo_tool mdbook "v$MDBOOK_VERSION" mdbook "$MDBOOK_VERSION"
$want_wireguard && cargo_tool boringtun-cli "$BORINGTUN_VERSION" boringtun-cli "$BORINGTUN_VERSION"
$want_fuzz && cargo_tool cargo-fuzz "$CARGO_FUZZ_VERSION" cargo-fuzz "$CARGO_FUZZ_VERSION"

if $check_only; then
  if [ "${incomplete:-false}" = true ]; then exit 1; fi
  say "everything asked for is installed"
  exit 0
fi
if [ ! -e /dev/net/tun ]; then
  say "note: /dev/net/tun is missing; load the driver with: sudo modprobe tun"
fi
say "done; \`cargo run -p tunlab -- doctor\` checks everything the labs need"
