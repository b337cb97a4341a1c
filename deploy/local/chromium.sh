#!/usr/bin/env bash
# Headless Chromium and its WebDriver (Debian packages `chromium`, `chromium-driver`, installed
# if missing), for the browser test of the HTML report (tests/e2e/test_report_browser.py) and
# the screenshot in docs/img/report.png.
#
#   deploy/local/chromium.sh install|status
set -euo pipefail

log() { printf 'chromium.sh: %s\n' "$*" >&2; }

install() {
  if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then return 0; fi
  log "installing Debian's chromium and chromium-driver packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
}

case "${1:-}" in
  install) install ;;
  status)
    if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then /usr/bin/chromium --version; else echo missing; exit 3; fi
    ;;
  *) echo "usage: $0 install|status" >&2; exit 2 ;;
esac
