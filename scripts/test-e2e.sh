#!/usr/bin/env bash
# npm run test:e2e [-- test files]: installs what the end-to-end tests need (cached: see e2e-setup.sh), packages
# the VSIX for this platform, then runs test/e2e (the VSIX's contents, VS Code in code-server through headless
# Chromium, Neovim, Emacs with eglot). Screenshots and, on failure, logs go to test-results/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/e2e-setup.sh
BLIP2_E2E_VSIX="$(node scripts/package.mjs)"
export BLIP2_E2E_VSIX

if [ $# -gt 0 ]; then
  tests=("$@")
else
  mapfile -t tests < <(find test/e2e -name '*.test.ts' | sort)
fi
exec node --import tsx --test --test-concurrency=1 "${tests[@]}"
