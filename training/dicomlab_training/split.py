"""Patient-level train/validation/test split, deterministic by seed and recorded with the run.

Images of one patient never straddle splits (a split by image leaks the patient's anatomy into the
test set and inflates AUROC). Patients are ordered by a keyed hash of (seed, patient key) and cut at
the requested fractions, so the same seed and patients always give the same split, on every rank.
The recorded split names patients only by their hashed key (no PHI).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Sample indices per split, and the record written to ``split.json``."""

    train: npt.NDArray[np.int64]
    val: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]
    assignment: dict[str, str]
    """Hashed patient key → split name."""
    seed: int

    def record(self) -> dict[str, Any]:
        patients = {name: sum(1 for v in self.assignment.values() if v == name) for name in SPLITS}
        return {"seed": self.seed, "unit": "patient",
                "patients": patients,
                "images": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
                "assignment": dict(sorted(self.assignment.items()))}


def _order(seed: int, patient: str) -> str:
    return hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest()


def patient_split(patients: Sequence[str], indices: Sequence[int] | npt.NDArray[np.int64], *, seed: int,
                  val_fraction: float, test_fraction: float) -> Split:
    """Split the samples ``indices`` (whose patient keys are ``patients[i]``) by patient."""
    idx = np.asarray(indices, dtype=np.int64)
    unique = sorted({patients[i] for i in idx}, key=lambda p: _order(seed, p))
    n = len(unique)
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    if n >= 3:
        # Keep every requested split non-empty when there are enough patients to do so.
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    assignment: dict[str, str] = {}
    for rank, patient in enumerate(unique):
        assignment[patient] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    parts: dict[str, list[int]] = {name: [] for name in SPLITS}
    for i in idx:
        parts[assignment[patients[i]]].append(int(i))
    return Split(train=np.array(parts["train"], dtype=np.int64), val=np.array(parts["val"], dtype=np.int64),
                 test=np.array(parts["test"], dtype=np.int64), assignment=assignment, seed=seed)
