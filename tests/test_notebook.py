"""examples/quickstart.ipynb executed on a real IPython kernel (nbclient): the finder's and the fit's
progress are HTML updated in place (no carriage-return text), the finder's result reads as text, and
each plot appears once, as a picture."""

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")  # the dev extra
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


@pytest.fixture(scope="module")
def executed():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return {c.source.splitlines()[0]: c.outputs for c in nb.cells if c.cell_type == "code"}


def _html(outputs):
    return [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]


def _text(outputs):
    return "".join(o.text for o in outputs if o.output_type == "stream")


def test_progress_is_html_and_the_finder_reads_as_text(executed):
    finder = executed["res = learn.lr_find(num_it=60)"]
    (bar,) = _html(finder)  # one display, updated in place while it ran
    assert "<progress" in bar and " of 60 steps" in bar
    text = _text(finder)
    assert text.startswith("LR finder: ") and "<- suggestion" in text and "  1cycle range: " in text
    fit = executed["learn.fit_one_cycle(3)"]
    (view,) = _html(fit)
    assert "<progress" in view and view.count("<tr>") == 4 and "%</td>" in view  # the table: header, 3 epochs
    assert _text(fit) == ""  # no text table, no bar drawn with carriage returns
    assert fit[-1]["data"]["text/plain"].startswith("Recorder(3 epochs")
    assert not any("\r" in o.get("text", "") for outputs in executed.values() for o in outputs)


@pytest.mark.parametrize("cell", ["res.plot()", 'learn.recorder.plot_dashboard(momentum_label="beta1")'])
def test_each_plot_appears_once_as_a_picture(executed, cell):
    (out,) = executed[cell]  # one output, not the Figure's text and then a second image from pyplot
    assert out.output_type == "execute_result" and out.data["image/png"]
    assert out.metadata["image/png"]["width"] == 1100
