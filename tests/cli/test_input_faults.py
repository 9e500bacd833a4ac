"""Run safety on the inputs side (issue #13): predict / evaluate / export / data builtin on bad input.

Each test asserts the exit code, that every error is ONE line naming the file, that no traceback is
printed, and that nothing good was lost (good files after a bad one, user files, earlier outputs).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli import app

runner = CliRunner()

TINY = [
    "data.size=[64,64]",
    "data.batch_size=8",
    "model.name=unet",
    "model.kwargs={features: [4, 8, 8, 16, 16, 4]}",
    "loss.terms=[{loss: dice_ce, output: logits, kwargs: {ce_weight: 0.5, dice_weight: 0.5}}]",
    "trainer.max_epochs=1",
    "trainer.max_time_s=null",
    "trainer.progress=false",
    "trainer.overlays=0",
]
VOLUME_EVAL = ["--set", "data.format=nnunet_raw", "--set", "eval.protocol=volume", "--set", "data.normalize={kind: unit}"]


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def error_lines(output: str) -> list[str]:
    """The ``error: ...`` lines; also checks no traceback was printed."""
    assert "Traceback" not in output, output
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


def one_error(res, needle: str, code: int = 2) -> None:
    """Exit ``code`` with exactly one error line, naming ``needle``."""
    assert res.exit_code == code, res.output
    lines = error_lines(res.output)
    assert len(lines) == 1 and needle in lines[0], res.output


@pytest.fixture(scope="module")
def ct_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "ct"
    res = invoke("data", "builtin", "phantom-ct", "--out", out, "--seed", "3", "--count", "12")
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def run_dir(ct_data, tmp_path_factory) -> Path:
    """A tiny one-epoch run, trained under umask 022."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    args = ["train", "--data", ct_data, "--out", out]
    for s in TINY:
        args += ["--set", s]
    old = os.umask(0o022)
    try:
        res = invoke(*args)
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    return out


def _nifti(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return path


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((32, 32, 3)).astype(np.float32)


def _volume_data(root: Path, labels: dict[str, np.ndarray | None] | None = None, images: dict | None = None) -> Path:
    """An nnU-Net raw folder with cases c1..c3 (random images, empty labels), with replacements."""
    for case in ("c1", "c2", "c3"):
        _nifti((images or {}).get(case, _volume()), root / "imagesTr" / f"{case}_0000.nii.gz")
        _nifti((labels or {}).get(case, np.zeros((32, 32, 3), np.uint8)), root / "labelsTr" / f"{case}.nii.gz")
    return root


def _read_only_dir(tmp_path: Path) -> Path:
    """A folder nobody may write into: chmod 555 (non-root), or sysfs (root ignores file modes)."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    if not os.path.isdir("/sys/kernel"):
        pytest.skip("running as root and no read-only /sys/kernel to write into")
    return Path("/sys/kernel")


# -- 1. predict / evaluate go on past bad files ----------------------------------------------------
def test_predict_goes_on_past_a_bad_file_and_lists_it(run_dir, ct_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    images = sorted((ct_data / "images").glob("*.png"))
    shutil.copy(images[0], src / "a.png")
    (src / "b.png").write_bytes(b"not a png")
    shutil.copy(images[1], src / "c.png")
    out = tmp_path / "out"
    res = invoke("predict", run_dir, "--input", src, "--output", out)
    one_error(res, "b.png", code=1)
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "c.png"]
    res = invoke("predict", run_dir, "--input", src, "--output", tmp_path / "ff", "--fail-fast")
    one_error(res, "b.png")
    assert not (tmp_path / "ff" / "c.png").exists()


def test_evaluate_goes_on_past_a_bad_case_and_keeps_the_rows(run_dir, ct_data, tmp_path):
    """The last case's mask is unreadable: the other cases are scored and written, exit 1."""
    data = tmp_path / "d"
    shutil.copytree(ct_data, data, ignore=shutil.ignore_patterns("volumes"))
    ids = (data / "splits" / "test.txt").read_text().split()
    (data / "masks" / f"{ids[-1]}.png").write_bytes(b"broken")
    out = tmp_path / "eval"
    res = invoke("evaluate", run_dir, "--data", data, "--split", "test", "--out", out)
    one_error(res, f"{ids[-1]}.png", code=1)
    rows = (out / "cases.csv").read_text().splitlines()[1:]
    assert {r.split(",")[0] for r in rows} == set(ids[:-1])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == len(ids) - 1 and len(summary["failed"]) == 1
    res = invoke("evaluate", run_dir, "--data", data, "--split", "test", "--out", tmp_path / "ff", "--fail-fast")
    one_error(res, f"{ids[-1]}.png")


# -- 2. non-finite input values ----------------------------------------------------------------------
def test_nonfinite_inputs_fail_or_warn_with_allow_nonfinite(run_dir, tmp_path):
    src = tmp_path / "vols"
    nan_part, inf = _volume(1), _volume(2)
    nan_part[3, 4, 1] = np.nan
    inf[0, 0, 0] = -np.inf
    _nifti(_volume(), src / "a_good_0000.nii.gz")
    _nifti(np.full((32, 32, 3), np.nan, np.float32), src / "b_allnan_0000.nii.gz")
    _nifti(nan_part, src / "c_partnan_0000.nii.gz")
    _nifti(inf, src / "d_inf_0000.nii.gz")
    _nifti(_volume(3), src / "e_good_0000.nii.gz")
    out = tmp_path / "out"
    res = invoke("predict", run_dir, "--input", src, "--output", out)
    assert res.exit_code == 1, res.output
    lines = error_lines(res.output)
    assert len(lines) == 3 and all("NaN or infinite" in ln for ln in lines), res.output
    assert [n for n in ("b_allnan", "c_partnan", "d_inf") if any(n in ln for ln in lines)] == ["b_allnan", "c_partnan", "d_inf"]
    assert sorted(p.name for p in out.iterdir()) == ["a_good.nii.gz", "e_good.nii.gz"]
    res = invoke("predict", run_dir, "--input", src, "--output", tmp_path / "allowed", "--allow-nonfinite")
    assert res.exit_code == 0 and not error_lines(res.output), res.output
    assert len(list((tmp_path / "allowed").glob("*.nii.gz"))) == 5


def test_evaluate_nonfinite_case_is_a_failed_case(run_dir, tmp_path):
    bad = _volume(4)
    bad[:, :, 2] = np.inf
    data = _volume_data(tmp_path / "vols", images={"c2": bad})
    out = tmp_path / "eval"
    res = invoke("evaluate", run_dir, "--data", data, "--split", "all", "--out", out, *VOLUME_EVAL)
    one_error(res, "c2_0000.nii.gz", code=1)
    assert "NaN or infinite" in res.output
    assert json.loads((out / "summary.json").read_text())["cases"] == 2
    res = invoke("evaluate", run_dir, "--data", data, "--split", "all", "--out", out, "--allow-nonfinite", *VOLUME_EVAL)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["cases"] == 3


# -- 3. cases.csv written as evaluation goes -----------------------------------------------------------
def test_evaluate_rows_survive_an_interrupt(run_dir, ct_data, tmp_path, monkeypatch):
    from medseg.engine.predict import Predictor

    calls = {"n": 0}
    real = Predictor.predict_case

    def dies_at_third(self, case):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, case)

    monkeypatch.setattr(Predictor, "predict_case", dies_at_third)
    out = tmp_path / "eval"
    res = invoke("evaluate", run_dir, "--data", ct_data, "--split", "all", "--out", out)
    assert res.exit_code != 0 and calls["n"] == 3, res.output  # click turns the interrupt into "Aborted!"
    rows = (out / "cases.csv").read_text().splitlines()
    assert rows[0].startswith("case,class") and len({r.split(",")[0] for r in rows[1:]}) == 2


def test_non_utf8_case_id_from_a_file_name_works_end_to_end(run_dir, ct_data, tmp_path):
    data = tmp_path / "d"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
        for i, p in enumerate(sorted((ct_data / sub).glob("*.png"))[:3]):
            name = os.fsdecode(b"ct_\xff%d.png" % i) if i == 1 else p.name
            shutil.copy(p, data / sub / name)
    out = tmp_path / "eval"
    res = invoke("evaluate", run_dir, "--data", data, "--split", "all", "--out", out)
    assert res.exit_code == 0 and not error_lines(res.output), res.output
    text = (out / "cases.csv").read_bytes().decode("utf-8")  # valid UTF-8: the byte shown as \xff
    assert "ct_\\xff1," in text and json.loads((out / "summary.json").read_text())["cases"] == 3
    res = invoke("predict", run_dir, "--input", data / "images", "--output", tmp_path / "pred")
    assert res.exit_code == 0, res.output
    assert os.fsdecode(b"ct_\xff1.png") in os.listdir(tmp_path / "pred")
    # a split list holding that byte names the file as the OS does
    (data / "list.txt").write_bytes(b"ct_\xff1\n")
    res = invoke("evaluate", run_dir, "--data", data, "--split", data / "list.txt", "--out", tmp_path / "e2")
    assert res.exit_code == 0 and not error_lines(res.output), res.output
    (data / "nope.txt").write_bytes(b"ct_\xfe9\n")
    res = invoke("evaluate", run_dir, "--data", data, "--split", data / "nope.txt", "--out", tmp_path / "e3")
    one_error(res, "nope.txt")
    assert "unknown id" in res.output


# -- 4. tracebacks that became one line -------------------------------------------------------------
def test_4d_label_volume_is_one_line(run_dir, tmp_path):
    data = _volume_data(tmp_path / "vols", labels={"c3": np.zeros((32, 32, 3, 2), np.uint8)})
    out = tmp_path / "eval"
    res = invoke("evaluate", run_dir, "--data", data, "--split", "all", "--out", out, *VOLUME_EVAL)
    one_error(res, "c3.nii.gz", code=1)
    assert json.loads((out / "summary.json").read_text())["cases"] == 2
    res = invoke("evaluate", run_dir, "--data", data, "--split", "all", "--out", out, "--fail-fast", *VOLUME_EVAL)
    one_error(res, "c3.nii.gz")


def test_nifti_with_a_0_length_axis_is_one_line(run_dir, tmp_path):
    src = tmp_path / "vols"
    _nifti(np.zeros((32, 0, 3), np.float32), src / "a_empty_0000.nii.gz")
    _nifti(_volume(), src / "b_good_0000.nii.gz")
    out = tmp_path / "out"
    res = invoke("predict", run_dir, "--input", src, "--output", out)
    one_error(res, "a_empty_0000.nii.gz", code=1)
    assert "0-length axis" in res.output and (out / "b_good.nii.gz").is_file()
    res = invoke("predict", run_dir, "--input", src, "--output", tmp_path / "ff", "--fail-fast")
    one_error(res, "a_empty_0000.nii.gz")


@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "builtin"])
@pytest.mark.parametrize("where", ["existing-file", "read-only"])
def test_unwritable_output_is_one_line(command, where, run_dir, ct_data, tmp_path):
    if where == "existing-file":
        target = tmp_path / "taken"
        target.write_text("earlier output")
        out = target / "x.onnx" if command == "export" else target
    else:
        target = _read_only_dir(tmp_path)
        out = target / ("x.onnx" if command == "export" else "medseg-out")
    args = {
        "predict": ["predict", run_dir, "--input", ct_data / "images", "--output", out],
        "evaluate": ["evaluate", run_dir, "--data", ct_data, "--split", "test", "--out", out],
        "export": ["export", "onnx", run_dir, "--out", out],
        "builtin": ["data", "builtin", "phantom-endo", "--out", out, "--count", "2"],
    }[command]
    if command == "export":
        pytest.importorskip("onnxscript")
    res = invoke(*args)
    one_error(res, str(target))
    if where == "existing-file":
        assert target.read_text() == "earlier output"


@pytest.fixture(scope="module")
def onnx_file(run_dir, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    res = invoke("export", "onnx", run_dir, "--out", out)
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("edit", [{"medseg_config": "{not json"}, {"in_channels": "three"},
                                  {"medseg_config": "[1, 2]"}, {"medseg_config": None}])
def test_onnx_with_bad_metadata_is_one_line(edit, onnx_file, ct_data, tmp_path):
    import onnx

    model = onnx.load(str(onnx_file))
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in edit.items():
        props.pop(key) if value is None else props.__setitem__(key, value)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    one_error(invoke("predict", bad, "--input", ct_data / "images", "--output", tmp_path / "p"), "bad.onnx")
    one_error(invoke("evaluate", bad, "--data", ct_data, "--split", "test"), "bad.onnx")


@pytest.mark.parametrize("kwargs,needle", [({"features": [4, 8, 8, 16, 16, 8]}, "do not fit"),
                                           ({"featurs": [4]}, "bad checkpoint metadata")])
def test_checkpoint_whose_kwargs_do_not_match_its_weights_is_one_line(kwargs, needle, run_dir, ct_data, tmp_path):
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    ckpt["medseg"]["model_kwargs"] = kwargs
    bad = tmp_path / "odd.ckpt"
    torch.save(ckpt, bad)
    for args in (["predict", run_dir, "--checkpoint", bad, "--input", ct_data / "images", "--output", tmp_path / "p"],
                 ["evaluate", run_dir, "--checkpoint", bad, "--data", ct_data, "--split", "test", "--out", tmp_path / "e"]):
        res = invoke(*args)
        one_error(res, "odd.ckpt")
        assert needle in res.output


# -- 5. file modes follow the umask -------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_follow_the_umask(mask, run_dir, ct_data, tmp_path):
    for rel in ("config.yaml", "summary.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert stat.S_IMODE((run_dir / rel).stat().st_mode) == 0o644, rel  # trained under umask 022
    old = os.umask(mask)
    try:
        res = invoke("predict", run_dir, "--input", sorted((ct_data / "images").glob("*.png"))[0], "--output", tmp_path / "p")
        assert res.exit_code == 0, res.output
        res = invoke("evaluate", run_dir, "--data", ct_data, "--split", "test", "--out", tmp_path / "e")
        assert res.exit_code == 0, res.output
    finally:
        os.umask(old)
    for f in [*(tmp_path / "p").iterdir(), tmp_path / "e" / "summary.json", tmp_path / "e" / "cases.csv"]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f


# -- 6. data builtin never deletes the user's files ------------------------------------------------------
def test_builtin_regeneration_keeps_user_files(tmp_path):
    out = tmp_path / "endo"
    assert invoke("data", "builtin", "phantom-endo", "--out", out, "--count", "2").exit_code == 0
    (out / "images" / "my_case.png").write_bytes(b"user data")
    (out / "notes.txt").write_text("mine")
    res = invoke("data", "builtin", "phantom-endo", "--out", out, "--count", "3")
    one_error(res, str(out))
    assert (out / "images" / "my_case.png").read_bytes() == b"user data" and (out / "notes.txt").read_text() == "mine"
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "a.txt").write_text("keep")
    one_error(invoke("data", "builtin", "phantom-endo", "--out", foreign, "--count", "2"), str(foreign))
    assert (foreign / "a.txt").read_text() == "keep"
