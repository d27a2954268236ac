"""The OpenVINO backend (``ov-cpu``): an OpenVINO IR artifact (``model.xml`` + ``.bin``) run by OpenVINO on the CPU.

Loaded, like every artifact, through ``export.runtime.load_artifact`` (which compiles the IR with the inference
precision recorded in it: f32 for the fp32 artifact, bf16 only for the labelled bf16 variant). Registered in
:mod:`edge_bench.backends` (``BACKENDS``, ``FORMAT_BACKENDS["openvino"]``, ``model_format``).
"""

from __future__ import annotations

#: backend -> the OpenVINO device it asks ``export.runtime`` for (as a provider name)
OV_DEVICE = {"ov-cpu": "OpenVINO:CPU"}
OPENVINO_BACKENDS = tuple(OV_DEVICE)
IR_SUFFIXES = (".xml",)
INSTALL_HINT = "pip install 'distill-toolchain[openvino]'"


def openvino_unavailable_reason(backend: str) -> str | None:
    """None when OpenVINO can run ``backend`` here, else why not (one line)."""
    try:
        import openvino as ov
    except ImportError:
        return f"openvino is not installed ({INSTALL_HINT})"
    device = OV_DEVICE[backend].split(":", 1)[1]
    try:
        devices = ov.Core().available_devices
    except Exception as e:  # noqa: BLE001 - a broken plugin must not break the listing
        return f"OpenVINO {ov.__version__} cannot list devices ({str(e).splitlines()[0][:120]})"
    if device not in devices:
        return f"OpenVINO {ov.__version__} has no {device} device here (available: {', '.join(devices) or 'none'})"
    return None
