#!/usr/bin/env bash
# Runs a node:test file against the built binaries. Installs the pinned `openai` npm package
# (the official client the pipeline tests drive) into the build tree on first use.
set -euo pipefail
test_file="${1:?usage: run_node_tests.sh TEST_FILE}"
: "${KVFERRY_BIN_DIR:?set KVFERRY_BIN_DIR to the build directory}"
: "${KVFERRY_MODEL:?set KVFERRY_MODEL to the GGUF model}"
# Exit 77 (ctest: skipped) without Node.js, or without the client and a registry to fetch it from.
command -v node >/dev/null || { echo "SKIP: node is not installed (scripts/install_deps.sh)"; exit 77; }
npm_dir="$(cd "$KVFERRY_BIN_DIR" && pwd)/npm"
openai_version=4.104.0
if [ ! -f "$npm_dir/node_modules/openai/package.json" ] ||
   ! grep -q "\"version\": \"$openai_version\"" "$npm_dir/node_modules/openai/package.json"; then
  mkdir -p "$npm_dir"
  if ! npm install --prefix "$npm_dir" --no-save --no-audit --no-fund --loglevel=error \
    "openai@$openai_version" >/dev/null; then
    echo "SKIP: the openai npm package $openai_version could not be installed (no registry?)"
    exit 77
  fi
fi
export KVFERRY_OPENAI_MODULE="$npm_dir/node_modules/openai"
# A test that hangs fails alone after 4 minutes (its file's other tests still run and report)
# instead of holding the whole file until ctest's limit.
exec node --test --test-concurrency=1 --test-timeout=240000 "$test_file"
