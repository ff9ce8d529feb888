from __future__ import annotations

import pytest

from sparktweet.categories import load_categories, parse_categories
from sparktweet.config import load_config, parse_override, secret
from sparktweet.errors import ConfigError
from sparktweet.workers import cached


def test_overrides_are_typed_and_nested(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("spark:\n  master: spark://host:7077\nnew:\n  key: 1\n")
    cfg = load_config([extra], ["train.epochs=3", "brand.handles=[a, b]", "new.deeper.x=true"])
    assert cfg["spark"]["master"] == "spark://host:7077"
    assert cfg["train"]["epochs"] == 3
    assert cfg["brand"]["handles"] == ["a", "b"]
    assert cfg["new"] == {"key": 1, "deeper": {"x": True}}


@pytest.mark.parametrize("bad", ["novalue", "=3", ".=1"])
def test_bad_override_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(bad)


def test_override_cannot_descend_into_a_value():
    with pytest.raises(ConfigError, match="is a value"):
        load_config(overrides=["train.epochs.x=1"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config([bad])


def test_secrets_come_from_the_environment_only(monkeypatch):
    monkeypatch.delenv("SPARKTWEET_TEST_SECRET", raising=False)
    with pytest.raises(ConfigError, match="environment"):
        secret("SPARKTWEET_TEST_SECRET")
    monkeypatch.setenv("SPARKTWEET_TEST_SECRET", "s3cr3t")
    assert secret("SPARKTWEET_TEST_SECRET") == "s3cr3t"


def test_shipped_categories_match_the_design():
    cats = load_categories()
    assert [(c.code, c.prefix) for c in cats] == [
        ("baggage", "BAG"), ("customer_experience", "CX"), ("delay_customer_service", "DLY"), ("extra_charges", "FEE"),
        ("online_booking", "WEB"), ("reschedule_refund", "RFD"), ("reservation", "RES"), ("seating", "SEAT"),
    ]
    assert all(c.keywords and "{ticket_id}" in c.template for c in cats)


def test_category_validation():
    with pytest.raises(ConfigError, match="unique"):
        parse_categories([{"code": "a", "name": "A", "prefix": "AA"}, {"code": "a", "name": "B", "prefix": "BB"}])
    with pytest.raises(ConfigError, match="prefix"):
        parse_categories([{"code": "a", "name": "A", "prefix": "A1"}])


def test_worker_cache_loads_once_per_process():
    calls = []
    first = cached("test", "/some/path", lambda p: calls.append(p) or object())
    again = cached("test", "/some/path", lambda p: calls.append(p) or object())
    assert first is again and calls == ["/some/path"]


def _sentiment_kwargs(overrides):
    from sparktweet.sentiment import SentimentClassifier
    from sparktweet.training import build_pipeline

    stages = build_pipeline(load_config(overrides=overrides)).getStages()
    return next(s for s in stages if isinstance(s, SentimentClassifier)).trainKwargs()


def test_the_training_config_sets_the_sentiment_recipes_cost():
    shipped = _sentiment_kwargs([])
    assert (shipped["ensemble"], shipped["teacher_finetune"], shipped["augment"], shipped["teacher_per_member"]) == (3, 3, 16, True)
    cheaper = _sentiment_kwargs(["train.sentiment_ensemble=2", "train.teacher_finetune_epochs=1", "train.augment=4"])
    assert (cheaper["ensemble"], cheaper["teacher_finetune"], cheaper["augment"], cheaper["teacher_per_member"]) == (2, 1, 4, True)
    # One LSTM has no other members to give teachers to: the option the training refuses without an ensemble is off.
    one = _sentiment_kwargs(["train.sentiment_ensemble=1", "train.teacher_finetune_epochs=0", "train.augment=0"])
    assert (one["ensemble"], one["teacher_finetune"], one["augment"], one["teacher_per_member"]) == (1, 0, 0, False)


@pytest.mark.parametrize("override", ["train.sentiment_ensemble=0", "train.teacher_finetune_epochs=-1", "train.augment=many",
                                      "train.augment=2.5", "train.sentiment_ensemble=true", "train.augment=null"])
def test_a_bad_recipe_cost_fails_before_any_training(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"{key} must be a whole number"):
        _sentiment_kwargs([override])


@pytest.mark.parametrize("override", ["train.epochs=0", "train.seed=-1", "train.lstm_units=wide", "train.max_len=2.5",
                                      "train.vocab_size=1", "train.embedding_dim=false", "train.sentiment_epochs=0",
                                      "train.lda_passes=many"])
def test_a_bad_model_setting_fails_before_any_training(override):
    from sparktweet.training import build_pipeline

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"{key} must be a whole number"):
        build_pipeline(load_config(overrides=[override]))


def test_the_model_settings_reach_their_stages():
    from sparktweet.sentiment import SentimentClassifier
    from sparktweet.topics import TopicClassifier, TopicLabeler
    from sparktweet.training import build_pipeline

    stages = build_pipeline(load_config(overrides=["train.epochs=4", "train.sentiment_epochs=1", "train.lda_passes=3",
                                                   "train.max_len=24"])).getStages()
    topic = next(s for s in stages if isinstance(s, TopicClassifier))
    sentiment = next(s for s in stages if isinstance(s, SentimentClassifier))
    labeler = next(s for s in stages if isinstance(s, TopicLabeler))
    assert (topic.getOrDefault("epochs"), topic.getOrDefault("maxLen")) == (4, 24)
    assert (sentiment.getOrDefault("epochs"), sentiment.getOrDefault("maxLen")) == (1, 24)
    assert labeler.getOrDefault("passes") == 3
