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
(``svd_solver="full"``), including the sign convention of the components.
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


class PCA(nn.Module):
    """Principal component analysis, compatible with scikit-learn's ``PCA``.

    ``fit`` runs a full SVD of the centred data (``torch.linalg.svd``, in float64, on the
    data's device) and flips signs as scikit-learn does (the largest-magnitude entry of each
    component is positive), so components agree with scikit-learn's including their sign.

    Inputs are ``(N, D)`` tensors (CPU or CUDA, any floating dtype) or numpy arrays; every
    computation is done in float64 and returned in the input's floating dtype (float64 for
    integer input), as a tensor on the input's device, or as a numpy array for numpy input.
    Fitted attributes are float64 buffers (saved by ``state_dict``, so a fitted PCA
    checkpoints with :func:`gencore.train.save_checkpoint` and loads into a fresh
    ``PCA(**config)``).

    As a module, ``forward`` is :meth:`transform`; :meth:`encode` / :meth:`decode` are the
    auto-encoder names of :meth:`transform` / :meth:`inverse_transform`.

    Args:
        n_components: latent size ``r``: an int in ``[1, min(N, D)]``; a float in ``(0, 1)``,
            the smallest ``r`` whose explained variance ratio exceeds it; or None for
            ``min(N, D)``.
        whiten: scale the projections to unit variance (divide by ``sqrt(explained_variance_)``).
            Only :meth:`transform` / :meth:`inverse_transform` change; the density and the
            reconstructions do not (scikit-learn's ``score_samples`` with ``whiten=True``
            uses a rescaled covariance, scikit-learn issue #13898; gencore does not).

    Fitted attributes (float64 tensors): ``mean_ (D,)``, ``components_ (r, D)`` (orthonormal
    rows, by decreasing variance), ``explained_variance_ (r,)`` (eigenvalues of the
    covariance with ddof=1), ``explained_variance_ratio_ (r,)``, ``singular_values_ (r,)``,
    ``noise_variance_ ()`` (the probabilistic-PCA noise variance ``sigma^2``, 0 when
    ``r = min(N, D)``), ``n_samples_ ()``; ``n_components_``, ``n_features_in_`` (ints).
    """

    def __init__(self, n_components: int | float | None = None, *, whiten: bool = False) -> None:
        super().__init__()
        if n_components is not None:
            if isinstance(n_components, bool) or not isinstance(n_components, numbers.Real):
                raise ValueError(f"PCA: n_components must be an int >= 1, a float in (0, 1) or None, "
                                 f"got {n_components!r}")
            if isinstance(n_components, numbers.Integral):
                if n_components < 1:
                    raise ValueError(f"PCA: n_components must be an int >= 1, a float in (0, 1) or None, "
                                     f"got {n_components!r}")
                n_components = int(n_components)
            elif not 0.0 < float(n_components) < 1.0:
                raise ValueError(f"PCA: a float n_components is a fraction of variance in (0, 1), "
                                 f"got {n_components!r}")
            else:
                n_components = float(n_components)
        if not isinstance(whiten, bool):
            raise ValueError(f"PCA: whiten must be a bool, got {whiten!r}")
        self.n_components = n_components
        self.whiten = whiten
        self.config = {"n_components": n_components, "whiten": whiten}
        for name in _FITTED:
            self.register_buffer(name, None)

    # ----------------------------------------------------------------------------- state

    @property
    def fitted(self) -> bool:
        return self.components_ is not None

    @property
    def n_components_(self) -> int:
        self._check_fitted()
        return self.components_.shape[0]

    @property
    def n_features_in_(self) -> int:
        self._check_fitted()
        return self.components_.shape[1]

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise ValueError("PCA: this PCA is not fitted yet; call fit(x) first")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A fresh PCA has no buffers of known shape: take the shapes from the checkpoint.
        present = [name for name in _FITTED if prefix + name in state_dict]
        if present and len(present) != len(_FITTED):
            error_msgs.append(f"PCA: incomplete fitted state, missing "
                              f"{sorted(set(_FITTED) - set(present))}")
            return
        for name in present:
            v = state_dict[prefix + name]
            device = self.mean_.device if self.mean_ is not None else v.device
            self._buffers[name] = torch.empty(v.shape, dtype=v.dtype, device=device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        fitted = f", fitted: {self.n_features_in_} -> {self.n_components_}" if self.fitted else ""
        return f"n_components={self.n_components!r}, whiten={self.whiten}{fitted}"

    # ------------------------------------------------------------------------ validation

    def _as_tensor(self, x, name: str = "x", features: int | None = None):
        """``x`` as a float64 tensor, plus a function turning a float64 result back into
        the caller's type (dtype, device, numpy)."""
        is_numpy = isinstance(x, np.ndarray)
        if is_numpy:
            if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
                raise ValueError(f"PCA: {name} must hold real numbers, got dtype {x.dtype}")
            t = torch.from_numpy(np.ascontiguousarray(x))
        elif isinstance(x, torch.Tensor):
            if x.is_complex() or x.dtype == torch.bool:
                raise ValueError(f"PCA: {name} must hold real numbers, got dtype {x.dtype}")
            t = x.detach()
        else:
            raise TypeError(f"PCA: {name} must be a torch.Tensor or a numpy array, got {type(x).__name__}")
        if t.dim() != 2:
            raise ValueError(f"PCA: {name} must be 2-D (n_samples, n_features), got shape {tuple(t.shape)}"
                             + ("; flatten images with x.flatten(1)" if t.dim() > 2 else ""))
        if t.shape[0] == 0:
            raise ValueError(f"PCA: {name} is empty (0 samples)")
        if features is not None and t.shape[1] != features:
            raise ValueError(f"PCA: {name} has {t.shape[1]} features, but this PCA was fitted with {features}")
        out_dtype = t.dtype if t.dtype.is_floating_point else torch.float64
        t = t.to(torch.float64)
        if not torch.isfinite(t).all():
            raise ValueError(f"PCA: {name} contains NaN or infinite values")

        def back(r: torch.Tensor):
            r = r.to(out_dtype)
            return r.cpu().numpy() if is_numpy else r

        return t, back

    def _fitted_tensors(self, device):
        self._check_fitted()
        return {name: getattr(self, name).to(device=device, dtype=torch.float64)
                for name in ("mean_", "components_", "explained_variance_", "noise_variance_")}

    # ------------------------------------------------------------------------------- fit

    @torch.no_grad()
    def fit(self, x, y=None) -> PCA:
        """Fit the components to ``x: (N, D)`` (N >= 2). ``y`` is ignored. Returns ``self``."""
        self._fit(x)
        return self

    def _fit(self, x):
        x, back = self._as_tensor(x)
        n, d = x.shape
        if n < 2:
            raise ValueError(f"PCA: fit needs at least 2 samples, got {n}")
        k_max = min(n, d)
        if isinstance(self.n_components, int) and self.n_components > k_max:
            raise ValueError(f"PCA: n_components={self.n_components} must be <= min(n_samples, n_features) = "
                             f"{k_max}")
        mean = x.mean(0)
        xc = x - mean
        u, s, vt = torch.linalg.svd(xc, full_matrices=False)
        # scikit-learn's svd_flip(u_based_decision=False): the largest |entry| of each
        # component is positive (argmax takes the first of ties, as numpy's does).
        pivot = vt.abs().argmax(1)
        signs = torch.sign(vt.gather(1, pivot[:, None]))
        u, vt = u * signs.T, vt * signs
        ev = s.square() / (n - 1)
        ratio = ev / ev.sum()
        if self.n_components is None:
            k = k_max
        elif isinstance(self.n_components, float):
            target = torch.tensor(self.n_components, dtype=torch.float64, device=x.device)
            k = min(int(torch.searchsorted(ratio.cumsum(0), target, right=True)) + 1, k_max)
        else:
            k = self.n_components
        noise = ev[k:].mean() if k < k_max else ev.new_zeros(())
        self.mean_ = mean
        self.components_ = vt[:k].contiguous()
        self.explained_variance_ = ev[:k].contiguous()
        self.explained_variance_ratio_ = ratio[:k].contiguous()
        self.singular_values_ = s[:k].contiguous()
        self.noise_variance_ = noise
        self.n_samples_ = torch.tensor(n, dtype=torch.int64, device=x.device)
        return u[:, :k], s[:k], back

    @torch.no_grad()
    def fit_transform(self, x, y=None):
        """Fit to ``x: (N, D)`` and return its projections ``(N, r)``."""
        u, s, back = self._fit(x)
        z = u * math.sqrt(u.shape[0] - 1) if self.whiten else u * s
        return back(z)

    # ------------------------------------------------------------------ encode / decode

    def _whiten_scale(self, ev: torch.Tensor) -> torch.Tensor:
        # as scikit-learn: a component of (numerically) zero variance is not blown up to inf
        return ev.sqrt().clamp_min(torch.finfo(torch.float64).eps)

    @torch.no_grad()
    def transform(self, x):
        """Project ``x: (B, D)`` onto the components: ``z = (x - mean_) @ components_.T``,
        ``(B, r)``; divided by ``sqrt(explained_variance_)`` when ``whiten``."""
        self._check_fitted()
        x, back = self._as_tensor(x, features=self.n_features_in_)
        p = self._fitted_tensors(x.device)
        z = (x - p["mean_"]) @ p["components_"].T
        if self.whiten:
            z = z / self._whiten_scale(p["explained_variance_"])
        return back(z)

    @torch.no_grad()
    def inverse_transform(self, z):
        """Map latents ``z: (B, r)`` back to data space ``(B, D)``: ``z @ components_ + mean_``
        (un-whitened first when ``whiten``)."""
        self._check_fitted()
        z, back = self._as_tensor(z, "z", features=self.n_components_)
        p = self._fitted_tensors(z.device)
        if self.whiten:
            z = z * self._whiten_scale(p["explained_variance_"])
        return back(z @ p["components_"] + p["mean_"])

    def forward(self, x):
        """Same as :meth:`transform` (a fitted PCA used as a fixed layer)."""
        return self.transform(x)

    def encode(self, x):
        """The linear encoder ``E``: alias of :meth:`transform`."""
        return self.transform(x)

    def decode(self, z):
        """The linear decoder ``D``: alias of :meth:`inverse_transform`."""
        return self.inverse_transform(z)

    def reconstruct(self, x):
        """``D(E(x))``: the orthogonal projection of ``x: (B, D)`` onto the principal subspace."""
        return self.inverse_transform(self.transform(x))

    @torch.no_grad()
    def reconstruction_error(self, x):
        """Squared reconstruction error per example, summed over the D features:
        ``||x - D(E(x))||^2``, shape ``(B,)``, in squared units of ``x``."""
        self._check_fitted()
        t, back = self._as_tensor(x, features=self.n_features_in_)
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
    def get_covariance(self) -> torch.Tensor:
        """Model covariance ``components_.T diag(lambda - sigma^2) components_ + sigma^2 I``,
        ``(D, D)`` float64."""
        p = self._fitted_tensors(self.components_.device)
        w, s2 = p["components_"], p["noise_variance_"]
        cov = (w.T * (self._model_variances(p) - s2)) @ w
        return cov + s2 * torch.eye(w.shape[1], dtype=cov.dtype, device=cov.device)

    @torch.no_grad()
    def get_precision(self) -> torch.Tensor:
        """Inverse of :meth:`get_covariance`, ``(D, D)`` float64, in closed form:
        ``(I - W^T W) / sigma^2 + W^T diag(1 / lambda) W``.

        Raises ValueError when the model covariance is singular: ``noise_variance_`` is 0
        (``r = min(N, D)``) and the kept components do not span all D features with positive
        variance (e.g. ``N <= D``, or a constant feature)."""
        p = self._fitted_tensors(self.components_.device)
        w, s2 = p["components_"], p["noise_variance_"]
        lam = self._check_nonsingular(p)
        eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
        return (eye - w.T @ w) / s2 + (w.T / lam) @ w if s2 > 0 else (w.T / lam) @ w

    def _check_nonsingular(self, p) -> torch.Tensor:
        lam = self._model_variances(p)
        d, k = p["components_"].shape[1], p["components_"].shape[0]
        if p["noise_variance_"] <= 0 and (k < d or bool((lam <= 0).any())):
            raise ValueError("PCA: the model covariance is singular (noise_variance_ is 0 and the kept components "
                             "do not span all features with positive variance); the likelihood is undefined. "
                             "Fit with n_components < min(n_samples, n_features).")
        return lam

    @torch.no_grad()
    def score_samples(self, x):
        """Probabilistic-PCA log-likelihood ``log N(x; mean_, get_covariance())`` of each example
        of ``x: (B, D)``, in nats, shape ``(B,)``. Computed without forming the ``D x D``
        precision: with ``r = x - mean_`` and ``c = components_ @ r``,
        ``-2 log p = ||r||^2 / s2 - ||c||^2 / s2 + sum(c^2 / lambda) + D log 2pi
        + sum log lambda + (D - k) log s2``."""
        self._check_fitted()
        t, back = self._as_tensor(x, features=self.n_features_in_)
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

    def score(self, x) -> float:
        """Mean of :meth:`score_samples` over ``x``: average log-likelihood in nats per example."""
        return float(torch.as_tensor(self.score_samples(x), dtype=torch.float64).mean())

    def log_prob(self, x):
        """Same as :meth:`score_samples`: ``log p(x)`` in nats per example, ``(B,)``."""
        return self.score_samples(x)

    def loss(self, batch) -> torch.Tensor:
        """Mean negative log-likelihood in nats per example of ``batch`` (``x`` or ``(x, y)``),
        so :func:`gencore.train.fit`'s evaluator reports it. PCA has no trainable
        parameters: fit it with :meth:`fit`, not with gradient descent."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return -torch.as_tensor(self.score_samples(x)).mean()
