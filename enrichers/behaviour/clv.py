"""BG/NBD and Gamma-Gamma customer-base models: P(alive), expected purchases and CLV.

Models
======

**BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way: an alternative
to the Pareto/NBD model", Marketing Science 24(2)). While alive, a customer buys as a Poisson
process with rate lambda ~ Gamma(r, alpha) (shape r, rate alpha); after every *repeat*
purchase they drop out for good with probability p ~ Beta(a, b). lambda and p are independent
across and within customers. From a customer's first purchase, observed until T, with x repeat
purchases, the last at t_x, the likelihood (paper, eq. 6) is::

    L = B(a, b + x) / B(a, b) * Gamma(r + x) alpha^r / (Gamma(r) (alpha + T)^(r + x))
      + [x > 0] B(a + 1, b + x - 1) / B(a, b) * Gamma(r + x) alpha^r
                                              / (Gamma(r) (alpha + t_x)^(r + x))

P(alive | x, t_x, T) (Fader, Hardie & Lee's note "Computing P(alive) using the BG/NBD model")
is 1 for x = 0: drop-out happens only right after a repeat purchase, so a customer with none
cannot have left. Otherwise::

    P(alive) = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r + x))

Expected repeat purchases in the next t periods (eq. 10)::

    E[Y(t) | x, t_x, T] = P(alive) * (a + b + x - 1) / (a - 1)
        * [1 - ((alpha + T) / (alpha + T + t))^(r + x)
               * 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))]

and for a customer just acquired (eq. 9) the same with x = 0, T = 0 (`expected_purchases_new`).

**Gamma-Gamma** (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value curves for customer
base analysis", Journal of Marketing Research 42(4); and Fader & Hardie's note "The Gamma-Gamma
model of monetary value", 2013). The value of each transaction is Gamma(p, nu) (shape p, rate
nu) around the customer's own mean p / nu; nu ~ Gamma(q, v) across customers. The density of the
mean m_x of x transaction values is::

    f(m_x | x) = Gamma(p x + q) / (Gamma(p x) Gamma(q))
                 * v^q m_x^(p x - 1) x^(p x) / (v + x m_x)^(p x + q)

and the expected value of a customer's next transaction is
``p (v + x m_x) / (p x + q - 1)``, a weighted mean of the population mean p v / (q - 1)
(needs q > 1) and the customer's own mean m_x; for x = 0 it is the population mean.

**CLV** (`clv`): expected purchases over the horizon times expected value per purchase,
discounted. Assumptions taken over from the papers: the monetary process is independent of
the transaction process (the Gamma-Gamma note checks this by the correlation between frequency
and monetary value, which should be weak), a customer's transaction values vary around their
mean and the mean does not change over time; customers are independent; dropout is permanent
(no win-back); one purchase per period at most (see units).

Units
=====

Time is measured in a period unit, "day" (UTC calendar days) or "week" (ISO weeks,
Monday 00:00 UTC). A *purchase* is an order with a net value (sum of its lines at or before
`as_of`, returns negative) above zero; orders with a net value of zero or less (refunds, orders
netted to nothing, pure returns) are not purchases and are ignored here. Following the BG/NBD
convention, purchases in the same period count as one: ``frequency`` is the number of distinct
purchase periods minus one, ``recency`` the number of periods from the first to the last
purchase period, ``T`` from the first purchase period to the period holding `as_of`. The value
of a purchase period is the sum of its purchases, and ``monetary`` is the mean value of the
repeat purchase periods (the first is left out, as the Gamma-Gamma convention asks), so
``monetary`` averages exactly ``frequency`` values and expected purchases (of periods) times
expected value (per period) is a consistent CLV. Amounts are summed as whole millionths
(int64), so no summary depends on the order of the input rows. All fitted rates are per
period: a BG/NBD fit on days has alpha 7 times that of the same customers in weeks;
`discount_rate_per_period` is a rate per period too.

Numerical choices
=================

Log-likelihoods are computed in logs throughout with `gammaln`/`betaln`, the two BG/NBD terms
combined with `logaddexp`; the Gamma-Gamma fit is made on amounts divided by their mean (the
model is scale-equivariant: v scales, p and q do not), the reported log-likelihood is on the
original scale. Fits maximise the log-likelihood over log-parameters with L-BFGS-B and
analytic gradients, after collapsing identical (x, t_x, T) rows into weights (day-level data has
few distinct rows), so a million customers fit in seconds. Standard errors come from the
inverse of a finite-difference Hessian of the log-likelihood at the optimum (delta method from
the log scale). A fit is `converged` when the optimiser reports success *and* the optimum is
an identified interior maximum: no parameter on its search bound (the box is the start value
times e^+-20) and an information matrix that is positive definite with a condition number
below 1e8. When nobody ever repeats, for instance, log L = r log(alpha / (alpha + T)) only grows
as r / alpha -> 0 and says nothing about a and b: such a fit is reported, with its message,
as not converged and without standard errors; its predictions (no repeat purchases) are
still usable.

The hypergeometric term is evaluated with `scipy.special.hyp2f1` in whichever of two
equivalent forms has the better-behaved argument: for s = t / (alpha + T) <= 1 the Pfaff
transform ``1 - 2F1(r + x, a - 1; a + b + x - 1; -s)`` (a series in |s| <= 1), above it the
paper's form with argument s / (1 + s) in (1/2, 1). Every result is checked against bounds the
true value must lie in (it is an average over p ~ Beta(a, b + x) of
``(1 - (1 + p s)^-(r + x)) / p``, which lies between ``1 - (1 + s)^-(r + x)`` and
``(r + x) s``); a result outside them by more than its rounding error, or not finite, is
recomputed by adaptive quadrature of that average (`scipy.integrate.quad` with the Beta
weight as an algebraic weight), and results within rounding error of a bound are clipped to
it (1 - 2F1 cancels for tiny horizons). a = 1 exactly (where the closed form is 0/0) is
evaluated at a = 1 +- 1e-7.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import integrate, optimize, special  # type: ignore[import-untyped]

Period = Literal["day", "week"]
FloatArray = npt.NDArray[np.float64]

SUMMARY_COLUMNS: Final = ("frequency", "recency", "T", "monetary", "orders")
"""Columns of `summarise`, indexed by `profile_id`."""
SCORE_COLUMNS: Final = (
    "p_alive",
    "churn_risk",
    "expected_purchases",
    "expected_average_value",
    "clv",
)
"""Columns of `score_customers`, indexed by `profile_id`."""
HOLDOUT_COLUMNS: Final = ("frequency", "recency", "T", "monetary", "actual", "predicted")
"""Columns of `HoldoutResult.per_customer`, indexed by `profile_id`."""
HOLDOUT_BUCKETS: Final = 7
"""`holdout_check` tabulates calibration repeat purchases 0, 1, ..., 5 and "6+"."""

_REQUIRED_COLUMNS: Final = ("profile_id", "order_id", "ordered_at", "amount")
_MICROS: Final = 1_000_000
_PERIOD_ORIGIN: Final = {
    "day": pd.Timestamp("1970-01-01", tz="UTC"),
    "week": pd.Timestamp("1970-01-05", tz="UTC"),  # a Monday: ISO weeks
}
_PERIOD_LENGTH: Final = {"day": pd.Timedelta(days=1), "week": pd.Timedelta(weeks=1)}
_LOG_BOUND: Final = 20.0  # search box: start * e^(+-20) on every parameter
_AT_BOUND: Final = 1e-6
_HESSIAN_STEP: Final = 1e-4  # in log-parameters
_MIN_CURVATURE: Final = 1e-8  # flattest / steepest information eigenvalue of an identified fit
_A_NEAR_ONE: Final = 1e-7
_BOUNDS_SLACK: Final = 1e-9
_CANCELLATION: Final = 1e-13  # rounding error of 1 - 2F1, before its factor c / (a - 1)
_PARAMS_DIGITS: Final = 6  # significant digits in the params hash


@dataclass(frozen=True)
class BgNbdParams:
    """BG/NBD parameters: lambda ~ Gamma(r, alpha) per period, p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: value ~ Gamma(p, nu), nu ~ Gamma(q, v)."""

    p: float
    q: float
    v: float


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _params_hash(model: str, params: dict[str, float]) -> str:
    rounded = {name: float(f"{value:.{_PARAMS_DIGITS}g}") for name, value in params.items()}
    text = json.dumps({"model": model, "params": rounded}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class BgNbdFit:
    """A maximum-likelihood BG/NBD fit with its optimiser status.

    `log_likelihood` is the total over `n_customers`; `std_errors` are asymptotic standard
    errors (NaN when the Hessian is not positive definite or the fit is on a bound).
    """

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n_customers: int
    converged: bool
    message: str
    iterations: int
    std_errors: BgNbdParams

    @property
    def params(self) -> BgNbdParams:
        """The fitted parameters alone."""
        return BgNbdParams(r=self.r, alpha=self.alpha, a=self.a, b=self.b)

    @property
    def params_hash(self) -> str:
        """sha256 of the parameters rounded to 6 significant digits, as canonical JSON."""
        return _params_hash("bgnbd", _params_dict(self.params))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary for a run summary (non-finite numbers become None)."""
        return _fit_dict(self, "bgnbd")


@dataclass(frozen=True)
class GammaGammaFit:
    """A maximum-likelihood Gamma-Gamma fit with its optimiser status.

    `n_customers` counts the customers the fit used (frequency > 0 and monetary > 0).
    """

    p: float
    q: float
    v: float
    log_likelihood: float
    n_customers: int
    converged: bool
    message: str
    iterations: int
    std_errors: GammaGammaParams

    @property
    def params(self) -> GammaGammaParams:
        """The fitted parameters alone."""
        return GammaGammaParams(p=self.p, q=self.q, v=self.v)

    @property
    def params_hash(self) -> str:
        """sha256 of the parameters rounded to 6 significant digits, as canonical JSON."""
        return _params_hash("gamma_gamma", _params_dict(self.params))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary for a run summary (non-finite numbers become None)."""
        return _fit_dict(self, "gamma_gamma")


def _fit_dict(fit: BgNbdFit | GammaGammaFit, model: str) -> dict[str, Any]:
    """A fit as JSON: parameters, standard errors, optimiser status and parameter hash."""
    return {
        "model": model,
        "params": _params_dict(fit.params),
        "std_errors": {k: _finite_or_none(v) for k, v in _params_dict(fit.std_errors).items()},
        "log_likelihood": _finite_or_none(fit.log_likelihood),
        "n_customers": fit.n_customers,
        "converged": fit.converged,
        "message": fit.message,
        "iterations": fit.iterations,
        "params_hash": fit.params_hash,
    }


def _params_dict(params: BgNbdParams | GammaGammaParams) -> dict[str, float]:
    if isinstance(params, BgNbdParams):
        return {"r": params.r, "alpha": params.alpha, "a": params.a, "b": params.b}
    return {"p": params.p, "q": params.q, "v": params.v}


@dataclass(frozen=True)
class CustomerBaseFit:
    """Both models fitted on one calibration summary (`fit_all`)."""

    bgnbd: BgNbdFit
    gamma_gamma: GammaGammaFit

    @property
    def converged(self) -> bool:
        """Both fits converged."""
        return self.bgnbd.converged and self.gamma_gamma.converged

    @property
    def params_hash(self) -> str:
        """sha256 over both models' rounded parameters: what a signal carries."""
        text = json.dumps(
            [self.bgnbd.params_hash, self.gamma_gamma.params_hash], separators=(",", ":")
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary of both fits."""
        return {
            "bgnbd": self.bgnbd.as_dict(),
            "gamma_gamma": self.gamma_gamma.as_dict(),
            "converged": self.converged,
            "params_hash": self.params_hash,
        }


def _floats(values: npt.ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        array = array.reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def _rft(
    frequency: npt.ArrayLike, recency: npt.ArrayLike, age: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    x = _floats(frequency, "frequency")
    t_x = _floats(recency, "recency")
    t_obs = _floats(age, "T")
    if not x.shape == t_x.shape == t_obs.shape:
        raise ValueError("frequency, recency and T must have the same length")
    if np.any(x < 0) or np.any(x != np.floor(x)):
        raise ValueError("frequency must be whole numbers >= 0")
    if np.any(t_x < 0) or np.any(t_x > t_obs):
        raise ValueError("recency must lie in [0, T]")
    return x, t_x, t_obs


def _frequency_monetary(
    frequency: npt.ArrayLike, monetary: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    x = _floats(frequency, "frequency")
    m = _floats(monetary, "monetary")
    if x.shape != m.shape:
        raise ValueError("frequency and monetary must have the same length")
    if np.any(x < 0):
        raise ValueError("frequency must be >= 0")
    return x, m


def _utc(moment: datetime, name: str) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        raise ValueError(f"{name} must be time zone-aware")
    return stamp.tz_convert("UTC")


def _period_of(moment: pd.Timestamp, period: Period) -> int:
    return int((moment - _PERIOD_ORIGIN[period]) // _PERIOD_LENGTH[period])


def _purchases(lines: pd.DataFrame, period: Period) -> pd.DataFrame:
    """One row per (profile, purchase period), sorted: value in micros and purchases in it.

    Amounts are summed as whole millionths (int64), so no sum depends on the row order.
    """
    amount = lines["amount"].to_numpy(np.float64)
    if not np.all(np.isfinite(amount)):
        raise ValueError("amount must be finite")
    orders = (
        lines.assign(micros=np.round(amount * _MICROS).astype(np.int64))
        .groupby(["profile_id", "order_id"], sort=False, observed=True)
        .agg(micros=("micros", "sum"), at=("ordered_at", "min"))
    )
    orders = orders.loc[orders["micros"] > 0]
    periods = pd.DataFrame(
        {
            "profile_id": orders.index.get_level_values("profile_id"),
            "period": ((orders["at"] - _PERIOD_ORIGIN[period]) // _PERIOD_LENGTH[period]).to_numpy(
                np.int64
            ),
            "micros": orders["micros"].to_numpy(np.int64),
        }
    )
    return (
        periods.groupby(["profile_id", "period"], sort=True, observed=True)
        .agg(micros=("micros", "sum"), orders=("micros", "size"))
        .reset_index()
    )


def _check_orders(orders: pd.DataFrame) -> None:
    missing = [column for column in _REQUIRED_COLUMNS if column not in orders.columns]
    if missing:
        raise ValueError(f"order lines lack column(s): {', '.join(missing)}")
    if not isinstance(orders["ordered_at"].dtype, pd.DatetimeTZDtype):
        raise ValueError("ordered_at must be a time zone-aware datetime column")


def summarise(orders: pd.DataFrame, *, as_of: datetime, period: Period = "day") -> pd.DataFrame:
    """Calibration summary per profile from order lines, as of `as_of` (see the module doc).

    Reads `profile_id`, `order_id`, `ordered_at` (time zone-aware) and `amount` (scoring
    currency, negative for returns); only lines at or before `as_of` count. Returns one row per
    profile with at least one purchase, indexed by `profile_id` (sorted), with `frequency`
    (int, repeat purchase periods), `recency` and `T` (float, periods), `monetary` (float, mean
    value of the repeat purchase periods, 0 where frequency is 0) and `orders` (int, purchases:
    distinct orders with a net value above zero). Profiles whose orders all net to zero or
    less are left out.
    """
    _check_orders(orders)
    as_of_utc = _utc(as_of, "as_of")
    lines = orders.loc[orders["ordered_at"] <= as_of_utc, list(_REQUIRED_COLUMNS)]
    per_period = _purchases(lines, period)
    grouped = per_period.groupby("profile_id", sort=True, observed=True)
    first = grouped["period"].min()
    last = grouped["period"].max()
    n_periods = grouped["period"].size()
    first_micros = grouped["micros"].first()  # rows are sorted by period within a profile
    repeat_micros = (grouped["micros"].sum() - first_micros).to_numpy(np.int64)
    frequency = (n_periods - 1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        monetary = np.where(
            frequency > 0, repeat_micros / _MICROS / frequency.to_numpy(np.float64), 0.0
        )
    summary = pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (last - first).astype(np.float64),
            "T": (_period_of(as_of_utc, period) - first).astype(np.float64),
            "monetary": monetary,
            "orders": grouped["orders"].sum().astype(np.int64),
        },
        index=first.index,
    )
    summary.index.name = "profile_id"
    return summary


def _unique_rows(*columns: FloatArray) -> tuple[list[FloatArray], npt.NDArray[np.intp], FloatArray]:
    """Distinct rows of the columns in sorted order, the row -> distinct-row map, and each
    one's count. Sorted, not in order of appearance: the likelihood sums run over the distinct
    rows, so a fit depends only on the customers, not on their order (which follows profile
    ids, and so the pseudonym key)."""
    if len(columns[0]) == 0:
        return list(columns), np.zeros(0, dtype=np.intp), np.zeros(0)
    frame = pd.DataFrame({str(i): column for i, column in enumerate(columns)})
    codes = np.asarray(frame.groupby(list(frame.columns), sort=True).ngroup(), dtype=np.intp)
    counts = np.bincount(codes)
    order = np.argsort(codes, kind="stable")
    first = order[np.concatenate(([0], np.cumsum(counts)[:-1]))]
    return [column[first] for column in columns], codes, counts.astype(np.float64)


@dataclass(frozen=True)
class _Optimum:
    theta: FloatArray
    log_likelihood: float
    converged: bool
    message: str
    iterations: int
    std_errors: FloatArray


LogLikAndGrad = Callable[[FloatArray], tuple[float, FloatArray]]
"""theta -> (total weighted log-likelihood, its gradient in theta)."""


def _std_errors(log_lik: LogLikAndGrad, theta: FloatArray) -> FloatArray:
    """Asymptotic standard errors from the observed information (central differences)."""
    eta = np.log(theta)
    size = len(theta)
    hessian = np.empty((size, size))
    for j in range(size):
        step = np.zeros(size)
        step[j] = _HESSIAN_STEP
        up = np.exp(eta + step)
        down = np.exp(eta - step)
        grad_up = log_lik(up)[1] * up
        grad_down = log_lik(down)[1] * down
        hessian[:, j] = (grad_up - grad_down) / (2 * _HESSIAN_STEP)
    information = -(hessian + hessian.T) / 2
    eigenvalues = np.linalg.eigvalsh(information)
    if not (np.all(np.isfinite(eigenvalues)) and eigenvalues[0] > _MIN_CURVATURE * eigenvalues[-1]):
        return np.full(size, np.nan)
    inverse = np.linalg.inv(np.linalg.cholesky(information))
    return np.asarray(theta * np.sqrt(np.sum(inverse**2, axis=0)), dtype=np.float64)


def _maximise(
    log_lik: LogLikAndGrad, start: FloatArray, *, total_weight: float, penalizer: float, names: str
) -> _Optimum:
    """Maximise over log-parameters; penalty `penalizer * sum(theta**2)` on the mean."""
    scale = max(total_weight, 1.0)

    def objective(eta: FloatArray) -> tuple[float, FloatArray]:
        theta = np.exp(eta)
        with np.errstate(all="ignore"):
            value, grad = log_lik(theta)
            loss = -value / scale + penalizer * float(np.sum(theta**2))
            loss_grad = (-grad / scale + 2 * penalizer * theta) * theta
        if not (math.isfinite(loss) and np.all(np.isfinite(loss_grad))):
            return math.inf, np.zeros_like(eta)
        return loss, loss_grad

    eta0 = np.log(start)
    bounds = [(e - _LOG_BOUND, e + _LOG_BOUND) for e in eta0]
    result = optimize.minimize(
        objective,
        eta0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
    )
    eta = np.asarray(result.x, dtype=np.float64)
    theta = np.exp(eta)
    on_bound = [
        name
        for name, e, (low, high) in zip(names.split(), eta, bounds, strict=True)
        if e - low < _AT_BOUND or high - e < _AT_BOUND
    ]
    message = str(result.message)
    if on_bound:
        message += f"; on the search bound: {', '.join(on_bound)}"
    with np.errstate(all="ignore"):
        value = float(log_lik(theta)[0])
        std_errors = np.full(len(theta), np.nan) if on_bound else _std_errors(log_lik, theta)
    identified = bool(np.all(np.isfinite(std_errors)))
    if not on_bound and not identified:
        message += "; the log-likelihood is flat in some direction: parameters not identified"
    converged = bool(result.success) and identified and math.isfinite(value)
    return _Optimum(
        theta=theta,
        log_likelihood=value,
        converged=converged,
        message=message,
        iterations=int(result.nit),
        std_errors=std_errors,
    )


@dataclass(frozen=True)
class _Levels:
    """The distinct values of a repeat-purchase count and the map back to the rows.

    Special functions of x alone are evaluated once per distinct x (a few hundred at most).
    """

    values: FloatArray
    index: npt.NDArray[np.intp]

    @classmethod
    def of(cls, x: FloatArray) -> _Levels:
        values, index = np.unique(x, return_inverse=True)
        return cls(values=np.asarray(values, np.float64), index=np.asarray(index, np.intp))

    def rows(self, per_level: FloatArray) -> FloatArray:
        return np.asarray(per_level[self.index], dtype=np.float64)


@dataclass(frozen=True)
class _BgNbdParts:
    """The log-likelihood's pieces: log L = common + logaddexp(alive, dropped)."""

    common: FloatArray  # per level of x
    alive: FloatArray  # per row
    dropped: FloatArray  # per row; -inf where x = 0
    log_age: FloatArray  # log(alpha + T)
    log_last: FloatArray  # log(alpha + t_x)


def _bgnbd_parts(
    params: BgNbdParams | BgNbdFit,
    x: FloatArray,
    t_x: FloatArray,
    t_obs: FloatArray,
    levels: _Levels,
) -> _BgNbdParts:
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    lx = levels.values
    beta_ab = special.betaln(a, b)
    log_age = np.log(alpha + t_obs)
    log_last = np.log(alpha + t_x)
    alive = levels.rows(special.betaln(a, b + lx) - beta_ab) - (r + x) * log_age
    dropped_levels = special.betaln(a + 1, b + np.maximum(lx - 1, 0.0)) - beta_ab
    dropped = np.where(x > 0, levels.rows(dropped_levels) - (r + x) * log_last, -np.inf)
    return _BgNbdParts(
        common=special.gammaln(r + lx) - special.gammaln(r) + r * math.log(alpha),
        alive=alive,
        dropped=dropped,
        log_age=log_age,
        log_last=log_last,
    )


def bgnbd_log_likelihood(
    params: BgNbdParams | BgNbdFit,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803
) -> FloatArray:
    """Per-customer BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6)."""
    x, t_x, t_obs = _rft(frequency, recency, T)
    levels = _Levels.of(x)
    parts = _bgnbd_parts(params, x, t_x, t_obs, levels)
    mixture = np.logaddexp(parts.alive, parts.dropped)
    return np.asarray(levels.rows(parts.common) + mixture, dtype=np.float64)


def _bgnbd_log_lik_and_grad(
    x: FloatArray, t_x: FloatArray, t_obs: FloatArray, weights: FloatArray
) -> LogLikAndGrad:
    levels = _Levels.of(x)
    lx = levels.values
    level_weights = np.bincount(levels.index, weights=weights, minlength=len(lx))
    lx_minus_1 = np.maximum(lx - 1, 0.0)

    def log_lik(theta: FloatArray) -> tuple[float, FloatArray]:
        params = BgNbdParams(*(float(v) for v in theta))
        r, alpha, a, b = params.r, params.alpha, params.a, params.b
        parts = _bgnbd_parts(params, x, t_x, t_obs, levels)
        mixture = np.logaddexp(parts.alive, parts.dropped)
        w_alive = weights * np.exp(parts.alive - mixture)
        w_dropped = weights * np.exp(parts.dropped - mixture)
        psi_b = special.digamma(b)
        psi_ab_levels = special.digamma(a + b) - special.digamma(a + b + lx)
        d_r = (
            level_weights @ (special.digamma(r + lx) - special.digamma(r) + math.log(alpha))
            - w_alive @ parts.log_age
            - w_dropped @ parts.log_last
        )
        d_alpha = r / alpha * weights.sum() - (
            w_alive @ ((r + x) / (alpha + t_obs)) + w_dropped @ ((r + x) / (alpha + t_x))
        )
        d_a = level_weights @ psi_ab_levels + w_dropped.sum() / a
        d_b = (
            level_weights @ psi_ab_levels
            + w_alive @ levels.rows(special.digamma(b + lx) - psi_b)
            + w_dropped @ levels.rows(special.digamma(b + lx_minus_1) - psi_b)
        )
        value = float(level_weights @ parts.common + weights @ mixture)
        return value, np.array([d_r, d_alpha, d_a, d_b], dtype=np.float64)

    return log_lik


def fit_bgnbd(
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803
    *,
    penalizer: float = 0.0,
) -> BgNbdFit:
    """Maximum-likelihood BG/NBD fit on per-customer (frequency, recency, T).

    `penalizer` adds ``penalizer * (r^2 + alpha^2 + a^2 + b^2)`` to the mean negative
    log-likelihood, as `lifetimes` does (alpha's size depends on the period unit).
    """
    x, t_x, t_obs = _rft(frequency, recency, T)
    if len(x) == 0:
        raise ValueError("cannot fit BG/NBD on no customers")
    (ux, ut_x, ut_obs), _, weights = _unique_rows(x, t_x, t_obs)
    total = float(weights.sum())
    repeats = float(weights @ ux)
    exposure = float(weights @ ut_obs)
    alpha0 = exposure / repeats if repeats > 0 and exposure > 0 else max(exposure / total, 1.0)
    optimum = _maximise(
        _bgnbd_log_lik_and_grad(ux, ut_x, ut_obs, weights),
        np.array([1.0, alpha0, 1.0, 1.0]),
        total_weight=total,
        penalizer=penalizer,
        names="r alpha a b",
    )
    r, alpha, a, b = (float(v) for v in optimum.theta)
    return BgNbdFit(
        r=r,
        alpha=alpha,
        a=a,
        b=b,
        log_likelihood=optimum.log_likelihood,
        n_customers=len(x),
        converged=optimum.converged,
        message=optimum.message,
        iterations=optimum.iterations,
        std_errors=BgNbdParams(*(float(v) for v in optimum.std_errors)),
    )


def _p_alive(
    params: BgNbdParams | BgNbdFit, x: FloatArray, t_x: FloatArray, t_obs: FloatArray
) -> FloatArray:
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    repeat = x > 0
    b_x = np.where(repeat, b + x - 1, 1.0)
    log_odds_dropped = (
        math.log(a) - np.log(b_x) + (r + x) * (np.log(alpha + t_obs) - np.log(alpha + t_x))
    )
    return np.asarray(np.where(repeat, special.expit(-log_odds_dropped), 1.0), dtype=np.float64)


def p_alive(
    model: BgNbdParams | BgNbdFit,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803
) -> FloatArray:
    """P(alive | x, t_x, T) per customer; 1 for frequency 0 (churn risk is 1 - this)."""
    x, t_x, t_obs = _rft(frequency, recency, T)
    return _p_alive(model, x, t_x, t_obs)


_POINT_MASS_SD = 1e-4
"""A Beta whose standard deviation is below this is taken as a point mass at its mean: the
error is about var * f''(mean) / 2, far below a purchase count's last printed digit."""


def _beta_mean_by_quadrature(shape: float, s: float, a: float, b_post: float) -> float:
    """E[(1 - (1 + p s)^-shape) / p] for p ~ Beta(a, b_post), by adaptive quadrature.

    The density is evaluated in logs (its normalising constant B(a, b) underflows once a and b
    reach the hundreds, as a fit on few customers can give them) and the quadrature is told
    where its peak is; a Beta narrower than `_POINT_MASS_SD` is its mean.
    """

    def integrand(p: float) -> float:
        if p == 0:
            return shape * s
        return float(-math.expm1(-shape * math.log1p(p * s)) / p)

    total = a + b_post
    mean = a / total
    if math.sqrt(a * b_post / (total * total * (total + 1.0))) < _POINT_MASS_SD:
        return integrand(mean)
    log_norm = float(special.betaln(a, b_post))

    def weighted(p: float) -> float:
        if p <= 0.0 or p >= 1.0:
            return 0.0
        log_pdf = (a - 1.0) * math.log(p) + (b_post - 1.0) * math.log1p(-p) - log_norm
        return integrand(p) * math.exp(log_pdf)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        value, _ = integrate.quad(weighted, 0.0, 1.0, points=[mean], limit=200)
    return float(value)


def _expected_if_alive(
    params: BgNbdParams | BgNbdFit, x: FloatArray, t_obs: FloatArray, t: float
) -> FloatArray:
    """E[purchases in (T, T + t] | alive at T, x]: eq. 10 without its P(alive) factor."""
    if t == 0:
        return np.zeros_like(x)
    r, alpha, b = params.r, params.alpha, params.b
    a_minus_1 = params.a - 1.0
    if abs(a_minus_1) < _A_NEAR_ONE:
        a_minus_1 = math.copysign(_A_NEAR_ONE, a_minus_1)
    a = 1.0 + a_minus_1
    shape = r + x
    s = t / (alpha + t_obs)
    b_post = b + x
    c = a + b_post - 1.0
    one_minus = np.empty_like(x)
    small = s <= 1
    large = ~small
    with np.errstate(all="ignore"):
        one_minus[small] = 1.0 - special.hyp2f1(shape[small], a_minus_1, c[small], -s[small])
        one_minus[large] = 1.0 - np.exp(-shape[large] * np.log1p(s[large])) * special.hyp2f1(
            shape[large], b_post[large], c[large], s[large] / (1.0 + s[large])
        )
        value = c / a_minus_1 * one_minus
    low = -np.expm1(-shape * np.log1p(s))
    high = shape * s
    # 1 - 2F1 loses digits to cancellation when s is small: allow for that rounding, then clip
    slack = _BOUNDS_SLACK * high + _CANCELLATION * np.abs(c / a_minus_1)
    bad = ~np.isfinite(value) | (value < low - slack) | (value > high + slack)
    value = np.clip(value, low, high)
    if np.any(bad):
        (u_shape, u_s, u_b), codes, _ = _unique_rows(shape[bad], s[bad], b_post[bad])
        redone = np.array(
            [
                _beta_mean_by_quadrature(float(sh), float(ss), a, float(bp))
                for sh, ss, bp in zip(u_shape, u_s, u_b, strict=True)
            ]
        )
        value[bad] = redone[codes]
    return np.asarray(value, dtype=np.float64)


def _expected_purchases_at(
    model: BgNbdParams | BgNbdFit,
    times: FloatArray,
    x: FloatArray,
    t_x: FloatArray,
    t_obs: FloatArray,
) -> FloatArray:
    """Conditional expected purchases for each horizon in `times`: shape (len(times), n)."""
    alive = _p_alive(model, x, t_x, t_obs)
    (ux, ut_obs), codes, _ = _unique_rows(x, t_obs)
    out = np.empty((len(times), len(x)))
    for i, t in enumerate(times):
        out[i] = alive * _expected_if_alive(model, ux, ut_obs, float(t))[codes]
    return out


def _check_horizon(t: float, name: str) -> float:
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"{name} must be a finite number >= 0")
    return float(t)


def expected_purchases(
    model: BgNbdParams | BgNbdFit,
    t: float,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803
) -> FloatArray:
    """Expected repeat purchases (periods) in the next `t` periods per customer (eq. 10)."""
    horizon = _check_horizon(t, "t")
    x, t_x, t_obs = _rft(frequency, recency, T)
    return np.asarray(
        _expected_purchases_at(model, np.array([horizon]), x, t_x, t_obs)[0], dtype=np.float64
    )


def expected_purchases_new(model: BgNbdParams | BgNbdFit, t: float) -> float:
    """Expected repeat purchases in the first `t` periods after a first purchase (eq. 9)."""
    horizon = _check_horizon(t, "t")
    return float(_expected_if_alive(model, np.zeros(1), np.zeros(1), horizon)[0])


def _gamma_gamma_level_terms(params: GammaGammaParams, lx: FloatArray) -> FloatArray:
    """The terms of the log density that depend on x alone."""
    p, q, v = params.p, params.q, params.v
    plx = p * lx
    return np.asarray(
        special.gammaln(plx + q)
        - special.gammaln(plx)
        - special.gammaln(q)
        + q * math.log(v)
        + plx * np.log(lx),
        dtype=np.float64,
    )


def _gamma_gamma_row_terms(
    params: GammaGammaParams, x: FloatArray, log_m: FloatArray, log_vxm: FloatArray
) -> FloatArray:
    px = params.p * x
    return np.asarray((px - 1) * log_m - (px + params.q) * log_vxm, dtype=np.float64)


def gamma_gamma_log_likelihood(
    params: GammaGammaParams | GammaGammaFit,
    frequency: npt.ArrayLike,
    monetary: npt.ArrayLike,
) -> FloatArray:
    """Per-customer log density of the mean of `frequency` transaction values `monetary`.

    Customers with frequency 0 observed nothing and contribute 0; a mean of zero or less
    with frequency > 0 is impossible under the model (-inf).
    """
    x, m = _frequency_monetary(frequency, monetary)
    out = np.zeros_like(x)
    observed = x > 0
    positive = observed & (m > 0)
    out[observed & ~positive] = -np.inf
    gg = GammaGammaParams(p=params.p, q=params.q, v=params.v)
    levels = _Levels.of(x[positive])
    m_used = m[positive]
    out[positive] = levels.rows(_gamma_gamma_level_terms(gg, levels.values)) + (
        _gamma_gamma_row_terms(gg, x[positive], np.log(m_used), np.log(gg.v + x[positive] * m_used))
    )
    return out


def _gamma_gamma_log_lik_and_grad(
    x: FloatArray, m: FloatArray, weights: FloatArray
) -> LogLikAndGrad:
    levels = _Levels.of(x)
    lx = levels.values
    level_weights = np.bincount(levels.index, weights=weights, minlength=len(lx))
    total = float(weights.sum())
    log_m = np.log(m)
    weighted_x = weights * x
    x_log_m = float(weighted_x @ log_m)

    def log_lik(theta: FloatArray) -> tuple[float, FloatArray]:
        params = GammaGammaParams(*(float(value) for value in theta))
        p, q, v = params.p, params.q, params.v
        plx = p * lx
        vxm = v + x * m
        log_vxm = np.log(vxm)
        psi_levels = special.digamma(plx + q)
        d_p = (
            (level_weights * lx) @ (psi_levels - special.digamma(plx) + np.log(lx))
            + x_log_m
            - weighted_x @ log_vxm
        )
        d_q = (
            level_weights @ psi_levels
            - total * (special.digamma(q) - math.log(v))
            - weights @ log_vxm
        )
        d_v = total * q / v - weights @ ((p * x + q) / vxm)
        value = float(
            level_weights @ _gamma_gamma_level_terms(params, lx)
            + weights @ _gamma_gamma_row_terms(params, x, log_m, log_vxm)
        )
        return value, np.array([d_p, d_q, d_v], dtype=np.float64)

    return log_lik


def fit_gamma_gamma(frequency: npt.ArrayLike, monetary: npt.ArrayLike) -> GammaGammaFit:
    """Maximum-likelihood Gamma-Gamma fit on the customers with frequency > 0, monetary > 0."""
    x_all, m_all = _frequency_monetary(frequency, monetary)
    used = (x_all > 0) & (m_all > 0)
    if not np.any(used):
        raise ValueError("cannot fit Gamma-Gamma: no customer with a repeat purchase")
    scale = math.fsum(m_all[used]) / int(used.sum())  # exact: the same in any order
    (x, m), _, weights = _unique_rows(x_all[used], m_all[used] / scale)
    log_lik = _gamma_gamma_log_lik_and_grad(x, m, weights)
    optimum = _maximise(
        log_lik,
        np.array([1.0, 2.0, 1.0]),  # p v / (q - 1) = 1: the scaled mean
        total_weight=float(weights.sum()),
        penalizer=0.0,
        names="p q v",
    )
    p, q, v_scaled = (float(value) for value in optimum.theta)
    p_se, q_se, v_se = (float(value) for value in optimum.std_errors)
    # the density of m is f(m / scale) / scale: each customer's log-likelihood drops log(scale)
    log_likelihood = optimum.log_likelihood - float(weights.sum()) * math.log(scale)
    return GammaGammaFit(
        p=p,
        q=q,
        v=v_scaled * scale,
        log_likelihood=log_likelihood,
        n_customers=int(used.sum()),
        converged=optimum.converged,
        message=optimum.message,
        iterations=optimum.iterations,
        std_errors=GammaGammaParams(p=p_se, q=q_se, v=v_se * scale),
    )


def expected_average_value(
    model: GammaGammaParams | GammaGammaFit,
    frequency: npt.ArrayLike,
    monetary: npt.ArrayLike,
) -> FloatArray:
    """Expected value of a customer's future purchases: p (v + x m) / (p x + q - 1).

    Customers with frequency 0 or monetary <= 0 get the population mean p v / (q - 1); NaN
    where the expectation does not exist (p x + q <= 1, e.g. q <= 1 with frequency 0).
    """
    x, m = _frequency_monetary(frequency, monetary)
    p, q, v = model.p, model.q, model.v
    x_used = np.where(m > 0, x, 0.0)
    denominator = p * x_used + q - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        value = p * (v + x_used * m) / denominator
    return np.asarray(np.where(denominator > 0, value, np.nan), dtype=np.float64)


def clv(
    bgnbd: BgNbdParams | BgNbdFit,
    gamma_gamma: GammaGammaParams | GammaGammaFit,
    *,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803
    monetary: npt.ArrayLike,
    horizon_periods: float,
    discount_rate_per_period: float,
    steps: int = 12,
) -> FloatArray:
    """Expected discounted value of each customer's purchases in the next `horizon_periods`.

    The horizon is cut into `steps` equal sub-periods; the expected purchases in each (the
    increase of eq. 10 over it) times the expected value per purchase are discounted from the
    sub-period's midpoint at ``(1 + discount_rate_per_period)^-t``. As `steps` grows this tends
    to the continuous discounting of the expected purchase stream; with 12 steps over a year of
    a 10 % a year rate the midpoint rule is within 0.01 % of it.
    """
    horizon = _check_horizon(horizon_periods, "horizon_periods")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if not (math.isfinite(discount_rate_per_period) and discount_rate_per_period > -1):
        raise ValueError("discount_rate_per_period must be a finite number > -1")
    x, t_x, t_obs = _rft(frequency, recency, T)
    grid = np.linspace(0.0, horizon, steps + 1)
    cumulative = _expected_purchases_at(bgnbd, grid[1:], x, t_x, t_obs)
    increments = np.diff(cumulative, axis=0, prepend=np.zeros((1, len(x))))
    midpoints = (grid[:-1] + grid[1:]) / 2
    discount = np.power(1.0 + discount_rate_per_period, -midpoints)
    value = expected_average_value(gamma_gamma, frequency=x, monetary=monetary)
    return np.asarray(value * (discount @ increments), dtype=np.float64)


def fit_all(summary: pd.DataFrame, *, penalizer: float = 0.0) -> CustomerBaseFit:
    """Fit BG/NBD and Gamma-Gamma on a `summarise` frame (the nightly fit)."""
    columns = _summary_columns(summary)
    return CustomerBaseFit(
        bgnbd=fit_bgnbd(
            frequency=columns["frequency"],
            recency=columns["recency"],
            T=columns["T"],
            penalizer=penalizer,
        ),
        gamma_gamma=fit_gamma_gamma(frequency=columns["frequency"], monetary=columns["monetary"]),
    )


def _summary_columns(summary: pd.DataFrame) -> dict[str, FloatArray]:
    missing = [
        column for column in ("frequency", "recency", "T", "monetary") if column not in summary
    ]
    if missing:
        raise ValueError(f"summary lacks column(s): {', '.join(missing)}")
    return {
        column: summary[column].to_numpy(np.float64)
        for column in ("frequency", "recency", "T", "monetary")
    }


def score_customers(
    summary: pd.DataFrame,
    fit: CustomerBaseFit,
    *,
    horizon_periods: float,
    discount_rate_per_period: float,
    steps: int = 12,
) -> pd.DataFrame:
    """Per-profile scores from a `summarise` frame: see `SCORE_COLUMNS`.

    `expected_purchases` is over `horizon_periods`, undiscounted; `clv` is discounted.
    """
    columns = _summary_columns(summary)
    x, t_x, t_obs = _rft(columns["frequency"], columns["recency"], columns["T"])
    alive = _p_alive(fit.bgnbd, x, t_x, t_obs)
    horizon = _check_horizon(horizon_periods, "horizon_periods")
    purchases = _expected_purchases_at(fit.bgnbd, np.array([horizon]), x, t_x, t_obs)[0]
    return pd.DataFrame(
        {
            "p_alive": alive,
            "churn_risk": 1.0 - alive,
            "expected_purchases": purchases,
            "expected_average_value": expected_average_value(
                fit.gamma_gamma, frequency=x, monetary=columns["monetary"]
            ),
            "clv": clv(
                fit.bgnbd,
                fit.gamma_gamma,
                frequency=x,
                recency=t_x,
                T=t_obs,
                monetary=columns["monetary"],
                horizon_periods=horizon,
                discount_rate_per_period=discount_rate_per_period,
                steps=steps,
            ),
        },
        index=summary.index,
    )


@dataclass(frozen=True)
class FrequencyBucket:
    """Calibration-vs-hold-out row: customers with `label` calibration repeat purchases."""

    label: str
    customers: int
    mean_actual: float
    mean_predicted: float


@dataclass(frozen=True)
class HoldoutResult:
    """Model-predicted vs actual repeat purchases in a hold-out window (`holdout_check`).

    `per_customer` has `HOLDOUT_COLUMNS`, indexed by `profile_id`; `by_frequency` is the
    classic calibration-vs-hold-out plot data.
    """

    period: Period
    calibration_end: str
    observation_end: str
    holdout_periods: float
    bgnbd: BgNbdFit
    n_customers: int
    actual_total: float
    predicted_total: float
    mean_absolute_error: float
    correlation: float
    by_frequency: tuple[FrequencyBucket, ...]
    per_customer: pd.DataFrame = field(compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-customer table)."""
        return {
            "period": self.period,
            "calibration_end": self.calibration_end,
            "observation_end": self.observation_end,
            "holdout_periods": self.holdout_periods,
            "bgnbd": self.bgnbd.as_dict(),
            "n_customers": self.n_customers,
            "actual_total": self.actual_total,
            "predicted_total": self.predicted_total,
            "mean_absolute_error": _finite_or_none(self.mean_absolute_error),
            "correlation": _finite_or_none(self.correlation),
            "by_frequency": [
                {
                    "label": bucket.label,
                    "customers": bucket.customers,
                    "mean_actual": bucket.mean_actual,
                    "mean_predicted": bucket.mean_predicted,
                }
                for bucket in self.by_frequency
            ],
        }


def _correlation(a: FloatArray, b: FloatArray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def _holdout_window(
    calibration_end: datetime, observation_end: datetime, period: Period
) -> tuple[pd.Timestamp, pd.Timestamp, int, float]:
    """Both ends in UTC, the calibration end's period and the hold-out length in periods."""
    cal_end = _utc(calibration_end, "calibration_end")
    obs_end = _utc(observation_end, "observation_end")
    cal_period = _period_of(cal_end, period)
    return cal_end, obs_end, cal_period, float(_period_of(obs_end, period) - cal_period)


def _checked_holdout_window(
    calibration_end: datetime, observation_end: datetime, period: Period
) -> tuple[pd.Timestamp, pd.Timestamp, float]:
    cal_end, obs_end, _, holdout_periods = _holdout_window(calibration_end, observation_end, period)
    if holdout_periods <= 0:
        raise ValueError("observation_end must fall in a later period than calibration_end")
    return cal_end, obs_end, holdout_periods


HOLDOUT_SUMMARY_COLUMNS: Final = (*SUMMARY_COLUMNS, "actual")
"""Columns of `holdout_summary`, indexed by `profile_id`."""


def holdout_summary(
    orders: pd.DataFrame,
    *,
    calibration_end: datetime,
    observation_end: datetime,
    period: Period = "day",
) -> pd.DataFrame:
    """What each customer contributes to `holdout_check`: the `summarise` frame as of
    `calibration_end` with `actual` (float), the customer's hold-out purchase periods.

    Per customer, so the summaries of disjoint sets of customers can be stacked and checked
    together (`holdout_result`). The window is checked there, not here."""
    _check_orders(orders)
    cal_end, obs_end, cal_period, _ = _holdout_window(calibration_end, observation_end, period)
    summary = summarise(orders, as_of=cal_end, period=period)
    times = orders["ordered_at"]
    window = orders.loc[(times > cal_end) & (times <= obs_end), list(_REQUIRED_COLUMNS)]
    later = _purchases(window, period)
    later = later.loc[later["period"] > cal_period]
    actual_counts = later.groupby("profile_id", observed=True)["period"].size()
    actual = np.asarray(actual_counts.reindex(summary.index, fill_value=0), dtype=np.float64)
    return summary.assign(actual=actual)


def holdout_check(
    orders: pd.DataFrame,
    *,
    calibration_end: datetime,
    observation_end: datetime,
    period: Period = "day",
    penalizer: float = 0.0,
) -> HoldoutResult:
    """Fit BG/NBD on a calibration window; compare predicted with actual hold-out purchases.

    Only the transaction model is checked (and fitted) here. Customers are the profiles with
    a purchase at or before `calibration_end`. Actual hold-out purchases are their distinct
    purchase periods after the period holding `calibration_end`, up to and including the one
    holding `observation_end`, counted from lines in (calibration_end, observation_end]; the
    prediction is eq. 10 over the same number of periods. Purchases later in
    `calibration_end`'s own period fall in neither window, so pass the end of a period (e.g.
    23:59:59.999999 for days).

    It is `holdout_result` of `holdout_summary`, which are per customer: the summaries of
    disjoint sets of customers, stacked in profile_id order, give the same check.
    """
    _check_orders(orders)
    _checked_holdout_window(calibration_end, observation_end, period)
    summary = holdout_summary(
        orders, calibration_end=calibration_end, observation_end=observation_end, period=period
    )
    return holdout_result(
        summary,
        calibration_end=calibration_end,
        observation_end=observation_end,
        period=period,
        penalizer=penalizer,
    )


def holdout_result(
    summary: pd.DataFrame,
    *,
    calibration_end: datetime,
    observation_end: datetime,
    period: Period = "day",
    penalizer: float = 0.0,
) -> HoldoutResult:
    """`holdout_check` from the `holdout_summary` of every customer (any number of them
    stacked): the fit on the calibration summaries and the comparison."""
    cal_end, obs_end, holdout_periods = _checked_holdout_window(
        calibration_end, observation_end, period
    )
    if summary.empty:
        raise ValueError("no purchases at or before calibration_end")
    columns = _summary_columns(summary)
    bgnbd = fit_bgnbd(columns["frequency"], columns["recency"], columns["T"], penalizer=penalizer)
    actual = summary["actual"].to_numpy(np.float64)
    predicted = expected_purchases(
        bgnbd,
        holdout_periods,
        frequency=columns["frequency"],
        recency=columns["recency"],
        T=columns["T"],
    )
    per_customer = summary[["frequency", "recency", "T", "monetary"]].assign(
        actual=actual, predicted=predicted
    )
    bucket = np.minimum(columns["frequency"], HOLDOUT_BUCKETS - 1).astype(np.int64)
    buckets = []
    for k in range(HOLDOUT_BUCKETS):
        members = bucket == k
        count = int(members.sum())
        buckets.append(
            FrequencyBucket(
                label=str(k) if k < HOLDOUT_BUCKETS - 1 else f"{k}+",
                customers=count,
                mean_actual=float(actual[members].mean()) if count else 0.0,
                mean_predicted=float(predicted[members].mean()) if count else 0.0,
            )
        )
    return HoldoutResult(
        period=period,
        calibration_end=cal_end.isoformat(),
        observation_end=obs_end.isoformat(),
        holdout_periods=holdout_periods,
        bgnbd=bgnbd,
        n_customers=len(summary),
        actual_total=float(actual.sum()),
        predicted_total=float(predicted.sum()),
        mean_absolute_error=float(np.mean(np.abs(actual - predicted))),
        correlation=_correlation(actual, predicted),
        by_frequency=tuple(buckets),
        per_customer=per_customer,
    )
