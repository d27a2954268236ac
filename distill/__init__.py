"""DHO distillation toolchain: train a small student from a large teacher.

This package is import-light on purpose: ``distill.preprocess`` and the CLI host must import without
torch so that a serving image (onnxruntime only) can use the same preprocessing code.
"""

__version__ = "0.1.0"
