"""Configuration: a YAML file overlaid by ``STREAMWATCH_*`` environment variables.

Nested fields use ``__`` in variable names, e.g. ``STREAMWATCH_KAFKA__BOOTSTRAP_SERVERS`` or
``STREAMWATCH_KAFKA__CLIENT__SASL_PASSWORD`` (librdkafka keys: ``_`` stands for ``.``).
Environment variables win over the file.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from streamwatch.logs import is_secret_key

_PROFILES: dict[str, dict[str, Any]] = {}  # loaded reference profiles by path
_SECRET_KEYS = (
    "password",
    "secret",
    "token",
    "key.password",
    "sasl.jaas.config",
    "ssl.key.pem",
    "sasl.oauthbearer.config",
)


class ConfigError(Exception):
    """A configuration problem, phrased for the person who wrote the file."""


class FeatureType(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DriftSettings(_Strict):
    """Feature drift against the reference (the warm-up events until profiles land).

    The false-alarm budget is one number per model, ``false_alarm_events``: the expected number
    of events between false drift alerts when nothing changes. It is shared out (Bonferroni)
    over features and detectors, so a model with 200 features alarms no more often than one
    with 2.
    """

    reference_size: int = Field(1000, ge=50, description="events of each model taken as reference")
    window_size: int = Field(1000, ge=50, description="events in the sliding comparison window")
    step: int = Field(100, ge=1, description="events between two evaluations of the window")
    bins: int = Field(10, ge=2, le=100, description="quantile bins per numeric feature")
    max_categories: int = Field(20, ge=1, le=1000, description="top categories kept per feature")
    statistic: Literal["psi", "js", "ks", "wasserstein"] = Field(
        "psi", description="window statistic of numeric features"
    )
    categorical_statistic: Literal["psi", "js", "chi2"] = Field(
        "psi", description="window statistic of categorical features"
    )
    min_effect: float | None = Field(
        None,
        ge=0,
        description="smallest change worth an alert, in the statistic's units (default: PSI 0.1, ...)",
    )
    false_alarm_events: float = Field(
        100_000.0, gt=1, description="expected events between false drift alerts of a model (ARL0)"
    )
    resolve_ratio: float = Field(
        0.5, gt=0, le=1, description="an alert resolves below this share of its threshold"
    )
    cusum: bool = Field(True, description="also run a CUSUM per numeric feature (early mean shifts)")
    cusum_min_shift: float = Field(0.5, gt=0, description="smallest mean shift worth catching, in sd")

    @model_validator(mode="after")
    def _consistent(self) -> DriftSettings:
        if self.window_size % self.step:
            raise ValueError(f"window_size ({self.window_size}) must be a multiple of step ({self.step})")
        return self


class PerformanceSettings(_Strict):
    """The label join and the performance checks of a model (see docs/performance.md)."""

    task: Literal["auto", "classification", "regression"] = Field(
        "auto", description="auto: regression when predictions carry a value, else classification"
    )
    positive_class: str | None = Field(
        None, description="class whose precision/recall/F1 are reported (binary; default: the larger name)"
    )
    label_ttl_seconds: float = Field(
        7 * 86400.0, gt=0, description="event time a prediction waits for its label"
    )
    label_wait_seconds: float = Field(
        3600.0, ge=0, description="event time a label that came before its prediction waits for it"
    )
    max_open_predictions: int = Field(
        200_000, ge=100, description="cap of the label store; beyond it ids are hash-sampled"
    )
    window_seconds: float = Field(
        3600.0, gt=0, description="prediction-time window of the time-based metrics"
    )
    window_events: int = Field(1000, ge=10, description="joined events in the count-based window")
    reference_labels: int = Field(
        1000, ge=50, description="first joined events that set the baseline when none is configured"
    )
    baseline: dict[str, float] = Field(
        default_factory=dict, description="development-set metrics, e.g. {accuracy: 0.91, roc_auc: 0.95}"
    )
    baseline_events: int | None = Field(
        None, ge=1, description="size of the development set behind `baseline` (for its interval)"
    )
    tolerance: float = Field(0.02, ge=0, description="degradation below the baseline that is ignored")
    confidence: float = Field(0.99, gt=0.5, lt=1, description="confidence of the performance intervals")
    min_coverage: float = Field(0.5, gt=0, le=1, description="label coverage a window needs to be judged")
    min_labels: int = Field(200, ge=10, description="joined events a window needs to be judged")
    concept_drift: bool = Field(True, description="run a CUSUM on the per-event error stream")
    concept_min_shift: float = Field(0.3, gt=0, description="smallest error increase worth catching, in sd")
    estimate: bool = Field(True, description="estimate classification performance from scores (CBPE)")
    max_classes: int = Field(50, ge=2, le=1000, description="classes tracked; further ones share one")


class QualitySettings(_Strict):
    """Dev-prod and data-quality checks of each model's features (see docs/profiles.md)."""

    enabled: bool = Field(
        True, description="run the unit-change, column-swap, new-category and quality checks"
    )
    window_size: int = Field(500, ge=100, description="recent events each check looks at")
    step: int = Field(100, ge=1, description="events between two evaluations of the window")
    alpha: float = Field(
        1e-6, gt=0, lt=0.01, description="false-alarm level of each check, per feature and window"
    )
    new_category_min_count: int = Field(3, ge=1, description="events a new category needs to matter")
    new_category_min_share: float = Field(
        0.005, ge=0, le=1, description="share of the window a new category needs to matter"
    )
    new_category_max_tracked: int = Field(100, ge=1, description="distinct new values counted by name")
    unknown_field_min_share: float = Field(
        0.01, gt=0, le=1, description="share of the window a field the config does not declare needs"
    )
    unknown_fields_max_tracked: int = Field(
        100, ge=1, description="distinct unknown field names counted by name (per window and in total)"
    )
    duplicate_ids_tracked: int = Field(
        5_000, ge=0, description="recent distinct event ids per model checked for duplicates (0: off)"
    )
    duplicate_min_share: float = Field(
        0.01, gt=0, le=1, description="share of duplicate event ids in the window that raises an alert"
    )

    @model_validator(mode="after")
    def _consistent(self) -> QualitySettings:
        if self.window_size % self.step:
            raise ValueError(f"window_size ({self.window_size}) must be a multiple of step ({self.step})")
        return self


class ModelSettings(_Strict):
    features: dict[str, FeatureType] = Field(min_length=1)
    drift: DriftSettings | None = None
    performance: PerformanceSettings | None = None
    # reference profile (`streamwatch profile --out ...`) for the dev-prod checks; without one
    # the warm-up events are the reference
    profile: str | None = Field(None, description="path of the model's reference profile JSON")
    # per model version: the monitor takes the profile of the version of its first event (else
    # `profile`)
    profiles_by_version: dict[str, str] = Field(
        default_factory=dict, description="model_version -> path of that version's reference profile"
    )

    def reference_profile(self, version: str | None = None) -> dict[str, Any] | None:
        """The profile of ``version`` when one is configured, else the model's profile, loaded
        and verified (cached per path), or None."""
        path = self.profiles_by_version.get(version, self.profile) if version is not None else self.profile
        return None if path is None else _load_profile(path)

    def version_profiles(self) -> dict[str, dict[str, Any]]:
        """Every per-version profile, loaded and verified."""
        return {v: _load_profile(p) for v, p in self.profiles_by_version.items()}

    @field_validator("features", mode="before")
    @classmethod
    def _types_lowercase(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: (t.lower() if isinstance(t, str) else t) for k, t in v.items()}
        return v


def _load_profile(path: str) -> dict[str, Any]:
    from streamwatch.profile import load_profile  # imported here: keeps config import light

    cached = _PROFILES.get(path)
    if cached is None:
        cached = _PROFILES[path] = load_profile(path)
    return cached


class KafkaSettings(_Strict):
    """Brokers, group and client settings shared by every Kafka client the worker and CLI create.

    The security fields are the common librdkafka settings under names of their own, so that
    ``STREAMWATCH_KAFKA__SASL_PASSWORD`` reads naturally and the secrets are ``SecretStr`` (never
    shown by ``repr``); ``client`` passes any other librdkafka setting through. A key given both
    ways must agree.
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "streamwatch"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = Field(
        None, description="librdkafka security.protocol (default PLAINTEXT)"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="sasl.mechanism (others, e.g. OAUTHBEARER, through `client`)"
    )
    sasl_username: str | None = Field(None, description="sasl.username")
    sasl_password: SecretStr | None = Field(None, description="sasl.password: give it by environment")
    ssl_ca_location: str | None = Field(None, description="CA bundle that verifies the brokers (PEM)")
    ssl_certificate_location: str | None = Field(None, description="client certificate (PEM; mutual TLS)")
    ssl_key_location: str | None = Field(None, description="client private key (PEM; mutual TLS)")
    ssl_key_password: SecretStr | None = Field(None, description="passphrase of ssl_key_location")
    client: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="further librdkafka settings passed through to every client (consumer, producer, "
        "admin, state reader)",
    )

    _FIELD_KEYS: ClassVar[dict[str, str]] = {
        "security_protocol": "security.protocol",
        "sasl_mechanism": "sasl.mechanism",
        "sasl_username": "sasl.username",
        "sasl_password": "sasl.password",
        "ssl_ca_location": "ssl.ca.location",
        "ssl_certificate_location": "ssl.certificate.location",
        "ssl_key_location": "ssl.key.location",
        "ssl_key_password": "ssl.key.password",
    }

    def librdkafka(self) -> dict[str, Any]:
        """The librdkafka settings of every client: ``client`` plus the security fields, secrets
        in clear (for the client only: never log this dict unredacted)."""
        conf: dict[str, Any] = dict(self.client)
        for name, key in self._FIELD_KEYS.items():
            v = getattr(self, name)
            if v is not None:
                conf[key] = v.get_secret_value() if isinstance(v, SecretStr) else v
        return conf

    @model_validator(mode="after")
    def _security_consistent(self) -> KafkaSettings:
        for name, key in self._FIELD_KEYS.items():
            v = getattr(self, name)
            plain = v.get_secret_value() if isinstance(v, SecretStr) else v
            if v is not None and key in self.client and str(self.client[key]) != str(plain):
                # the values are not named: one of them may be a password
                raise ValueError(f"kafka.{name} and kafka.client[{key!r}] are both set and differ; set one")
        conf = self.librdkafka()
        proto = str(conf.get("security.protocol", "PLAINTEXT")).upper()
        mech = str(conf.get("sasl.mechanism", "GSSAPI")).upper()
        if proto.startswith("SASL") and mech in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            missing = [k for k in ("sasl.username", "sasl.password") if not conf.get(k)]
            if missing:
                raise ValueError(
                    f"security protocol {proto} with {mech} needs {' and '.join(missing)} "
                    "(kafka.sasl_username / kafka.sasl_password, e.g. STREAMWATCH_KAFKA__SASL_PASSWORD)"
                )
        elif self.sasl_mechanism is not None and not proto.startswith("SASL"):
            raise ValueError(
                f"kafka.sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL, not {proto}"
            )
        return self

    @field_validator("client", mode="before")
    @classmethod
    def _dotted_keys(cls, v: Any) -> Any:
        # env vars cannot hold dots; librdkafka keys never hold underscores
        if isinstance(v, dict):
            return {str(k).replace("_", ".").lower(): val for k, val in v.items()}
        return v

    def redacted_client(self) -> dict[str, Any]:
        """:meth:`librdkafka` with secret values shown as ``***`` (for `streamwatch check`)."""
        return {k: ("***" if any(s in k for s in _SECRET_KEYS) else v) for k, v in self.librdkafka().items()}


class TopicSettings(_Strict):
    predictions: str = "predictions"
    labels: str = "labels"
    alerts: str = "streamwatch.alerts"
    dead_letters: str = "streamwatch.dead-letters"
    state: str = Field(
        "streamwatch.state", description="compacted state topic, co-partitioned with the input"
    )
    create: bool = Field(True, description="create missing topics at start")
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)


class BatchSettings(_Strict):
    max_events: int = Field(20_000, ge=1, le=1_000_000)
    timeout_seconds: float = Field(0.2, gt=0)
    commit_interval_seconds: float = Field(2.0, gt=0)


class StateSettings(_Strict):
    """Checkpoints of per-model state to the state topic, and the delivery guarantee."""

    mode: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once",
        description="exactly_once: state, alerts, dead letters and offsets commit in one transaction",
    )
    checkpoint_interval_seconds: float | None = Field(
        None, gt=0, description="seconds between checkpoints (default: batch.commit_interval_seconds)"
    )
    instance_id: str | None = Field(
        None,
        min_length=1,
        description="stable id of this worker slot (e.g. the pod name): static group membership "
        "and the transactional.id; unset: a random id per process",
    )
    transaction_timeout_seconds: float = Field(60.0, ge=1, description="Kafka transaction timeout")
    restore_timeout_seconds: float = Field(120.0, gt=0, description="longest wait to rebuild state")


class MetricsSettings(_Strict):
    """The HTTP endpoint: /metrics, /healthz, /readyz; optionally over TLS and with basic auth.

    Basic auth guards /metrics only: the probes answer one word and Kubernetes probes cannot
    easily send credentials. TLS covers every path.
    """

    host: str = Field("0.0.0.0", description="bind address (127.0.0.1: this host only)")
    port: int = Field(9400, ge=0, le=65535)
    tls_cert_file: str | None = Field(None, description="server certificate (PEM, chain first): serve HTTPS")
    tls_key_file: str | None = Field(None, description="its private key (PEM; default: in tls_cert_file)")
    tls_client_ca_file: str | None = Field(
        None, description="CA bundle: when set, scrapers must present a client certificate it signed"
    )
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = Field("TLSv1.2", description="oldest TLS accepted")
    basic_auth_username: str | None = Field(None, description="user name /metrics requires")
    basic_auth_password: SecretStr | None = Field(None, description="its password (give it by environment)")
    basic_auth_password_hash: SecretStr | None = Field(
        None,
        description="or the password's hash: 'sha256:<hex digest>' (keeps the password out of the config)",
    )
    max_series_per_model: int = Field(
        2000,
        ge=10,
        description="series a model may export; beyond it the least drifted features and the "
        "smallest classes are withheld (see docs/metrics.md#cardinality)",
    )

    @model_validator(mode="after")
    def _tls_and_auth(self) -> MetricsSettings:
        if (self.tls_key_file or self.tls_client_ca_file) and not self.tls_cert_file:
            raise ValueError("metrics.tls_key_file and tls_client_ca_file need metrics.tls_cert_file")
        given = [n for n in ("basic_auth_password", "basic_auth_password_hash") if getattr(self, n)]
        if self.basic_auth_username is None and given:
            raise ValueError(f"metrics.{given[0]} needs metrics.basic_auth_username")
        if self.basic_auth_username is not None and len(given) != 1:
            raise ValueError(
                "metrics.basic_auth_username needs exactly one of basic_auth_password and "
                "basic_auth_password_hash"
            )
        h = self.basic_auth_password_hash
        if h is not None:
            algo, _, digest = h.get_secret_value().partition(":")
            if algo != "sha256" or len(digest) != 64 or digest.lower().strip("0123456789abcdef"):
                raise ValueError("metrics.basic_auth_password_hash must be 'sha256:' and 64 hex digits")
        return self


class LimitsSettings(_Strict):
    """Resource bounds against hostile or runaway input (see docs/operations.md#limits-and-hostile-input).

    Each limit is counted in ``streamwatch_limit_hits_total{limit}`` when it is hit and raises a
    ``resource_limit`` alert event the first time it is hit for a model (``model_id`` ``*`` when
    the model is not known)."""

    max_message_bytes: int = Field(
        1_048_576, ge=1024, description="larger input messages are dead-lettered (message_too_large)"
    )
    max_dead_letter_payload_bytes: int = Field(
        65_536, ge=0, description="bytes of a dead letter's payload copied into its body; the rest is cut"
    )
    max_models: int = Field(
        1000,
        ge=1,
        description="monitors (partition, model) per worker; events of further ones are "
        "dead-lettered (model_limit)",
    )
    max_features: int = Field(
        1000,
        ge=1,
        description="keys of an event's features object; more are dead-lettered (too_many_features)",
    )
    max_category_values: int = Field(
        10_000,
        ge=10,
        description="distinct values coded per categorical feature; further ones share "
        "one overflow code (the drift sketches' 'other' bin)",
    )


class LoggingSettings(_Strict):
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["json", "text"] = Field("json", description="json: one JSON object per line")

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMWATCH_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    performance: PerformanceSettings = Field(default_factory=PerformanceSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    models: dict[str, ModelSettings] = Field(min_length=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the YAML file arrives as init kwargs; the environment must win over it
        return env_settings, init_settings

    def drift_for(self, model_id: str) -> DriftSettings:
        """The global drift block with the model's own fields laid over it."""
        own = self.models[model_id].drift
        if own is None:
            return self.drift
        merged = {**self.drift.model_dump(), **own.model_dump(include=own.model_fields_set)}
        return DriftSettings(**merged)

    def performance_for(self, model_id: str) -> PerformanceSettings:
        """The global performance block with the model's own fields laid over it."""
        own = self.models[model_id].performance
        if own is None:
            return self.performance
        merged = {**self.performance.model_dump(), **own.model_dump(include=own.model_fields_set)}
        return PerformanceSettings(**merged)


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        # never echo what was given for a secret (a password that failed validation is still one)
        secret = any(is_secret_key(p) for p in e["loc"])
        shown = "" if isinstance(got, dict | list) or got is None or secret else f" (got {got!r})"
        lines.append(f"  {where}: {e['msg']}{shown}")
    return "\n".join(lines)


def load_config(path: str | Path | None, **overrides: Any) -> Settings:
    """Read ``path`` (YAML), apply the environment, validate; raise ConfigError on any problem."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = loaded or {}
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as e:
        src = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{src}:\n{format_validation_error(e)}") from None
