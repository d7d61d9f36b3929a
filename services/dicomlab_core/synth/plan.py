"""What to generate: the configuration and a cheap, deterministic plan of every image.

Planning draws all random choices (patients, studies, findings, photometric, compression...) up
front from generators seeded by ``(seed, patient, study, image)``, without rendering pixels, so
images can be rendered lazily, in any order or in parallel, and always come out identical.
Findings are drawn per study (a time point) from latent conditions so that they co-occur the way
they do in chest radiographs: heart failure brings cardiomegaly, edema and effusions; infection
brings pneumonia, consolidation and lung opacity; an ICU stay brings support devices, atelectasis
and pneumothorax.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from pydicom.uid import generate_uid

from dicomlab_core.labels import Finding

from .canvas import Pose

logger = logging.getLogger(__name__)

UID_NAMESPACE = "dicomlab-synth-v1"
"""Mixed into every UID's entropy: bump it when the generator's output changes meaning."""


class Modality(StrEnum):
    DX = "DX"
    CR = "CR"


class Photometric(StrEnum):
    MONOCHROME1 = "MONOCHROME1"
    MONOCHROME2 = "MONOCHROME2"


class Compression(StrEnum):
    """Lossless encodings the generator can write (each needs its pixel encoder installed)."""

    NONE = "none"
    RLE = "rle"
    JPEG_LOSSLESS = "jpeg-lossless"
    """JPEG Lossless, first-order prediction (SV1), with our own encoder (:mod:`.jpeg_lossless`)."""
    JPEG_LS = "jpeg-ls"
    JPEG2000 = "jpeg2000"


class Voi(StrEnum):
    """How an image's VOI transform is given."""

    NONE = "none"
    """No VOI module (CR only)."""
    FULL_RANGE = "full_range"
    """A window spanning the whole stored range (DX requires a VOI for presentation)."""
    WINDOW = "window"
    """A clipping WindowCenter/WindowWidth."""
    LUT = "lut"
    """A VOI LUT Sequence (a non-linear lookup table)."""


class View(StrEnum):
    PA = "PA"
    AP = "AP"


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Every field has a default; the same config and seed give the same bytes."""

    patients: int = 50
    """Number of patients."""
    seed: int = 0
    """Seed of every random choice, pixels and UIDs included."""
    rows: int = 1024
    """Image height in pixels (16..4096; real detectors go up to about 3000 x 2500)."""
    columns: int = 1024
    """Image width in pixels (16..4096)."""
    studies_per_patient: tuple[int, int] = (1, 2)
    """Inclusive range of studies per patient."""
    images_per_study: tuple[int, int] = (1, 2)
    """Inclusive range of images per study (one series per study)."""
    monochrome1_fraction: float = 0.3
    """Fraction of series stored as MONOCHROME1 (inverted pixel values)."""
    voi_fraction: float = 0.3
    """Fraction of series with a real, clipping VOI (a window or, for a third of them, a VOI LUT)."""
    compressed_fraction: float = 0.2
    """Fraction of images stored with a lossless compressed transfer syntax."""
    modalities: tuple[str, ...] = ("DX", "CR")
    """Modalities to draw from, per series."""
    compressions: tuple[str, ...] = ()
    """Compressions to cycle through for compressed images; empty means every installed one."""
    rescale_fraction: float = 0.3
    """Fraction of CR series with a non-identity Rescale Slope/Intercept (DX requires 1/0)."""

    def __post_init__(self) -> None:
        if self.patients < 0:
            raise ValueError("patients must be >= 0")
        if not (16 <= self.rows <= 4096 and 16 <= self.columns <= 4096):
            raise ValueError("rows and columns must be between 16 and 4096")
        for name in ("studies_per_patient", "images_per_study"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 1 <= low <= high")
        for name in ("monochrome1_fraction", "voi_fraction", "compressed_fraction", "rescale_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if not self.modalities or any(m not in Modality.__members__ for m in self.modalities):
            raise ValueError(f"modalities must be a non-empty subset of {list(Modality.__members__)}")


@dataclass(frozen=True)
class Anatomy:
    """One patient's body, fixed across their studies (sizes in image fractions)."""

    body_width: float
    lung_top: float
    diaphragm: float
    heart_ratio: float
    """Cardiothoracic ratio when the heart is normal."""
    mediastinum: float
    """Half-width of the upper mediastinum."""
    rib_tilt: float
    soft_tissue: float
    """Extra soft-tissue density of a larger body."""


@dataclass(frozen=True)
class Exposure:
    """How one acquisition renders: contrast, brightness, noise, stored value range."""

    gain: float
    gamma: float
    noise: float
    low: int
    """Stored value of the least dense pixel (MONOCHROME2 sense)."""
    high: int
    """Stored value of the densest pixel."""


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render and encode one image, deterministically."""

    index: int
    rows: int
    columns: int
    patient_index: int
    patient_id: str
    patient_name: str
    patient_sex: str
    birth_date: str
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    series_number: int
    instance_number: int
    modality: Modality
    view: View
    photometric: Photometric
    compression: Compression
    voi: Voi
    rescale: tuple[float, float]
    """(slope, intercept) of the modality LUT."""
    anatomy: Anatomy
    pose: Pose
    exposure: Exposure
    findings: frozenset[str]
    finding_seed: int
    noise_seed: int


def available_compressions() -> tuple[Compression, ...]:
    """The lossless encodings available here: pydicom's installed encoders plus our JPEG Lossless."""
    from pydicom.pixels.encoders.base import JPEG2000LosslessEncoder, JPEGLSLosslessEncoder, RLELosslessEncoder

    found = [Compression.RLE] if RLELosslessEncoder.is_available else []
    found.append(Compression.JPEG_LOSSLESS)
    if JPEGLSLosslessEncoder.is_available:
        found.append(Compression.JPEG_LS)
    if JPEG2000LosslessEncoder.is_available:
        found.append(Compression.JPEG2000)
    return tuple(found)


def make_uid(seed: int, *parts: object) -> str:
    """A UID derived only from the seed and a path, so the same seed gives the same UIDs."""
    return str(generate_uid(entropy_srcs=[UID_NAMESPACE, str(seed), *map(str, parts)]))


def _weyl(index: int, salt: float) -> float:
    """A low-discrepancy sequence in [0, 1): exact-looking fractions even for tiny sets."""
    return math.modf(salt + index * 0.6180339887498949)[0]


def sample_findings(rng: np.random.Generator, cardiac_risk: float) -> frozenset[str]:
    """Draw one study's findings from latent conditions; "No Finding" exactly when nothing else."""
    f = Finding
    present: set[Finding] = set()

    def maybe(finding: Finding, p: float) -> None:
        if rng.random() < p:
            present.add(finding)

    icu = rng.random() < 0.22
    heart_failure = rng.random() < 0.08 + 0.2 * cardiac_risk
    infection = rng.random() < 0.10 + 0.10 * icu
    if heart_failure:
        for finding, p in ((f.CARDIOMEGALY, 0.75), (f.EDEMA, 0.6), (f.PLEURAL_EFFUSION, 0.55),
                           (f.ENLARGED_CARDIOMEDIASTINUM, 0.35)):
            maybe(finding, p)
    if infection:
        for finding, p in ((f.PNEUMONIA, 0.65), (f.CONSOLIDATION, 0.45), (f.LUNG_OPACITY, 0.6)):
            maybe(finding, p)
    if icu:
        for finding, p in ((f.SUPPORT_DEVICES, 0.9), (f.ATELECTASIS, 0.35), (f.PLEURAL_EFFUSION, 0.25),
                           (f.PNEUMOTHORAX, 0.08)):
            maybe(finding, p)
    for finding, p in ((f.CARDIOMEGALY, 0.06), (f.ENLARGED_CARDIOMEDIASTINUM, 0.04), (f.LUNG_OPACITY, 0.06),
                       (f.LUNG_LESION, 0.07), (f.EDEMA, 0.02), (f.CONSOLIDATION, 0.03), (f.ATELECTASIS, 0.08),
                       (f.PNEUMOTHORAX, 0.04), (f.PLEURAL_EFFUSION, 0.05), (f.PLEURAL_OTHER, 0.05),
                       (f.FRACTURE, 0.06), (f.SUPPORT_DEVICES, 0.05)):
        maybe(finding, p)
    # CheXpert's hierarchy: pneumonia and consolidation are mostly reported with lung opacity too
    if f.PNEUMONIA in present or f.CONSOLIDATION in present:
        maybe(f.LUNG_OPACITY, 0.8)
    if not present:
        present.add(f.NO_FINDING)
    return frozenset(str(x) for x in present)


def _anatomy(rng: np.random.Generator) -> Anatomy:
    return Anatomy(
        body_width=float(rng.uniform(0.80, 0.96)), lung_top=float(rng.uniform(0.10, 0.15)),
        diaphragm=float(rng.uniform(0.70, 0.79)), heart_ratio=float(rng.uniform(0.38, 0.47)),
        mediastinum=float(rng.uniform(0.05, 0.065)), rib_tilt=float(rng.uniform(0.8, 1.2)),
        soft_tissue=float(rng.uniform(0.0, 0.08)))


def _exposure(rng: np.random.Generator) -> Exposure:
    low = int(rng.integers(80, 600))
    return Exposure(gain=float(rng.uniform(0.85, 1.12)), gamma=float(rng.uniform(0.8, 1.2)),
                    noise=float(rng.uniform(0.006, 0.025)), low=low, high=int(rng.integers(3300, 4000)))


def plan(config: SynthConfig) -> Iterator[ImageSpec]:
    """Every image the config describes, in patient → study → image order, without pixels."""
    compressions = tuple(Compression(c) for c in config.compressions) or available_compressions()
    modalities = tuple(Modality(m) for m in config.modalities)
    index = series_index = compressed = 0
    for p in range(config.patients):
        prng = np.random.default_rng([config.seed, p])
        anatomy = _anatomy(prng)
        cardiac_risk = float(prng.random() ** 2)
        sex = "F" if prng.random() < 0.5 else "M"
        birth = dt.date(1930, 1, 1) + dt.timedelta(days=int(prng.integers(0, 70 * 365)))
        base_angle = float(prng.uniform(-3.0, 3.0))
        patient_id = f"SYNTH{p + 1:05d}"
        start = dt.date(2019, 1, 1) + dt.timedelta(days=int(prng.integers(0, 4 * 365)))
        for s in range(int(prng.integers(config.studies_per_patient[0], config.studies_per_patient[1] + 1))):
            srng = np.random.default_rng([config.seed, p, s])
            findings = sample_findings(srng, cardiac_risk)
            icu_like = str(Finding.SUPPORT_DEVICES) in findings
            view = View.AP if (icu_like and srng.random() < 0.8) or srng.random() < 0.15 else View.PA
            date = start + dt.timedelta(days=30 * s + int(srng.integers(0, 25)))
            modality = modalities[int(srng.integers(0, len(modalities)))]
            photometric = (Photometric.MONOCHROME1 if _weyl(series_index, 0.11) < config.monochrome1_fraction
                           else Photometric.MONOCHROME2)
            voi = Voi.NONE if modality == Modality.CR else Voi.FULL_RANGE
            if _weyl(series_index, 0.37) < config.voi_fraction:
                voi = Voi.LUT if srng.random() < 1 / 3 else Voi.WINDOW
            rescale = (1.0, 0.0)
            # a VOI LUT is indexed by stored values here, so it only comes with an identity rescale
            if modality == Modality.CR and voi != Voi.LUT and srng.random() < config.rescale_fraction:
                rescale = ((0.5, 2.0)[int(srng.integers(0, 2))], (-1024.0, 100.0)[int(srng.integers(0, 2))])
            study_uid = make_uid(config.seed, "study", p, s)
            series_uid = make_uid(config.seed, "series", p, s)
            finding_seed = int(srng.integers(0, 2**31))
            n_images = int(srng.integers(config.images_per_study[0], config.images_per_study[1] + 1))
            for i in range(n_images):
                irng = np.random.default_rng([config.seed, p, s, i])
                compression = Compression.NONE
                if compressions and _weyl(index, 0.73) < config.compressed_fraction:
                    compression = compressions[compressed % len(compressions)]  # take turns
                    compressed += 1
                pose = Pose(angle=base_angle + float(irng.uniform(-2.0, 2.0)),
                            dx=float(irng.uniform(-0.025, 0.025)), dy=float(irng.uniform(-0.02, 0.02)))
                yield ImageSpec(
                    index=index, rows=config.rows, columns=config.columns, patient_index=p,
                    patient_id=patient_id, patient_name=f"SYNTH^PATIENT{p + 1:05d}", patient_sex=sex,
                    birth_date=birth.strftime("%Y%m%d"), study_uid=study_uid, series_uid=series_uid,
                    sop_uid=make_uid(config.seed, "image", p, s, i), study_date=date.strftime("%Y%m%d"),
                    study_time=f"{int(srng.integers(7, 20)):02d}{int(srng.integers(0, 60)):02d}00",
                    accession=f"SYN{config.seed % 1000:03d}{p + 1:05d}{s + 1:02d}", study_id=str(s + 1),
                    series_number=1, instance_number=i + 1, modality=modality, view=view,
                    photometric=photometric, compression=compression, voi=voi, rescale=rescale,
                    anatomy=anatomy, pose=pose, exposure=_exposure(irng), findings=findings,
                    finding_seed=finding_seed, noise_seed=int(irng.integers(0, 2**31)))
                index += 1
            series_index += 1
