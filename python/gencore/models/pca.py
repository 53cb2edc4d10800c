"""Principal component analysis: the optimal *linear* auto-encoder, and its probabilistic model.

With encoder ``E(x) = W (x - mu)`` and decoder ``D(z) = W^T z + mu`` (``W: (r, D)`` with
orthonormal rows), the mean squared reconstruction error ``E||x - D(E(x))||^2`` is smallest
when the rows of ``W`` span the top-``r`` eigenvectors of the data covariance (Eckart-Young):
no linear encoder/decoder pair of latent size ``r`` reconstructs better, and the error equals
``(n - 1)/n`` times the sum of the discarded eigenvalues on the training data. A linear
:class:`gencore.models.Autoencoder` trained by gradient descent converges to the same subspace.

Probabilistic PCA (Tipping & Bishop 1999) turns the same fit into a density,
``x ~ N(mu, W^T diag(lambda - sigma^2) W + sigma^2 I)`` with ``sigma^2`` the mean of the
discarded eigenvalues, whose log-likelihood :meth:`PCA.score_samples` returns in nats.

The API and every fitted attribute follow scikit-learn's ``sklearn.decomposition.PCA``
(``svd_solver="full"``), including the sign convention of the components, and the class is a
scikit-learn estimator (``get_params`` / ``set_params``, ``sklearn.base.clone``, ``Pipeline``,
``GridSearchCV``, ``check_estimator``). scikit-learn itself is imported only where it is needed
(estimator tags, data frames, the ``NotFittedError`` class): importing it costs about a second,
which torch-only users and the command line do not pay.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

__all__ = ["PCA"]

_FITTED = ("mean_", "components_", "explained_variance_", "explained_variance_ratio_", "singular_values_",
           "noise_variance_", "n_samples_")
_PARAMS = ("n_components", "whiten", "svd_solver")
_SVD_SOLVERS = ("auto", "full")
# scikit-learn's other solvers are approximate or square the condition number; not provided.
_UNSUPPORTED_SOLVERS = ("arpack", "randomized", "covariance_eigh")


class InvalidParameterError(ValueError, TypeError):
    """A constructor argument of the wrong type or value, raised by ``fit``; both a ValueError
    and a TypeError, like scikit-learn's ``InvalidParameterError``."""


def _not_fitted(msg: str) -> Exception:
    """scikit-learn's ``NotFittedError`` (a ValueError and an AttributeError), or an equivalent
    class when scikit-learn cannot be imported."""
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        NotFittedError = type("NotFittedError", (ValueError, AttributeError), {})
    return NotFittedError(msg)


def _is_sparse(x) -> bool:
    return type(x).__module__.startswith("scipy.sparse") or (hasattr(x, "tocsr") and hasattr(x, "nnz"))


class PCA(nn.Module):
    """Principal component analysis, a scikit-learn estimator on torch or numpy data.

    ``fit`` runs a full SVD of the centred data (``torch.linalg.svd``, in float64, on the
    data's device) and flips signs as scikit-learn does (the largest-magnitude entry of each
    component is positive), so components agree with scikit-learn's including their sign.

    Inputs ``X`` are ``(N, D)`` torch tensors (CPU or CUDA, any real dtype), numpy arrays or
    anything ``np.asarray`` turns into a real 2-D array (lists, object arrays of numbers, data
    frames). Every computation is done in float64, and results come back in the input's kind:

    * torch in, torch out: a tensor on the input's device, in the input's floating dtype
      (float64 for integer or bool input);
    * anything else in, numpy out: an ndarray in the input's floating dtype (float64 otherwise).

    The fitted attributes follow the input of the last ``fit``: after fitting a tensor they
    are float64 tensors on its device (``noise_variance_`` and ``n_samples_`` 0-d tensors);
    after fitting numpy data they are float64 ndarrays (``noise_variance_`` an ``np.float64``,
    ``n_samples_`` an int), so ``np.sum(pca.singular_values_ ** 2)`` works as in scikit-learn.
    Either way they are stored as float64 buffers (saved by ``state_dict``, so a fitted PCA
    checkpoints with :func:`gencore.train.save_checkpoint` and loads into a fresh
    ``PCA(**config)``; a loaded PCA returns tensors).

    As a module, ``forward`` is :meth:`transform`; :meth:`encode` / :meth:`decode` are the
    auto-encoder names of :meth:`transform` / :meth:`inverse_transform`.

    scikit-learn protocol: the constructor only stores its arguments; they are validated by
    ``fit``: an :class:`InvalidParameterError` (both a ValueError and a TypeError, like
    scikit-learn's) naming the argument. ``get_params`` / ``set_params``,
    ``sklearn.base.clone``, ``Pipeline`` and ``GridSearchCV`` (which scores with :meth:`score`,
    the mean probabilistic-PCA log-likelihood) work, and ``check_estimator`` passes with no
    expected failures (it warns that PCA does not inherit ``BaseEstimator``: inheriting would
    import scikit-learn with gencore; ``check_array_api_input`` skips itself unless
    ``SCIPY_ARRAY_API=1``). Unsupported, each with a clear error or documented here:

    * sparse input (scipy sparse matrices and arrays): TypeError, pass ``X.toarray()``
      (the estimator tag ``input_tags.sparse`` is False; ``check_estimator``'s sparse checks
      verify exactly this error);
    * ``svd_solver`` "arpack", "randomized", "covariance_eigh" and ``n_components="mle"``:
      ValueError; scikit-learn's ``copy``, ``tol``, ``iterated_power``, ``n_oversamples``,
      ``power_iteration_normalizer`` and ``random_state`` (meaningless for an exact
      deterministic SVD) are not parameters;
    * fitted attributes are float64 even for float32 input (scikit-learn keeps float32);
      ``transform`` and the other methods do return float32 for float32 input;
    * ``set_output`` / ``get_feature_names_out`` (pandas output) are not provided; a data frame
      is accepted as input and sets ``feature_names_in_`` as in scikit-learn.

    Args:
        n_components: latent size ``r``: an int in ``[1, min(N, D)]``; a float in ``(0, 1)``,
            the smallest ``r`` whose explained variance ratio exceeds it; or None for
            ``min(N, D)``.
        whiten: scale the projections to unit variance (divide by ``sqrt(explained_variance_)``).
            Only :meth:`transform` / :meth:`inverse_transform` change; the density and the
            reconstructions do not (scikit-learn's ``score_samples`` with ``whiten=True``
            uses a rescaled covariance, scikit-learn issue #13898; gencore does not).
        svd_solver: "auto" or "full"; both compute the exact full SVD (scikit-learn's "auto"
            may pick a randomized solver on large data; gencore always solves exactly).

    Fitted attributes: ``mean_ (D,)``, ``components_ (r, D)`` (orthonormal rows, by decreasing
    variance), ``explained_variance_ (r,)`` (eigenvalues of the covariance with ddof=1),
    ``explained_variance_ratio_ (r,)``, ``singular_values_ (r,)``, ``noise_variance_ ()`` (the
    probabilistic-PCA noise variance ``sigma^2``, 0 when ``r = min(N, D)``), ``n_samples_ ()``;
    ``n_components_``, ``n_features_in_`` (ints); ``feature_names_in_ (D,)`` only after
    fitting a data frame with string column names.
    """

    def __init__(self, n_components: int | float | None = None, *, whiten: bool = False,
                 svd_solver: str = "auto") -> None:
        super().__init__()
        # scikit-learn convention: store the arguments unchanged, validate them in fit.
        self.n_components = n_components
        self.whiten = whiten
        self.svd_solver = svd_solver
        for name in _FITTED:
            self.register_buffer(name, None)

    # --------------------------------------------------------- scikit-learn protocol

    # nn.Module keeps its train/eval flag in a public instance attribute, which scikit-learn
    # forbids for anything but constructor arguments (check_no_attributes_set_in_init): keep
    # it in a private slot of the instance dict instead, with the same behaviour.
    @property
    def training(self) -> bool:
        return self.__dict__.get("_training", True)

    @training.setter
    def training(self, mode: bool) -> None:
        self.__dict__["_training"] = mode

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments, ``{"n_components", "whiten", "svd_solver"}`` (``deep``
        is accepted for scikit-learn; PCA has no sub-estimators)."""
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params) -> PCA:
        """Set constructor arguments (validated by the next ``fit``). Returns ``self``."""
        for name, value in params.items():
            if name not in _PARAMS:
                raise InvalidParameterError(f"PCA.set_params: invalid parameter {name!r}; valid parameters are "
                                            f"{', '.join(_PARAMS)}")
            setattr(self, name, value)
        return self

    @property
    def config(self) -> dict:
        """The constructor arguments as JSON-serialisable values, for checkpoints and
        :func:`gencore.models.build`."""
        n = self.n_components
        if isinstance(n, numbers.Integral) and not isinstance(n, bool):
            n = int(n)
        elif isinstance(n, numbers.Real) and not isinstance(n, bool):
            n = float(n)
        w = bool(self.whiten) if isinstance(self.whiten, (bool, np.bool_)) else self.whiten
        return {"n_components": n, "whiten": w, "svd_solver": self.svd_solver}

    def __sklearn_tags__(self):
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]),
                    input_tags=InputTags(two_d_array=True, sparse=False, allow_nan=False))

    def __sklearn_is_fitted__(self) -> bool:
        return self.fitted

    # ----------------------------------------------------------------------------- state

    def _buf(self, name: str):
        return self._buffers[name]

    @property
    def fitted(self) -> bool:
        return self._buffers.get("components_") is not None

    @property
    def n_components_(self) -> int:
        self._check_fitted()
        return self._buf("components_").shape[0]

    @property
    def n_features_in_(self) -> int:
        self._check_fitted()
        return self._buf("components_").shape[1]

    def __getattr__(self, name: str):
        # nn.Module serves buffers from here; after a numpy fit they are handed out as numpy.
        if name in _FITTED:
            buffers = self.__dict__.get("_buffers", {})
            if name in buffers:
                v = buffers[name]
                if v is not None and self.__dict__.get("_numpy_attributes", False):
                    if name == "n_samples_":
                        return int(v)
                    a = v.detach().cpu().numpy()  # shares memory with the buffer on the CPU
                    return a[()] if a.ndim == 0 else a
                return v
        return super().__getattr__(name)

    def __setattr__(self, name: str, value) -> None:
        if name in _FITTED and value is not None and not isinstance(value, torch.Tensor):
            old = self.__dict__.get("_buffers", {}).get(name)
            dtype = torch.int64 if name == "n_samples_" else torch.float64
            value = torch.as_tensor(np.asarray(value), dtype=dtype, device=None if old is None else old.device)
        super().__setattr__(name, value)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise _not_fitted("PCA: this PCA is not fitted yet; call fit(X) first")

    def _out(self, t: torch.Tensor):
        """A float64 result about the fit (covariance, precision) in the kind of the fitted
        attributes: numpy after a numpy fit, else a tensor."""
        return t.cpu().numpy() if self.__dict__.get("_numpy_attributes", False) else t

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A fresh PCA has no buffers of known shape: take the shapes from the checkpoint.
        present = [name for name in _FITTED if prefix + name in state_dict]
        if present and len(present) != len(_FITTED):
            error_msgs.append(f"PCA: incomplete fitted state, missing "
                              f"{sorted(set(_FITTED) - set(present))}")
            return
        problem = self._state_problem({name: state_dict[prefix + name] for name in present}) if present else None
        if problem is None:
            try:
                self._check_params()
            except InvalidParameterError as e:
                problem = str(e)
        if problem is not None:
            error_msgs.append(problem)
            return
        mean = self._buffers.get("mean_")
        for name in present:
            v = state_dict[prefix + name]
            device = mean.device if mean is not None else v.device
            self._buffers[name] = torch.empty(v.shape, dtype=v.dtype, device=device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @staticmethod
    def _state_problem(state: dict[str, torch.Tensor]) -> str | None:
        """What makes a fitted state (``_FITTED`` -> tensor) inconsistent, or None: the
        shapes (``mean_ (D,)``, ``components_ (r, D)`` with ``1 <= r <= D``, three ``(r,)``
        vectors, two scalars), floating tensors with finite values (the variance ratios
        may be NaN, as for constant data), variances >= 0, ``n_samples_`` an integer >= 2,
        and orthonormal components; methods would otherwise fail deep inside or answer
        silently wrong."""
        mean, comp = state["mean_"], state["components_"]
        if mean.dim() != 1 or comp.dim() != 2 or not 1 <= comp.shape[0] <= mean.shape[0] == comp.shape[1]:
            return (f"PCA: inconsistent fitted state: mean_ must be (D,) and components_ (r, D) with 1 <= r <= D, "
                    f"got {tuple(mean.shape)} and {tuple(comp.shape)}")
        r = comp.shape[0]
        for name in ("explained_variance_", "explained_variance_ratio_", "singular_values_"):
            if tuple(state[name].shape) != (r,):
                return f"PCA: inconsistent fitted state: {name} must have shape ({r},), got {tuple(state[name].shape)}"
        for name in ("noise_variance_", "n_samples_"):
            if state[name].dim() != 0:
                return f"PCA: inconsistent fitted state: {name} must be a scalar, got shape {tuple(state[name].shape)}"
        for name in _FITTED[:-1]:
            if not state[name].is_floating_point():
                return f"PCA: inconsistent fitted state: {name} must be floating point, got {state[name].dtype}"
            if name != "explained_variance_ratio_" and not torch.isfinite(state[name]).all():
                return f"PCA: inconsistent fitted state: {name} holds NaN or infinite values"
        n = state["n_samples_"]
        if n.is_floating_point() or n.dtype == torch.bool or int(n) < 2:
            return f"PCA: inconsistent fitted state: n_samples_ must be an integer >= 2, got {n}"
        for name in ("explained_variance_", "singular_values_", "noise_variance_"):
            if (state[name] < 0).any():
                return f"PCA: inconsistent fitted state: {name} must be >= 0"
        gram = comp.double() @ comp.double().T
        if not torch.allclose(gram, torch.eye(r, dtype=torch.float64, device=gram.device), atol=1e-4):
            return "PCA: inconsistent fitted state: the rows of components_ are not orthonormal"
        return None

    def extra_repr(self) -> str:
        solver = f", svd_solver={self.svd_solver!r}" if self.svd_solver != "auto" else ""
        fitted = f", fitted: {self.n_features_in_} -> {self.n_components_}" if self.fitted else ""
        return f"n_components={self.n_components!r}, whiten={self.whiten!r}{solver}{fitted}"

    # ------------------------------------------------------------------------ validation

    def _check_params(self):
        """Validate the constructor arguments (scikit-learn validates in fit)."""
        n = self.n_components
        if n is not None:
            if isinstance(n, str):
                if n == "mle":
                    raise InvalidParameterError("PCA: n_components='mle' (Minka's estimate) is not supported; use an "
                                                "int, a float in (0, 1) or None")
                raise InvalidParameterError(f"PCA: n_components must be an int >= 1, a float in (0, 1) or None, "
                                            f"got {n!r}")
            if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Real):
                raise InvalidParameterError(f"PCA: n_components must be an int >= 1, a float in (0, 1) or None, "
                                            f"got {n!r} of type {type(n).__name__}")
            if isinstance(n, numbers.Integral):
                if n < 1:
                    raise InvalidParameterError(f"PCA: n_components must be an int >= 1, a float in (0, 1) or "
                                                f"None, got {n!r}")
                n = int(n)
            elif not 0.0 < float(n) < 1.0:
                raise InvalidParameterError(f"PCA: a float n_components is a fraction of variance in (0, 1), "
                                            f"got {n!r}")
            else:
                n = float(n)
        if not isinstance(self.whiten, (bool, np.bool_)):
            raise InvalidParameterError(f"PCA: whiten must be a bool, got {self.whiten!r} of type "
                                        f"{type(self.whiten).__name__}")
        solver = self.svd_solver
        choices = ", ".join(map(repr, _SVD_SOLVERS))
        if not isinstance(solver, str):
            raise InvalidParameterError(f"PCA: svd_solver must be a str, one of {choices}, got {solver!r} of type "
                                        f"{type(solver).__name__}")
        if solver in _UNSUPPORTED_SOLVERS:
            raise InvalidParameterError(f"PCA: svd_solver={solver!r} is not supported; gencore's PCA always computes "
                                        f"the exact full SVD: use svd_solver='auto' or 'full'")
        if solver not in _SVD_SOLVERS:
            raise InvalidParameterError(f"PCA: svd_solver must be one of {choices}, got {solver!r}")
        return n

    def _as_tensor(self, X, name: str = "X", features: int | None = None, reset: bool = False, what: str = ""):
        """``X`` as a float64 tensor, plus a function turning a float64 result back into the
        caller's kind (dtype, device, numpy) and whether the caller passed a tensor.
        ``reset`` (fit) sets ``feature_names_in_``; otherwise feature names are checked.
        ``what`` explains ``features`` in the error message."""
        if isinstance(X, torch.Tensor):
            if X.is_complex():
                raise ValueError(f"PCA: {name} must hold real numbers: Complex data not supported, "
                                 f"got dtype {X.dtype}")
            if X.device.type == "meta":
                raise ValueError(f"PCA: {name} is on the meta device, which holds no values; pass real data")
            t = X.detach()
            out_dtype = t.dtype if t.dtype.is_floating_point else torch.float64
            is_torch = True
            if reset:
                self.__dict__.pop("feature_names_in_", None)
        else:
            if _is_sparse(X):
                raise TypeError(f"PCA: {name} is a sparse {type(X).__name__}; sparse input is not supported, "
                                f"pass a dense array ({name}.toarray())")
            if hasattr(X, "columns") or "feature_names_in_" in self.__dict__:
                from sklearn.utils.validation import _check_feature_names

                _check_feature_names(self, X, reset=reset)
            try:
                a = np.asarray(X)
            except (TypeError, ValueError) as e:
                raise (TypeError if isinstance(e, TypeError) else ValueError)(
                    f"PCA: {name} must be a tensor or an array-like of real numbers: {e}") from e
            kind = a.dtype.kind
            if kind == "c":
                raise ValueError(f"PCA: {name} must hold real numbers: Complex data not supported, "
                                 f"got dtype {a.dtype}")
            if kind == "O":
                try:
                    a = a.astype(np.float64)
                except (TypeError, ValueError) as e:
                    raise (TypeError if isinstance(e, TypeError) else ValueError)(
                        f"PCA: {name} must hold real numbers: {e}") from e
            elif kind not in "biuf":
                raise ValueError(f"PCA: {name} must hold real numbers, got dtype {a.dtype}")
            out_np = np.dtype(a.dtype.name) if a.dtype.kind == "f" else np.dtype(np.float64)
            t = None
            is_torch = False
        shape = tuple(X.shape) if is_torch else a.shape
        if len(shape) != 2:
            hint = ""
            if len(shape) > 2:
                hint = (f"; flatten images with {name}.flatten(1)" if is_torch
                        else f"; flatten with {name}.reshape(len({name}), -1)")
            elif len(shape) == 1:
                hint = (f". Reshape your data either using {name}.reshape(-1, 1) if it has a single feature or "
                        f"{name}.reshape(1, -1) if it is a single sample")
            raise ValueError(f"PCA: {name} must be 2-D (n_samples, n_features), got shape {shape}{hint}")
        if shape[0] == 0:
            raise ValueError(f"PCA: {name} is empty: 0 sample(s) (shape={shape}) while a minimum of 1 is "
                             f"required.")
        if shape[1] == 0:
            raise ValueError(f"PCA: {name} has 0 feature(s) (shape={shape}) while a minimum of 1 is required.")
        if features is not None and shape[1] != features:
            raise ValueError(f"PCA: {name} has {shape[1]} features, but PCA is expecting {features} features "
                             f"as input{what}")
        if is_torch:
            t = t.to(torch.float64)
        else:
            a = np.asarray(a, dtype=np.float64, order="C")
            if not a.flags.writeable:  # torch.from_numpy warns on read-only memory
                a = a.copy()
            t = torch.from_numpy(a)
        if not torch.isfinite(t).all():
            raise ValueError(f"PCA: {name} contains NaN or infinite values")

        if is_torch:
            def back(r: torch.Tensor):
                return r.to(out_dtype)
        else:
            def back(r: torch.Tensor):
                return r.cpu().numpy().astype(out_np, copy=False)

        return t, back, is_torch

    def _fitted_tensors(self, device):
        self._check_fitted()
        return {name: self._buf(name).to(device=device, dtype=torch.float64)
                for name in ("mean_", "components_", "explained_variance_", "noise_variance_")}

    # ------------------------------------------------------------------------------- fit

    @torch.no_grad()
    def fit(self, X, y=None) -> PCA:
        """Fit the components to ``X: (N, D)`` (N >= 2). ``y`` is ignored. Returns ``self``."""
        self._fit(X)
        return self

    def _fit(self, X):
        n_components = self._check_params()
        x, back, is_torch = self._as_tensor(X, reset=True)
        n, d = x.shape
        if n < 2:
            raise ValueError(f"PCA: fit needs at least 2 samples in X, got n_samples={n}")
        k_max = min(n, d)
        if isinstance(n_components, int) and n_components > k_max:
            raise ValueError(f"PCA: n_components={n_components} must be <= min(n_samples, n_features) = {k_max}")
        mean = x.mean(0)
        xc = x - mean
        u, s, vt = torch.linalg.svd(xc, full_matrices=False)
        # scikit-learn's svd_flip(u_based_decision=False): the largest |entry| of each
        # component is positive (argmax takes the first of ties, as numpy's does).
        pivot = vt.abs().argmax(1)
        signs = torch.sign(vt.gather(1, pivot[:, None]))
        u, vt = u * signs.T, vt * signs
        ev = s.square() / (n - 1)
        ratio = ev / ev.sum()  # NaN for constant data, as scikit-learn's
        if n_components is None:
            k = k_max
        elif isinstance(n_components, float):
            target = torch.tensor(n_components, dtype=torch.float64, device=x.device)
            k = min(int(torch.searchsorted(ratio.cumsum(0), target, right=True)) + 1, k_max)
        else:
            k = n_components
        noise = ev[k:].mean() if k < k_max else ev.new_zeros(())
        self.__dict__["_numpy_attributes"] = not is_torch
        buffers = self._buffers
        buffers["mean_"] = mean
        buffers["components_"] = vt[:k].contiguous()
        buffers["explained_variance_"] = ev[:k].contiguous()
        buffers["explained_variance_ratio_"] = ratio[:k].contiguous()
        buffers["singular_values_"] = s[:k].contiguous()
        buffers["noise_variance_"] = noise
        buffers["n_samples_"] = torch.tensor(n, dtype=torch.int64, device=x.device)
        return u[:, :k], s[:k], back

    @torch.no_grad()
    def fit_transform(self, X, y=None):
        """Fit to ``X: (N, D)`` and return its projections ``(N, r)``. ``y`` is ignored."""
        u, s, back = self._fit(X)
        z = u * math.sqrt(u.shape[0] - 1) if self.whiten else u * s
        return back(z)

    # ------------------------------------------------------------------ encode / decode

    def _whiten_scale(self, ev: torch.Tensor) -> torch.Tensor:
        # as scikit-learn: a component of (numerically) zero variance is not blown up to inf
        return ev.sqrt().clamp_min(torch.finfo(torch.float64).eps)

    @torch.no_grad()
    def transform(self, X):
        """Project ``X: (B, D)`` onto the components: ``z = (X - mean_) @ components_.T``,
        ``(B, r)``; divided by ``sqrt(explained_variance_)`` when ``whiten``."""
        self._check_fitted()
        x, back, _ = self._as_tensor(X, features=self.n_features_in_)
        p = self._fitted_tensors(x.device)
        z = (x - p["mean_"]) @ p["components_"].T
        if self.whiten:
            z = z / self._whiten_scale(p["explained_variance_"])
        return back(z)

    @torch.no_grad()
    def inverse_transform(self, X):
        """Map latent codes ``X: (B, r)`` back to data space ``(B, D)``:
        ``X @ components_ + mean_`` (un-whitened first when ``whiten``)."""
        self._check_fitted()
        z, back, _ = self._as_tensor(X, features=self.n_components_, what=" (the latent size n_components_)")
        p = self._fitted_tensors(z.device)
        if self.whiten:
            z = z * self._whiten_scale(p["explained_variance_"])
        return back(z @ p["components_"] + p["mean_"])

    def forward(self, X):
        """Same as :meth:`transform` (a fitted PCA used as a fixed layer)."""
        return self.transform(X)

    def encode(self, X):
        """The linear encoder ``E``: alias of :meth:`transform`, ``(B, D) -> (B, r)``."""
        return self.transform(X)

    def decode(self, z):
        """The linear decoder ``D``: alias of :meth:`inverse_transform`, ``(B, r) -> (B, D)``."""
        return self.inverse_transform(z)

    def reconstruct(self, X):
        """``D(E(X))``: the orthogonal projection of ``X: (B, D)`` onto the principal subspace."""
        return self.inverse_transform(self.transform(X))

    @torch.no_grad()
    def reconstruction_error(self, X):
        """Squared reconstruction error per example, summed over the D features:
        ``||X - D(E(X))||^2``, shape ``(B,)``, in squared units of ``X``."""
        self._check_fitted()
        t, back, _ = self._as_tensor(X, features=self.n_features_in_)
        p = self._fitted_tensors(t.device)
        xc = t - p["mean_"]
        r = xc - (xc @ p["components_"].T) @ p["components_"]
        return back(r.square().sum(1))

    # ---------------------------------------------------------------- probabilistic PCA

    def _model_variances(self, p) -> torch.Tensor:
        # Variance along each kept component; a component whose eigenvalue is not above the
        # noise level gets the noise variance (scikit-learn's clipping of lambda - sigma^2 at 0).
        return torch.maximum(p["explained_variance_"], p["noise_variance_"])

    @torch.no_grad()
    def get_covariance(self):
        """Model covariance ``components_.T diag(lambda - sigma^2) components_ + sigma^2 I``,
        ``(D, D)`` float64 (an ndarray after a numpy fit, else a tensor)."""
        p = self._fitted_tensors(self._buf("components_").device)
        w, s2 = p["components_"], p["noise_variance_"]
        cov = (w.T * (self._model_variances(p) - s2)) @ w
        return self._out(cov + s2 * torch.eye(w.shape[1], dtype=cov.dtype, device=cov.device))

    @torch.no_grad()
    def get_precision(self):
        """Inverse of :meth:`get_covariance`, ``(D, D)`` float64 (an ndarray after a numpy fit,
        else a tensor), in closed form: ``(I - W^T W) / sigma^2 + W^T diag(1 / lambda) W``.

        Raises ValueError when the model covariance is singular: ``noise_variance_`` is 0
        (``r = min(N, D)``) and the kept components do not span all D features with positive
        variance (e.g. ``N <= D``, or a constant feature)."""
        p = self._fitted_tensors(self._buf("components_").device)
        w, s2 = p["components_"], p["noise_variance_"]
        lam = self._check_nonsingular(p)
        eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
        return self._out((eye - w.T @ w) / s2 + (w.T / lam) @ w if s2 > 0 else (w.T / lam) @ w)

    def _check_nonsingular(self, p) -> torch.Tensor:
        lam = self._model_variances(p)
        d, k = p["components_"].shape[1], p["components_"].shape[0]
        if p["noise_variance_"] <= 0 and (k < d or bool((lam <= 0).any())):
            raise ValueError("PCA: the model covariance is singular (noise_variance_ is 0 and the kept components "
                             "do not span all features with positive variance); the likelihood is undefined. "
                             "Fit with n_components < min(n_samples, n_features).")
        return lam

    @torch.no_grad()
    def score_samples(self, X):
        """Probabilistic-PCA log-likelihood ``log N(x; mean_, get_covariance())`` of each row
        of ``X: (B, D)``, in nats, shape ``(B,)``. Computed without forming the ``D x D``
        precision: with ``r = x - mean_`` and ``c = components_ @ r``,
        ``-2 log p = ||r||^2 / s2 - ||c||^2 / s2 + sum(c^2 / lambda) + D log 2pi
        + sum log lambda + (D - k) log s2``."""
        self._check_fitted()
        t, back, _ = self._as_tensor(X, features=self.n_features_in_)
        p = self._fitted_tensors(t.device)
        lam = self._check_nonsingular(p)
        s2 = p["noise_variance_"]
        d, k = p["components_"].shape[1], p["components_"].shape[0]
        r = t - p["mean_"]
        c = r @ p["components_"].T
        maha = (c.square() / lam).sum(1)
        logdet = lam.log().sum()
        if s2 > 0:
            # the residual orthogonal to the components, computed directly (no cancellation)
            resid = r - c @ p["components_"]
            maha = maha + resid.square().sum(1) / s2
            logdet = logdet + (d - k) * s2.log()
        return back(-0.5 * (maha + logdet + d * math.log(2 * math.pi)))

    def score(self, X, y=None) -> float:
        """Mean of :meth:`score_samples` over ``X: (B, D)``: the average log-likelihood in nats
        per example, a Python float (higher is better: what ``GridSearchCV`` maximises when
        given no ``scoring``). ``y`` is ignored."""
        return float(torch.as_tensor(self.score_samples(X), dtype=torch.float64).mean())

    def log_prob(self, X):
        """Same as :meth:`score_samples`: ``log p(x)`` in nats per example, ``(B,)``."""
        return self.score_samples(X)

    def loss(self, batch) -> torch.Tensor:
        """Mean negative log-likelihood in nats per example of ``batch`` (``x`` or ``(x, y)``),
        so :func:`gencore.train.fit`'s evaluator reports it. PCA has no trainable
        parameters: fit it with :meth:`fit`, not with gradient descent."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return -torch.as_tensor(self.score_samples(x)).mean()
