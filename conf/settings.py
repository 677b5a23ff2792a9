"""Typed, frozen settings and their loader."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONF_DIR = Path(__file__).resolve().parent
ENV_PREFIX = "ATENDE__"


class ConfigError(ValueError):
    """A configuration file, key or value that cannot be used."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SparkSettings(_Section):
    master: str = "local[*]"
    app_name: str = "atende"
    # "auto": 2 x the cores Spark sees in local mode; a number otherwise
    shuffle_partitions: int | Literal["auto"] = "auto"
    driver_memory: str | None = "4g"
    ui_enabled: bool = False
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "ERROR"
    # true: fetch the Delta connector's jars at session start (configure_spark_with_delta_pip);
    # needs the Maven repository. On a cluster, pass --packages to spark-submit instead.
    delta_connector: bool = False
    conf: dict[str, str] = Field(default_factory=dict)


class StorageSettings(_Section):
    # auto: delta-spark when its classes load in the running Spark, else delta-rs
    engine: Literal["auto", "delta-spark", "delta-rs"] = "auto"
    # commits that lose a race re-read the table and retry this many times
    commit_retries: int = Field(default=5, ge=0, le=50)
    vacuum_retention_hours: int = Field(default=168, ge=0)
    target_file_rows: int = Field(default=1_000_000, ge=1000)


class IngestSettings(_Section):
    # records longer than this are quarantined instead of parsed
    max_record_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # timestamps later than arrival date + this are implausible
    future_tolerance_hours: int = Field(default=48, ge=0)
    earliest_valid_date: str = "2000-01-01"


class IdentitySettings(_Section):
    default_region: str = "BR"
    company_domains: tuple[str, ...] = ("atende.com.br",)
    blocklist_emails: tuple[str, ...] = ()
    blocklist_phones: tuple[str, ...] = ()
    # how many distinct CRM customers one identifier may join before it is ignored for linking
    max_customers_per_identifier: dict[str, int] = Field(
        default_factory=lambda: {"crm_id": 1, "email": 1, "phone": 1, "handle": 1, "device_id": 1}
    )
    max_component_size: int = Field(default=50, ge=2)

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if len(value) != 2 or not value.isalpha():
            raise ValueError("must be a two-letter ISO 3166 region code such as BR")
        return value.upper()


class KpiSettings(_Section):
    business_timezone: str = "America/Sao_Paulo"
    fcr_window_days: int = Field(default=7, ge=1)
    extra_dimensions: tuple[str, ...] = ("agent_id", "queue", "topic")

    @field_validator("business_timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class DemoSettings(_Section):
    directory: str = "atende-demo"
    customers: int = Field(default=2000, ge=10)
    days: int = Field(default=14, ge=1)
    seed: int = 7


class MlflowSettings(_Section):
    # empty: a SQLite store under <lakehouse>/_mlflow
    tracking_uri: str | None = None
    experiment: str = "atende"


class QualitySettings(_Section):
    # soft gates (warn, never stop the run): the least share of rows that should carry the value
    min_interactions_with_customer_share: float = Field(default=0.8, ge=0, le=1)
    min_survey_responses_with_customer_share: float = Field(default=0.5, ge=0, le=1)
    min_bronze_identified_share: float = Field(default=0.8, ge=0, le=1)
    # identity health: a jump in either usually means an over-linking identifier
    max_mean_identifiers_per_customer: float = Field(default=8.0, gt=0)
    max_merged_customer_share: float = Field(default=0.05, ge=0, le=1)


class Settings(_Section):
    env: str = "local"
    spark: SparkSettings = SparkSettings()
    storage: StorageSettings = StorageSettings()
    ingest: IngestSettings = IngestSettings()
    identity: IdentitySettings = IdentitySettings()
    kpis: KpiSettings = KpiSettings()
    demo: DemoSettings = DemoSettings()
    mlflow: MlflowSettings = MlflowSettings()
    quality: QualitySettings = QualitySettings()


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key segment")
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
    return overrides


def _describe(error: ValidationError, origin: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        else:
            lines.append(f"bad value for '{key}': {item['msg']} (got {item.get('input')!r})")
    return f"invalid configuration ({origin}): " + "; ".join(lines)


def load_settings(
    env: str | None = None,
    conf_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load ``conf/<env>.yaml``, then ``conf_file``, then ``ATENDE__*`` variables."""
    environ = os.environ if environ is None else environ
    env = env or environ.get("ATENDE_ENV", "local")
    base_path = CONF_DIR / f"{env}.yaml"
    if not base_path.is_file():
        known = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown environment {env!r}: no {base_path.name} (known: {', '.join(known)})")
    data = _read_yaml(base_path)
    origins = [str(base_path)]
    if conf_file is not None:
        data = _deep_merge(data, _read_yaml(Path(conf_file)))
        origins.append(str(conf_file))
    env_data = _env_overrides(environ)
    if env_data:
        data = _deep_merge(data, env_data)
        origins.append("ATENDE__* environment variables")
    data.setdefault("env", env)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, " + ".join(origins))) from None
