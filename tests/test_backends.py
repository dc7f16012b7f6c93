"""Backend conformance: one abstract test class, subclassed once per backend/precision (NNCF cross-framework style).

Every runner loads the same tiny bundle, and must: report specs with a dynamic batch, match the PyTorch
reference outputs saved at export within its precision's tolerance (relative to the output scale), run batch 1
and batch 8, reject a wrong shape / dtype / name with a one-line InputError, report the precision it actually
runs, and load/close as a context manager. Backends absent from the machine are skipped by marker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import make_tiny_bundle, tiny_cnn

from edgecv.backends import open_runner
from edgecv.errors import BackendError, InputError

SIZE = 64


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    return make_tiny_bundle(tmp_path_factory.mktemp("backends") / "tiny", size=SIZE)


def _tiny_module():
    """The eager model behind make_tiny_bundle, with the same BatchNorm statistics it was exported with."""

    return tiny_cnn(10, "classify")  # seeds torch with 0, sets BN statistics, eval mode


class BackendConformance:
    """The checks every backend passes. Subclasses set ``backend``, ``precision``, ``rel_tol``."""

    backend: str = ""
    precision: str = "fp32"
    # max |out - ref| allowed, as a fraction of max |ref| (the output scale)
    rel_tol: float = 1e-4
    expected_device_prefix: str = "CPU"

    def make_runner(self, bundle):
        return open_runner(bundle, self.backend, self.precision, threads=1)

    @pytest.fixture(scope="class")
    def runner(self, bundle):
        r = self.make_runner(bundle)
        with r:
            yield r

    @pytest.fixture(scope="class")
    def reference(self, bundle):
        ref = bundle.load_reference()
        return ref["inputs"]["input"], ref["outputs"]["output"]

    # ------------------------------------------------------------------ specs
    def test_input_output_specs(self, runner, bundle) -> None:
        (inp,) = runner.input_spec
        assert inp.name == bundle.contract.input_name == "input"
        assert inp.shape == (None, 3, SIZE, SIZE)  # dynamic batch, fixed C/H/W
        assert inp.dtype == "float32"
        (out,) = runner.output_spec
        assert out.name == "output"
        assert out.shape == (None, 10)
        assert out.dtype == "float32"

    # ------------------------------------------------------------------ numbers
    def _check_close(self, out: np.ndarray, ref: np.ndarray) -> float:
        scale = float(np.abs(ref).max())
        err = float(np.abs(out.astype(np.float64) - ref).max())
        assert out.shape == ref.shape
        assert err <= self.rel_tol * scale, (
            f"{self.backend} {self.precision}: max abs error {err:.3g} > {self.rel_tol:g} x output scale {scale:.3g}"
        )
        return err

    def test_matches_reference(self, runner, reference) -> None:
        x, y = reference
        out = runner.infer({"input": x})
        assert set(out) == {"output"}
        self._check_close(out["output"], y)

    def test_batch_1_and_8(self, runner, reference) -> None:
        x, y = reference
        one = runner.infer({"input": x[:1]})["output"]
        self._check_close(one, y[:1])
        x8, y8 = np.concatenate([x, x[::-1]]), np.concatenate([y, y[::-1]])
        assert x8.shape[0] == 8
        eight = runner.infer({"input": x8})["output"]
        self._check_close(eight, y8)
        # each sample is independent of the others in the batch
        np.testing.assert_allclose(eight[:1], one, rtol=0, atol=self.rel_tol * float(np.abs(y).max()))

    # ------------------------------------------------------------------ bad input
    @pytest.mark.parametrize("bad", ["shape", "dtype", "name", "rank"])
    def test_bad_input_raises_one_line(self, runner, reference, bad: str) -> None:
        x, _ = reference
        feed = {
            "shape": {"input": x[:, :, :32, :32]},
            "dtype": {"input": x.astype(np.float64)},
            "name": {"images": x},
            "rank": {"input": x[0]},
        }[bad]
        with pytest.raises(InputError) as info:
            runner.infer(feed)
        msg = str(info.value)
        assert "\n" not in msg
        assert "expected" in msg and "found" in msg
        expected_word = {"shape": "32", "dtype": "float64", "name": "images", "rank": "dims"}[bad]
        assert expected_word in msg

    # ------------------------------------------------------------------ precision / device / lifecycle
    def expected_precision(self) -> str:
        """The precision the engine should report running: what the device supports, asked of the device."""
        if self.backend == "openvino":
            from helpers import openvino_precision_ran

            return openvino_precision_ran(self.precision)
        return self.precision

    def test_reports_precision_and_device(self, runner) -> None:
        assert runner.precision == self.expected_precision()
        assert runner.device.startswith(self.expected_device_prefix)
        d = runner.describe()
        assert d["backend"] == self.backend and d["precision"] == self.expected_precision()
        assert d["load_time_s"] > 0

    def test_context_manager_load_close(self, bundle, reference) -> None:
        x, _ = reference
        r = self.make_runner(bundle)
        assert not r.is_loaded
        with pytest.raises(BackendError, match="before load"):
            r.infer({"input": x})
        with r as entered:
            assert entered is r and r.is_loaded
            assert r.infer({"input": x[:1]})["output"].shape == (1, 10)
        assert not r.is_loaded
        with pytest.raises(BackendError):
            r.infer({"input": x[:1]})


@pytest.mark.torch
class TestTorchRunner(BackendConformance):
    backend = "torch"

    def make_runner(self, bundle):
        from edgecv.backends.torch import TorchRunner

        return TorchRunner.from_module(_tiny_module(), bundle.contract, self.precision, device="cpu", threads=1)

    def test_exact_against_reference(self, runner, reference) -> None:
        x, y = reference
        np.testing.assert_array_equal(runner.infer({"input": x})["output"], y)

    def test_from_bundle_refuses(self, bundle) -> None:
        with pytest.raises(BackendError, match="edgecv.pipeline.open_runner"):
            open_runner(bundle, "torch")


@pytest.mark.torch
class TestTorchRunnerBF16(TestTorchRunner):
    precision = "bf16"
    rel_tol = 3e-2

    def test_exact_against_reference(self, runner, reference) -> None:
        x, y = reference
        # autocast really ran in bf16: the result is close to, but not equal to, the fp32 reference
        assert not np.array_equal(runner.infer({"input": x})["output"], y)


@pytest.mark.onnxruntime
class TestOnnxRuntimeRunner(BackendConformance):
    backend = "onnxruntime"


@pytest.mark.onnxruntime
class TestOnnxRuntimeFP16(BackendConformance):
    backend = "onnxruntime"
    precision = "fp16"
    rel_tol = 1e-2

    def make_runner(self, bundle):
        from edgecv.backends.base import BuildConfig
        from edgecv.backends.onnxruntime import OnnxRuntimeBuilder

        if bundle.artifact("onnxruntime", "fp16") is None:
            OnnxRuntimeBuilder().build(bundle, BuildConfig(precision="fp16"))
        return super().make_runner(bundle)


@pytest.mark.openvino
class TestOpenVINOFP32(BackendConformance):
    backend = "openvino"

    def test_precision_hint_is_f32(self, runner) -> None:
        # this CPU defaults to bf16; the runner must have asked for f32 and OpenVINO must report f32
        assert runner.compile_config["INFERENCE_PRECISION_HINT"] == "f32"
        assert runner._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"


@pytest.mark.openvino
class TestOpenVINOBF16(BackendConformance):
    backend = "openvino"
    precision = "bf16"
    rel_tol = 3e-2

    def test_bf16_really_runs_in_bf16(self, runner, reference) -> None:
        import openvino as ov

        if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            pytest.skip("this CPU has no bf16; OpenVINO falls back to f32")
        x, y = reference
        err = float(np.abs(runner.infer({"input": x})["output"] - y).max())
        # outside fp32 tolerance: proof that the fp32 class's tolerance would catch a silent bf16 run
        assert err > 1e-4 * float(np.abs(y).max())


@pytest.mark.tensorrt
class TestTensorRTFP16(BackendConformance):
    backend = "tensorrt"
    precision = "fp16"
    rel_tol = 1e-2
    expected_device_prefix = "cuda"

    def make_runner(self, bundle):
        from edgecv.backends.base import BuildConfig
        from edgecv.backends.tensorrt import TensorRTBuilder

        if bundle.artifact("tensorrt", "fp16") is None:
            TensorRTBuilder().build(bundle, BuildConfig(precision="fp16", device="cuda:0", workspace_mb=256))
        return super().make_runner(bundle)


def test_unknown_backend_lists_choices(bundle) -> None:
    from edgecv.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="expected one of: onnxruntime, openvino, remote, tensorrt, torch"):
        open_runner(bundle, "tflite")


def test_backend_modules_import_without_torch() -> None:
    """The runtime tier imports every backend module with torch blocked (torch.py imports torch lazily)."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import edgecv.backends.torch, edgecv.backends.onnxruntime, edgecv.backends.openvino\n"
        "import edgecv.backends.tensorrt, edgecv.cli.compile, edgecv.cli.doctor\n"
        "from edgecv.backends.torch import TorchRunner\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.onnxruntime
@pytest.mark.openvino
def test_bare_qdq_file_reports_int8(bundle, tmp_path: Path) -> None:
    """Plain constructors (used by rewrite/quant) read the precision from the model, not from a label."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from edgecv.backends.onnxruntime import OnnxRuntimeRunner
    from edgecv.backends.openvino import OpenVINORunner

    x = bundle.load_reference()["inputs"]["input"]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": x[i : i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    qdq = tmp_path / "qdq.onnx"
    quantize_static(str(bundle.onnx_path), str(qdq), Reader(), quant_format=QuantFormat.QDQ)
    y = bundle.load_reference()["outputs"]["output"]
    for runner in (OnnxRuntimeRunner(qdq, threads=1), OpenVINORunner(qdq, threads=1)):
        with runner:
            assert runner.precision == "int8"
            out = runner.infer({"input": x})["output"]
            # int8 on 4 calibration samples: close to the reference, not equal to it
            assert 0 < float(np.abs(out - y).max()) < 0.1 * float(np.abs(y).max())
    with pytest.raises(BackendError, match="computes in int8, expected a fp32 model"):
        OnnxRuntimeRunner(qdq, precision="fp32").load()
    with OnnxRuntimeRunner(bundle.onnx_path) as r:
        assert r.precision == "fp32"
