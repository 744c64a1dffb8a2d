"""Every notebook in notebooks/ runs top to bottom, and is committed without stale outputs."""

import os
import pathlib

import nbformat
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
  assert NOTEBOOKS, f"no notebooks found in {REPO_ROOT / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_without_outputs(path):
  nb = nbformat.read(path, as_version=4)
  stale = [i for i, cell in enumerate(nb.cells)
           if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
  assert not stale, (f"{path.name}: code cells {stale} carry outputs or execution counts; clear "
                     "them before committing (e.g. jupyter nbconvert --clear-output --inplace).")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_runs_top_to_bottom(path, tmp_path, monkeypatch):
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top
  from nbclient.exceptions import CellExecutionError  # pylint: disable=g-import-not-at-top

  monkeypatch.setenv("MPLBACKEND", "Agg")
  pythonpath = os.environ.get("PYTHONPATH")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), pythonpath])))
  nb = nbformat.read(path, as_version=4)
  client = NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}})
  try:
    client.execute()
  except CellExecutionError as error:
    pytest.fail(f"{path.name} failed in a cell:\n{error}", pytrace=False)
