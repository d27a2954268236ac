"""``distill export triton``: every written config.pbtxt parses with Triton's own schema (tritonclient's
model_config_pb2) and names, types and dims match the ONNX graph; a fixed batch axis is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.io import sha256_file

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient not installed")
from google.protobuf import text_format  # noqa: E402

from export.errors import ExportError  # noqa: E402
from export.triton import ONNX_TO_TRITON, export_triton  # noqa: E402


def parse_config(path: Path):
    """Triton's schema: an unknown field, a wrong enum or a type mismatch raises ParseError."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def assert_matches_graph(cfg, onnx_path: Path) -> None:
    import onnx

    g = onnx.load(str(onnx_path)).graph
    dtype = model_config_pb2.DataType.Name

    def check(tensors, values) -> None:
        assert [t.name for t in tensors] == [v.name for v in values]
        for t, v in zip(tensors, values):
            tt = v.type.tensor_type
            assert dtype(t.data_type) == ONNX_TO_TRITON[tt.elem_type]
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            assert not shape[0] > 0, "batch axis must stay dynamic"
            assert list(t.dims) == shape[1:]

    init = {i.name for i in g.initializer}
    check(cfg.input, [i for i in g.input if i.name not in init])
    check(cfg.output, list(g.output))


def test_repository_layout_config_parses_and_matches_graph(tiny_artifact: Path, tmp_path: Path) -> None:
    from export.runtime import load_artifact

    res = export_triton(tiny_artifact, tmp_path / "repo", name="tiny", max_batch_size=16,
                        preferred_batch_sizes=(4, 8))
    assert res.model == tmp_path / "repo" / "tiny" / "1" / "model.onnx"
    assert res.sha256 == sha256_file(tiny_artifact)  # byte for byte: metadata, fold report, checksums kept
    cfg = parse_config(res.config)
    assert cfg.name == "tiny" and cfg.backend == "onnxruntime" and cfg.max_batch_size == 16
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.instance_group[0].count == 1
    assert [w.batch_size for w in cfg.model_warmup] == [1, 16]
    assert cfg.model_warmup[0].inputs["input"].zero_data
    assert_matches_graph(cfg, res.model)
    art = load_artifact(res.model)
    assert cfg.output[0].label_filename == "labels.txt"
    assert (res.model_dir / "labels.txt").read_text().splitlines() == art.meta.class_names
    assert art.meta.verification is not None and art.meta.checkpoint_sha256
    x = np.zeros((5, *art.input_shape), np.float32)
    assert art.run(x).shape == (5, 10)  # a dynamic batch axis


def test_uint8_artifact_takes_raw_pixels(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from export import export_onnx

    u8 = tmp_path / "u8.onnx"
    export_onnx(tiny_checkpoint, u8, fold_heads=True, input_kind="uint8", max_verify_images=20)
    res = export_triton(u8, tmp_path / "repo")
    cfg = parse_config(res.config)
    assert model_config_pb2.DataType.Name(cfg.input[0].data_type) == "TYPE_UINT8"
    assert list(cfg.input[0].dims) == [32, 32, 3]
    assert_matches_graph(cfg, res.model)


def test_new_versions_go_next_to_the_old_and_tensorrt_fp16_option(tiny_artifact: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert export_triton(tiny_artifact, repo, name="m").version == 1
    res = export_triton(tiny_artifact, repo, name="m", tensorrt_fp16=True, kind="gpu", instances=2)
    assert res.version == 2 and (repo / "m" / "1" / "model.onnx").is_file()
    cfg = parse_config(res.config)
    acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == "KIND_GPU"
    assert cfg.instance_group[0].count == 2
    with pytest.raises(ExportError, match="already exists"):
        export_triton(tiny_artifact, repo, name="m", version=2)


def _fixed_batch_copy(src: Path, dst: Path) -> Path:
    import onnx

    m = onnx.load(str(src))
    for v in [*m.graph.input, *m.graph.output]:
        d = v.type.tensor_type.shape.dim[0]
        d.Clear()
        d.dim_value = 1
    onnx.save(m, str(dst))
    return dst


def test_fixed_batch_axis_is_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    fixed = _fixed_batch_copy(tiny_artifact, tmp_path / "fixed.onnx")
    with pytest.raises(ExportError, match="fixed batch axis of 1"):
        export_triton(fixed, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("model.onnx"))


def test_cli_writes_repository_and_bad_inputs_are_one_line(tiny_artifact: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from export.cli import app

    r = CliRunner().invoke(app, ["triton", "--artifact", str(tiny_artifact), "--repository", str(tmp_path / "r"),
                                 "--name", "cli", "--preferred-batch-size", "2,4", "--max-batch-size", "8"])
    assert r.exit_code == 0, r.output
    cfg = parse_config(tmp_path / "r" / "cli" / "config.pbtxt")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    fixed = _fixed_batch_copy(tiny_artifact, tmp_path / "fixed.onnx")
    for args, msg in (
        (["--artifact", str(fixed)], "fixed batch axis"),
        (["--artifact", str(tmp_path / "missing.onnx")], "artifact not found"),
        (["--artifact", str(tiny_artifact), "--preferred-batch-size", "64"], "outside 1..32"),
        (["--artifact", str(tiny_artifact), "--kind", "tpu"], "--kind must be"),
        (["--artifact", str(tiny_artifact), "--name", "../evil"], "not a valid repository folder name"),
        (["--artifact", str(tiny_artifact), "--kind", "cpu", "--tensorrt-fp16"], "TensorRT accelerator runs on a GPU"),
    ):
        r = CliRunner().invoke(app, ["triton", "--repository", str(tmp_path / "bad"), *args])
        assert r.exit_code == 2, (args, r.output)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert lines[-1].startswith("error:") and msg in r.output, r.output


def test_unverified_artifact_is_refused_unless_allowed(tiny_artifact: Path, tmp_path: Path) -> None:
    import onnx

    m = onnx.load(str(tiny_artifact))
    keep = [p for p in m.metadata_props if p.key != "verification"]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    with pytest.raises(ExportError, match="no verification report"):
        export_triton(bare, tmp_path / "repo")
    res = export_triton(bare, tmp_path / "repo", allow_unverified=True)
    assert_matches_graph(parse_config(res.config), res.model)
