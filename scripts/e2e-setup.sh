#!/usr/bin/env bash
# Installs what the end-to-end tests need, once, into a cache folder outside the repository:
#   - Node 24 (npm package node-linux-<arch>: a binary plus headers), which code-server requires;
#   - code-server (real VS Code served to a browser), built against that Node;
#   - Chromium, Neovim, and Emacs with eglot and markdown-mode from Debian's apt (plus libkrb5-dev and a compiler
#     for code-server's native modules).
# A second run that finds everything in place does nothing. Prints nothing but a summary line unless it installs.
#
#   BLIP2_E2E_CACHE        cache folder (default: ~/.cache/blip2-e2e)
#   BLIP2_E2E_NODE         Node package version (default: 24.21.0)
#   BLIP2_E2E_CODE_SERVER  code-server version (default: 4.139.1)
set -euo pipefail

CACHE="${BLIP2_E2E_CACHE:-$HOME/.cache/blip2-e2e}"
NODE_VERSION="${BLIP2_E2E_NODE:-24.21.0}"
CODE_SERVER_VERSION="${BLIP2_E2E_CODE_SERVER:-4.139.1}"

case "$(uname -m)" in
  x86_64) ARCH=x64 ;;
  aarch64 | arm64) ARCH=arm64 ;;
  *) echo "e2e-setup: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

NODE_DIR="$CACHE/node-$NODE_VERSION"
NODE_HOME="$NODE_DIR/node_modules/node-linux-$ARCH"
CS_DIR="$CACHE/code-server-$CODE_SERVER_VERSION"
CS_BIN="$CS_DIR/node_modules/.bin/code-server"
started=$SECONDS
did=()

log() { echo "e2e-setup: $*" >&2; }

# Runs a command (`env` syntax: VAR=value... command) without an outer npm's npm_* variables: under `npm run`,
# npm exports its own config (among it the user agent, naming Node 20), and an inner npm would take it as its
# own; code-server's install script checks that user agent for Node 24.
clean_env() {
  local drop=() v
  for v in $(compgen -e); do
    case "$v" in npm_* | NPM_*) drop+=(-u "$v") ;; esac
  done
  env "${drop[@]}" "$@"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; exit 1
  fi
}

# --- apt packages -------------------------------------------------------------------------------------------
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v nvim >/dev/null || missing+=(neovim)
command -v emacs >/dev/null || missing+=(emacs-nox)
dpkg -s elpa-eglot >/dev/null 2>&1 || missing+=(elpa-eglot)
dpkg -s elpa-markdown-mode >/dev/null 2>&1 || missing+=(elpa-markdown-mode)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
command -v make >/dev/null || missing+=(make)
command -v g++ >/dev/null || missing+=(g++)
command -v python3 >/dev/null || missing+=(python3)
command -v unzip >/dev/null || missing+=(unzip)
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  did+=("apt: ${missing[*]}")
fi

# Installs one npm package anew into a folder of its own: `npm_into DIR PACKAGE [VAR=value...]`, the variables
# set for npm. The caller marks DIR/.complete once the package runs, so an interrupted install is redone.
npm_into() {
  local dir=$1 package=$2
  shift 2
  rm -rf "$dir"
  mkdir -p "$dir"
  (cd "$dir" && echo '{"private":true}' > package.json &&
    clean_env "$@" npm install --no-audit --no-fund --loglevel=error "$package" >/dev/null)
}

# --- Node 24 -------------------------------------------------------------------------------------------------
if [ ! -x "$NODE_HOME/bin/node" ] || [ ! -f "$NODE_DIR/.complete" ]; then
  log "installing node-linux-$ARCH@$NODE_VERSION into $NODE_DIR"
  npm_into "$NODE_DIR" "node-linux-$ARCH@$NODE_VERSION"
  "$NODE_HOME/bin/node" --version >/dev/null
  touch "$NODE_DIR/.complete"
  did+=("node $NODE_VERSION")
fi

# --- code-server ---------------------------------------------------------------------------------------------
if [ ! -x "$CS_BIN" ] || [ ! -f "$CS_DIR/.complete" ]; then
  log "installing code-server@$CODE_SERVER_VERSION into $CS_DIR (a few minutes: native modules compile)"
  npm_into "$CS_DIR" "code-server@$CODE_SERVER_VERSION" PATH="$NODE_HOME/bin:$PATH" npm_config_nodedir="$NODE_HOME"
  PATH="$NODE_HOME/bin:$PATH" "$CS_BIN" --version >/dev/null
  touch "$CS_DIR/.complete"
  did+=("code-server $CODE_SERVER_VERSION")
fi

# The paths, for people and other scripts (test/e2e/lib/env.ts computes the same ones).
cat > "$CACHE/env.sh.tmp" <<ENV
export BLIP2_E2E_NODE_BIN="$NODE_HOME/bin/node"
export BLIP2_E2E_CODE_SERVER_BIN="$CS_BIN"
export BLIP2_E2E_CHROMIUM="$(command -v chromium)"
export BLIP2_E2E_NVIM="$(command -v nvim)"
export BLIP2_E2E_EMACS="$(command -v emacs)"
ENV
mv "$CACHE/env.sh.tmp" "$CACHE/env.sh"

if [ ${#did[@]} -eq 0 ]; then
  log "everything in place ($CACHE)"
else
  log "installed ${did[*]} in $((SECONDS - started)) s"
fi
