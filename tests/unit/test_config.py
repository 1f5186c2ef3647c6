
import pytest

from jobs.platform.config import DEFAULT_CONFIG, REPO_ROOT, load_config
from jobs.platform.errors import UserError


def test_defaults_resolve_paths_against_the_config_file():
    cfg = load_config(environ={})
    assert cfg.lake == (REPO_ROOT / "var/lake").resolve()
    assert cfg.inputs.ads.is_absolute()
    assert cfg.features.max_history == 500
    assert cfg.validation.quarantine_threshold == 0.01
    assert cfg.spark.master == "local[*]"


def test_override_order_file_env_cli(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("features:\n  top_queries: 7\n  max_history: 100\n")
    env = {"CREATIVE_FACTORY_CONFIG": str(extra), "CF__FEATURES__MAX_HISTORY": "200"}
    cfg = load_config(overrides=["features.max_history=300"], environ=env)
    assert cfg.features.top_queries == 7  # from the extra file
    assert cfg.features.max_history == 300  # CLI beats env beats file
    cfg = load_config(environ=env)
    assert cfg.features.max_history == 200


def test_section_hash_tracks_only_named_sections():
    a = load_config(environ={})
    b = load_config(overrides=["spark.shuffle_partitions=3"], environ={})
    c = load_config(overrides=["features.top_queries=9"], environ={})
    assert a.section_hash("features") == b.section_hash("features")
    assert a.section_hash("features") != c.section_hash("features")


@pytest.mark.parametrize("override, message", [
    ("features.max_history=-1", "features.max_history"),
    ("features.nonsense=1", "features.nonsense"),
    ("validation.quarantine_threshold=2", "quarantine_threshold"),
    ("no_equals_sign", "section.key=value"),
])
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(UserError, match=message) as err:
        load_config(overrides=[override], environ={})
    assert "\n" not in str(err.value)


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml", environ={})
    partial = tmp_path / "partial.yaml"
    partial.write_text("features:\n  top_queries: 4\n")  # an overlay, not a whole config
    assert load_config(partial, environ={}).features.top_queries == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("lake: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad, environ={})


def test_repo_root_holds_the_config_sql_and_dags():
    # REPO_ROOT is derived from the config module's place in the package tree
    for part in (DEFAULT_CONFIG.name, "sql/features", "sql/rules", "dags", "config/badcase"):
        assert (REPO_ROOT / part).exists(), part
    cfg = load_config(environ={})
    assert cfg.badcase.stopwords.is_file() and cfg.creator.prompts_dir.is_dir()


def test_iso_instants_and_spark_keys_survive_overrides():
    cfg = load_config(overrides=["sample.end=2026-11-01T00:00:00Z",
                                 "spark.extra_conf.spark.sql.files.maxPartitionBytes=64m",
                                 "spark.extra_conf.spark.sql.adaptive.enabled=true"],
                      environ={"CF__SAMPLE__END": "2026-10-01T00:00:00Z"})
    assert cfg.sample.end == "2026-11-01T00:00:00Z"
    assert cfg.spark.extra_conf == {"spark.sql.files.maxPartitionBytes": "64m",
                                    "spark.sql.adaptive.enabled": "true"}


def test_vllm_dtype_auto_picks_bf16_only_where_it_is_fast(monkeypatch):
    from jobs.platform import devices

    assert devices.resolve_dtype("float32") == "float32"
    assert devices.resolve_dtype("bfloat16") == "bfloat16"
    monkeypatch.setattr(devices, "bf16_is_fast", lambda: False)  # an AVX2-only CPU
    assert devices.resolve_dtype("auto") == "float32"
    monkeypatch.setattr(devices, "bf16_is_fast", lambda: True)
    assert devices.resolve_dtype("auto") == "bfloat16"
