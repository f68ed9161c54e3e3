#!/usr/bin/env bash
# Installs the external parts that rulelock's tests use for real.
# Locally a part that cannot be installed makes its tests skip loudly;
# with CI=true those tests fail instead (see internal/testenv).
set -uo pipefail

need_apt=()
# (each external part adds its package here: see the audit log's SoftHSM2 tests)
command -v softhsm2-util >/dev/null || need_apt+=(softhsm2) # internal/hsm: PKCS#11 signing
command -v curl >/dev/null || need_apt+=(curl)                # cmd/rulelock: the README walk-through uses curl
command -v npm >/dev/null || need_apt+=(nodejs npm)           # cmd/rulelock: the MCP end-to-end tests (testdata/mcp); internal/console: vendored htmx
# internal/pglog: a throwaway PostgreSQL cluster (internal/pgtest); Debian keeps initdb off the PATH
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v chromium >/dev/null || need_apt+=(chromium)        # cmd/rulelock, internal/console: the console in a real browser (chromedp)
command -v swtpm >/dev/null || need_apt+=(swtpm swtpm-tools)  # internal/attest: a real software TPM 2.0 (internal/attest/swtpmtest)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${need_apt[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}") >/dev/null \
      || echo "setup: apt-get install ${need_apt[*]} failed" >&2
  else
    echo "setup: cannot install ${need_apt[*]} (not root or no apt-get); their tests will skip locally and fail under CI=true" >&2
  fi
fi

# The npm parts, exactly as each package-lock.json pins them: the MCP
# end-to-end tests' servers and clients, and the console's vendored htmx
# (TestVendoredHTMX compares it with internal/console/static/htmx.min.js).
if command -v npm >/dev/null; then
  for dir in testdata/mcp internal/console/web; do
    lock=$dir/package-lock.json
    stamp=$dir/node_modules/.rulelock-lock.sha256
    want=$(sha256sum "$lock" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
      echo "setup: npm ci in $dir"
      if (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
        echo "$want" >"$stamp"
      else
        echo "setup: npm ci in $dir failed; the tests that use it will skip locally and fail under CI=true" >&2
      fi
    fi
  done
fi
exit 0
