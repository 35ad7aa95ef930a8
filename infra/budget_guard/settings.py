"""The guard's policy, read from the environment that infra sets, validated once at start (pydantic-settings)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Ratio = Annotated[float, Field(gt=0, le=2)]  # thresholds are fractions of the budget
BILLING_ACCOUNT = re.compile(r"[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}")
# A Budget's resource name (pulumi-gcp's Budget `id`), or the bare budget id (its `name`): what budgetId attributes carry.
BUDGET_NAME = re.compile(r"(?:billingAccounts/(?P<account>[^/]+)/budgets/)?(?P<id>[A-Za-z0-9][A-Za-z0-9_-]*)")


class SettingsError(ValueError):
    pass


class GuardSettings(BaseSettings):
    """Every setting is an environment variable of the same name in upper case (infra/kit_infra/guard.py sets them)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    project: str = Field(validation_alias=AliasChoices("PROJECT_ID", "GOOGLE_CLOUD_PROJECT"))
    region: str
    label_selector: Annotated[dict[str, str], NoDecode] = Field(
        description="key=value,... : the labels that make a resource the kit's (the launcher and deploy set them)")
    runtime_template: str | None = Field(None, description="ID of the kit's runtime template; its runtimes are the kit's")
    budget_name: str = Field(description="the guard's own budget: billingAccounts/<account>/budgets/<id>, or the budget id; "
                                         "notifications of any other budget are ignored")
    billing_account: str = Field(description="the billing account of that budget, e.g. 01D4EE-079462-DFD6EC")
    notify_thresholds: Annotated[tuple[Ratio, ...], NoDecode] = Field(description="announce at these spend ratios (infra sets them)")
    enforce_threshold: Ratio = Field(description="stop the kit's resources at this spend ratio (infra sets it)")
    enforce_on_forecast: bool = False
    dry_run: bool = True
    state_bucket: str = ""
    state_object: str | None = Field(None, description="default budget-guard/<budget id>/state.json: one state per budget")
    state_path: str | None = Field(None, description="a local file instead of GCS (make budget-guard)")
    webhook_url: str | None = None
    budget_currency: str | None = Field(None, description="expected budget currency; a mismatch is refused")
    vertex_api_endpoint: str | None = Field(None, description="default: the regional Vertex endpoint")
    action_timeout_s: float = Field(60.0, gt=0, description="how long to wait for one undeploy, cancel or stop")
    enforce_budget_s: float = Field(240.0, gt=0, description="all actions of one message (the function times out at 300 s)")

    @field_validator("label_selector", mode="before")
    @classmethod
    def _pairs(cls, raw):
        if isinstance(raw, dict):
            return raw
        labels = {}
        for pair in str(raw).split(","):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(f"entries look like key=value, got {pair!r}")
            labels[key.strip()] = value.strip()
        return labels

    @field_validator("notify_thresholds", mode="before")
    @classmethod
    def _list(cls, raw):
        return tuple(sorted(float(t) for t in str(raw).split(",") if t.strip())) if isinstance(raw, str) else raw

    @field_validator("billing_account")
    @classmethod
    def _account(cls, raw: str) -> str:
        account = raw.strip().removeprefix("billingAccounts/")
        if not BILLING_ACCOUNT.fullmatch(account):
            raise ValueError(f"{raw!r} is not a billing account id like 01D4EE-079462-DFD6EC")
        return account

    @field_validator("budget_name")
    @classmethod
    def _budget(cls, raw: str) -> str:
        if not BUDGET_NAME.fullmatch(raw.strip()):
            raise ValueError(f"{raw!r} is neither billingAccounts/<account>/budgets/<id> nor a budget id")
        return raw.strip()

    @field_validator("webhook_url", "state_path", "runtime_template", "vertex_api_endpoint", "budget_currency", "state_object",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, raw):
        return raw or None

    @model_validator(mode="after")
    def _state_somewhere(self) -> GuardSettings:
        if not self.state_bucket and not self.state_path:
            raise ValueError("STATE_BUCKET is not set (the guard's own bucket holds its state; STATE_PATH=file for local runs)")
        account = BUDGET_NAME.fullmatch(self.budget_name)["account"]
        if account is not None and account != self.billing_account:
            raise ValueError(f"BUDGET_NAME {self.budget_name} is a budget of billing account {account}, "
                             f"but BILLING_ACCOUNT is {self.billing_account}")
        return self

    @classmethod
    def from_env(cls) -> GuardSettings:
        try:
            return cls()
        except ValidationError as e:
            problems = "; ".join(f"{str(err['loc'][0]).upper() if err['loc'] else 'settings'}: {err['msg']}" for err in e.errors())
            raise SettingsError(problems) from None

    @property
    def budget_id(self) -> str:
        """What a notification's budgetId attribute holds for this guard's budget."""
        return BUDGET_NAME.fullmatch(self.budget_name)["id"]

    @property
    def state_object_name(self) -> str:
        return self.state_object or f"budget-guard/{self.budget_id}/state.json"

    @property
    def labels(self) -> dict[str, str]:
        return self.label_selector

    @property
    def currency(self) -> str | None:
        return self.budget_currency

    @property
    def parent(self) -> str:
        """The Vertex AI location the kit's endpoints, jobs and runtimes are listed under."""
        return f"projects/{self.project}/locations/{self.region}"

    def label_filter(self) -> str:
        """The Vertex list filter for the kit's labels."""
        return " AND ".join(f'labels.{k}="{v}"' for k, v in sorted(self.labels.items()))

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.labels.items())


def env_name(setting: str) -> str:
    """The environment variable a setting is read from: its name in upper case, or the first of its aliases."""
    alias = GuardSettings.model_fields[setting].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return alias if isinstance(alias, str) else setting.upper()


def _env_value(value):
    """A setting as the guard reads it back: lists comma-separated, labels as key=value pairs, booleans true/false.

    Anything else passes through as it is (a string, or a Pulumi Output that becomes one at deployment)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def thresholds(budget_thresholds: list[float]) -> dict:
    """A budget's thresholds as the guard takes them: it announces each one below the highest and enforces at the
    highest (infra and `make budget-guard` both configure it from the stack's list with this)."""
    top = max(budget_thresholds, default=None)
    return {"notify_thresholds": [t for t in budget_thresholds if t < top] if top is not None else [], "enforce_threshold": top}


def environment(**settings) -> dict:
    """The guard's environment for these settings (keywords are GuardSettings fields; None leaves one unset).

    The one place the guard's variables are named: infra (kit_infra/guard.py) and `make budget-guard` (control/cli.py)
    build the function's environment with it, so neither can set a name the guard does not read or forget one it needs.
    """
    unknown = sorted(set(settings) - set(GuardSettings.model_fields))
    if unknown:
        raise TypeError(f"the budget guard has no settings {unknown}")
    given = {k: v for k, v in settings.items() if v is not None}
    missing = [env_name(k) for k, f in GuardSettings.model_fields.items() if f.is_required() and k not in given]
    if not ({"state_bucket", "state_path"} & set(given)):
        missing.append("STATE_BUCKET or STATE_PATH")
    if missing:
        raise SettingsError(f"the budget guard needs {', '.join(missing)}")
    return {env_name(k): _env_value(v) for k, v in given.items()}
