"""The labeling service's configuration: one frozen dataclass loaded from ``DICOMLAB_LABELING__*``.

The same object configures the Flask app (gunicorn), the Ground Truth Lambda handlers and the
``dicomlab labeling`` CLI, so a callback behaves the same wherever it runs::

    DICOMLAB_LABELING__TOKEN_KEYS=k1:<base64url secret>          (required, shared with the proxy)
    DICOMLAB_LABELING__ORTHANC__URL=http://orthanc:8042
    DICOMLAB_LABELING__PROXY_PUBLIC_URL=https://pacs-proxy.example.org
    DICOMLAB_LABELING__GT__TIE_RULE=uncertain
    DICOMLAB_LABELING__CONSOLIDATION__METHOD=auto
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from dicomlab_core.config import Secret, load_config
from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_core.objectstore import StoreScope
from dicomlab_core.orthanc import OrthancSettings

ENV_PREFIX = "DICOMLAB_LABELING"
"""Every variable of this service starts with this prefix (``__`` nests)."""


class TieRule(StrEnum):
    """What a majority vote decides when present and absent votes are equal."""

    ABSENT = "absent"
    PRESENT = "present"
    UNCERTAIN = "uncertain"


class ConsolidationMethod(StrEnum):
    """How answers of several readers become one label per finding."""

    AUTO = "auto"
    """Dawid–Skene where an object has ≥ ``min_answers_for_model`` answers, else majority vote."""
    MAJORITY = "majority"
    """Majority vote with the tie rule, everywhere."""
    DAWID_SKENE = "dawid-skene"
    """Dawid–Skene wherever it can be fitted (objects with a single answer keep that answer)."""


class CallbackAuth(StrEnum):
    """How the ``/gt/*`` HTTP callbacks authenticate their caller."""

    TOKEN = "token"  # noqa: S105 - a mode name, not a secret
    """``Authorization: Bearer <service_token>`` is required."""
    NONE = "none"
    """No check: only when IAM (API Gateway / Lambda URL with AWS_IAM) or a private network is in front."""


@dataclass(frozen=True)
class ConsolidationSettings:
    """How consolidation treats answers."""

    method: ConsolidationMethod = ConsolidationMethod.AUTO
    """auto | majority | dawid-skene (default auto)."""
    tie_rule: TieRule = TieRule.UNCERTAIN
    """Majority-vote result on a present/absent tie: absent | present | uncertain (default uncertain)."""
    min_answers_for_model: int = 3
    """Objects need at least this many answers for the Dawid–Skene model in auto mode (default 3)."""
    min_objects_for_model: int = 20
    """In auto mode, Dawid–Skene also needs this many such objects in the batch to estimate reader
    reliability; smaller batches use majority vote (default 20)."""
    model_fit_objects: int = 20000
    """Dawid–Skene estimates reader reliability on at most this many objects (an evenly spaced sample),
    then scores every object; 0 = fit on all (default 20000)."""
    max_iterations: int = 100
    """Upper bound on Dawid–Skene EM iterations (default 100)."""
    tolerance: float = 1e-4
    """EM stops when no reader-confusion cell or prior moves more than this between iterations (default 1e-4)."""
    gold_priors: bool = False
    """Self-hosted jobs with gold-standard images: each reader's present/absent answers on gold, against the
    known answers, become Dawid–Skene pseudo-counts of that reader's confusion matrix (a reader prior).
    Gold images themselves are never consolidated nor exported (default false)."""

    def validate(self) -> None:
        if self.min_answers_for_model < 2:
            raise ValueError("CONSOLIDATION__MIN_ANSWERS_FOR_MODEL must be at least 2")
        if self.max_iterations < 1:
            raise ValueError("CONSOLIDATION__MAX_ITERATIONS must be at least 1")


@dataclass(frozen=True)
class GroundTruthSettings:
    """The Ground Truth callbacks (pre- and post-annotation)."""

    skip_unknown_instances: bool = False
    """Pre-annotation of an instance Orthanc does not know: false = error, true = skip it
    (``isHumanAnnotationRequired: false``). Default false."""
    callback_auth: CallbackAuth = CallbackAuth.TOKEN
    """token | none: how the HTTP ``/gt/*`` callbacks check their caller (Lambdas are invoked by IAM)."""
    service_token: Secret = Secret("")
    """Bearer token for the HTTP ``/gt/*`` callbacks; empty with callback_auth=token disables them (503)."""
    assume_role: bool = True
    """Post-annotation: assume the request's ``roleArn`` with STS to read the annotation file (default
    true); false reads with the service's own credentials (IRSA / Lambda execution role)."""
    sts_endpoint_url: str = ""
    """STS endpoint override (tests, VPC endpoints); empty = the AWS default."""
    s3_endpoint_url: str = ""
    """S3 endpoint override for annotation files; empty = ``DICOMLAB_S3_ENDPOINT_URL`` or AWS."""
    region: str = ""
    """AWS region for STS/S3 clients; empty = ``AWS_REGION`` / the SDK default."""
    role_session_seconds: int = 900
    """Duration of assumed-role sessions, seconds (900–43200, default 900)."""

    def validate(self) -> None:
        if not 900 <= self.role_session_seconds <= 43200:
            raise ValueError("GT__ROLE_SESSION_SECONDS must be between 900 and 43200")


@dataclass(frozen=True)
class AuthSettings:
    """Accounts of the self-hosted labeling UI: password login, session cookies, trusted-header SSO."""

    admin_username: str = ""
    """Admin account created (or its password reset) at start-up when this and admin_password are set."""
    admin_password: Secret = Secret("")
    """Password of the start-up admin account (from a Secret; ≥ 10 characters)."""
    cookie_secure: bool = True
    """Mark the session cookie ``Secure`` (HTTPS only); false only for local plain-http use (default true)."""
    session_hours: int = 12
    """Lifetime of a login session, hours (default 12)."""
    login_max_failures: int = 10
    """Failed logins of one account from one client address that pass without delay (default 10)."""
    login_window_seconds: int = 900
    """An (account, client address) pair's failures are forgotten after this long without an attempt,
    seconds (default 900)."""
    login_delay_seconds: float = 1.0
    """Wait after the free failures are used up, seconds; doubles with each further failure (default 1)."""
    login_max_delay_seconds: int = 300
    """Longest wait between login attempts of one account from one client address, seconds (default 300)."""
    forwarded_for_proxies: tuple[str, ...] = ()
    """Addresses/CIDRs of reverse proxies (the ingress) whose ``X-Forwarded-For`` names the client address
    used by login limits and the audit log; default none: the direct peer is the client."""
    sso_enabled: bool = False
    """Trust ``X-Forwarded-Email``/``X-Forwarded-User`` from trusted_proxies (oauth2-proxy in front); default false."""
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    """Addresses/CIDRs whose SSO headers are believed (the oauth2-proxy pods); default loopback only."""
    sso_email_header: str = "X-Forwarded-Email"
    """Header carrying the signed-in user's e-mail (default X-Forwarded-Email)."""
    sso_user_header: str = "X-Forwarded-User"
    """Header carrying the signed-in user's name (default X-Forwarded-User)."""
    sso_auto_create: bool = True
    """Create an annotator account on a new SSO user's first request (default true)."""
    password_time_cost: int = 3
    """argon2id iterations for new password hashes (default 3, argon2-cffi's RFC 9106 low-memory profile)."""
    password_memory_kib: int = 65536
    """argon2id memory for new password hashes, KiB (default 65536 = 64 MiB)."""

    def validate(self) -> None:
        if bool(self.admin_username) != bool(self.admin_password):
            raise ValueError("AUTH__ADMIN_USERNAME and AUTH__ADMIN_PASSWORD must be set together")
        if self.admin_password and len(self.admin_password.reveal()) < 10:
            raise ValueError("AUTH__ADMIN_PASSWORD must be at least 10 characters")
        if self.password_time_cost < 1 or self.password_memory_kib < 8:
            raise ValueError("AUTH__PASSWORD_TIME_COST must be ≥ 1 and AUTH__PASSWORD_MEMORY_KIB ≥ 8")
        if self.session_hours < 1 or self.login_max_failures < 1 or self.login_window_seconds < 1:
            raise ValueError("AUTH__SESSION_HOURS, AUTH__LOGIN_MAX_FAILURES, AUTH__LOGIN_WINDOW_SECONDS must be ≥ 1")
        if not 0 < self.login_delay_seconds <= self.login_max_delay_seconds:
            raise ValueError("AUTH__LOGIN_DELAY_SECONDS must be > 0 and ≤ AUTH__LOGIN_MAX_DELAY_SECONDS")
        for name, entries in (("TRUSTED_PROXIES", self.trusted_proxies),
                              ("FORWARDED_FOR_PROXIES", self.forwarded_for_proxies)):
            for entry in entries:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"AUTH__{name}: {entry!r} is not an address or CIDR") from None


@dataclass(frozen=True)
class QueueSettings:
    """Defaults of the self-hosted task queue (each job may override them)."""

    lease_seconds: int = 900
    """How long a reader holds an image before it goes back to the queue, seconds (default 900)."""
    readers_per_image: int = 3
    """Distinct readers per image when a job does not say (default 3)."""
    max_lookahead: int = 3
    """Most images a reader may lease ahead for prefetching (default 3)."""
    db_pool_size: int = 10
    """Database connections kept per worker process (default 10)."""

    def validate(self) -> None:
        if self.lease_seconds < 10:
            raise ValueError("QUEUE__LEASE_SECONDS must be at least 10")
        if self.readers_per_image < 1:
            raise ValueError("QUEUE__READERS_PER_IMAGE must be at least 1")


@dataclass(frozen=True)
class AnswerLimits:
    """Size limits of one answer (a submission or an adjudication); over a limit the answer is refused (400)."""

    max_points_per_roi: int = 2000
    """Most points one ROI (polygon, rectangle, ellipse) may have (default 2000)."""
    max_rois: int = 100
    """Most ROIs one answer may hold (default 100)."""
    max_bytes: int = 256 * 1024
    """Largest answer, bytes of its compact JSON (default 262144 = 256 KiB)."""

    def validate(self) -> None:
        if self.max_points_per_roi < 3 or self.max_rois < 1 or self.max_bytes < 1024:
            raise ValueError("ANSWERS__MAX_POINTS_PER_ROI must be ≥ 3, ANSWERS__MAX_ROIS ≥ 1, "
                             "ANSWERS__MAX_BYTES ≥ 1024")


@dataclass(frozen=True)
class LabelingConfig:
    """Everything the labeling service reads from the environment."""

    token_keys: tuple[Secret, ...]
    """Token signing keys ``kid:base64url-secret`` (comma-separated, first signs); required, shared with
    the proxy."""
    orthanc: OrthancSettings = field(default_factory=OrthancSettings)
    """How to reach Orthanc (``__ORTHANC__URL``, ``__ORTHANC__USERNAME``, ``__ORTHANC__PASSWORD``, ...)."""
    proxy_public_url: str = "http://127.0.0.1:8081"
    """The DICOMweb proxy's URL as browsers reach it (image URLs in tasks point here)."""
    proxy_dicomweb_path: str = "/dicom-web"
    """Path of the proxy's DICOMweb root under ``proxy_public_url`` (default /dicom-web)."""
    token_ttl_seconds: int = 43200
    """Lifetime of image-access tokens handed to readers, seconds; must cover the task's availability plus
    its time limit (default 43200 = 12 h)."""
    labels: tuple[str, ...] = CHEXPERT_LABELS
    """Default label set when a data object or job names none (default: the 14 CheXpert findings)."""
    store_url: str = "file:///var/lib/dicomlab/store"
    """Object store root (``file:///path`` or ``s3://bucket/prefix``) for manifests and exports."""
    extra_read_stores: tuple[str, ...] = ()
    """Further object-store roots (``s3://bucket/prefix`` or ``file:///dir``, comma-separated) that URIs in
    requests may name: Ground Truth annotation files (``payload.s3Uri``, ``annotationData.s3Uri``, e.g. the
    job's output bucket) and job manifests (``manifestUri``). ``store_url`` is always allowed; any other URI
    is refused with one message (default none)."""
    data_dir: Path = Path("/var/lib/dicomlab/labeling")
    """Local state directory (the default SQLite database lives here)."""
    database_url: Secret = Secret("")
    """SQLAlchemy URL (``postgresql+psycopg://user:password@host/db``; it carries a password, so it is a
    secret); empty = SQLite ``<data_dir>/labeling.db``."""
    session_secret: Secret = Secret("")
    """Secret for session cookies and CSRF of the self-hosted UI (required for the UI; ≥ 32 chars)."""
    public_url: str = ""
    """The labeling service's own public URL (links in exports/notifications); empty = from the request."""
    max_request_bytes: int = 64 * 1024 * 1024
    """Largest accepted request body, bytes (default 64 MiB)."""
    consolidation: ConsolidationSettings = field(default_factory=ConsolidationSettings)
    """Consolidation (``__CONSOLIDATION__*``)."""
    gt: GroundTruthSettings = field(default_factory=GroundTruthSettings)
    """Ground Truth callbacks (``__GT__*``)."""
    auth: AuthSettings = field(default_factory=AuthSettings)
    """Self-hosted UI accounts, sessions and SSO (``__AUTH__*``)."""
    queue: QueueSettings = field(default_factory=QueueSettings)
    """Self-hosted task queue defaults (``__QUEUE__*``)."""
    answers: AnswerLimits = field(default_factory=AnswerLimits)
    """Size limits of readers' answers and reviewers' adjudications (``__ANSWERS__*``)."""
    log_level: str = "INFO"
    """Log level of the service (JSON lines on stdout)."""

    def validate(self) -> None:
        if not self.token_keys:
            raise ValueError(f"{ENV_PREFIX}__TOKEN_KEYS needs at least one 'kid:secret' entry")
        if self.token_ttl_seconds < 60:
            raise ValueError("TOKEN_TTL_SECONDS must be at least 60")
        if not self.proxy_public_url.startswith(("http://", "https://")):
            raise ValueError("PROXY_PUBLIC_URL must be an http(s) URL")
        try:
            self.read_scope()
        except ValueError as exc:
            raise ValueError(f"STORE_URL / EXTRA_READ_STORES: {exc}") from None
        self.consolidation.validate()
        self.gt.validate()
        self.auth.validate()
        self.queue.validate()
        self.answers.validate()

    def read_scope(self) -> StoreScope:
        """Where request URIs may point: ``store_url`` plus ``extra_read_stores``."""
        return StoreScope((self.store_url, *self.extra_read_stores))

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL to use: ``database_url`` or the SQLite default under ``data_dir``."""
        return self.database_url.reveal() or f"sqlite:///{self.data_dir / 'labeling.db'}"


def load() -> LabelingConfig:
    """The configuration from ``os.environ`` (raises ``ConfigError`` naming a missing/bad variable)."""
    return load_config(LabelingConfig, ENV_PREFIX)

