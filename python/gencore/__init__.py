"""gencore: fused C++/CUDA kernels and model classes for unsupervised and generative learning.

Importing gencore loads the compiled extension first, which registers the
``torch.ops.gencore.*`` operators, then the Python fake kernels and autograd
formulas, then the public modules.
"""

import torch  # noqa: F401  (loads libtorch before the extension that links against it)

from gencore import _C  # noqa: F401  (registers the operator schemas and kernels)
from gencore import data, metrics, models, nn, ops, reference, train

__version__ = "0.1.0"

__all__ = ["ops", "nn", "models", "reference", "data", "metrics", "train", "__version__"]
