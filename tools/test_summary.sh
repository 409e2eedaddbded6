#!/usr/bin/env bash
# Prints the closing line of `make test` from Criterion's JSON report: passed, failed and skipped
# (Criterion's own summary leaves skips out), then why each skipped test skipped. Fails when
# ../shared is present and a test that needs it skipped anyway: that means a broken path, not a
# missing file.
#   usage: tools/test_summary.sh REPORT.json
set -euo pipefail
report=${1:?usage: test_summary.sh REPORT.json}
[ -s "$report" ] || { echo "tests: no report at $report (the test binary did not finish)" >&2; exit 1; }
count() { grep -m1 "^  \"$1\": " "$report" | tr -dc 0-9; }
passed=$(count passed) failed=$(count failed) errored=$(count errored) skipped=$(count skipped)
# "suite/test: message" for every skipped test (the report lists name, status, messages in order).
skips=$(awk '
  /^      "name": /      { s = $0; sub(/^ *"name": "/, "", s); sub(/",?$/, "", s); suite = s }
  /^          "name": /  { t = $0; sub(/^ *"name": "/, "", t); sub(/",?$/, "", t) }
  /"status": "SKIPPED"/  { skip = 1 }
  /"messages": / && skip { m = $0; sub(/^ *"messages": \[/, "", m); sub(/\],?$/, "", m);
                           print suite "/" t ": " m; skip = 0 }' "$report")
echo "tests: ${passed:-0} passed, $(( ${failed:-0} + ${errored:-0} )) failed, ${skipped:-0} skipped"
[ -n "$skips" ] && printf '%s\n' "$skips" | sed 's/^/  skipped: /'
if [ -d ../shared ] && printf '%s\n' "$skips" | grep -q '\.\./shared/'; then
  echo "tests: ../shared is present but tests that need it skipped (see above)" >&2
  exit 1
fi
exit 0
