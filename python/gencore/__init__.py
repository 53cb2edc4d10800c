"""gencore: fused C++/CUDA kernels and model classes for unsupervised and generative learning.

Importing gencore loads the compiled extension first, which registers the
``torch.ops.gencore.*`` operators, then the Python fake kernels and autograd
formulas, then the public modules.
"""

import torch

# The oldest torch the compiled extension loads in: its C++ uses only the LibTorch stable
# ABI with this target version (CMakeLists.txt: GENCORE_TORCH_TARGET; a test checks that
# the two agree). Under an older torch the load would fail with an undefined C symbol.
TORCH_MIN_VERSION = (2, 11)


def _check_torch_version() -> None:
    release = torch.__version__.split("+")[0].split(".")
    try:
        have = (int(release[0]), int(release[1]))
    except (IndexError, ValueError):
        return  # an unparsable (source) version: let the load decide
    if have < TORCH_MIN_VERSION:
        need = ".".join(map(str, TORCH_MIN_VERSION))
        raise ImportError(
            f"gencore needs torch >= {need} (its compiled ops use the LibTorch stable ABI of "
            f"torch {need}), but this environment has torch {torch.__version__}: "
            f"pip install 'torch>={need}'"
        )


_check_torch_version()

from gencore import _C  # noqa: E402,F401  (registers the operator schemas and kernels)
from gencore import data, metrics, models, nn, ops, reference, train  # noqa: E402

__version__ = "0.1.0"

__all__ = ["ops", "nn", "models", "reference", "data", "metrics", "train", "__version__",
           "TORCH_MIN_VERSION"]
