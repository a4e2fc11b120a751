#!/usr/bin/env bash
# Debian's chromium for the browser tests (Playwright for Python drives it: no browser
# download). Installs it only when missing; needs root or sudo, and Debian's apt.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "Installing Debian's chromium for the browser tests (apt-get, about a minute)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
