"""Eager PyTorch backend: the reference every other backend is compared with.

torch is imported inside functions only: the runtime tier imports this module on machines without torch.
A bundle does not hold an eager model, so :meth:`TorchRunner.from_bundle` refuses; the build tier
(:func:`edgecv.pipeline.open_runner`) rebuilds the model and calls :meth:`TorchRunner.from_module`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.backends.base import Runner
from edgecv.errors import BackendError, ConfigError
from edgecv.types import TORCH_PRECISIONS, TensorSpec, parse_precision

if TYPE_CHECKING:
    from edgecv.bundle import Bundle, Contract


class TorchRunner(Runner):
    """Runs an ``nn.Module`` eagerly under ``torch.inference_mode``.

    Args:
        model: the module (put in eval mode here).
        contract: gives the input name/shape/dtype, batch range and output names.
        precision: fp32, or fp16 / bf16 through ``torch.autocast``.
        device: ``cpu``, ``cuda`` or ``cuda:N``; None picks CUDA when available.
        threads: ``torch.set_num_threads`` (None: torch's default).
    """

    name = "torch"

    def __init__(
        self,
        model: Any,
        contract: Contract,
        precision: str = "fp32",
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        precision = parse_precision(precision, "torch precision", TORCH_PRECISIONS)
        if threads is not None and threads < 1:
            raise ConfigError(f"threads: expected a positive number, found {threads}")
        self.model = model
        self.contract = contract
        self.requested_precision = precision
        self.precision = precision
        self.requested_device = device
        self.threads = threads
        self._torch_device: Any = None

    @classmethod
    def from_module(
        cls,
        model: Any,
        contract: Contract,
        precision: str = "fp32",
        device: str | None = None,
        threads: int | None = None,
        **kw: Any,
    ) -> TorchRunner:
        """A runner over an eager module (what :func:`edgecv.pipeline.open_runner` calls)."""
        if kw:
            raise ConfigError(f"torch runner: unexpected options {sorted(kw)}")
        return cls(model, contract, precision, device, threads)

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, precision: str = "fp32", device: str | None = None, threads: int | None = None, **kw: Any
    ) -> TorchRunner:
        """Always raises: the runtime tier cannot rebuild an eager model from a bundle."""
        raise BackendError(
            f"the torch backend needs the eager model, which bundle '{bundle.root}' does not hold; "
            "use edgecv.pipeline.open_runner(bundle, 'torch'), which rebuilds it from the recorded source"
        )

    # ------------------------------------------------------------------ lifecycle
    def _load(self) -> None:
        torch = lazy_import("torch")
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        dev = self.requested_device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dev.lower() == "cpu":
            dev = "cpu"
        try:
            self._torch_device = torch.device(dev)
        except RuntimeError as exc:
            raise ConfigError(f"torch device: expected cpu, cuda or cuda:N, found '{dev}'") from exc
        if self._torch_device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"torch device '{dev}' requested, but torch sees no CUDA GPU")
        if self._torch_device.type == "cuda" and self._torch_device.index is None:
            self._torch_device = torch.device("cuda", torch.cuda.current_device())
        self.model = self.model.eval().to(self._torch_device)
        c = self.contract
        batch: int | None = None if c.dynamic_batch else c.input_shape[0]
        self._input_spec = [TensorSpec(c.input_name, (batch, *c.input_shape[1:]), c.dtype)]
        # one forward at the smallest batch gives the output shapes and the dtype autocast really produced
        probe_shape = (c.batch_range[0] if c.dynamic_batch else c.input_shape[0], *c.input_shape[1:])
        outs = self._forward_raw({c.input_name: np.zeros(probe_shape, dtype=c.dtype)})
        self._output_spec = [
            TensorSpec(n, (None if c.dynamic_batch else int(t.shape[0]), *(int(d) for d in t.shape[1:])), "float32")
            if t.ndim
            else TensorSpec(n, (), "float32")
            for n, t in outs.items()
        ]
        # autocast is mixed precision by design (softmax, reductions stay float32), so there is no single
        # dtype to read back; the precision is the autocast dtype we asked for
        self.precision = self.requested_precision
        self.device = "CPU" if self._torch_device.type == "cpu" else str(self._torch_device)

    def _close(self) -> None:
        if self._torch_device is not None and self._torch_device.type == "cuda":
            torch = lazy_import("torch")
            torch.cuda.empty_cache()

    def _forward_raw(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        torch = lazy_import("torch")
        x = torch.from_numpy(np.ascontiguousarray(feed[self.contract.input_name])).to(self._torch_device)
        with torch.inference_mode():
            if self.requested_precision == "fp32":
                with _no_tf32(torch, self._torch_device.type == "cuda"):
                    out = self.model(x)
            else:
                dtype = torch.float16 if self.requested_precision == "fp16" else torch.bfloat16
                with torch.autocast(device_type=self._torch_device.type, dtype=dtype):
                    out = self.model(x)
        return self._name_outputs(out)

    def _name_outputs(self, out: Any) -> dict[str, Any]:
        names = list(self.contract.output_names)
        if isinstance(out, Mapping):
            tensors = dict(out)
            if set(names) <= set(tensors):
                return {n: tensors[n] for n in names}
            if len(tensors) != len(names):
                raise BackendError(
                    f"torch model returned outputs {sorted(tensors)}, expected {len(names)} named {names}"
                )
            return dict(zip(names, tensors.values()))
        if isinstance(out, Sequence) and not hasattr(out, "shape"):
            flat = list(out)
        else:
            flat = [out]
        if len(flat) != len(names):
            raise BackendError(f"torch model returned {len(flat)} outputs, the contract names {len(names)}: {names}")
        return dict(zip(names, flat))

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._forward_raw(feed)
        return {n: t.detach().float().cpu().numpy() for n, t in outs.items()}


@contextlib.contextmanager
def _no_tf32(torch: Any, on_cuda: bool) -> Iterator[None]:
    """fp32 means fp32: on Ampere and newer, cuDNN convolutions default to TF32 (10-bit mantissa), which is ~1e-3
    relative error, not fp32's ~1e-6. Turned off for the forward and restored after (the flags are process-wide)."""
    if not on_cuda:
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
