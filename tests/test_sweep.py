"""`minitune sweep`: a notebook run over a parameter grid with papermill, its results joined."""

import csv
import json

import nbformat
import pytest

from minitune.cli import main
from minitune.tools.sweep import grid, markdown_table, parse_param, run_name


def test_parse_param_splits_outside_brackets_and_reads_literals():
    assert parse_param("guidance_scales=[1.0],[3.0],[6.0]") == ("guidance_scales", [[1.0], [3.0], [6.0]])
    assert parse_param("g=[1.0, 3.0],[6.0]") == ("g", [[1.0, 3.0], [6.0]])
    assert parse_param("model=toy,tiny-sd,'a,b'") == ("model", ["toy", "tiny-sd", "a,b"])
    assert parse_param("n=4,8") == ("n", [4, 8]) and parse_param("flag=true") == ("flag", [True])
    for bad in ("novalue", "=1,2", "n=1,,2", "2n=1"):
        with pytest.raises(ValueError, match="--param"):
            parse_param(bad)


def test_grid_and_run_names():
    runs = grid({"a": [1, 2], "b": ["x", [1.5]]})
    assert runs == [{"a": 1, "b": "x"}, {"a": 1, "b": [1.5]}, {"a": 2, "b": "x"}, {"a": 2, "b": [1.5]}]
    assert run_name(1, runs[1]) == "001-a-1-b-1.5"
    assert markdown_table([{"a": 1, "s": 0.123456}, {"b": "x"}]).splitlines()[2] == "| 1 | 0.1235 |  |"


def _notebook(path):
    """A notebook with a parameters cell that writes one results row per call (and counts its runs)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('scale = [1.0]\nlabel = "a"\noutput_dir = "outputs"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import json, pathlib\n"
        "out = pathlib.Path(output_dir)\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'count.txt').open('a').write('x')\n"
        "s = scale[0]\n"
        "(out / 'results.json').write_text(json.dumps([{'s': s, 'label': label, 'score': 2 * s, "
        "'score_lo': 2 * s - 1, 'score_hi': 2 * s + 1}]))")]
    nbformat.write(nb, path)
    return path


def test_sweep_runs_each_setting_writes_table_and_figure_and_resumes(tmp_path, capsys):
    nb = _notebook(tmp_path / "trivial.ipynb")
    out = tmp_path / "sweep"
    args = ["sweep", str(nb), "--param", "scale=[1.0],[3.0],[6.0]", "--param", "label=b", "--output-dir", str(out),
            "--metric", "score"]
    assert main(args) == 0
    assert "sweep.md" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [float(r["score"]) for r in rows] == [2.0, 6.0, 12.0]
    assert [r["scale"] for r in rows] == ["[1.0]", "[3.0]", "[6.0]"] and {r["label"] for r in rows} == {"b"}
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["000-scale-1.0-label-b", "001-scale-3.0-label-b", "002-scale-6.0-label-b"]
    for run in runs:
        assert (run / "trivial.ipynb").is_file() and (run / "count.txt").read_text() == "x"
        executed = json.dumps(nbformat.read(run / "trivial.ipynb", as_version=4).cells[1].source)
        assert str(run.resolve()) in executed  # papermill injected this run's output_dir
    table = (out / "sweep.md").read_text()
    assert table.count("\n| 00") == 3 and "| 12 |" in table
    assert (out / "sweep.png").stat().st_size > 1000
    assert main(args) == 0  # finished runs are not executed again
    assert all((run / "count.txt").read_text() == "x" for run in runs)


def test_sweep_bad_input_is_one_sentence(tmp_path, capsys):
    nb = _notebook(tmp_path / "trivial.ipynb")
    assert main(["sweep", str(nb), "--param", "nope=1,2", "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no parameter nope" in err and err.count("\n") == 1
    assert main(["sweep", str(tmp_path / "missing.ipynb"), "--param", "scale=1", "--output-dir", str(tmp_path / "o")]) == 2
    assert "no notebook" in capsys.readouterr().err
    assert main(["sweep", str(nb), "--param", "scale=[1.0]", "--output-dir", str(tmp_path / "o"), "--metric", "x"]) == 2
    assert "no column 'x'" in capsys.readouterr().err
