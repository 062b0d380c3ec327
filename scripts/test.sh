#!/usr/bin/env bash
# Runs every test file with node:test via tsx. Node 20 expands no globs and runs no tests for a
# directory argument, so the files are listed explicitly. Pass file paths to run only those.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(find packages test -name node_modules -prune -o -name '*.test.ts' -print | sort)
fi
exec node --import tsx --test --test-reporter=spec "${files[@]}"
