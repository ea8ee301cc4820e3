#!/usr/bin/env bash
# Mutation testing of the maths core with mutmut (pinned in requirements.txt), one module at a time.
#
#   scripts/mutation.sh                  # every module below, in order
#   scripts/mutation.sh layers metrics   # only these
#   MUTANTS='*_flipout__* *_local__*' scripts/mutation.sh layers   # only the mutants matching these names
#
# Each module is mutated in its own scratch copy of the repo (.mutation/<module>/, ignored by git):
# mutmut 3 reads its settings from ./pyproject.toml, so the copy's pyproject gets a [tool.mutmut]
# section naming the one file to mutate and the few fast test files that cover it. mutmut then
# runs, for each mutant, only those tests that call the mutated function. Results per module:
# `cd .mutation/<module> && mutmut results` (survivors) and `mutmut show <name>` (a diff).
# Not part of CI (too slow); docs/testing.md lists the survivors of the last run and why each is
# equivalent or accepted. Environment: PYTHON (default .venv/bin/python), JOBS (default: CPU count),
# MUTANTS (mutmut name patterns, fnmatch: run only the matching mutants of each module named).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
MUTMUT="$(cd "$(dirname "$PYTHON")" && pwd)/mutmut"  # absolute: mutmut runs inside the scratch copy
JOBS=${JOBS:-$(nproc)}

# module -> "file to mutate|fast tests that cover it[|pytest -k expression]"
declare -A MODULES=(
  [priors]="lightning_bnn/nn/priors.py|tests/test_priors.py"
  [posterior]="lightning_bnn/nn/posterior.py|tests/test_priors.py tests/test_fast_paths.py tests/test_layers.py tests/test_mixture_kl.py"
  [layers]="lightning_bnn/nn/layers.py|tests/test_layers.py tests/test_fast_paths.py tests/test_convert.py tests/test_precision.py"  # folded layers; autocast
  [fused]="lightning_bnn/nn/fused.py|tests/test_fast_paths.py tests/test_mixture_kl.py"
  [mixture_kl]="lightning_bnn/nn/mixture_kl.py|tests/test_mixture_kl.py"
  [objectives]="lightning_bnn/training/objectives.py|tests/test_objectives.py"
  [metrics]="lightning_bnn/evaluation/metrics.py|tests/test_metrics.py"
  [predictive]="lightning_bnn/nn/predictive.py|tests/test_predictive.py tests/test_metrics.py tests/test_models.py"
  [likelihoods]="lightning_bnn/nn/likelihoods.py|tests/test_likelihoods.py tests/test_objectives.py tests/test_models.py"
  [prune]="lightning_bnn/evaluation/prune.py|tests/test_prune.py|not command"  # the command test trains a model
  [inputs]="dashboard/inputs.py|tests/dashboard/test_inputs.py tests/reliability/test_dashboard_inputs.py"
)
ORDER=(priors posterior layers fused mixture_kl objectives metrics predictive likelihoods prune inputs)
[ $# -gt 0 ] && ORDER=("$@")

toml_list() { local out="" item; for item in "$@"; do out+="\"$item\", "; done; echo "[${out%, }]"; }

summary=()
for module in "${ORDER[@]}"; do
  spec=${MODULES[$module]:-}
  [ -n "$spec" ] || { echo "unknown module '$module'; known: ${!MODULES[*]}" >&2; exit 2; }
  IFS='|' read -r file test_list select <<< "$spec"
  read -r -a tests <<< "$test_list"
  extra_args=""
  [ -n "$select" ] && extra_args=", \"-k\", \"$select\""
  existing=()
  for t in "${tests[@]}"; do [ -e "$t" ] && existing+=("$t"); done
  work=.mutation/$module
  rm -rf "$work" && mkdir -p "$work"
  tar --exclude=__pycache__ -cf - lightning_bnn dashboard tests pyproject.toml | tar -xf - -C "$work"
  cat >> "$work/pyproject.toml" <<TOML

[tool.mutmut]
source_paths = ["lightning_bnn", "dashboard"]
only_mutate = ["$file"]
pytest_add_cli_args_test_selection = $(toml_list "${existing[@]}")
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-m", "not slow and not browser"$extra_args]
process_isolation = "forkserver"
# mutmut's wall-clock limit per mutant is (tests' time + timeout_constant) x 15; with the default constant
# (1 s), a shared machine's load made 89 of prune's 346 mutants "time out" at commit 56d42fa (one of them,
# run by hand, fails its test in 0.03 s): 10 s gives each mutant at least 150 s.
timeout_constant = 10.0
TOML
  echo "== $module: $file; tests: ${existing[*]}"
  start=$SECONDS
  read -r -a patterns <<< "${MUTANTS:-}"
  (cd "$work" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$MUTMUT" run --max-children "$JOBS" "${patterns[@]}" > run.log 2>&1) \
    || echo "   mutmut exited with $? (see $work/run.log)"
  (cd "$work" && "$MUTMUT" results --all true > results.txt 2>&1) || true
  counts=$(awk -F': ' 'NF==2 {n[$2]++} END {for (s in n) printf "%s=%d ", s, n[s]}' "$work/results.txt")
  summary+=("$(printf '%-12s %4ds  %s' "$module" $((SECONDS - start)) "$counts")")
  echo "   ${summary[-1]}"
  (cd "$work" && "$MUTMUT" results 2>/dev/null | sed 's/^/   /') || true
done
echo
echo "module        time   mutants by status"
printf '%s\n' "${summary[@]}"
