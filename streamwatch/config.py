"""Configuration: a YAML file overlaid by ``STREAMWATCH_*`` environment variables.

Nested fields use ``__`` in variable names, e.g. ``STREAMWATCH_KAFKA__BOOTSTRAP_SERVERS`` or
``STREAMWATCH_KAFKA__CLIENT__SASL_PASSWORD`` (librdkafka keys: ``_`` stands for ``.``).
Environment variables win over the file.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

_SECRET_KEYS = ("password", "secret", "token", "key.password", "sasl.jaas.config")


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


class ModelSettings(_Strict):
    features: dict[str, FeatureType] = Field(min_length=1)
    drift: DriftSettings | None = None

    @field_validator("features", mode="before")
    @classmethod
    def _types_lowercase(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: (t.lower() if isinstance(t, str) else t) for k, t in v.items()}
        return v


class KafkaSettings(_Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "streamwatch"
    client: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="librdkafka settings passed through to consumer and producer (SASL, SSL, ...)",
    )

    @field_validator("client", mode="before")
    @classmethod
    def _dotted_keys(cls, v: Any) -> Any:
        # env vars cannot hold dots; librdkafka keys never hold underscores
        if isinstance(v, dict):
            return {str(k).replace("_", ".").lower(): val for k, val in v.items()}
        return v

    def redacted_client(self) -> dict[str, Any]:
        return {k: ("***" if any(s in k for s in _SECRET_KEYS) else v) for k, v in self.client.items()}


class TopicSettings(_Strict):
    predictions: str = "predictions"
    labels: str = "labels"
    alerts: str = "streamwatch.alerts"
    dead_letters: str = "streamwatch.dead-letters"
    create: bool = Field(True, description="create missing topics at start")
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)


class BatchSettings(_Strict):
    max_events: int = Field(2000, ge=1, le=1_000_000)
    timeout_seconds: float = Field(0.2, gt=0)
    commit_interval_seconds: float = Field(2.0, gt=0)


class MetricsSettings(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(9400, ge=0, le=65535)


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
    drift: DriftSettings = Field(default_factory=DriftSettings)
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


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
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
