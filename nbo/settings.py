"""Every ``NBO_*`` environment variable, in one typed place.

``Settings`` declares each variable: its type, default, constraints and meaning. ``nbo settings`` prints them with
their values, and the table in docs/operations.md is rendered from this class (a test checks that it still is).
Reading all of them at once (``Settings()``) takes about a millisecond, too long for code on the request path:
read_setting reads one variable now, validated as the class declares it, in about a microsecond.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BeforeValidator, Field, SecretStr, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "NBO_"
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def normalise_choice(value: object) -> object:
    """A choice written in any case, with spaces around it."""
    return value.strip().lower() if isinstance(value, str) else value


def setting(default: Any, description: str, expects: str, **constraints: Any) -> Any:
    """A declared setting: its default, its meaning, what a valid value is (said when one is not), constraints."""
    return Field(default, description=description, json_schema_extra={"expects": expects}, **constraints)


class Settings(BaseSettings):
    """The service's and the CLI's settings, from ``NBO_<NAME>`` environment variables (empty means unset)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore")

    home: Path = setting(
        Path("data"),
        "The NBO home: raw tables, features, online store, decision log, MLflow store (`--home` overrides it).",
        "a folder",
    )
    tracking_uri: str | None = setting(
        None,
        "Another MLflow tracking server and registry (e.g. "
        "`http://mlflow:5000`); unset: `sqlite:///$NBO_HOME/mlflow.db`.",
        "a URI",
    )
    gate_metric: str = setting(
        "test_auc",
        "The metric a new purchase-intent model must beat the champion on, both "
        "scored on the same test rows (`nbo train --gate-metric`, which reads it).",
        "a gate metric (`nbo train --help`)",
    )
    train_memory_gib: float = setting(
        4.0,
        "Memory for the purchase-intent model's training and validation rows: beyond it their negatives are "
        "sampled to fit, every positive kept and kept negatives weighted (`nbo train --sample` sets the rate).",
        "a number of GiB above 0",
        gt=0,
        allow_inf_nan=False,
    )
    workers: int = setting(
        1,
        "Service worker processes; one per core gives the most throughput (they share the "
        "online store and the decision log).",
        "a whole number of processes, 1 or more",
        ge=1,
    )
    reload_seconds: Seconds = setting(
        30.0,
        "How often each worker checks the registry's champion and swaps to it if it moved.",
        "a positive number of seconds",
    )
    registry_wait_seconds: Seconds = setting(
        3.0,
        "How long a start waits for the registry's champion before serving "
        "the packaged model (without one it waits as long as MLflow's retries "
        "take).",
        "a positive number of seconds",
    )
    packaged_model: Path | None = setting(
        None,
        "A pyfunc folder exported from the registry (serving.packaged."
        "export_model) to serve when the registry cannot be reached; unset: the "
        "model the Bento declares (none outside a Bento).",
        "a folder",
    )
    api_key: SecretStr | None = setting(
        None,
        "Required in `x-api-key` on `/events`, `/campaign`, `/admin/*` and "
        "`DELETE /customers/{id}` when set (401 otherwise); `nbo recommend` sends "
        "it. Unset: open, with a warning at start.",
        "a string",
    )
    recommend_needs_key: bool = setting(False, "`true`: `/recommend` needs the key too.", "true or false")
    redis_url: str | None = setting(
        None,
        "Redis as the online store and the decision log (e.g. `redis://localhost:6379/0`), shared by "
        "several service replicas (docs/operations.md, Several replicas); needs `pip install 'nbo[redis]'`. "
        "Unset: SQLite in the home.",
        "a redis:// URL",
    )
    sync: Annotated[Literal["normal", "full"], BeforeValidator(normalise_choice)] = setting(
        "normal",
        "`full`: the online store and the decision log sync to disk at every commit, and the event lake at "
        "every `/events` batch, so an acknowledged event survives a power loss; `normal`: fewer syncs (see "
        "Durability).",
        "one of normal, full",
    )
    lake_retention_days: int = setting(
        730,
        "Days of event-lake partitions a compaction keeps, counted back from the newest partition (see Event lake).",
        "a whole number of days (1 or more)",
        ge=1,
    )
    control_share: float = setting(
        0.05,
        "Share of customers in the global control group (drawn by a salted hash "
        "of the id): no personalised offer; campaigns leave it out.",
        "a number between 0 and 1",
        ge=0,
        le=1,
    )
    control_salt: str = setting(
        "nbo-global-control-v1", "Salt of the control group's hash (another salt draws another group).", "a string"
    )
    control_policy: Annotated[Literal["none", "popularity"], BeforeValidator(normalise_choice)] = setting(
        "none",
        "What the control group gets instead of personalised offers: nothing, or the popularity ranking.",
        "one of none, popularity",
    )
    log_salt: str = setting("nbo", "Salt of the pseudonymised customer ids in decision logs.", "a string")
    clock_file: Path | None = setting(
        None,
        "A file holding an ISO 8601 time the service takes as now (decisions, "
        "caps, offer validity, campaigns), read again whenever it changes; for "
        "simulations and replays (benchmarks/closed_loop.py). Unset: the system "
        "clock.",
        "a file",
    )


def env_name(name: str) -> str:
    """The environment variable of a setting."""
    return f"{PREFIX}{name.upper()}"


@cache
def field_adapter(name: str) -> TypeAdapter:
    """A validator of one declared setting, with its constraints."""
    field = Settings.model_fields[name]
    annotation = cast(Any, field.annotation)
    return TypeAdapter(Annotated[annotation, *field.metadata] if field.metadata else annotation)


def expects(name: str) -> str:
    """What a setting's variable expects, in words."""
    return cast(dict[str, str], Settings.model_fields[name].json_schema_extra)["expects"]


def default_of(name: str) -> Any:
    """A setting's declared default."""
    return Settings.model_fields[name].default


def read_setting(name: str, environ: Mapping[str, str] = os.environ) -> Any:
    """One setting from its environment variable now (its default when unset or empty); ValueError naming the
    variable and what it expects when the value is not valid."""
    raw = environ.get(env_name(name), "")
    field = Settings.model_fields[name]
    if not raw:
        return field.default
    try:
        value = field_adapter(name).validate_python(raw.strip())
    except ValidationError:
        raise ValueError(f"{env_name(name)} must be {expects(name)}, not {raw!r}") from None
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def load_settings() -> Settings:
    """Every setting at once (about a millisecond); ValueError naming each invalid variable and what it expects."""
    try:
        return Settings()
    except ValidationError as error:
        problems = [
            f"{env_name(str(e['loc'][0]))} must be {expects(str(e['loc'][0]))}, not {e['input']!r}"
            for e in error.errors()
        ]
        raise ValueError("; ".join(problems)) from None


def shown(value: Any) -> str:
    """A setting's value as printed: secrets masked, unset as a dash."""
    if value is None:
        return "-"
    return "(set)" if isinstance(value, SecretStr) else str(value)


def describe_settings() -> list[dict[str, str]]:
    """Each setting: variable, type, default and meaning (from the declaration alone)."""
    return [
        {
            "variable": env_name(name),
            "default": shown(field.default),
            "expects": expects(name),
            "meaning": field.description or "",
        }
        for name, field in Settings.model_fields.items()
    ]


def render_settings_markdown() -> str:
    """The settings as the Markdown table of docs/operations.md."""
    lines = ["| Variable | Default | Valid values | Meaning |", "|---|---|---|---|"]
    for row in describe_settings():
        lines.append(f"| `{row['variable']}` | {row['default']} | {row['expects']} | {row['meaning']} |")
    return "\n".join(lines) + "\n"
