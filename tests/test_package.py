"""The package's shape: no import cycles among its modules, no private torch names in it, the
fastai 0.7 spellings in one module, the public API importable."""

import ast
import pathlib
import re
import subprocess
import sys

import onecycle as oc
from onecycle import legacy

SRC = pathlib.Path(oc.__file__).parent


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(name, path, top_level=False):
    """Package modules ``name`` imports, lazily or not (``top_level``: at import time only), outside
    ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in (tree.body if top_level else ast.walk(tree)):
        if id(node) in skip or not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
        yield target
        yield from (f"{target}.{alias.name}" for alias in node.names)


def _graph():
    mods = dict(_modules())
    graph = {}
    for name, path in mods.items():
        # a package's __init__ re-exports its modules: importing one of them runs it, not a cycle
        graph[name] = {t for t in _imports(name, path) if t in mods and t != name and not name.startswith(t + ".")}
    return graph


def _cycle(graph):
    """One import cycle (a list of module names), or None."""
    state = {}

    def visit(n, stack):
        state[n] = "open"
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m, stack + [m])):
                return found
        state[n] = "done"
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n, [n])):
            return found
    return None


def test_no_import_cycles():
    graph = _graph()
    assert _cycle(graph) is None
    # the layering the design names: the loop sits above the finder, recording below plotting
    assert "onecycle.lr_finder" in graph["onecycle.learner"] and "onecycle.learner" not in graph["onecycle.lr_finder"]
    assert "onecycle.plots" not in graph["onecycle.learner"] and "onecycle.recorder" not in graph["onecycle.plots"]


# The command line and its outputs: run folders, reports, grids. Nothing else imports them.
CLI_LAYER = {"onecycle.cli", "onecycle.__main__", "onecycle.runconfig", "onecycle.rungrid", "onecycle.runs",
             "onecycle.runbuild", "onecycle.rundir", "onecycle.run_callbacks", "onecycle.compare",
             "onecycle.compare_report", "onecycle.compare_table", "onecycle.report", "onecycle.htmlpage",
             "onecycle.cell", "onecycle.pool", "onecycle.gridstatus"}


# The explicit ``.plot()`` conveniences, the only modules below the output layer that import plots (lazily).
PLOT_CONVENIENCES = ("onecycle.recorder", "onecycle.lr_find_result", "onecycle.compat.torch_lr_finder")


def test_layers_point_down():
    """The leaves import only ``checks`` (metrics also ``batches``); the file layers stack atomic <
    checkpoint < weights; no module below the command line imports it, plots or an integration."""
    graph = _graph()
    leaves = {"onecycle.checks": set(), "onecycle.batches": set(), "onecycle.rng": set(),
              "onecycle.data": {"onecycle.checks"}, "onecycle.suggest": {"onecycle.checks", "onecycle.smoothing"},
              "onecycle.smoothing": set(),
              "onecycle.schedules": {"onecycle.checks", "onecycle.warmup"}, "onecycle.warmup": {"onecycle.checks"},
              "onecycle.models": {"onecycle.checks"},
              "onecycle.atomic": {"onecycle.checks"}, "onecycle.metrics": {"onecycle.batches", "onecycle.checks"},
              "onecycle.checkpoint": {"onecycle.atomic", "onecycle.checks"},
              "onecycle.weights": {"onecycle.atomic", "onecycle.checkpoint", "onecycle.checks"}}
    for name, allowed in leaves.items():
        assert graph[name] <= allowed, (name, graph[name] - allowed)
    edge = ("onecycle.plots", "onecycle.integrations")
    core = [n for n in graph if n not in CLI_LAYER and not n.startswith(edge)]
    assert "onecycle.learner" in core and "onecycle.tasks" in core
    for name in core:
        up = {d for d in graph[name] if d in CLI_LAYER or (d.startswith(edge) and name not in PLOT_CONVENIENCES)}
        assert not up, (name, up)


def _importers(target, graph):
    """Modules (outside ``target``'s own package) that import ``target`` or one of its submodules."""
    return {n for n, deps in graph.items() if not (n + ".").startswith(target + ".")
            and any((d + ".").startswith(target + ".") for d in deps)}


def test_plotting_stays_at_the_edges():
    """matplotlib is imported in onecycle.plots only; plots is imported by the output layer (reports)
    and by the explicit ``.plot()`` conveniences, always lazily (inside the function), so training,
    the finder and its summary never load it."""
    mods = dict(_modules())
    uses_mpl = {name for name, path in mods.items() for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Import | ast.ImportFrom)
                and any((m or "").split(".")[0] == "matplotlib"
                        for m in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]))}
    assert uses_mpl and all(n.startswith("onecycle.plots.") for n in uses_mpl), uses_mpl
    graph = _graph()
    assert _importers("onecycle.plots", graph) == {*PLOT_CONVENIENCES, "onecycle.report", "onecycle.compare_report"}
    at_import = {name for name, path in mods.items() if not name.startswith("onecycle.plots")
                 and any((t + ".").startswith("onecycle.plots.") for t in _imports(name, path, top_level=True))}
    assert at_import == set(), at_import
    for leaf in ("onecycle.suggest", "onecycle.metrics", "onecycle.data", "onecycle.schedules", "onecycle.checks"):
        assert not any(d.startswith(("onecycle.plots", "onecycle.report", "onecycle.cli")) for d in graph[leaf]), leaf
    assert _importers("onecycle.plots", {"a": {"onecycle.plots.finder"}, "onecycle.plots.x": {"onecycle.plots"}}) \
        == {"a"}  # negative control: the helper sees a submodule import and skips the package itself


def test_the_finder_summary_loads_no_plotting():
    code = ("import sys\nfrom onecycle.lr_find_result import LRFindResult\n"
            "r = LRFindResult(lrs=[1e-3, 1e-2], group_lrs=[[1e-3, 1e-2]], losses=[1.0, 0.5], smooth_losses=[1.0, 0.7],"
            " suggestions={'valley': 1e-2}, suggestion=1e-2, rule='valley', stop_reason='completed', num_it=2)\n"
            "assert 'valley' in r.summary() and r.outcome == 'ran all 2 steps, up to LR 0.01', r.summary()\n"
            "print(sorted(m for m in sys.modules if m.startswith(('onecycle.plots', 'matplotlib'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cycle_check_finds_a_cycle():  # negative control
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


PRIVATE = re.compile(r"torch\._(?!_|foreach_)\w+|\b_optimizer_step_\w+|__wrapped__|__code__|_global_optimizer_\w+"
                     r"|\._profiler|\bnn\.modules\.\w+\._\w+|\bf_code\b|\bco_filename\b|\b_getframe\b")


def test_no_private_torch_names():
    """torch's ``_foreach_*`` kernels inside optimizers are the accepted exception (torch and timm
    use them); nothing else private: it breaks on the next torch release."""
    found = [f"{path.name}:{i}: {m.group()}" for _, path in _modules()
             for i, line in enumerate(path.read_text().splitlines(), 1) for m in PRIVATE.finditer(line)]
    assert found == []
    # the exception is for optimizers only: not in callbacks, hooks or the loop
    foreach = [name for name, path in _modules() if "torch._foreach_" in path.read_text()]
    assert set(foreach) <= {"onecycle.optim.lars", "onecycle.optim.lamb", "onecycle.optim.trust"}, foreach
    assert PRIVATE.search("x = torch._C._foo") and not PRIVATE.search("torch._foreach_mul_(a, 2)")
    assert PRIVATE.search("isinstance(m, nn.modules.batchnorm._BatchNorm)") and not PRIVATE.search("nn.BatchNorm1d")
    assert PRIVATE.search("frame.f_code.co_filename") and not PRIVATE.search("traceback.extract_stack()[-1].filename")


def test_fastai_07_spellings_live_in_legacy_only():
    """``oc.Learner`` is legacy's: the core classes carry no fastai 0.7 name or base class, and the loop
    holds no 0.7 state."""
    from onecycle import learner, loop, lr_find_result, recorder
    assert oc.Learner is legacy.Learner and oc.Learner.__bases__ == (learner.Learner,)
    for core in (learner.Learner, recorder.Recorder, lr_find_result.LRFindResult, loop.Loop):
        assert core.__bases__ == (object,), core
        assert not {"fit", "lr_find2", "sched", "opt_fn", "rec_metrics", "_sched"} & set(dir(core)), core
    spellings = {"use_clr_beta", "lr_find2", "stop_dv", "opt_fn", "rec_metrics"}
    for name, path in _modules():
        if name == "onecycle.legacy":
            continue
        text = path.read_text()
        tree = ast.parse(text)
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg | ast.keyword)}
        assert not names & spellings, f"{name} uses the fastai 0.7 names {names & spellings}"
        lines = text.splitlines()
        for i, line in enumerate(lines):  # a docstring that names one says it is fastai 0.7's
            if any(re.search(rf"\b{s}\b", line) for s in spellings) or re.search(r"learn\.sched\b", line):
                assert "fastai 0.7" in lines[i - 1] + line, f"{name}:{i + 1}: {line.strip()}"
