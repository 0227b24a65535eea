#!/usr/bin/env bash
# Mutation testing with mutmut 3 (the `mutation` extra): each module against its own test file(s),
# printing "module: killed / total (score)" per module. Usage:
#   benchmarks/mutation.sh [MODULE ...]     # e.g. schedules optim/scheduler; default: every module below
# MUTMUT_WORKERS (default 1) sets mutmut's --max-children; MUTATION_TREE another tree to copy from. Runs in a scratch copy of the working tree
# (mutmut writes a mutants/ folder and reads its config from pyproject.toml in the current folder):
# the repository's [tool.mutmut] section holds the shared settings, this script adds the module and
# its tests. KEEP=1 keeps the scratch copies (to `mutmut show <name>` a survivor there).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TREE="${MUTATION_TREE:-$ROOT}"  # the tree whose src/, tests/ and pyproject.toml are copied
MUTMUT="$(dirname "$PY")/mutmut"
WORKERS="${MUTMUT_WORKERS:-1}"
# One torch thread per test process: beside other jobs, a second thread's spin-waits made
# test_lr_finder.py take 30 s of CPU instead of 8 (load 8 on 2 cores).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

# module key | files to mutate (under src/onecycle) | test files | more pytest arguments (shell words)
TARGETS=(
  "schedules|schedules.py|tests/test_schedules.py|"
  "optim/scheduler|optim/scheduler.py|tests/test_scheduler.py|"
  "suggest|suggest.py|tests/test_suggest.py|"
  "checkpoint|checkpoint.py|tests/test_checkpoint.py|"
  "atomic|atomic.py|tests/test_atomic.py|"
  "rng|rng.py|tests/test_rng.py|"
  "weights|weights.py|tests/test_weights.py|"
  # the in-process resume tests: the SIGKILL cases fork a driver of 20+ jobs (minutes per mutant), and
  # a killed mutant leaves the one test with persistent worker processes waiting ~30 s on them
  "resume|resume.py|tests/test_resume.py|-k 'not sigkill and not resume_inexact'"
  "metrics|metrics.py|tests/test_metrics.py|"
  "checks|checks.py|tests/test_checks.py|"
  # the three fits of a random-init BERT (5-9 s each); Hugging Face batches and outputs are tested
  # directly (BatchEncoding, ModelOutput) by the unit tests kept
  "batches|batches.py|tests/test_batches.py|-k 'not hugging_face'"
  "optim/__init__|optim/__init__.py|tests/test_optim.py|"
  "optim/groups|optim/groups.py|tests/test_groups.py|"
  "optim/lars|optim/lars.py|tests/test_optim.py|"
  "optim/lamb|optim/lamb.py|tests/test_optim.py|"
  "optim/trust|optim/trust.py|tests/test_optim.py|"
  # schedule-free and Prodigy fits against hand-written loops, lr_find, the checks; left out: bit-exact
  # resume (three reference fits per optimizer, 1-4 s per mutant each: resume's and the checkpoint's) and
  # the subprocess test (no package imported by a plain fit), which cannot see a mutant
  "optim/extras|optim/extras.py|tests/test_extras.py|-k 'not resume_is_bit_identical and not imports_neither'"
  "lr_find_result|lr_find_result.py|tests/test_lr_find_result.py|"
  "evaluate|evaluate.py|tests/test_evaluate.py|"
  # lr_find inside a checkpointing fit (8 cases, 5-15 s each) is the checkpointer's interplay with the
  # finder; the loop's state is tested by lr_find from 6 hooks of a plain fit, kept (between batches,
  # epochs and validation, and after the fit). Left out: from before_fit and before_epoch (9-12 s each,
  # a state no batch has touched yet) and from before_batch and after_backward (the mid-window state
  # after_step and after_batch see too), to keep a pass under 30 s under load
  "loop|loop.py|tests/test_loop.py|-k 'not checkpointing_fit and not (any_hook and (before_fit or before_epoch or before_batch or after_backward))'"
  # the finder's plots are plots.py's (tests/test_plots.py too); the 0.7 spelling lr_find2 is legacy.py's
  # (its test draws sched.plot: 1 s of the file's 8)
  "lr_finder|lr_finder.py|tests/test_lr_finder.py|-k 'not plot and not lr_find2'"
  # the Learner's API, its training options (test_training), its argument checks, its save/load
  # (test_weights) and the batches its forward takes (test_batches, without the 3 BERT fits); left out:
  # the host-read trace of a whole fit (20 s, the loop's), a torchmetrics collection's columns (metrics'),
  # the README's fastai snippet (10 s: lr_find, its suggestion and a 5-epoch fit) and lr_find's
  # argument checks (start_lr, end_lr, num_it, div_th: lr_finder's own, which Learner.lr_find passes on);
  # and a short stream's warning (the loop's; its check of the warning's line fails under mutmut, whose
  # trampoline is the caller then)
  "learner|learner.py|tests/test_learner.py tests/test_training.py tests/test_bad_input.py tests/test_weights.py tests/test_batches.py|-k 'not no_host_reads and not metric_collection and not readme_coming_from_fastai and not test_lr_find_ and not stream_shorter_than_steps and not hugging_face'"
  "recorder|recorder.py|tests/test_recorder.py|"
)

[[ -x "$MUTMUT" ]] || { echo "mutmut not found at $MUTMUT: pip install -e '.[mutation]'" >&2; exit 2; }

SELECTED=("$@")
wanted() {  # is target $1 selected on the command line (none given: all)?
  (( ${#SELECTED[@]} == 0 )) && return 0
  local t
  for t in "${SELECTED[@]}"; do [[ "$t" == "$1" ]] && return 0; done
  return 1
}

run_one() {  # key, files, tests, more pytest arguments
  local key="$1" files="$2" tests="$3" args="$4" f
  for f in $tests; do
    if [[ ! -f "$TREE/$f" ]]; then echo "$key: skipped ($f does not exist yet)"; return 0; fi
  done
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/onecycle-mutation.XXXXXX")"
  cp -r "$TREE/src" "$TREE/tests" "$TREE/pyproject.toml" "$work/"
  find "$work" -name __pycache__ -prune -exec rm -rf {} +
  # The first optimizer a process builds imports torch's compiler (torch.optim does it lazily: ~3 s);
  # built once at collection, it happens in mutmut's fork server, not again in every mutant's process.
  printf '\n\n# added by benchmarks/mutation.sh (scratch copy only): the lazy import, once in the fork server\n%s\n' \
    'torch.optim.SGD([torch.zeros(1, requires_grad=True)])' >>"$work/tests/conftest.py"
  # the module and its tests go into the [tool.mutmut] table, right under its header
  "$PY" - "$work/pyproject.toml" "$files" "$tests" "$args" <<'PYEOF'
import json, shlex, sys, tomllib
path, files, tests = sys.argv[1], sys.argv[2].split(), sys.argv[3].split() + shlex.split(sys.argv[4])
text = open(path).read()
assert "mutmut" in tomllib.loads(text).get("tool", {}), "pyproject.toml has no [tool.mutmut] section"
extra = (f"only_mutate = {json.dumps(['src/onecycle/' + f for f in files])}\n"
         f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n")
text = text.replace("[tool.mutmut]\n", "[tool.mutmut]\n" + extra, 1)
tomllib.loads(text)  # still valid
open(path, "w").write(text)
PYEOF
  echo "== $key: mutating $files against $tests $args (in $work)" >&2
  (cd "$work" && "$MUTMUT" run --max-children "$WORKERS" >"$work/mutmut.log" 2>&1) || {
    echo "$key: mutmut failed, see the end of its log:" >&2; tail -n 30 "$work/mutmut.log" >&2; return 1; }
  (cd "$work" && "$MUTMUT" export-cicd-stats >/dev/null && "$MUTMUT" results >"$work/survivors.txt")
  "$PY" - "$key" "$work/mutants/mutmut-cicd-stats.json" <<'PYEOF'
import json, sys
key, s = sys.argv[1], json.load(open(sys.argv[2]))
total = s["total"] - s["skipped"]
killed = s["killed"] + s["timeout"]
print(f"{key}: {killed} / {total} killed ({100 * killed / max(total, 1):.1f}%); survived {s['survived']}, "
      f"no tests {s['no_tests']}, suspicious {s['suspicious']}, timeout {s['timeout']}")
PYEOF
  sed 's/^/    /' "$work/survivors.txt"
  [[ "${KEEP:-0}" == 1 ]] || rm -rf "$work"
}

status=0
for t in "${TARGETS[@]}"; do
  IFS='|' read -r key files tests args <<<"$t"
  if wanted "$key"; then run_one "$key" "$files" "$tests" "$args" || status=1; fi
done
exit $status
