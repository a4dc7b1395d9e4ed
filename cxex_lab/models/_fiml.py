r"""Full-information maximum likelihood for panel structural equation models.

The engine behind :mod:`cxex_lab.models.direction`. A model is a *spec* object
that maps a parameter vector to the model-implied covariance matrix
:math:`\Sigma(\theta)` of the ``p`` observed variables and a mean-structure
matrix :math:`M(\theta)` (the mean of unit :math:`i` is :math:`M v_i` with
:math:`v_i = (1, c_i)` holding the unit's exogenous covariates). Everything
else is model-free and lives here:

* :class:`Patterns` groups units by missingness pattern and keeps, per
  pattern, the sufficient statistics :math:`Q_p = \sum_i u_i u_i'`,
  :math:`u_i = (z_{io}, v_i)`; patterns with the same number of observed
  variables are stacked so that one batched Cholesky serves all of them.
* :func:`loglik` is the FIML log-likelihood summed over patterns, with its
  derivatives with respect to :math:`\Sigma` and :math:`M`;
* :class:`Objective` chains those to the parameters through exact
  complex-step Jacobians of the spec's ``build``;
* :func:`unit_scores` gives every unit's score vector (for sandwich standard
  errors), :func:`expected_information` the observed-data Fisher information;
* :func:`saturated_em` and :func:`baseline_loglik` give the unrestricted and
  independence models behind chi-square, CFI and RMSEA.

Why hand-written: semopy 2.3.11 has no FIML with a mean structure and was far
too slow on incomplete panels (about 6 s for 800 units x 5 waves with its
FIML objective); lavaan is R. The per-pattern likelihood here is the textbook
one (Enders & Bandalos 2001), checked against semopy on complete data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import optimize

LOG2PI = math.log(2.0 * math.pi)
CSTEP = 1e-20  # complex-step size: derivatives exact to machine precision


# --------------------------------------------------------------------------- parameter layout
class Layout:
    """Named slices of a flat parameter vector, and its covariance blocks.

    Covariance blocks are stored in the *raw* vector as the lower triangle
    (row-major: (0,0), (1,0), (1,1), (2,0), ...) of the covariance matrix and
    optimised in *phi* space as the log-Cholesky factor (log of the diagonal),
    which keeps every block positive definite whatever the optimiser tries.
    Standard errors are computed in the raw (variance / covariance)
    parameterisation, like lavaan's.
    """

    def __init__(self) -> None:
        self.n = 0
        self.labels: list[str] = []
        self._blocks: dict[int, list[np.ndarray]] = {}

    def add(self, name: str, n: int) -> slice:
        sl = slice(self.n, self.n + n)
        self.labels += [f"{name}[{i}]" for i in range(n)] if n > 1 else [name]
        self.n += n
        return sl

    def add_cov(self, name: str, m: int) -> slice:
        """Register an m x m covariance block; returns its slice (lower triangle)."""
        sl = self.add(name, m * (m + 1) // 2)
        self._blocks.setdefault(m, []).append(np.arange(sl.start, sl.stop))
        return sl

    def finish(self) -> None:
        self.blocks = {m: np.asarray(v) for m, v in self._blocks.items()}
        self.tril = {m: np.tril_indices(m) for m in self.blocks}

    # ----- phi (log-Cholesky) <-> raw (covariance) for every block
    def to_raw(self, phi: np.ndarray) -> np.ndarray:
        raw = phi.copy()
        for m, idx in self.blocks.items():
            v = phi[..., idx]  # (..., nb, nv)
            if m == 1:
                raw[..., idx] = np.exp(2.0 * v)
                continue
            r, c = self.tril[m]
            L = np.zeros((*v.shape[:-1], m, m), dtype=phi.dtype)
            L[..., r, c] = v
            d = np.arange(m)
            L[..., d, d] = np.exp(L[..., d, d])
            C = L @ np.swapaxes(L, -1, -2)
            raw[..., idx] = C[..., r, c]
        return raw

    def to_phi(self, raw: np.ndarray) -> np.ndarray:
        phi = np.array(raw, dtype=float, copy=True)
        for m, idx in self.blocks.items():
            r, c = self.tril[m]
            for b in idx:
                C = np.zeros((m, m))
                C[r, c] = raw[b]
                C = C + np.tril(C, -1).T
                w, U = np.linalg.eigh(C)
                C = (U * np.maximum(w, 1e-6 * max(1.0, w.max()))) @ U.T
                L = np.linalg.cholesky(C)
                L[np.arange(m), np.arange(m)] = np.log(np.diag(L))
                phi[b] = L[r, c]
        return phi

    def cov_block(self, raw: np.ndarray, sl: slice) -> np.ndarray:
        """The (..., m, m) covariance matrix of the block stored at ``sl``."""
        n = sl.stop - sl.start
        m = int((math.isqrt(8 * n + 1) - 1) // 2)
        r, c = np.tril_indices(m)
        v = raw[..., sl]
        C = np.zeros((*v.shape[:-1], m, m), dtype=raw.dtype)
        C[..., r, c] = v
        C[..., c, r] = v
        return C


# --------------------------------------------------------------------------- within-unit VAR(1)
def within_cov(A: np.ndarray, S1: np.ndarray, Sr: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Covariance of the within components of a bivariate VAR(1) over T waves.

    ``A`` (K, n_lagsets, 2, 2) lag matrices (one set, or one per wave 2..T),
    ``S1`` (K, 2, 2) wave-1 covariance, ``Sr`` (K, n_res, 2, 2) innovation
    covariances (one, or one per wave 2..T). Returns the (K, 2T, 2T) covariance
    with variables ordered x_1..x_T, y_1..y_T, and the (K, T, 2, 2) per-wave
    variance blocks. :math:`w_t = A_t w_{t-1} + u_t`, so
    :math:`Cov(w_t, w_s) = A_t Cov(w_{t-1}, w_s)` for s < t and
    :math:`Var(w_t) = A_t Var(w_{t-1}) A_t' + \Psi_t`.
    """
    K = S1.shape[0]
    Wb = np.zeros((K, T, T, 2, 2), dtype=np.result_type(A, S1, Sr))
    Wb[:, 0, 0] = S1
    row = [S1]
    for t in range(1, T):
        At = A[:, 0 if A.shape[1] == 1 else t - 1]
        St = Sr[:, 0 if Sr.shape[1] == 1 else t - 1]
        new = [At @ row[s] for s in range(t)]
        new.append(At @ row[t - 1] @ np.swapaxes(At, -1, -2) + St)
        for s in range(t + 1):
            Wb[:, t, s] = new[s]
            if s < t:
                Wb[:, s, t] = np.swapaxes(new[s], -1, -2)
        row = new
    W = Wb.transpose(0, 3, 1, 4, 2).reshape(K, 2 * T, 2 * T)
    var_blocks = Wb[:, np.arange(T), np.arange(T)]
    return W, var_blocks


# --------------------------------------------------------------------------- patterns
@dataclass
class Group:
    """Patterns with the same number k of observed variables, stacked."""

    k: int
    idx: np.ndarray  # (G, k) observed variable indices
    midx: np.ndarray  # (G, p - k) missing variable indices
    Q: np.ndarray  # (G, k + qv, k + qv) sum of u u'
    n: np.ndarray  # (G,) units per pattern
    fs: np.ndarray  # (G, k, k) flat indices into p x p
    fm: np.ndarray  # (G, k, qv) flat indices into p x qv


@dataclass
class Patterns:
    """Units grouped by missingness pattern (FIML sufficient statistics)."""

    p: int
    qv: int
    n_units: int
    obs: list[np.ndarray]  # per pattern: observed indices
    rows: list[np.ndarray]  # per pattern: unit rows
    groups: list[Group] = field(default_factory=list)
    Z: np.ndarray | None = None
    V: np.ndarray | None = None

    @property
    def n_patterns(self) -> int:
        return len(self.obs)


def group_patterns(Z: np.ndarray, C: np.ndarray) -> Patterns:
    """Group the rows of Z (units x variables, NaN = missing) by missingness pattern."""
    N, p = Z.shape
    V = np.column_stack([np.ones(N), C]) if C.size else np.ones((N, 1))
    qv = V.shape[1]
    mask = ~np.isnan(Z)
    keys, inv = np.unique(mask, axis=0, return_inverse=True)
    inv = inv.ravel()
    obs, rows, Qs = [], [], []
    for k, key in enumerate(keys):
        r = np.flatnonzero(inv == k)
        o = np.flatnonzero(key)
        U = np.column_stack([Z[np.ix_(r, o)], V[r]])
        obs.append(o)
        rows.append(r)
        Qs.append(U.T @ U)
    pats = Patterns(p=p, qv=qv, n_units=N, obs=obs, rows=rows, Z=Z, V=V)
    sizes = np.array([len(o) for o in obs])
    allv = np.arange(p)
    for k in np.unique(sizes):
        sel = np.flatnonzero(sizes == k)
        idx = np.stack([obs[s] for s in sel])
        midx = np.stack([np.setdiff1d(allv, obs[s]) for s in sel]) if k < p else np.zeros((len(sel), 0), int)
        pats.groups.append(
            Group(
                k=int(k),
                idx=idx,
                midx=midx,
                Q=np.stack([Qs[s] for s in sel]),
                n=np.array([len(rows[s]) for s in sel], dtype=float),
                fs=idx[:, :, None] * p + idx[:, None, :],
                fm=idx[:, :, None] * qv + np.arange(qv)[None, None, :],
            )
        )
    return pats


def _gather(Sig: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return Sig[idx[:, :, None], idx[:, None, :]]


def _pattern_inverses(Sig: np.ndarray, pats: Patterns) -> list[tuple[np.ndarray, np.ndarray]] | None:
    r"""Per group: (S_oo^-1 stacked (G, k, k), log|S_oo| (G,)); None if Sigma is not PD.

    When fewer variables are missing than observed (the usual case), S_oo^-1
    comes from the full inverse without a k x k factorisation:
    :math:`S_{oo}^{-1} = P_{oo} - P_{om} P_{mm}^{-1} P_{mo}` with
    :math:`P = \Sigma^{-1}`, and :math:`\log|S_{oo}| = \log|\Sigma| + \log|P_{mm}|`.
    """
    p = Sig.shape[0]
    full = None
    out = []
    for g in pats.groups:
        r = p - g.k
        try:
            if r == 0 or r < g.k:
                if full is None:
                    L = np.linalg.cholesky(Sig)
                    Li = np.linalg.inv(L)
                    full = (Li.T @ Li, 2.0 * np.log(np.diag(L)).sum())
                P, logdet_full = full
                Poo = _gather(P, g.idx)
                if r == 0:
                    out.append((Poo, np.full(len(g.n), logdet_full)))
                    continue
                Pmm = _gather(P, g.midx)
                Lm = np.linalg.cholesky(Pmm)
                Cm = np.linalg.inv(Pmm)
                Pmo = P[g.midx[:, :, None], g.idx[:, None, :]]
                Sinv = Poo - np.swapaxes(Pmo, 1, 2) @ Cm @ Pmo
                logdet = logdet_full + 2.0 * np.log(np.diagonal(Lm, axis1=-2, axis2=-1)).sum(-1)
            else:
                So = _gather(Sig, g.idx)
                L = np.linalg.cholesky(So)
                Sinv = np.linalg.inv(So)
                logdet = 2.0 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1)
        except np.linalg.LinAlgError:
            return None
        out.append((Sinv, logdet))
    return out


def loglik(
    Sig: np.ndarray, M: np.ndarray, pats: Patterns, want_grad: bool = True
) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    r"""FIML log-likelihood summed over missingness patterns, and dLL/dSigma, dLL/dM.

    For pattern p with observed set o and residual :math:`r_i = z_{io} - M_o v_i`,
    :math:`LL_p = -\tfrac12 [n_p (k \log 2\pi + \log|S_{oo}|) + tr(S_{oo}^{-1} \sum_i r_i r_i')]`
    with :math:`\sum_i r_i r_i' = D Q_p D'`, :math:`D = [I, -M_o]`.
    """
    p, qv = M.shape
    inv = _pattern_inverses(Sig, pats)
    if inv is None:
        return -np.inf, None, None
    ll = 0.0
    GS = np.zeros(p * p) if want_grad else None
    GM = np.zeros(p * qv) if want_grad else None
    for g, (Sinv, logdet) in zip(pats.groups, inv):
        k = g.k
        Mo = M[g.idx]
        DQ = g.Q[:, :k, :] - Mo @ g.Q[:, k:, :]  # D Q with D = [I, -M_o]
        R = DQ[:, :, :k] - DQ[:, :, k:] @ np.swapaxes(Mo, 1, 2)
        ll += -0.5 * float((g.n * (k * LOG2PI + logdet)).sum() + np.sum(Sinv * R))
        if want_grad:
            G = -0.5 * (g.n[:, None, None] * Sinv - Sinv @ R @ Sinv)
            GS += np.bincount(g.fs.ravel(), weights=G.ravel(), minlength=p * p)
            GMg = Sinv @ DQ[:, :, k:]
            GM += np.bincount(g.fm.ravel(), weights=GMg.ravel(), minlength=p * qv)
    if want_grad:
        return ll, GS.reshape(p, p), GM.reshape(p, qv)
    return ll, None, None


class Objective:
    """Negative FIML log-likelihood with its exact (complex-step) gradient.

    ``spec`` provides ``n_par``, ``layout`` (a :class:`Layout`) and
    ``build(raw) -> (Sigma, M)`` for a stack of parameter vectors (K, n_par),
    real or complex.

    Parameters on which Sigma and M depend affinely (means, intercepts,
    item residual variances, random-intercept covariances, covariate slopes)
    have a constant Jacobian: it is found once (the Jacobian is the same at
    two random points) and stored sparsely, so each evaluation complex-steps
    only the remaining (lags, loadings, within covariances) parameters.
    """

    def __init__(self, spec: Any, pats: Patterns):
        self.spec = spec
        self.pats = pats
        P = spec.n_par
        self.eye = np.eye(P)
        self.n_eval = 0
        rng = np.random.default_rng(12345)
        J = []
        for _ in range(2):
            th = rng.normal(0.3, 0.2, P)
            Sig, M = spec.build(th[None, :] + 1j * CSTEP * self.eye)
            J.append((Sig.imag / CSTEP, M.imag / CSTEP))
        lin = [a for a in range(P) if np.allclose(J[0][0][a], J[1][0][a], rtol=1e-12, atol=1e-14)
               and np.allclose(J[0][1][a], J[1][1][a], rtol=1e-12, atol=1e-14)]
        self.nonlin = np.array([a for a in range(P) if a not in set(lin)], dtype=int)
        self.lin = np.array(lin, dtype=int)
        # sparse constant Jacobians of the affine parameters
        JS = J[0][0][self.lin].reshape(len(self.lin), -1)
        JM = J[0][1][self.lin].reshape(len(self.lin), -1)
        self.lin_S = [(np.flatnonzero(r), r[np.flatnonzero(r)]) for r in JS]
        self.lin_M = [(np.flatnonzero(r), r[np.flatnonzero(r)]) for r in JM]
        self.E_nl = self.eye[self.nonlin] if len(self.nonlin) else self.eye[:1] * 0.0

    def jacobians(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sigma, M and their Jacobians (P, p, p), (P, p, qv) at raw parameters."""
        Zc = raw[None, :] + 1j * CSTEP * self.eye
        Sig, M = self.spec.build(Zc)
        return Sig[0].real, M[0].real, Sig.imag / CSTEP, M.imag / CSTEP

    def grad_raw(self, raw: np.ndarray) -> tuple[float, np.ndarray]:
        """Log-likelihood and its gradient with respect to the raw parameters."""
        Sig, M = self.spec.build(raw[None, :] + 1j * CSTEP * self.E_nl)
        ll, GS, GM = loglik(Sig[0].real, M[0].real, self.pats)
        if not np.isfinite(ll):
            return ll, np.zeros_like(raw)
        grad = np.zeros(len(raw))
        K = Sig.shape[0]
        if len(self.nonlin):
            grad[self.nonlin] = (Sig.imag.reshape(K, -1) @ GS.ravel() + M.imag.reshape(K, -1) @ GM.ravel()) / CSTEP
        gs, gm = GS.ravel(), GM.ravel()
        for a, (iS, vS), (iM, vM) in zip(self.lin, self.lin_S, self.lin_M):
            grad[a] = gs[iS] @ vS + gm[iM] @ vM
        return ll, grad

    def __call__(self, theta: np.ndarray, space: str = "phi") -> tuple[float, np.ndarray]:
        self.n_eval += 1
        if space == "phi":
            Zc = self.spec.layout.to_raw(theta[None, :] + 1j * CSTEP * self.eye)
            raw = Zc[0].real
            ll, g = self.grad_raw(raw)
            g = (Zc.imag / CSTEP) @ g  # chain rule: d raw_b / d phi_a
        else:
            ll, g = self.grad_raw(theta)
        if not np.isfinite(ll):
            return 1e20, np.zeros_like(theta)
        return -ll, -g


# --------------------------------------------------------------------------- information and scores
def numerical_hessian(fun: Callable, theta: np.ndarray, g0: np.ndarray) -> np.ndarray:
    """Forward differences of the exact (complex-step) gradient, symmetrised."""
    P = len(theta)
    H = np.empty((P, P))
    for i in range(P):
        h = 1e-6 * max(1.0, abs(theta[i]))
        tp = theta.copy()
        tp[i] += h
        H[:, i] = (fun(tp)[1] - g0) / h
    return 0.5 * (H + H.T)


def unit_scores(JS: np.ndarray, JM: np.ndarray, Sig: np.ndarray, M: np.ndarray, pats: Patterns) -> np.ndarray:
    r"""Per-unit score vectors :math:`s_i = \partial \ell_i / \partial\theta` (N x P).

    For unit i with observed set o, :math:`r_i = z_{io} - M_o v_i` and
    :math:`u_i = S_{oo}^{-1} r_i`:
    :math:`s_{ia} = -\tfrac12 tr(S_{oo}^{-1} \partial_a S_{oo}) + \tfrac12 u_i'
    (\partial_a S_{oo}) u_i + u_i' (\partial_a M_o) v_i`. Their sum is the
    gradient (zero at the estimate); their cross-products are the "meat" of the
    Huber-White sandwich.
    """
    P = JS.shape[0]
    S = np.zeros((pats.n_units, P))
    for o, rows in zip(pats.obs, pats.rows):
        Zo = pats.Z[np.ix_(rows, o)]
        Vr = pats.V[rows]
        Sinv = np.linalg.inv(Sig[np.ix_(o, o)])
        U = (Zo - Vr @ M[o].T) @ Sinv  # (n, k)
        JSo = JS[:, o][:, :, o]  # (P, k, k)
        JMo = JM[:, o, :]  # (P, k, qv)
        a = np.einsum("pij,ji->p", JSo, Sinv)
        quad = np.einsum("pni,ni->np", U[None, :, :] @ JSo, U)
        lin = np.einsum("pni,ni->np", U[None, :, :] @ JMo, Vr)
        S[rows] = -0.5 * a[None, :] + 0.5 * quad + lin
    return S


def expected_information(JS: np.ndarray, JM: np.ndarray, Sig: np.ndarray, pats: Patterns) -> np.ndarray:
    r"""Observed-data (per-pattern) expected Fisher information.

    :math:`I_{ab} = \sum_p n_p \tfrac12 tr(S^{-1} \partial_a S S^{-1} \partial_b S)
    + tr(\partial_a M_o' S^{-1} \partial_b M_o Q^{vv}_p)` with
    :math:`Q^{vv}_p = \sum_{i \in p} v_i v_i'`. Valid under MCAR; the observed
    information (the default) is valid under MAR.
    """
    P = JS.shape[0]
    Info = np.zeros((P, P))
    for g in pats.groups:
        k = g.k
        for gi in range(len(g.n)):
            o = g.idx[gi]
            Sinv = np.linalg.inv(Sig[np.ix_(o, o)])
            A = Sinv[None] @ JS[:, o][:, :, o]  # (P, k, k)
            Info += 0.5 * g.n[gi] * np.einsum("aij,bji->ab", A, A)
            JMo = JM[:, o, :]
            Qvv = g.Q[gi][k:, k:]
            Info += np.einsum("aki,kl,blj,ij->ab", JMo, Sinv, JMo, Qvv, optimize=True)
    return Info


# --------------------------------------------------------------------------- estimation
@dataclass
class Estimate:
    raw: np.ndarray
    nll: float
    converged: bool
    message: str
    n_iter: int
    H: np.ndarray  # observed (or expected) information of the negative log-likelihood
    info_ok: bool
    cov: np.ndarray  # covariance of raw parameters (ML or sandwich)
    scores: np.ndarray | None
    grad_max: float


def fit(
    spec: Any,
    pats: Patterns,
    raw0: np.ndarray,
    *,
    se: str = "robust",
    information: str = "observed",
    cluster_codes: np.ndarray | None = None,
    max_iter: int = 5000,
) -> Estimate:
    """Maximise the FIML likelihood and compute the parameter covariance.

    ``se="ml"``: inverse information. ``se="robust"``: sandwich
    :math:`H^{-1} B H^{-1}` with :math:`B = \\sum_i s_i s_i'` (per unit), or with
    ``cluster_codes`` :math:`B = G/(G-1) \\sum_g s_g s_g'` where :math:`s_g` sums
    the scores of the units in cluster g.
    """
    obj = Objective(spec, pats)
    N = float(pats.n_units)
    phi0 = spec.layout.to_phi(raw0)

    def f_phi(phi: np.ndarray) -> tuple[float, np.ndarray]:
        v, g_ = obj(phi, "phi")
        return v / N, g_ / N

    # Stage 1: L-BFGS-B in the log-Cholesky space (every covariance block
    # positive definite whatever the optimiser tries) to the neighbourhood of
    # the maximum. Stage 2: Newton steps in the raw (variance / covariance)
    # space with the information matrix the standard errors need anyway,
    # re-used over steps (chord method) and refreshed when progress stalls.
    # L-BFGS alone crawls when a covariance block is near singular (e.g. item
    # random intercepts that share one stable factor): the optimum then sits
    # at log-Cholesky infinity, while in the raw space it is an ordinary
    # interior point.
    f_raw = lambda th: obj(th, "raw")  # noqa: E731

    def information_at(th: np.ndarray, g: np.ndarray) -> np.ndarray:
        if information == "observed":
            return numerical_hessian(f_raw, th, g)
        Sig_, _, JS_, JM_ = obj.jacobians(th)
        return expected_information(JS_, JM_, Sig_, pats)

    def lbfgs(phi_start: np.ndarray, gtol: float):
        return optimize.minimize(
            f_phi, phi_start, jac=True, method="L-BFGS-B",
            options={"maxiter": max_iter, "maxfun": 2 * max_iter, "ftol": 1e-13, "gtol": gtol, "maxcor": 30},
        )

    res = lbfgs(phi0, 1e-2)
    n_iter = int(res.nit)
    raw_hat = spec.layout.to_raw(res.x[None, :])[0]
    nll, grad = f_raw(raw_hat)
    H = information_at(raw_hat, grad)
    raw_at_H = raw_hat.copy()
    n_info = 1
    for _ in range(60):
        gmax = np.max(np.abs(grad)) / N
        if gmax < 1e-6:
            break
        try:
            step = np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:
            break
        t = 1.0
        ok = False
        if 0 < np.dot(grad, step) < 1e-12 * max(1.0, abs(nll)):
            # The predicted gain is below the precision of the log-likelihood:
            # judge the full step by the gradient instead.
            cand = raw_hat - step
            nll_c, grad_c = f_raw(cand)
            if not (np.isfinite(nll_c) and np.max(np.abs(grad_c)) < np.max(np.abs(grad))):
                break
            ok = True
        elif np.dot(grad, step) > 0:  # a descent direction (H positive definite along it)
            for _half in range(40):
                cand = raw_hat - t * step
                nll_c, grad_c = f_raw(cand)
                if np.isfinite(nll_c) and nll_c < 1e19 and nll_c <= nll - 1e-4 * t * np.dot(grad, step):
                    ok = True
                    break
                t /= 2
        if ok:
            progress = np.max(np.abs(grad_c)) / N / gmax
            raw_hat, nll, grad = cand, nll_c, grad_c
            n_iter += 1
        if (not ok or progress > 0.5) and n_info < 3 and gmax > 1e-5:
            H = information_at(raw_hat, grad)
            raw_at_H = raw_hat.copy()
            n_info += 1
        elif not ok:
            break
    if np.max(np.abs(grad)) / N > 1e-4:
        # Newton failed (e.g. an indefinite information matrix away from the
        # optimum): fall back to L-BFGS-B to a tight tolerance.
        res = lbfgs(spec.layout.to_phi(raw_hat), 1e-9)
        n_iter += int(res.nit)
        cand = spec.layout.to_raw(res.x[None, :])[0]
        nll_c, grad_c = f_raw(cand)
        if nll_c <= nll:
            raw_hat, nll, grad = cand, nll_c, grad_c
    # The standard errors use the information at the estimate itself (it is
    # re-used only when the Newton steps moved no parameter by more than 1e-5).
    if np.max(np.abs(raw_hat - raw_at_H) / np.maximum(1.0, np.abs(raw_hat))) > 1e-5:
        H = information_at(raw_hat, grad)
    grad_max = float(np.max(np.abs(grad / N))) if len(grad) else 0.0
    converged = bool(grad_max < 1e-4) and np.isfinite(nll) and nll < 1e19
    message = "converged" if converged else str(res.message)
    Sig, M, JS, JM = obj.jacobians(raw_hat)
    try:
        evals = np.linalg.eigvalsh(H)
        info_ok = bool(evals.min() > 1e-8 * max(1.0, evals.max()))
        Hinv = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        info_ok = False
        Hinv = np.full_like(H, np.nan)
    scores = None
    if se == "robust":
        scores = unit_scores(JS, JM, Sig, M, pats)
        if cluster_codes is not None:
            G = int(cluster_codes.max()) + 1
            Sg = np.zeros((G, scores.shape[1]))
            np.add.at(Sg, cluster_codes, scores)
            B = G / (G - 1) * (Sg.T @ Sg)
        else:
            B = scores.T @ scores
        cov = Hinv @ B @ Hinv
    else:
        cov = Hinv
    return Estimate(
        raw=raw_hat, nll=float(nll), converged=converged, message=message, n_iter=n_iter,
        H=H, info_ok=info_ok, cov=0.5 * (cov + cov.T), scores=scores, grad_max=grad_max,
    )


# --------------------------------------------------------------------------- saturated / baseline
def saturated_em(pats: Patterns, tol: float = 1e-10, max_iter: int = 5000) -> tuple[float, bool]:
    """FIML log-likelihood of the unrestricted model (free means / covariate slopes
    and free covariance) by the EM algorithm (Dempster, Laird & Rubin 1977)."""
    Z, V = pats.Z, pats.V
    N, p = Z.shape
    qv = V.shape[1]
    Svv = V.T @ V
    M = np.zeros((p, qv))
    M[:, 0] = np.nanmean(Z, axis=0)
    Sig = np.diag(np.nanvar(Z, axis=0))
    prev = -np.inf
    converged = False
    ll = -np.inf
    for _ in range(max_iter):
        Szz = np.zeros(p * p)
        Szv = np.zeros((p, qv))
        ll = 0.0
        for g in pats.groups:
            k, G = g.k, len(g.n)
            So = _gather(Sig, g.idx)
            L = np.linalg.cholesky(So)
            Sinv = np.linalg.inv(So)
            Mo = M[g.idx]
            D = np.concatenate([np.broadcast_to(np.eye(k), (G, k, k)), -Mo], axis=2)
            R = D @ g.Q @ np.swapaxes(D, 1, 2)
            ll += -0.5 * float((g.n * (k * LOG2PI + 2.0 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1))).sum() + np.sum(Sinv * R))
            # P maps u = (z_o, v) to E[z | z_o, v] (rows: all p variables)
            Pm = np.zeros((G, p, k + qv))
            Pm[np.arange(G)[:, None], g.idx, np.arange(k)[None, :]] = 1.0
            if k < p:
                Smo = Sig[g.midx[:, :, None], g.idx[:, None, :]]  # (G, p-k, k)
                B = Smo @ Sinv
                Pm[np.arange(G)[:, None, None], g.midx[:, :, None], np.arange(k)[None, None, :]] = B
                Pm[np.arange(G)[:, None, None], g.midx[:, :, None], (k + np.arange(qv))[None, None, :]] = M[g.midx] - B @ Mo
                Cm = _gather(Sig, g.midx) - B @ np.swapaxes(Smo, 1, 2)
                fsm = g.midx[:, :, None] * p + g.midx[:, None, :]
                Szz += np.bincount(fsm.ravel(), weights=(g.n[:, None, None] * Cm).ravel(), minlength=p * p)
            Szz += (Pm @ g.Q @ np.swapaxes(Pm, 1, 2)).sum(0).ravel()
            Szv += (Pm @ g.Q[:, :, k:]).sum(0)
        if np.isfinite(prev) and ll - prev < tol * max(1.0, abs(ll)):
            converged = True
            break
        prev = ll
        M = np.linalg.solve(Svv, Szv.T).T
        Sig = (Szz.reshape(p, p) - M @ Szv.T) / N
        Sig = 0.5 * (Sig + Sig.T)
    return ll, converged


def baseline_loglik(pats: Patterns) -> float:
    """Independence model: each variable its own mean (and covariate slopes) and
    variance, no covariances; FIML = per-variable ML on available cases."""
    Z, V = pats.Z, pats.V
    ll = 0.0
    for j in range(Z.shape[1]):
        ok = ~np.isnan(Z[:, j])
        beta, *_ = np.linalg.lstsq(V[ok], Z[ok, j], rcond=None)
        res = Z[ok, j] - V[ok] @ beta
        s2 = float(res @ res) / ok.sum()
        ll += -0.5 * ok.sum() * (LOG2PI + math.log(s2) + 1.0)
    return ll
