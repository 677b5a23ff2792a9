"""Typed, frozen settings and their loader."""
from __future__ import annotations

import importlib.resources
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# this package's folder of environment files, as a resource (a folder, or a folder inside a zip)
CONF_DIR = importlib.resources.files(__package__ or "atende.conf")
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
    # true: in local mode, fetch the Delta connector's jars from Maven at session start (cached by Ivy);
    # under spark-submit the cluster provides them (--packages or the platform's own Delta)
    delta_connector: bool = True
    # the connector's Maven coordinates; null: the ones `configure_spark_with_delta_pip` derives from the
    # installed pyspark and delta-spark (io.delta:delta-spark_<spark major.minor>_2.13:<delta-spark version>)
    delta_package: str | None = None
    # more Maven coordinates fetched the same way; `hadoop-aws` is short for the S3A connector matching the
    # Hadoop that pyspark bundles (org.apache.hadoop:hadoop-aws:3.5.0), for a lakehouse on s3a://
    packages: tuple[str, ...] = ()
    # Maven repositories searched before Maven Central (a company mirror); spark.jars.repositories
    jars_repositories: tuple[str, ...] = ()
    # Ivy's cache and settings folder for fetched jars (null: Spark's default, ~/.ivy2.5.2)
    jars_ivy: str | None = None
    # whole-stage code generation: compiling every stage to Java pays off on big inputs and costs more than
    # it saves on small ones (a 250-record run: 310 s with it, 254 s without). "auto": off while the run's
    # input (this run's landing files plus the bronze tables) is at most small_input_mb, on above it
    whole_stage_codegen: Literal["auto", "on", "off"] = "auto"
    # expression code generation (the projections, filters and orderings each task builds, compiled by Janino on
    # every executor): "off" evaluates expressions interpreted (spark.sql.codegen.factoryMode NO_CODEGEN). On a
    # small input compiling costs more than it saves; "auto": off and on by the same rule as whole-stage
    expression_codegen: Literal["auto", "on", "off"] = "auto"
    small_input_mb: int = Field(default=64, ge=0)
    conf: dict[str, str] = Field(default_factory=dict)


class StorageSettings(_Section):
    # auto: delta-spark when its classes load in the running Spark, else delta-rs
    engine: Literal["auto", "delta-spark", "delta-rs"] = "auto"
    # commits that lose a race re-read the table and retry this many times
    commit_retries: int = Field(default=5, ge=0, le=50)
    vacuum_retention_hours: int = Field(default=168, ge=0)
    # Delta table properties set when a table is created, per layer ("*": every layer). Change Data Feed on
    # silver lets incremental readers take what changed. Deletion vectors (delta.enableDeletionVectors) make
    # DELETE cheap but the deltalake package (1.6) cannot read such tables, nor can the delta-rs engine: off
    table_properties: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "*": {"delta.checkpointInterval": "10"},
            "silver": {"delta.enableChangeDataFeed": "true"},
        }
    )
    # columns `atende maintain optimize` Z-orders each table by (where the table has them)
    zorder_by: tuple[str, ...] = ("customer_key",)

    def properties_for(self, layer: str) -> dict[str, str]:
        merged = dict(self.table_properties.get("*", {}))
        merged.update(self.table_properties.get(layer, {}))
        return merged


class CatalogSettings(_Section):
    # tables are named <prefix><layer>.<table> in Spark's catalog (atende_gold.recommendations)
    database_prefix: str = Field(default="atende_", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # after each run, (re)name the tables in the session's catalog: auto does it where that catalog outlives
    # the run (a Hive metastore, Glue, Unity: spark.sql.catalogImplementation=hive); always; never
    register_after_run: Literal["auto", "always", "never"] = "auto"
    # local mode: keep the catalog in a Derby metastore in this folder (a Hive catalog that outlives the run,
    # so `spark-sql` and notebooks started with the same folder see the tables); null: Spark's in-memory catalog.
    # On a cluster the platform's metastore (Hive, Glue, Unity) is used instead
    metastore: str | None = None


class IngestSettings(_Section):
    # records longer than this are quarantined instead of parsed
    max_record_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # timestamps later than arrival date + this are implausible
    future_tolerance_hours: int = Field(default=48, ge=0)
    earliest_valid_date: str = "2000-01-01"


class SilverSettings(_Section):
    # silver's record tables (interactions, survey responses, orders, actions) are rebuilt only where a run's records
    # touch them while the records delivered since silver was written are at most this share of the records it is
    # built from; past it they are rebuilt from the whole of bronze. 0 (the default): whole on every run, the cheaper
    # way at every size measured while identity is resolved over every record (bench/RESULTS.md, session 36);
    # 1: incremental whenever it can be
    incremental_max_share: float = Field(default=0.0, ge=0, le=1)


class IdentitySettings(_Section):
    default_region: str = "BR"
    company_domains: tuple[str, ...] = ("atende.com.br",)
    # an address customers' e-mail was sent to (To, Cc, Delivered-To) by at least this many distinct
    # customers is a mailbox of the company's, never a customer's identifier (0: off)
    company_mailbox_min_senders: int = Field(default=3, ge=0)
    blocklist_emails: tuple[str, ...] = ()
    blocklist_phones: tuple[str, ...] = ()
    # how many distinct CRM customers one identifier may join before it is ignored for linking
    max_customers_per_identifier: dict[str, int] = Field(
        default_factory=lambda: {
            "crm_id": 1, "email": 1, "phone": 1, "handle": 1, "whatsapp_user_id": 1, "device_id": 1,
        }
    )
    max_component_size: int = Field(default=50, ge=2)
    # hubs, whoever carries them: an identifier seen on the same records as more than this many otherwise
    # unrelated strong identifiers of one type (e-mails behind one phone, phones behind one e-mail; partners
    # registered with one CRM customer count once) is held out of linking, CRM or not
    max_partners_per_identifier: dict[str, int] = Field(
        default_factory=lambda: {"email": 2, "phone": 2, "handle": 2, "whatsapp_user_id": 2, "device_id": 2}
    )
    # the identifiers that count as partners for the hub guard
    strong_identifier_types: tuple[str, ...] = ("crm_id", "email", "phone")
    # an identifier held back by the limit above that reaches at most this many CRM customers (a family
    # phone, a shared inbox) still places the records carrying it with the one customer whose name
    # matches theirs; above it (a phone shared by six people, a shop's tablet) it places nothing
    name_tie_break_max_customers: dict[str, int] = Field(
        default_factory=lambda: {"email": 3, "phone": 4, "handle": 2, "whatsapp_user_id": 2, "device_id": 2}
    )
    # two CRM registrations sharing an e-mail or a phone, with matching names and no conflicting
    # birth date, are one customer registered twice
    join_crm_duplicates: bool = True
    # a linking identifier whose records name someone else than the one CRM customer it reaches
    # (a relative calling on the customer's number) is held back as shared
    hold_back_on_name_conflict: bool = True
    # a customer not otherwise linked to the CRM joins the one CRM customer whose name matches a name it
    # typed with at least this many tokens (first, middle, last; 0 turns name-only linking off)
    name_link_min_tokens: int = Field(default=3, ge=0)
    # letters a name token may differ by (typos) and still match
    name_max_edit_distance: int = Field(default=1, ge=0, le=3)

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if len(value) != 2 or not value.isalpha():
            raise ValueError("must be a two-letter ISO 3166 region code such as BR")
        return value.upper()


class KpiSettings(_Section):
    business_timezone: str = "America/Sao_Paulo"
    fcr_window_days: int = Field(default=7, ge=1)
    # channels that record no resolution flag: first-contact resolution there is "no repeat contact
    # within the window" (pipelines.rules.first_contact_resolution)
    repeat_contact_channels: tuple[str, ...] = ("whatsapp", "email")
    extra_dimensions: tuple[str, ...] = ("agent_id", "queue", "topic")

    @field_validator("business_timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


# silver/customers (pipelines/customers.py): the fields chosen by survivorship, and the sources that can
# supply each. crm: silver/crm rows (observed at `updated_at`); interactions: the name a customer gave on a
# channel (observed at `started_at`, counted per interaction); identifiers: silver/identity_map rows
# (observed at `last_seen_at`).
SURVIVORSHIP_SOURCES: dict[str, tuple[str, ...]] = {
    "display_name": ("crm", "interactions"),
    "email": ("identifiers",),
    "phone": ("identifiers",),
    "birth_date": ("crm",),
    "gender": ("crm",),
    "city": ("crm",),
    "state": ("crm",),
    "country": ("crm",),
    "income_band": ("crm",),
    "profession": ("crm",),
    "marketing_consent": ("crm",),
    "consent_updated_at": ("crm",),
}
Pick = Literal["most_recent", "most_frequent"]


class FieldRule(_Section):
    """How one field of a customer survives from the values its sources hold.

    * ``most_recent``: the newest non-empty value among `sources` (a tie: the earlier source listed);
    * ``latest``: the value of the newest record, empty included (a consent left blank is no consent);
    * ``most_frequent``: the non-empty value seen most often (a tie: the newest);
    * ``source_priority``: the first source in `sources` holding a non-empty value, and within it the value
      `within` picks for that source (``most_recent`` unless named).
    """
    rule: Literal["most_recent", "latest", "most_frequent", "source_priority"]
    sources: tuple[str, ...] = Field(min_length=1)
    within: dict[str, Pick] = Field(default_factory=dict)


def _default_survivorship() -> dict[str, FieldRule]:
    crm_latest = {f: FieldRule(rule="most_recent", sources=("crm",))
                  for f in ("birth_date", "gender", "city", "state", "country", "income_band", "profession")}
    return {
        # the CRM's name over the names given in chats, and among those the one given most often
        "display_name": FieldRule(rule="source_priority", sources=("crm", "interactions"),
                                  within={"interactions": "most_frequent"}),
        "email": FieldRule(rule="most_recent", sources=("identifiers",)),
        "phone": FieldRule(rule="most_recent", sources=("identifiers",)),
        **crm_latest,
        # consent as the latest CRM row states it: a blank there is no consent, whatever an older row said
        "marketing_consent": FieldRule(rule="latest", sources=("crm",)),
        "consent_updated_at": FieldRule(rule="latest", sources=("crm",)),
    }


class SurvivorshipSettings(_Section):
    # per field of silver/customers, the rule that picks its value; a field not named keeps its default
    fields: dict[str, FieldRule] = Field(default_factory=_default_survivorship)

    @field_validator("fields", mode="before")
    @classmethod
    def _with_defaults(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {**_default_survivorship(), **value}

    @field_validator("fields")
    @classmethod
    def _known(cls, value: dict[str, FieldRule]) -> dict[str, FieldRule]:
        for name, rule in value.items():
            if name not in SURVIVORSHIP_SOURCES:
                raise ValueError(f"unknown field {name!r} (known: {', '.join(SURVIVORSHIP_SOURCES)})")
            allowed = SURVIVORSHIP_SOURCES[name]
            for source in (*rule.sources, *rule.within):
                if source not in allowed:
                    raise ValueError(f"{name}: source {source!r} does not supply it (sources: {', '.join(allowed)})")
            stray = sorted(set(rule.within) - set(rule.sources))
            if stray:
                raise ValueError(f"{name}: within names {', '.join(stray)}, not among its sources")
            if len(set(rule.sources)) != len(rule.sources):
                raise ValueError(f"{name}: a source is listed twice")
        return value


class DemoSettings(_Section):
    directory: str = "atende-demo"
    customers: int = Field(default=2000, ge=10)
    days: int = Field(default=14, ge=1)
    seed: int = 7


class MlflowSettings(_Section):
    # empty: a SQLite store under <lakehouse>/_mlflow (a local lakehouse only; one on an object store
    # needs a tracking URI)
    tracking_uri: str | None = None
    # where a new experiment keeps its artefacts (the models' files); empty: <lakehouse>/_mlflow/artifacts
    # beside a local lakehouse, else MLflow's default for the tracking store
    artifact_location: str | None = None
    experiment: str = "atende"


class PersonaSettings(_Section):
    # a latent class model (models/personas.py); the number of personas is chosen over [k_min, k_max]
    # by `selection`: heldout = the best mean log-likelihood per customer on `holdout_share` of the
    # sample, heldout_1se = the smallest k within one standard error of that best, bic = the lowest BIC
    # on the fitted part
    k_min: int = Field(default=4, ge=2)
    k_max: int = Field(default=10, ge=2)
    selection: Literal["heldout", "heldout_1se", "bic"] = "heldout"
    holdout_share: float = Field(default=0.2, gt=0, lt=1)
    # a k whose smallest persona holds less than this share of the fitted customers is not chosen
    min_share: float = Field(default=0.02, ge=0, lt=0.5)
    # EM: random starts per k (the best log-likelihood is kept) and iterations per start
    n_init: int = Field(default=4, ge=1)
    max_iter: int = Field(default=200, ge=5)
    # the fit runs on at most this many customers (a uniform sample); scoring runs in Spark on all
    sample_size: int = Field(default=100_000, ge=100)
    # customers with fewer interactions + orders than this are left out of the fit (still scored);
    # 0 keeps customers known only from the CRM, whose age, income and profession carry the persona
    min_activity: int = Field(default=0, ge=0)
    seed: int = 7
    # a new persona keeps an old persona_id when they hold customers this alike (Jaccard overlap)
    match_min_overlap: float = Field(default=0.5, gt=0, le=1)

    @field_validator("k_max")
    @classmethod
    def _range(cls, value: int, info) -> int:
        if value < info.data.get("k_min", 2):
            raise ValueError("must be at least k_min")
        return value


def _default_comment_cues() -> dict[Literal["positive", "negative"], tuple[str, ...]]:
    """The default of ToneSettings.comment_cues (see there)."""
    return {
        "positive": ("profissional", "respeitos", "cordialidade", "cordial", "simpátic", "simpatic", "adorei",
                     "leve e divertid", "acolhid", "paciência", "paciencia", "humana", "humano", "compreensiv",
                     "direto ao ponto", "do jeito que eu gosto", "objetiv", "educad", "atencios", "gentil"),
        "negative": ("robotizad", "máquina", "maquina", "frio", "fria", "burocrátic", "burocratic",
                     "informal demais", "íntim", "intim", "emojis", "blá-blá", "bla-bla", "muita conversa", "seco",
                     "seca", "sem paciência", "sem paciencia", "curtas demais", "ignorad", "grosseir", "ríspid"),
    }


class ToneSettings(_Section):
    # the tone catalogue: each tone with the cue phrases that mark an agent reply as written in it;
    # the cues label a first training set for the text model, which then generalises beyond them
    catalogue: dict[str, tuple[str, ...]] = Field(default_factory=lambda: {
        "formal": ("prezado", "prezada", "sr(a)", "senhor", "senhora", "atenciosamente", "cordialmente",
                   "informamos", "comunicamos", "solicitamos", "por gentileza", "à disposição", "agradecemos"),
        "friendly": ("oi,", "oii", "tudo bem?", "😊", "😉", "😄", "🙌", "👋", "prontinho", "rapidinho",
                     "um abraço", "bora", "valeu"),
        "empathetic": ("sinto muito", "lamento", "entendo", "imagino", "frustrante", "peço desculpas",
                       "transtorno", "conte comigo", "fique tranquil", "pode contar comigo", "cuide-se"),
        "concise": ("verificando", "um momento", "feito:", "resolvido:", "pendente:", "algo mais?",
                    "atendimento encerrado", "detalhes, por favor", "número do pedido?"),
    })
    # the context prior counts as this many of the customer's own interactions; one lucky interaction
    # must not outvote a good prior (a 5,000-customer check: 2 hurt, the data's own estimate was ~31)
    prior_strength: float = Field(default=20.0, ge=0)
    # replace prior_strength with its empirical-Bayes estimate once there are enough same-tone pairs
    estimate_prior_strength: bool = True
    # what survey comments say about the agent's manner (lower case, matched at a word start): praise
    # counts as `comment_weight` extra scores of 1 in the interaction's outcome, a complaint as many 0s
    comment_cues: dict[Literal["positive", "negative"], tuple[str, ...]] = Field(default_factory=_default_comment_cues)
    comment_weight: float = Field(default=2.0, ge=0)
    # pseudo-interactions of outcome 1 for each time an agent left their habitual tone for another
    # (0: off); a weak signal that the other tone was wanted
    adaptation_weight: float = Field(default=0.0, ge=0)
    # the preference prior: tones of adapted replies per level of this context column (None: off),
    # smoothed towards all adapted replies with this many pseudo-replies
    preference_column: str | None = "persona_id"
    preference_strength: float = Field(default=10.0, ge=0)
    # the tone a customer gets when no tone model can be trained and none is registered (the fallback,
    # with confidence 0); None: the catalogue's first tone
    default_tone: str | None = None
    # `atende evaluate`'s natural experiment: a tone model trained without the last this-many days of
    # contacts is judged on them; with evaluation_windows n > 1, n consecutive windows of that length end at the
    # last contact (rolling origin: each window's model is trained on the contacts before it), pooled
    evaluation_days: int = Field(default=4, ge=1)
    evaluation_windows: int = Field(default=3, ge=1, le=30)

    @model_validator(mode="after")
    def _default_tone(self) -> ToneSettings:
        if self.default_tone is not None and self.default_tone not in self.catalogue:
            raise ValueError(f"default_tone {self.default_tone!r} is not in the tone catalogue "
                             f"({', '.join(self.catalogue)})")
        return self

    @property
    def fallback_tone(self) -> str:
        return self.default_tone or next(iter(self.catalogue))

    @field_validator("comment_cues", mode="before")
    @classmethod
    def _cues(cls, cues: Any) -> Any:
        """A side left out keeps its default cues; cues are matched in lower case, so stored so."""
        if not isinstance(cues, dict):
            return cues  # pydantic names the wrong type
        merged = {**_default_comment_cues(), **cues}
        for side, phrases in merged.items():
            if isinstance(phrases, str) or not phrases:
                raise ValueError(f"comment_cues.{side} must list at least one phrase")
            merged[side] = tuple(str(p).strip().lower() for p in phrases)
            if not all(merged[side]):
                raise ValueError(f"comment_cues.{side} has an empty phrase")
        return merged


class ProductSettings(_Section):
    rank: int = Field(default=16, ge=1)
    reg_param: float = Field(default=0.1, ge=0)
    alpha: float = Field(default=20.0, ge=0)
    max_iter: int = Field(default=10, ge=1)
    top_n: int = Field(default=10, ge=1, le=100)
    # the last `test_days` of orders are held out to evaluate the recommender
    test_days: int = Field(default=4, ge=1)
    # weight of a product named in a conversation, relative to one unit ordered
    interest_weight: float = Field(default=0.3, ge=0)
    seed: int = 7
    # which recommender's lists are served: `auto` chooses at every training on the time split (the category x
    # price ladder when it beats ALS beyond the 95% interval, else ALS), or one of `als`, `category_price`
    recommender: Literal["auto", "als", "category_price"] = "auto"
    # the category x price-ladder recommender (models/products.py `fit_category_price`): pseudo-orders pulling a
    # customer's category shares towards their persona's, and a persona's towards everyone's; pseudo-orders
    # behind everyone's place on the price ladder
    category_customer_weight: float = Field(default=10.0, gt=0)
    category_persona_weight: float = Field(default=10.0, gt=0)
    price_prior_strength: float = Field(default=20.0, gt=0)
    # pseudo-lines of the price ladder in a persona's product shares within a category (the rest: its order lines)
    category_product_weight: float = Field(default=20.0, gt=0)


class ActionSpec(_Section):
    # service actions come before offers while an issue is open; marketing needs consent
    kind: Literal["service", "marketing", "none"]
    value: float = Field(ge=0)             # expected value of a conversion, in BRL
    business_weight: float = Field(default=1.0, ge=0)
    channel: str | None = None


class NbaSettings(_Section):
    actions: dict[str, ActionSpec] = Field(default_factory=lambda: {
        "whatsapp_followup": ActionSpec(kind="service", value=30.0, business_weight=1.0, channel="whatsapp"),
        "product_offer": ActionSpec(kind="marketing", value=250.0, business_weight=0.8, channel="push"),
        "satisfaction_survey": ActionSpec(kind="service", value=5.0, business_weight=0.6, channel="email"),
        "kb_article": ActionSpec(kind="service", value=15.0, business_weight=0.7, channel="email"),
        "escalate_to_human": ActionSpec(kind="service", value=60.0, business_weight=1.2, channel="voice"),
        "retention_call": ActionSpec(kind="marketing", value=400.0, business_weight=1.0, channel="voice"),
        "no_action": ActionSpec(kind="none", value=0.0, business_weight=1.0),
    })
    # no more than `fatigue_cap` actions per customer within `fatigue_days`
    fatigue_cap: int = Field(default=3, ge=0)
    fatigue_days: int = Field(default=7, ge=1)
    # an issue is open while the customer's latest interaction in this many days is unresolved
    open_issue_days: int = Field(default=7, ge=1)
    # recommendations stay valid this long
    valid_days: int = Field(default=1, ge=1)
    # response models learn from the actions of the last this-many days, with features as of its start
    training_horizon_days: int = Field(default=7, ge=1)
    # channel -> the boolean customer feature saying the customer can be reached there; an action on
    # that channel is not eligible without it (channels not listed need nothing)
    channel_flags: dict[str, str] = Field(default_factory=lambda: {"whatsapp": "has_whatsapp"})
    # actions offered only while the customer has an open issue
    issue_only_actions: tuple[str, ...] = ("escalate_to_human",)
    # how many of the strongest features each recommendation's reasons name
    top_features: int = Field(default=2, ge=0)
    # the L2 strengths (C) the response model chooses from by grouped cross-validation
    regularization: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    # the off-policy estimates are also cross-fitted over every logged action of the training window: this many
    # folds of customers, a model trained outside each and judged on it (metrics crossfit_*; 0 turns it off)
    crossfit_folds: int = Field(default=4, ge=0, le=20)

    @field_validator("regularization")
    @classmethod
    def _positive_grid(cls, grid: tuple[float, ...]) -> tuple[float, ...]:
        if not grid or any(c <= 0 for c in grid):
            raise ValueError("regularization must list at least one positive C")
        return grid

    @model_validator(mode="before")
    @classmethod
    def _default_issue_only_actions(cls, data: Any) -> Any:
        """A catalogue given without issue-only actions keeps the default ones it holds."""
        if isinstance(data, Mapping) and "actions" in data and "issue_only_actions" not in data:
            default = cls.model_fields["issue_only_actions"].default
            return {**data, "issue_only_actions": tuple(a for a in default if a in data["actions"])}
        return data

    @model_validator(mode="after")
    def _known_actions(self) -> NbaSettings:
        """Issue-only actions must be in the catalogue."""
        unknown = [a for a in self.issue_only_actions if a not in self.actions]
        if unknown:
            raise ValueError(f"issue_only_actions names actions not in the catalogue: {', '.join(unknown)}")
        return self


class FeatureSettings(_Section):
    # topic and order-channel values that get a share column each; others count as "other"
    topics: tuple[str, ...] = ("billing", "delivery", "technical", "cancellation", "product_info", "account",
                               "complaint", "returns")
    order_channels: tuple[str, ...] = ("app", "web", "marketplace", "store", "phone")


class HoldoutSettings(_Section):
    # the share of customers in the global control group: they get the baseline (the default tone, the
    # baseline action, everyone's best sellers) instead of the recommendations, so `atende report uplift`
    # can compare what happens to treated and held-out customers (0: no holdout)
    share: float = Field(default=0.02, ge=0.0, le=0.5)
    # salted into the hash that picks the group (models/holdout.py): a new salt draws a new group
    salt: str = Field(default="atende-holdout-1", min_length=1)
    # the next best action a held-out customer gets: the action catalogue's "do nothing"
    baseline_action: str = "no_action"


class ModelSettings(_Section):
    # when `atende run` trains: always, only when no model is registered yet, or never (score only)
    retrain: Literal["always", "if_missing", "never"] = "if_missing"
    # a model that cannot be trained (too few rows, labels or classes): keep its champion or, with none,
    # score with a named fallback and record the job as degraded (`fallback`); or stop the run (`fail`)
    on_training_failure: Literal["fallback", "fail"] = "fallback"
    features: FeatureSettings = FeatureSettings()
    personas: PersonaSettings = PersonaSettings()
    tone: ToneSettings = ToneSettings()
    products: ProductSettings = ProductSettings()
    nba: NbaSettings = NbaSettings()
    holdout: HoldoutSettings = HoldoutSettings()

    @model_validator(mode="after")
    def _holdout_action_known(self) -> ModelSettings:
        """The held-out customers' action must be one the recommendations may carry."""
        if self.holdout.share > 0 and self.holdout.baseline_action not in self.nba.actions:
            raise ValueError(f"holdout.baseline_action {self.holdout.baseline_action!r} is not in the action "
                             f"catalogue (models.nba.actions: {', '.join(self.nba.actions)})")
        return self


class QualitySettings(_Section):
    # soft gates (warn, never stop the run): the least share of rows that should carry the value
    min_interactions_with_customer_share: float = Field(default=0.8, ge=0, le=1)
    min_survey_responses_with_customer_share: float = Field(default=0.5, ge=0, le=1)
    min_bronze_identified_share: float = Field(default=0.8, ge=0, le=1)
    # identity health: a jump in either usually means an over-linking identifier
    max_mean_identifiers_per_customer: float = Field(default=8.0, gt=0)
    max_merged_customer_share: float = Field(default=0.05, ge=0, le=1)
    # identifiers held out of linking (shared, hubs, the company's own): a jump means a new hub pattern
    max_held_out_identifier_share: float = Field(default=0.02, ge=0, le=1)
    # a table with at most this many rows is collected once and validated by GE's pandas engine (GE runs
    # Spark jobs per metric otherwise: most of a small run's gate time); 0 validates every table on Spark
    in_memory_max_rows: int = Field(default=500_000, ge=0)


class ReportSettings(_Section):
    # `atende report` and `atende segments export` read gold through delta-rs and DuckDB, without Spark; a table
    # of more rows than this (counted from the Delta log, no data read) is read by Spark instead
    spark_above_rows: int = Field(default=20_000_000, ge=0)
    # the KPI page draws the busiest channels of the period, one line each, and the rest as one "others" line
    top_channels: int = Field(default=5, ge=1)


class PrivacySettings(_Section):
    # `atende forget`: files the erased rows lived in are deleted by a VACUUM with this retention, so time
    # travel shows the rows until then (0: at once; a reader in the middle of a query may then fail). Null:
    # storage.vacuum_retention_hours
    erasure_retention_hours: int | None = Field(default=None, ge=0)
    # the suppression list holds identifiers hashed with a secret salt: taken from this environment variable
    # when it is set, else from a random salt kept in <lakehouse>/ops/_suppression_salt (made on first use)
    salt_env: str = "ATENDE_SUPPRESSION_SALT"


class Settings(_Section):
    env: str = "local"
    spark: SparkSettings = SparkSettings()
    storage: StorageSettings = StorageSettings()
    catalog: CatalogSettings = CatalogSettings()
    ingest: IngestSettings = IngestSettings()
    silver: SilverSettings = SilverSettings()
    identity: IdentitySettings = IdentitySettings()
    kpis: KpiSettings = KpiSettings()
    demo: DemoSettings = DemoSettings()
    mlflow: MlflowSettings = MlflowSettings()
    quality: QualitySettings = QualitySettings()
    reports: ReportSettings = ReportSettings()
    models: ModelSettings = ModelSettings()
    privacy: PrivacySettings = PrivacySettings()
    survivorship: SurvivorshipSettings = SurvivorshipSettings()


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return _parse_yaml(path.read_text(encoding="utf-8"), path)


def _parse_yaml(text: str, path: Any) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
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
    # read as package resources: the package may be imported from a zip (spark-submit --py-files atende.whl)
    base_path = CONF_DIR.joinpath(f"{env}.yaml")
    if not base_path.is_file():
        known = sorted(p.name[: -len(".yaml")] for p in CONF_DIR.iterdir() if p.name.endswith(".yaml"))
        raise ConfigError(f"unknown environment {env!r}: no {base_path.name} (known: {', '.join(known)})")
    data = _parse_yaml(base_path.read_text(encoding="utf-8"), base_path)
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
