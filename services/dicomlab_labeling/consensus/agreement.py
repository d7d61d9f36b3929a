"""Inter-reader agreement per finding: Fleiss' kappa and Krippendorff's alpha (nominal).

Both take a count matrix ``counts[object, category]`` (how many readers put each object in each
category; here present / absent / uncertain). Fleiss' kappa assumes every object has the same number
of readers, so it is reported only then (``None`` otherwise). Krippendorff's alpha handles any number
of readers per object (objects with fewer than two are not pairable and are ignored), so it is the
statistic to compare across jobs where readers varied (late or malformed answers, expired tasks).
Both are ``None`` when undefined: fewer than two pairable objects, or every answer in one category
(no variation, so chance agreement is total).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def fleiss_kappa(counts: NDArray[np.integer] | NDArray[np.floating]) -> float | None:
    """Fleiss' kappa of ``counts`` (objects × categories); None if raters vary or it is undefined."""
    counts = np.asarray(counts, dtype=np.float64)
    raters = counts.sum(axis=1)
    counts, raters = counts[raters > 0], raters[raters > 0]
    if len(counts) < 2:
        return None
    n = raters[0]
    if n < 2 or not np.all(raters == n):
        return None
    per_object = ((counts * counts).sum(axis=1) - n) / (n * (n - 1))
    p_bar = float(per_object.mean())
    shares = counts.sum(axis=0) / counts.sum()
    p_e = float((shares * shares).sum())
    if p_e >= 1.0 - 1e-12:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def krippendorff_alpha_nominal(counts: NDArray[np.integer] | NDArray[np.floating]) -> float | None:
    """Krippendorff's alpha for nominal data from per-object category counts (any raters per object)."""
    counts = np.asarray(counts, dtype=np.float64)
    m = counts.sum(axis=1)
    pairable = m >= 2
    counts, m = counts[pairable], m[pairable]
    if len(counts) < 2:
        return None
    # Coincidences: o_cc = Σ_u n_uc (n_uc − 1) / (m_u − 1); n_c = Σ_u n_uc; n = Σ_c n_c.
    observed_same = float(((counts * (counts - 1)).sum(axis=1) / (m - 1)).sum())
    n_c = counts.sum(axis=0)
    n = float(n_c.sum())
    expected = n * n - float((n_c * n_c).sum())
    if expected <= 0:
        return None
    return 1.0 - (n - 1.0) * (n - observed_same) / expected


KAPPA_BANDS: tuple[tuple[float, str], ...] = (
    (0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial"), (1.0, "almost perfect"))
"""Landis & Koch (1977): (upper bound, name) from 0 up; below 0 is "poor"."""

ALPHA_BANDS: tuple[tuple[float, str], ...] = ((0.667, "unreliable"), (0.8, "tentative"), (1.0, "reliable"))
"""Krippendorff (2004): α ≥ 0.800 reliable; 0.667 ≤ α < 0.800 tentative conclusions only; below, unreliable."""


def kappa_band(kappa: float | None) -> str | None:
    """The Landis & Koch name of ``kappa`` (None when kappa is undefined)."""
    if kappa is None:
        return None
    if kappa < 0:
        return "poor"
    return next((name for upper, name in KAPPA_BANDS if kappa <= upper), KAPPA_BANDS[-1][1])


def alpha_band(alpha: float | None) -> str | None:
    """Krippendorff's reading of ``alpha``: reliable / tentative / unreliable (None when undefined)."""
    if alpha is None:
        return None
    return next((name for upper, name in ALPHA_BANDS if alpha < upper), ALPHA_BANDS[-1][1])
