"""Dawid–Skene (1979) EM for one binary finding: per-reader confusion matrices, vectorized with numpy.

Each observation is (object, reader, answer) with answer 0 = absent, 1 = present ("uncertain" and
unanswered are missing data, not observations). EM alternates between the posterior probability that
each object is truly present (E-step) and, per reader, the 2×2 confusion matrix
``P(answer | truth)`` plus the class prior (M-step). It starts from the majority-vote share, so the
labelling of the two classes cannot flip, and converges in a handful of iterations on real data.
Every step is one gather and one ``np.bincount`` per half-step over the observations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

EPSILON = 1e-9


@dataclass(frozen=True)
class DawidSkeneFit:
    """The fitted model of one finding."""

    posterior: NDArray[np.float64]
    """(objects,) probability that each object is truly present; 0.5 where it has no observation."""
    confusion: NDArray[np.float64]
    """(readers, 2, 2): ``confusion[w, truth, answer]``, rows sum to 1."""
    prior: float
    """Estimated prevalence of the finding among the observed objects."""
    iterations: int
    converged: bool

    @property
    def sensitivity(self) -> NDArray[np.float64]:
        """(readers,) P(reader says present | present)."""
        return self.confusion[:, 1, 1]

    @property
    def specificity(self) -> NDArray[np.float64]:
        """(readers,) P(reader says absent | absent)."""
        return self.confusion[:, 0, 0]

    @property
    def balanced_accuracy(self) -> NDArray[np.float64]:
        """(readers,) mean of sensitivity and specificity: the reader's reliability on this finding."""
        result: NDArray[np.float64] = (self.sensitivity + self.specificity) / 2
        return result


def fit(objects: NDArray[np.intp], readers: NDArray[np.intp], answers: NDArray[np.int8], *, n_objects: int,
        n_readers: int, max_iterations: int = 100, tolerance: float = 1e-4, smoothing: float = 1.0,
        max_fit_objects: int = 0, prior_counts: NDArray[np.float64] | None = None) -> DawidSkeneFit:
    """Fit Dawid–Skene to observations ``(objects[i], readers[i], answers[i])``.

    EM stops when no parameter (confusion cell or prior) moves more than ``tolerance``. ``smoothing`` is
    a pseudo-count added to every confusion cell (a Beta/Dirichlet prior), which keeps readers with few
    answers near chance instead of at 0 or 1. With ``max_fit_objects`` > 0 and more observed objects
    than that, the parameters are estimated on an evenly spaced sample of that many objects and then
    every object is scored with them (EM cost is bounded; a reader's reliability is estimated from
    thousands of answers either way).

    ``prior_counts`` (readers × 2 × 2, ``[w, truth, answer]``) are extra pseudo-counts per reader added to
    every M-step: a Dirichlet prior on each reader's confusion matrix, e.g. the reader's answers on
    gold-standard images against their known answers (:func:`dicomlab_labeling.workflow.gold.prior_counts`).
    """
    # Object ids are 0..n_objects-1, so counting (not sorting, as np.unique would) finds the observed ones.
    seen_ids = np.flatnonzero(np.bincount(objects, minlength=n_objects)) if max_fit_objects else objects[:0]
    if max_fit_objects and seen_ids.size > max_fit_objects:
        sampled = np.zeros(n_objects, dtype=bool)
        sampled[seen_ids[np.linspace(0, seen_ids.size - 1, max_fit_objects).astype(np.intp)]] = True
        keep = sampled[objects]
        compact = (np.cumsum(sampled) - 1)[objects[keep]]  # sample objects numbered 0..k-1 in id order
        model = fit(compact, readers[keep], answers[keep], n_objects=max_fit_objects, n_readers=n_readers,
                    max_iterations=max_iterations, tolerance=tolerance, smoothing=smoothing,
                    prior_counts=prior_counts)
        posterior = _score(objects, readers * 2 + answers.astype(np.intp), model.confusion, model.prior, n_objects)
        return DawidSkeneFit(posterior=posterior, confusion=model.confusion, prior=model.prior,
                             iterations=model.iterations, converged=model.converged)
    answers = answers.astype(np.intp)
    cells = readers * 2 + answers  # one index per (reader, answer): every step is a take + a bincount
    per_cell = np.bincount(cells, minlength=2 * n_readers).astype(np.float64)
    ones = np.bincount(objects, weights=answers, minlength=n_objects)
    seen = np.bincount(objects, minlength=n_objects)
    observed = seen > 0
    n_observed = max(int(observed.sum()), 1)
    posterior = np.full(n_objects, 0.5)
    posterior[observed] = ones[observed] / seen[observed]
    confusion = np.full((n_readers, 2, 2), 0.5)
    prior = 0.5
    pseudo = np.full((n_readers, 2, 2), smoothing)  # [w, truth, answer]
    if prior_counts is not None:
        pseudo = pseudo + np.asarray(prior_counts, dtype=np.float64).reshape(n_readers, 2, 2)
    iterations, converged = 0, False
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported in the fit
        # M-step: prior and confusion matrices from the current soft labels.
        new_prior = float(np.clip(posterior[observed].sum() / n_observed, EPSILON, 1 - EPSILON))
        weighted = np.bincount(cells, weights=posterior[objects], minlength=2 * n_readers)
        absent = (per_cell - weighted).reshape(n_readers, 2) + pseudo[:, 0, :]
        present = weighted.reshape(n_readers, 2) + pseudo[:, 1, :]
        new = np.empty_like(confusion)
        new[:, 1, :] = present / present.sum(axis=1, keepdims=True)
        new[:, 0, :] = absent / absent.sum(axis=1, keepdims=True)
        change = max(float(np.max(np.abs(new - confusion))), abs(new_prior - prior))
        confusion, prior = new, new_prior
        posterior = _score(objects, cells, confusion, prior, n_objects, observed)
        if change < tolerance:
            converged = True
            break
    return DawidSkeneFit(posterior=posterior, confusion=confusion, prior=prior, iterations=iterations,
                         converged=converged)


def _score(objects: NDArray[np.intp], cells: NDArray[np.intp], confusion: NDArray[np.float64], prior: float,
           n_objects: int, observed: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
    """E-step: P(present) per object from the log-odds summed over its observations (0.5 if none)."""
    if observed is None:
        observed = np.bincount(objects, minlength=n_objects) > 0
    log_ratio = (np.log(confusion[:, 1, :]) - np.log(confusion[:, 0, :])).ravel()
    logit = np.bincount(objects, weights=log_ratio[cells], minlength=n_objects) + np.log(prior / (1 - prior))
    result: NDArray[np.float64] = np.where(observed, 1.0 / (1.0 + np.exp(-np.clip(logit, -500, 500))), 0.5)
    return result
