#!/usr/bin/env bash
# Headless Chromium for the HTML report's screenshot test (Debian package; skipped if it fails).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed: the report screenshot test will be skipped"
fi
exit 0
