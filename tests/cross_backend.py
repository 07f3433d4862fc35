"""One set of interpreters for all the cross-backend tests.

Each cross-backend test (a "payload") saves models under one backend and loads them under the others, each step
in a fresh interpreter; every interpreter pays the imports of Keras, skinkeras and its backend (TensorFlow ~10 s)
before any work. Here the payloads' steps share interpreters instead: one per phase, torch, jax, tensorflow, then
torch again, each running every payload's step for that backend, in order, each in its own namespace (its code
verbatim, `sys.argv` its own) after `keras.backend.clear_session()` (layer names and seeds as in a fresh
interpreter). A test module registers its payload's plan with `@payload`; the test then asserts on the folder
that the `cross_backend_runs` fixture (tests/conftest.py) returns for its `__name__`, which raises, naming the
payload and backend, where a step failed (that payload's later steps are then not run; the others' go on).
Only the payloads of the selected tests run.
"""

import json

from conftest import installed_backends, run_python

# The interpreters, in order; a payload's steps go to the first phase of their backend after its previous step.
PHASES = ("torch", "jax", "tensorflow", "torch")

PLANS = {}  # module name -> plan(folder, backends): [(backend, code)], [] when its test skips


def payload(plan):
    """Registers `plan(folder, backends)` as the steps of its module's test: [(backend, code)], in order."""
    PLANS[plan.__module__] = plan
    return plan


DRIVER = """
import json, linecache, sys, time, traceback
import keras
jobs = json.loads(open({jobs!r}).read())
for label, code in jobs:
    print(f"[cross-backend] {{label}} under {{keras.backend.backend()}}", file=sys.stderr, flush=True)
    keras.backend.clear_session()
    filename = f"<{{label}}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    argv, error, start = list(sys.argv), None, time.time()
    try:
        exec(compile(code, filename, "exec"), {{"__name__": "__main__"}})
    except BaseException:
        error = traceback.format_exc()
        print(error, file=sys.stderr, flush=True)
    sys.argv = argv
    with open({status!r}, "a") as f:
        f.write(json.dumps({{"label": label, "error": error, "seconds": time.time() - start}}) + "\\n")
"""


def schedule(plans):
    """{label: [(backend, code)]} -> [(backend, [(label, code)])] per phase (extra phases where one would not fit)."""
    phases = [(backend, []) for backend in PHASES]
    for label, steps in plans.items():
        at = -1
        for backend, code in steps:
            at = next((i for i in range(at + 1, len(phases)) if phases[i][0] == backend), None)
            if at is None:
                phases.append((backend, []))
                at = len(phases) - 1
            phases[at][1].append((label, code))
    return [(backend, jobs) for backend, jobs in phases if jobs]


class Runs:
    """Runs the selected tests' payloads at first use; `runs(module)` -> that payload's folder (raises if failed)."""

    def __init__(self, session, tmp_path_factory):
        self.session, self.tmp_path_factory = session, tmp_path_factory
        self.folders, self.errors = None, {}

    def __call__(self, module):
        if self.folders is None:
            self.run()
        if module not in self.folders:
            raise AssertionError(f"{module} registered no cross-backend payload (or its plan is empty)")
        if module in self.errors:
            raise AssertionError(self.errors[module])
        return self.folders[module]

    def run(self):
        selected = {item.module.__name__ for item in self.session.items
                    if "cross_backend_runs" in getattr(item, "fixturenames", ()) and getattr(item, "module", None)}
        backends = installed_backends()
        self.folders, plans = {}, {}
        for module in sorted(selected & PLANS.keys()):
            folder = self.tmp_path_factory.mktemp(module.rsplit(".", 1)[-1])
            steps = PLANS[module](str(folder), backends)
            if steps:
                self.folders[module], plans[module] = folder, steps
        work = self.tmp_path_factory.mktemp("cross-backend-runs")
        for i, (backend, jobs) in enumerate(schedule(plans)):
            jobs = [(label, code) for label, code in jobs if label not in self.errors]
            if not jobs:
                continue
            jobs_file, status_file = work / f"phase{i}-{backend}.json", work / f"phase{i}-{backend}.status"
            jobs_file.write_text(json.dumps(jobs))
            failure = None
            try:
                run_python(DRIVER.format(jobs=str(jobs_file), status=str(status_file)), backend,
                           timeout=900 * len(jobs))
            except Exception as e:  # the interpreter died (or timed out): the steps it did not finish fail
                failure = e
            done = {}
            if status_file.exists():
                done = {r["label"]: r["error"] for r in map(json.loads, status_file.read_text().splitlines())}
            for label, _ in jobs:
                if label not in done:
                    self.errors[label] = (f"cross-backend payload {label} under {backend} did not finish "
                                          f"(interpreter shared with {[j for j, _ in jobs]}):\n{failure}")
                elif done[label] is not None:
                    self.errors[label] = f"cross-backend payload {label} failed under {backend}:\n{done[label]}"

