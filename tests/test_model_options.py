"""Model options added for issue 3: stop words kept for the sentiment LSTM, seed ensembles, pooling, seed keywords."""

from __future__ import annotations

import numpy as np
import pytest

from sparktweet.categories import Category
from sparktweet.keras_io import TextClassifier
from sparktweet.sentiment import SentimentClassifier
from sparktweet.text import TextPreprocessor
from sparktweet.topics import TopicClassifier, seed_keywords

TEXT = "@united but it was so very late, why?"


def _assert_reloads_and_ignores_padding(clf, tmp_path):
    """Saved and loaded, the classifier scores the same; a short tweet scores the same alone and
    batched with a long one (masking, not padding, decides)."""
    clf.save(str(tmp_path))
    loaded = TextClassifier.load(str(tmp_path))
    np.testing.assert_allclose(clf.predict_proba(TOKENS[:6]), loaded.predict_proba(TOKENS[:6]), atol=1e-6)
    alone = loaded.predict_proba([TOKENS[1]])
    batched = loaded.predict_proba([TOKENS[1], ["late"] * 30])[:1]
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_keep_stop_words_variant_keeps_them():
    assert TextPreprocessor.load().tokenize(TEXT) == ["xmention", "late"]
    assert TextPreprocessor.load(keep_stop_words=True).tokenize(TEXT) == ["xmention", "but", "it", "be", "so", "very", "late", "why"]


def test_seed_keywords_are_preprocessed_like_tweets():
    cats = [Category("baggage", "Baggage", "BAG", ("Lost", "bags", "the", "lost")), Category("seating", "Seats", "SEAT", ("seats",))]
    assert seed_keywords(cats) == {"baggage": ["lose", "bag"], "seating": ["seat"]}


def test_stage_defaults_and_train_kwargs():
    assert SentimentClassifier().getOrDefault("keepStopWords") is True
    assert TopicClassifier().getOrDefault("keepStopWords") is False
    kwargs = SentimentClassifier(epochs=3, lstmUnits=16).trainKwargs()
    assert kwargs["epochs"] == 3 and kwargs["units"] == 16
    # The shipped sentiment recipe; the topic LSTM keeps the plain one.
    assert kwargs["lexicon"] is True and kwargs["distill"] == 0.5 and SentimentClassifier()._marks() is True
    topic = TopicClassifier().trainKwargs()
    assert topic["lexicon"] is False and topic["distill"] == 0.0


TOKENS = [["good", "great", "thank"], ["bad", "awful", "not", "late"], ["flight", "today", "when"]] * 30
LABELS = ["positive", "negative", "neutral"] * 30


@pytest.mark.parametrize("pooling", ["last_mean", "attention"])
def test_ensemble_round_trip_and_padding_invariance(tmp_path, pooling):
    clf, history = TextClassifier.train(TOKENS, LABELS, epochs=2, ensemble=2, pooling=pooling, embedding_dim=8, units=8,
                                        validation_fraction=0.0, verbose=0)
    assert {"member0_loss", "member1_loss"} <= set(history)
    assert getattr(clf.model, "optimizer", None) is None  # nothing to strip at save time
    _assert_reloads_and_ignores_padding(clf, tmp_path)


def test_ensemble_learns_and_sqrt_weights():
    clf, _ = TextClassifier.train(TOKENS, LABELS, epochs=12, ensemble=2, class_weight="sqrt", embedding_dim=8, units=8,
                                  validation_fraction=0.0, verbose=0)
    pred, _ = clf.predict(TOKENS[:3])
    assert pred == ["positive", "negative", "neutral"]


def _bilstm_layers(model) -> list:
    """Every Bidirectional layer of a Keras model, nested models (ensemble members) included."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _bilstm_layers(layer)
        elif isinstance(layer, keras.layers.Bidirectional):
            found.append(layer)
    return found


def test_ensemble_student_is_one_lstm_that_learns_and_round_trips(tmp_path):
    clf, history = TextClassifier.train(TOKENS, LABELS, epochs=12, ensemble=2, student=True, embedding_dim=8, units=8,
                                        validation_fraction=0.0, verbose=0)
    assert {"member0_loss", "member1_loss", "student_loss"} <= set(history)
    assert len(_bilstm_layers(clf.model)) == 1 and clf.model.get_layer("bilstm") is not None
    probs = clf.predict_proba(TOKENS[:6])
    assert probs.shape == (6, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert clf.predict(TOKENS[:3])[0] == ["positive", "negative", "neutral"]
    _assert_reloads_and_ignores_padding(clf, tmp_path)
    assert len(_bilstm_layers(TextClassifier.load(str(tmp_path)).model)) == 1


def test_ensemble_student_param_reaches_train_kwargs():
    from sparktweet.sentiment import SentimentModel

    assert SentimentClassifier(ensembleStudent=True).trainKwargs()["student"] is True
    assert TopicClassifier().trainKwargs()["student"] is False
    assert SentimentModel().getOrDefault("ensembleStudent") is False  # models saved before the Param load with it off


def test_cosine_schedule_decays_to_zero_over_the_run_and_still_learns(monkeypatch):
    import keras

    made = []
    adam = keras.optimizers.Adam

    def spy(learning_rate, **kwargs):
        made.append(learning_rate)
        return adam(learning_rate, **kwargs)

    monkeypatch.setattr(keras.optimizers, "Adam", spy)
    for distill in (0.0, 0.5):  # hard labels (recompiled for the schedule) and soft targets
        made.clear()
        clf, _ = TextClassifier.train(TOKENS, LABELS, epochs=12, batch_size=16, lr_schedule="cosine", distill=distill, embedding_dim=8,
                                      units=8, validation_fraction=0.0, verbose=0)
        schedules = [lr for lr in made if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule)]
        assert len(schedules) == 1
        steps = 12 * -(-len(TOKENS) // 16)  # every batch of every epoch
        assert schedules[0].decay_steps == steps
        assert float(schedules[0](0)) == pytest.approx(2e-3) and float(schedules[0](steps)) == pytest.approx(0.0, abs=1e-9)
        assert clf.predict(TOKENS[:3])[0] == ["positive", "negative", "neutral"]
    assert SentimentClassifier(lrSchedule="cosine").trainKwargs()["lr_schedule"] == "cosine"
    assert TopicClassifier().trainKwargs()["lr_schedule"] == "constant"


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="pooling"):
        TextClassifier.train(TOKENS, LABELS, epochs=1, pooling="max", verbose=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        TextClassifier.train(TOKENS, LABELS, epochs=1, lr_schedule="linear", verbose=0)
    with pytest.raises(ValueError, match="class_weight"):
        TextClassifier.train(TOKENS, LABELS, epochs=1, class_weight="inverse", verbose=0)


def test_sentiment_model_reads_text_with_stop_words(spark):
    rows = [(str(i), t, ["x"], lbl) for i, (t, lbl) in enumerate([("so good, thank you", "positive"), ("it is not good at all", "negative"),
                                                                     ("what time is it", "neutral")] * 20)]
    df = spark.createDataFrame(rows, "tweet_id string, text string, tokens array<string>, airline_sentiment string")
    # The tokens column holds one useless token: only the re-tokenised text can separate the classes.
    model = SentimentClassifier(epochs=15, lstmUnits=8, embeddingDim=8, maxLen=8, validationFraction=0.0).fit(df)
    bad = spark.createDataFrame([("a", "so good, thank you", None), ("b", "what time is it", ["x"])], "tweet_id string, text string, tokens array<string>")
    out = {r.tweet_id: r for r in model.transform(df.limit(3).drop("airline_sentiment").unionByName(bad)).collect()}
    assert [out[k].sentiment for k in ("0", "1", "2")] == ["positive", "negative", "neutral"]
    assert out["a"].sentiment is None  # no tokens: the preprocessor could not handle it
    assert out["b"].sentiment == "neutral"


def _reference_topics(lda, token_lists, max_iter=100, tol=1e-3):
    """The one-document-at-a-time E-step the vectorised GuidedLda.topic_matrix must reproduce."""
    from scipy.special import psi

    k = lda.lda.num_topics
    alpha = np.asarray(lda.lda.alpha, dtype="float64")
    beta = np.asarray(lda.lda.expElogbeta, dtype="float64")
    out = np.full((len(token_lists), k), 1.0 / k)
    for row, tokens in enumerate(token_lists):
        bow = lda.dictionary.doc2bow(list(tokens)) if tokens is not None else []
        if not bow:
            continue
        ids, cts = [w for w, _ in bow], np.array([c for _, c in bow], dtype="float64")
        beta_d, gamma = beta[:, ids], np.ones(k)
        exp_theta = np.exp(psi(gamma) - psi(gamma.sum()))
        for _ in range(max_iter):
            last = gamma
            gamma = alpha + exp_theta * ((cts / (exp_theta @ beta_d + 1e-100)) @ beta_d.T)
            exp_theta = np.exp(psi(gamma) - psi(gamma.sum()))
            if np.mean(np.abs(gamma - last)) < tol:
                break
        out[row] = gamma / gamma.sum()
    return out


def test_vectorised_lda_inference_matches_per_document_and_ignores_batching():
    from sparktweet.lda import GuidedLda

    words = ["bag", "lose", "claim", "seat", "aisle", "row", "refund", "cancel", "rebook", "late", "hour", "wait"]
    docs = [[words[(i * 7 + j * 5) % len(words)] for j in range(2 + i % 5)] for i in range(120)]
    lda = GuidedLda.train(docs, {"baggage": ["bag", "lose"], "seating": ["seat", "aisle"]}, passes=2, no_below=1, no_above=1.0)
    queries = docs[:40] + [None, [], ["unknown"], ["bag", "bag", "unknown", "seat"]]
    batched = lda.topic_matrix(queries, chunk=7)
    np.testing.assert_allclose(batched, _reference_topics(lda, queries), atol=1e-12)
    alone = np.vstack([lda.topic_matrix([q]) for q in queries])
    np.testing.assert_array_equal(alone, batched)


def test_context_keywords_seed_their_category_and_are_listed_apart():
    from sparktweet.categories import parse_categories
    from sparktweet.topics import context_tokens

    cats = parse_categories([
        {"code": "baggage", "name": "Bags", "prefix": "BAG", "keywords": ["bags"]},
        {"code": "delay", "name": "Delay", "prefix": "DLY", "keywords": ["Delayed"], "context_keywords": ["Waiting", "hours", "delay"]},
    ])
    assert cats[1].context_keywords == ("waiting", "hours", "delay")
    assert seed_keywords(cats) == {"baggage": ["bag"], "delay": ["delay", "wait", "hour"]}
    # "delay" is also a subject keyword of its category (Delayed -> delay), so it keeps full weight.
    assert context_tokens(cats) == ["wait", "hour"]


def test_context_keywords_weigh_less_in_training_and_labelling(tmp_path):
    from sparktweet.lda import GuidedLda
    from sparktweet.topics import TopicLabeler, TopicLabelerModel

    docs = ([["bag", "lose", "claim"]] * 20 + [["delay", "wait", "hour"]] * 20 + [["bag", "wait", "hour"]] * 10
            + [["seat", "aisle", "row"]] * 20)
    # The delay topic comes first, so gensim's asymmetric prior favours it in a tie as well.
    seeds = {"delay": ["delay", "wait", "hour"], "baggage": ["bag", "lose", "claim"], "seating": ["seat", "aisle"]}
    query = [["bag", "wait", "hour"], ["wait", "hour"], ["delay", "bag"]]
    plain = GuidedLda.train(docs, seeds, passes=5, no_below=1, no_above=1.0)
    assert plain.label(query)[0] == ["delay", "delay", "delay"]
    weighted = GuidedLda.train(docs, seeds, passes=5, no_below=1, no_above=1.0, context=["wait", "hour"], context_weight=0.4)
    assert weighted.weights == {"wait": 0.4, "hour": 0.4}
    # Two context words (0.8) lose to one subject word; on their own they still name their category.
    assert weighted.label(query)[0] == ["baggage", "delay", "delay"]
    weighted.save(str(tmp_path / "lda"))
    loaded = GuidedLda.load(str(tmp_path / "lda"))
    assert loaded.weights == weighted.weights
    np.testing.assert_array_equal(loaded.topic_matrix(query), weighted.topic_matrix(query))
    assert TopicLabeler().getOrDefault("contextWeight") == 0.5 and TopicLabeler().trainKwargs()["context_weight"] == 0.5
    assert TopicLabelerModel().getOrDefault("contextWeight") == 1.0  # models saved before the Param keep plain counts
def test_lexicon_valences_come_from_vader():
    pytest.importorskip("vaderSentiment")
    from sparktweet.lexicon import valences

    v = valences(["great", "awful", "flight", "xemojipos"])
    assert v[0] > 0.3 and v[1] < -0.3 and v[2] == 0.0 and v[3] > 0


def test_lexicon_channel_is_frozen_saved_and_padding_invariant(tmp_path):
    pytest.importorskip("vaderSentiment")
    from sparktweet.lexicon import valences

    clf, _ = TextClassifier.train(TOKENS, LABELS, epochs=2, ensemble=2, lexicon=True, embedding_dim=8, units=8,
                                  validation_fraction=0.0, verbose=0)
    member = clf.model.get_layer("lstm_0")
    table = member.get_layer("valence").get_weights()[0][:, 0]
    # Row i of the frozen channel is the lexicon valence of vocabulary word i (0 and 1: padding, unknown).
    np.testing.assert_allclose(table[2:], valences(clf.vocab.words))
    assert table[clf.vocab.index["great"]] > 0 and table[clf.vocab.index["awful"]] < 0
    assert not member.get_layer("valence").trainable
    _assert_reloads_and_ignores_padding(clf, tmp_path)


def test_teacher_probabilities_are_out_of_fold():
    from sparktweet.keras_io import teacher_probabilities

    # Texts come in identical pairs with random labels: a model that saw a row echoes its label (about
    # two thirds right), one that did not can at best repeat its twin's label (a third right).
    rng = np.random.default_rng(0)
    tokens = [[f"w{i // 2}", f"v{i // 2}"] for i in range(300)]
    y = rng.integers(0, 3, size=300)
    probs = teacher_probabilities(tokens, y, 3)
    assert probs.shape == (300, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(axis=1) == y).mean() < 0.5


def test_distilled_and_smoothed_training_still_learns():
    clf, _ = TextClassifier.train(TOKENS, LABELS, epochs=12, ensemble=1, distill=0.5, label_smoothing=0.1, embedding_dim=8,
                                        units=8, validation_fraction=0.0, verbose=0)
    pred, _ = clf.predict(TOKENS[:3])
    assert pred == ["positive", "negative", "neutral"]


def test_keep_marks_variant_keeps_exclamations_questions_and_emoticons():
    pre = TextPreprocessor.load(keep_stop_words=True, keep_marks=True)
    assert pre.tokenize("@united thanks!!! :) when is it?? http://t.co/x?a=1") == [
        "xmention", "thank", "xexcl", "xemojipos", "when", "be", "it", "xquest", "xurl"]
    assert pre.tokenize("delayed again :( at 10:30 (gate b)") == ["delay", "again", "xemojineg", "at", "xnum", "xnum", "gate", "b"]
    # The default variants are unchanged.
    assert "xexcl" not in TextPreprocessor.load(keep_stop_words=True).tokenize("thanks!!! :)")


def test_keep_marks_param_reaches_the_stage():
    stage = SentimentClassifier(keepMarks=True)
    assert stage._marks() is True
    assert SentimentClassifier(keepMarks=True, keepStopWords=False)._marks() is False
    assert "keep_marks" not in stage.trainKwargs()


def test_teacher_gives_up_on_too_small_data():
    from sparktweet.keras_io import teacher_probabilities

    assert teacher_probabilities([["a"], ["b"], ["c"]], np.array([0, 1, 1]), 2) is None


def test_keep_marks_is_set_by_the_estimator_not_defaulted_for_old_models():
    """A SentimentModel saved before keepMarks existed must keep reading the tokens it was trained on."""
    from sparktweet.sentiment import SentimentModel

    assert SentimentModel().getOrDefault("keepMarks") is False
    estimator = SentimentClassifier()
    assert estimator.isSet("keepMarks") and estimator.getOrDefault("keepMarks") is True
    assert SentimentClassifier(keepMarks=False).getOrDefault("keepMarks") is False


def test_lda_without_extra_topics_warns_and_negative_is_refused(caplog):
    import logging

    import pytest

    from sparktweet.lda import GuidedLda

    docs = [["bag", "lose", "claim", "customer"]] * 10 + [["seat", "aisle", "customer"]] * 10
    seeds = {"baggage": ["bag", "lose"], "seating": ["seat", "aisle"]}
    with caplog.at_level(logging.WARNING, logger="sparktweet.lda"):
        GuidedLda.train(docs, seeds, extra_topics=1, passes=1, no_below=1, no_above=1.0)
        assert not [r for r in caplog.records if r.name == "sparktweet.lda"]
        lda = GuidedLda.train(docs, seeds, extra_topics=0, passes=1, no_below=1, no_above=1.0)
    assert lda.lda.num_topics == 2
    assert any("without extra topics" in r.getMessage() for r in caplog.records if r.name == "sparktweet.lda")
    with pytest.raises(ValueError, match="extra_topics must be 0 or more"):
        GuidedLda.train(docs, seeds, extra_topics=-1)
