#!/usr/bin/env bash
# Make sure a headless-capable Chromium is installed, so the report test can open the HTML
# report in a real browser (tests/export/test_report.py). Quiet and idempotent when present.
set -euo pipefail

have_chromium() {
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
        || command -v google-chrome >/dev/null 2>&1
}

if have_chromium; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    cat >&2 <<'MSG'
ensure-chromium: no Chromium found (looked for chromium, chromium-browser, google-chrome on PATH).
The report test opens the HTML report in headless Chromium. Install it, then run `make test` again:
    Debian/Ubuntu:  sudo apt-get install -y chromium
    Fedora/RHEL:    sudo dnf install -y chromium
    macOS:          brew install --cask chromium
MSG
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no Chromium found and no apt-get to install it; install Chromium" \
        "and put it on PATH." >&2
    exit 1
fi

echo "ensure-chromium: installing Chromium (apt-get install chromium)..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null

if ! have_chromium; then
    echo "ensure-chromium: apt-get installed chromium but no chromium binary is on PATH." >&2
    exit 1
fi
echo "ensure-chromium: installed." >&2
