"""benchmarks/validation_tables.py: both diameters per image, tables, marked-section rewrite."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tiny_recipes import tiny_recipe

ROOT = Path(__file__).resolve().parents[2]

RECIPE = tiny_recipe(n_images=1, n_val=2, styles=("fluorescence", "phase"))


def _script():
    path = ROOT / "benchmarks" / "validation_tables.py"
    spec = importlib.util.spec_from_file_location("validation_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def vt():
    n = torch.get_num_threads()
    yield _script()
    torch.set_num_threads(n)


def test_replace_marked_keeps_the_rest_and_needs_one_section(vt):
    text = "top\n<!-- t:begin (generated) -->\nold\nlines\n<!-- t:end -->\nbottom\n"
    new = vt.replace_marked(text, "t", "new\n")
    assert new == "top\n<!-- t:begin (generated) -->\nnew\n<!-- t:end -->\nbottom\n"
    assert vt.replace_marked(new, "t", "new") == new  # idempotent
    with pytest.raises(ValueError, match="exactly one"):
        vt.replace_marked("no markers", "t", "x")
    with pytest.raises(ValueError, match="exactly one"):
        vt.replace_marked(text + text, "t", "x")


def test_both_diameters_per_image_and_the_tables(vt, tmp_path):
    from cp2_engine.inference import Model

    (tmp_path / "tiny.toml").write_text(RECIPE)
    res = vt.evaluate_model("tiny", recipe_dir=tmp_path, model=Model.random(seed=0))
    assert len(res["images"]) == 2
    for row in res["images"]:
        assert {"ap_gt", "ap_auto", "annotated_diameter", "estimated_diameter"} <= set(row)
        assert row["annotated_diameter"] > 0
        # no size model: diameter=None falls back to the model's training diameter
        assert row["estimated_diameter"] == pytest.approx(Model.random(seed=0).diam_mean)
    assert set(res["summary_gt"]) == set(res["summary_auto"])
    assert res["diameter_error"]["all"] >= 0
    meta = {"date": "2026-01-01", "machine": "m", "commit": "c", "command": "cmd",
            "threads": 1, "seconds": 60}  # fmt: skip
    res["meta"] = meta
    table = vt.model_table(res)
    assert "| synth/fluorescence | 1 |" in table and "| **all** | 2 |" in table
    assert "| synth |" not in table  # one source: its row would repeat "all"
    # render from the JSON into marked copies of the docs
    (tmp_path / "tiny.json").write_text(json.dumps(res))
    doc, readme = tmp_path / "doc.md", tmp_path / "README.md"
    doc.write_text(
        "# t\n<!-- validation-tables:begin x -->\n<!-- validation-tables:end -->\nend\n"
    )
    readme.write_text(
        "<!-- readme-model-table:begin x -->\nSTALE\n<!-- readme-model-table:end -->\n"
    )
    vt.MODELS = ("tiny",)
    argv = ["--from-json", "--models", "tiny", "--json-dir", str(tmp_path), "--doc", str(doc),
            "--readme", str(readme)]  # fmt: skip
    assert vt.main(argv) == 0
    text = doc.read_text()
    assert text.startswith("# t\n") and text.endswith("end\n")
    assert "#### tiny" in text and "2026-01-01" in text and "`cmd`" in text
    assert "| `tiny` | **all** | 2 |" in readme.read_text() and "STALE" not in readme.read_text()


def test_gap_mark_only_when_the_estimate_loses(vt):
    def result(auto50):
        s = {"n": 1, "ap50": 0.8, "ap75": 0.5, "ap90": 0.1}
        img = {"source": "s", "type": "t", "annotated_diameter": 10.0}
        return {"summary_gt": {"s/t": s, "s": s, "all": s},
                "summary_auto": {k: dict(s, ap50=auto50) for k in ("s/t", "s", "all")},
                "images": [img], "diameter_error": {},
                "size_model_diameter_error": {}}  # fmt: skip

    assert "✗" in vt.model_table(result(0.77))
    assert "✗" not in vt.model_table(result(0.79))
    assert "✗" not in vt.model_table(result(0.85))  # the estimate doing better is no failure


def test_rendering_one_model_keeps_the_other_models_tables(vt, tmp_path):
    """Regression: `--models cp2_cyto` rewrote the docs with the cyto tables only."""

    def result(model, commit):
        s = {"n": 1, "ap50": 0.8, "ap75": 0.5, "ap90": 0.1}
        img = {"source": "s", "type": "t", "annotated_diameter": 10.0}
        meta = {"date": "2026-01-01", "machine": "m", "commit": commit,
                "command": f"cmd {model}", "threads": 1, "seconds": 60}  # fmt: skip
        return {"model": model, "max_per_type": None, "seconds_gt": 1.0, "seconds_auto": 2.0,
                "summary_gt": {"s/t": s, "s": s, "all": s},
                "summary_auto": {"s/t": s, "s": s, "all": s}, "images": [img],
                "diameter_error": {}, "size_model_diameter_error": {}, "meta": meta}  # fmt: skip

    for model, commit in (("one", "c1"), ("two", "c2")):
        (tmp_path / f"{model}.json").write_text(json.dumps(result(model, commit)))
    doc, readme = tmp_path / "doc.md", tmp_path / "README.md"
    doc.write_text("<!-- validation-tables:begin x -->\n<!-- validation-tables:end -->\n")
    readme.write_text("<!-- readme-model-table:begin x -->\n<!-- readme-model-table:end -->\n")
    vt.MODELS = ("one", "two")
    argv = ["--from-json", "--models", "two", "--json-dir", str(tmp_path), "--doc", str(doc),
            "--readme", str(readme)]  # fmt: skip
    assert vt.main(argv) == 0
    text, table = doc.read_text(), readme.read_text()
    assert text.index("#### one") < text.index("#### two")
    assert "| `one` | **all** | 1 |" in table and "| `two` | **all** | 1 |" in table
    # two runs: each model's provenance, not one line claiming both
    assert "`one`: Measured" in text and "commit c1" in text and "commit c2" in text
    assert "`cmd one`" in table and "`cmd two`" in table
