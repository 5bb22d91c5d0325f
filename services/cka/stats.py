"""Inference on CKA values: permutation p-values, Benjamini–Hochberg q-values, speaker jackknife.

- p-values count the permutations at least as extreme as the observed value and include the
  observed one: ``(b + 1) / (m + 1)``, so they are valid at any m (never 0).
- q-values: the Benjamini–Hochberg step-up adjustment over one family (a checkpoint x layer
  grid of one estimator).
- Speaker-level uncertainty: the delete-one-speaker jackknife. Clips of one speaker are not
  independent, so the speakers are the units resampled; a clip-level bootstrap would both
  ignore that and, by duplicating clips, inflate CKA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from serlens.shared.errors import InvalidInputError


def permutation_p_values(observed: np.ndarray, permuted: np.ndarray) -> np.ndarray:
    """One-sided permutation p-values ``(b + 1) / (m + 1)`` (b: permuted values >= observed).

    Args:
        observed: the statistic per cell, shape (cells,).
        permuted: the statistic under each permutation, shape (cells, m).

    Returns:
        float64 p-values in (0, 1]; NaN where ``observed`` is NaN.
    """
    observed = np.asarray(observed, dtype=np.float64)
    # A relative tolerance keeps exact ties (the identity permutation) counted as ties.
    tolerance = 1e-12 * np.maximum(np.abs(observed), 1e-300)
    exceed = (permuted >= (observed - tolerance)[:, None]).sum(axis=1)
    p = (exceed + 1.0) / (permuted.shape[1] + 1.0)
    return np.where(np.isnan(observed), np.nan, p)


def bh_q_values(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) over one family; NaNs stay NaN.

    Args:
        p_values: p-values of any shape; NaN entries are left out of the family.

    Returns:
        q-values of the same shape: ``min over j >= i of p_(j) m / j``, at most 1.
    """
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.ravel()
    valid = np.flatnonzero(~np.isnan(flat))
    q = np.full_like(flat, np.nan)
    if valid.size:
        order = valid[np.argsort(flat[valid], kind="mergesort")]
        ranked = flat[order] * valid.size / np.arange(1, valid.size + 1)
        q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q.reshape(p.shape)


@dataclass(frozen=True)
class Interval:
    """A jackknife interval of a statistic (arrays broadcast over cells).

    Attributes:
        estimate: the full-sample value.
        standard_error: the delete-one-speaker jackknife standard error.
        low: lower bound of the two-sided interval.
        high: upper bound.
        p_value: two-sided p-value of ``estimate = 0`` from the t statistic (groups - 1 df).
    """

    estimate: np.ndarray
    standard_error: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_value: np.ndarray


def jackknife_interval(estimate: np.ndarray, leave_out: np.ndarray, *, level: float = 0.95) -> Interval:
    """Delete-one-group jackknife interval ``estimate ± t(G-1) · SE``.

    ``SE² = (G-1)/G · Σ_g (θ_(g) - mean θ_(·))²`` over the G leave-one-group-out values.

    Args:
        estimate: the statistic on all groups, shape (...).
        leave_out: the statistic with each group left out, shape (..., G).
        level: coverage of the interval, in (0, 1).

    Returns:
        The interval and the two-sided t-test p-value of a zero statistic.

    Raises:
        InvalidInputError: fewer than 3 groups, or ``level`` outside (0, 1).
    """
    leave_out = np.asarray(leave_out, dtype=np.float64)
    groups = leave_out.shape[-1]
    if groups < 3 or not 0 < level < 1:
        raise InvalidInputError(
            [("jackknife", f"{groups} group(s), level {level}; expected >= 3 groups and 0 < level < 1")],
            source="CKA statistics",
        )
    spread = leave_out - leave_out.mean(axis=-1, keepdims=True)
    se = np.sqrt((groups - 1) / groups * (spread**2).sum(axis=-1))
    estimate = np.asarray(estimate, dtype=np.float64)
    critical = float(scipy_stats.t.ppf(0.5 + level / 2, groups - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, estimate / se, np.where(estimate == 0, 0.0, np.inf))
    p = 2 * scipy_stats.t.sf(np.abs(t), groups - 1)
    return Interval(estimate, se, estimate - critical * se, estimate + critical * se, p)
