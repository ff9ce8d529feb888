"""The sentiment teacher's pretrained knowledge: the MiniLM sentence encoder, altered copies, teacher probabilities on them."""

from __future__ import annotations

import numpy as np
import pytest

from sparktweet.errors import ModelError
from sparktweet.keras_io import TextClassifier, augment_texts, teacher_probabilities


@pytest.fixture(scope="module")
def encoder():
    from sparktweet.sentence_encoder import SentenceEncoder

    # The packaged model (requirements-nodeps.txt): CI installs it, so a missing package fails here loudly.
    return SentenceEncoder()


def test_the_encoder_puts_paraphrases_together(encoder):
    # Three pairs of paraphrases that share hardly a word.
    vectors = encoder.encode([
        "my bag was lost on the flight",
        "the airline misplaced my luggage",
        "the seat was comfortable and the crew friendly",
        "the cabin staff were lovely and my chair was roomy",
        "I want a refund for my cancelled trip",
        "please give me my money back, you cancelled",
    ])
    assert vectors.shape == (6, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sim = vectors @ vectors.T
    np.fill_diagonal(sim, -1.0)
    # Each sentence is nearest to its paraphrase, by a margin: that needs the real weights run the
    # right way (a wrong layer order, mask or pooling scrambles these neighbours).
    twin = np.array([1, 0, 3, 2, 5, 4])
    assert sim.argmax(axis=1).tolist() == twin.tolist()
    for row in range(6):
        others = np.delete(sim[row], [row, twin[row]])
        assert sim[row, twin[row]] > others.max() + 0.15


def test_the_encoder_ignores_batching_and_padding(encoder):
    texts = ["late again", "@united you lost my bag and nobody answers the phone, three days now", "", None, "ok"]
    together = encoder.encode(texts)
    alone = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(together[2], together[3], atol=1e-6)  # None reads as ''
    assert encoder.encode([]).shape == (0, 384)
    assert encoder.w is None  # once the graph holds the weights, the NumPy copy is released


def test_the_encoder_refuses_a_directory_that_is_not_one(tmp_path):
    from sparktweet.sentence_encoder import SentenceEncoder

    with pytest.raises(ModelError, match="missing config.json, model.safetensors, tokenizer.json"):
        SentenceEncoder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError, match="is not 'bert'"):
        SentenceEncoder(tmp_path)


TOPIC_TEXTS = {
    0: ["my suitcase never arrived", "they lost my luggage again", "where is my bag", "my bags went to the wrong city",
        "baggage claim has nothing for me", "the airline misplaced my suitcase", "my checked bag is missing",
        "still no sign of my luggage"],
    1: ["the flight is two hours late", "we are still delayed at the gate", "departure pushed back again",
        "sitting on the tarmac for ages", "our plane has not left yet", "another delay this morning",
        "the departure keeps slipping", "waiting forever to take off"],
    2: ["the sandwich was stale", "no vegetarian meal on board", "the coffee tasted awful", "they ran out of snacks",
        "dinner on the plane was cold", "the food service was terrible", "only pretzels for a long flight",
        "the drinks cart never came"],
}


def test_fine_tuning_teaches_the_encoder_a_classifier_and_leaves_it_as_it_was(encoder, caplog):
    import logging

    texts = [t for c in TOPIC_TEXTS for t in TOPIC_TEXTS[c][:6]]
    y = [c for c in TOPIC_TEXTS for _ in range(6)]
    held_out = [t for c in TOPIC_TEXTS for t in TOPIC_TEXTS[c][6:]]
    before = encoder.encode(held_out)
    with caplog.at_level(logging.INFO, logger="sparktweet.sentence_encoder"):
        tuned = encoder.fine_tune(texts, y, 3, epochs=6, learning_rate=3e-4, batch_size=6, seed=1)
    losses = [float(r.getMessage().rsplit(" ", 1)[1]) for r in caplog.records if "fine-tuning" in r.getMessage()]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0]
    probs = tuned.predict_proba(held_out + ["", None])
    assert probs.shape == (8, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[6], probs[7], atol=1e-6)  # None reads as ''
    assert probs[:6].argmax(axis=1).tolist() == [0, 0, 1, 1, 2, 2]  # sentences it never saw
    np.testing.assert_allclose(tuned.predict_proba(held_out[:1]), probs[:1], atol=1e-5)  # whatever the batch
    np.testing.assert_allclose(encoder.encode(held_out), before, atol=1e-6)  # the encoder itself is not changed


@pytest.mark.parametrize(("texts", "y", "message"), [
    (["a", "b"], [0], "got 2 texts and 1 labels"),
    (["a", "b"], [0, 3], r"labels must lie in \[0, 3\)"),
    ([], [], "at least one text"),
])
def test_fine_tuning_refuses_labels_that_do_not_fit(encoder, texts, y, message):
    with pytest.raises(ValueError, match=message):
        encoder.fine_tune(texts, y, 3, epochs=1)


def test_training_with_a_fine_tuned_teacher_learns_and_keeps_the_lstm(tmp_path, monkeypatch):
    from sparktweet import sentence_encoder

    seen = {}
    real = sentence_encoder.SentenceEncoder.fine_tune

    def spy(self, texts, y, num_classes, **kwargs):
        seen.update(texts=list(texts), y=list(y), num_classes=num_classes, **kwargs)
        return real(self, texts, y, num_classes, **kwargs)

    monkeypatch.setattr(sentence_encoder.SentenceEncoder, "fine_tune", spy)
    texts = ["good great thanks so much", "bad awful not late again", "flight today when is it"] * 20
    tokens = [t.split() for t in texts]
    labels = ["positive", "negative", "neutral"] * 20
    clf, _ = TextClassifier.train(tokens, labels, epochs=12, distill=0.5, teacher_encoder="default", teacher_texts=texts,
                                  augment=1, teacher_finetune=1, embedding_dim=8, units=8, validation_fraction=0.0, verbose=0)
    assert seen["epochs"] == 1 and seen["num_classes"] == 3 and len(seen["texts"]) == 60
    assert [labels[texts.index(t)] for t in seen["texts"]] == [["negative", "neutral", "positive"][c] for c in seen["y"]]
    assert clf.predict(tokens[:3])[0] == ["positive", "negative", "neutral"]
    clf.save(str(tmp_path))
    loaded = TextClassifier.load(str(tmp_path)).model
    # What is saved is the small LSTM alone: the fine-tuned encoder (22 million weights) stays behind.
    assert "bilstm" in {layer.name for layer in loaded.layers} and loaded.count_params() < 100_000


def test_altered_copies_drop_words_and_keep_their_order():
    texts = ["one two three four five six seven eight", "solo", ""]
    altered, source = augment_texts(texts, 4, seed=3)
    assert len(altered) == 12 and source.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for text, src in zip(altered, source):
        words = text.split()
        original = texts[src].split()
        positions = [original.index(w) for w in words]
        assert positions == sorted(positions)  # a subsequence of its source
        assert (len(words) >= 1) == bool(original)  # never emptied, unless empty
    assert any(len(t.split()) < 8 for t in altered[:4])
    again, _ = augment_texts(texts, 4, seed=3)
    assert again == altered
    assert augment_texts(texts, 4, seed=4)[0] != altered


def test_mixed_copies_join_a_piece_of_another_row_and_swap_words():
    # Disjoint vocabularies, so every word of a copy tells which text it came from.
    texts = [" ".join(f"{c}{i}" for i in range(8)) for c in "abcd"]
    joined, source = augment_texts(texts, 50, seed=5, drop=0.0, span=1.0, min_span=0.5, mix=1.0)
    others = 0
    for text, src in zip(joined, source):
        words = text.split()
        own = [w for w in words if w[0] == "abcd"[src]]
        foreign = {w[0] for w in words} - {"abcd"[src]}
        assert len(own) >= 4 and len(foreign) == 1  # at least half of its own row, and a piece of exactly one other
        positions = [int(w[1:]) for w in own]
        assert positions == list(range(positions[0], positions[0] + len(own)))  # one unbroken run, in order
        others += len(words) - len(own)
    assert others >= 4 * len(joined)  # every copy got at least half of another row

    swapped, source = augment_texts(texts, 50, seed=5, drop=0.0, span=0.0, replace=0.5)
    pool = {w for t in texts for w in t.split()}
    changed = [sum(w != o for w, o in zip(text.split(), texts[src].split())) for text, src in zip(swapped, source)]
    assert all(set(t.split()) <= pool for t in swapped) and all(len(t.split()) == 8 for t in swapped)
    assert 0.42 < sum(changed) / (8 * len(swapped)) < 0.55  # half swapped, 1 in 32 of those for the same word

    plain, _ = augment_texts(texts, 3, seed=5)
    assert plain == augment_texts(texts, 3, seed=5, mix=0.0, replace=0.0)[0]  # off by default, the copies as before


@pytest.mark.parametrize("option", [{"mix": 1.5}, {"replace": -0.1}, {"drop": 2.0}, {"min_span": 1.2}])
def test_altered_copies_refuse_shares_outside_0_and_1(option):
    with pytest.raises(ValueError, match="must be between 0 and 1"):
        augment_texts(["a b c"], 1, **option)


def fake_encoder(predict_proba):
    """A stand-in for SentenceEncoder whose fine-tuned model answers with ``predict_proba(texts)``."""

    class Tuned:
        def predict_proba(self, texts):
            return predict_proba(texts)

    class Encoder:
        def __init__(self, path=None):
            pass

        def fine_tune(self, texts, y, num_classes, **kwargs):
            return Tuned()

    return Encoder


def test_the_teacher_weight_decides_whose_probabilities_the_lstm_learns(monkeypatch):
    from sparktweet import keras_io, sentence_encoder

    def always_class_0(texts):  # the fine-tuned encoder: always sure of class 0
        return np.tile(np.array([1.0, 0.0, 0.0], dtype="float32"), (len(texts), 1))

    fitted = []

    def tfidf(token_lists, y, num_classes, extra=None, **kwargs):  # the TF-IDF teacher: always sure of class 2
        fitted.append(len(token_lists))
        sure = np.tile(np.array([0.0, 0.0, 1.0], dtype="float32"), (len(token_lists), 1))
        return sure if extra is None else (sure, np.tile(sure[:1], (len(extra[0]), 1)))

    monkeypatch.setattr(sentence_encoder, "SentenceEncoder", fake_encoder(always_class_0))
    monkeypatch.setattr(keras_io, "teacher_probabilities", tfidf)
    texts = ["good great thanks", "bad awful late", "flight today when"] * 20
    labels = ["negative", "neutral", "positive"] * 20
    predicted = {}
    for weight in (1.0, 0.0):
        clf, _ = TextClassifier.train([t.split() for t in texts], labels, label_order=labels[:3], epochs=15, distill=1.0,
                                      teacher_encoder="default", teacher_finetune=1, teacher_weight=weight, augment=1,
                                      augment_style="mix", embedding_dim=8, units=8, validation_fraction=0.0,
                                      class_weight="none", verbose=0)
        predicted[weight] = set(clf.predict([t.split() for t in texts[:3]])[0])
        fitted.append(f"after weight {weight}")
    assert predicted == {1.0: {"negative"}, 0.0: {"positive"}}
    # With weight 1 the TF-IDF teacher would count for nothing, so it is not fitted at all.
    assert fitted == ["after weight 1.0", 60, "after weight 0.0"]


@pytest.mark.parametrize(("option", "message"), [
    ({"teacher_weight": 1.5}, "teacher_weight must be between 0 and 1"),
    ({"augment_style": "shuffle"}, "augment_style must be one of"),
])
def test_bad_teacher_mix_or_augment_style_is_refused(option, message):
    with pytest.raises(ValueError, match=message):
        TextClassifier.train([["a"], ["b"], ["c"]], ["x", "y", "x"], distill=0.5, epochs=1, verbose=0, **option)


def test_teacher_scores_a_copy_with_the_fold_model_that_did_not_see_its_source():
    rng = np.random.default_rng(0)
    tokens = [[f"w{i}", f"v{i % 7}", "x"] for i in range(200)]
    y = rng.integers(0, 3, size=200)
    vectors = rng.normal(size=(200, 5)).astype("float32")
    # Exact copies: the fold model that held out the source gives the copy the source's own probabilities.
    source = np.arange(0, 200, 3)
    base = teacher_probabilities(tokens, y, 3, vectors=vectors)
    probs, extra = teacher_probabilities(tokens, y, 3, vectors=vectors, extra=([tokens[i] for i in source], vectors[source], source))
    np.testing.assert_allclose(probs, base, atol=1e-6)
    np.testing.assert_allclose(extra, probs[source], atol=1e-6)
    # Vectors count: the same rows without them give other probabilities.
    assert np.abs(teacher_probabilities(tokens, y, 3) - base).max() > 1e-3


def test_training_with_the_encoder_teacher_and_altered_copies_learns(tmp_path):
    texts = ["good great thanks so much", "bad awful not late again", "flight today when is it"] * 30
    tokens = [t.split() for t in texts]
    labels = ["positive", "negative", "neutral"] * 30
    calls = []

    def tokenize(rows):
        calls.append(len(rows))
        return [r.split() for r in rows]

    clf, history = TextClassifier.train(tokens, labels, epochs=12, ensemble=2, student=True, student_weight=0.0, distill=0.5,
                                        teacher_encoder="default", teacher_texts=texts, augment=2, tokenize=tokenize,
                                        embedding_dim=8, units=8, validation_fraction=0.0, verbose=0)
    assert calls == [180]  # two altered copies of each of the 90 rows, tokenised once
    assert "student_loss" in history
    assert clf.predict(tokens[:3])[0] == ["positive", "negative", "neutral"]
    clf.save(str(tmp_path))
    assert TextClassifier.load(str(tmp_path)).predict(tokens[:3])[0] == ["positive", "negative", "neutral"]


def test_teacher_texts_must_match_the_rows():
    with pytest.raises(ValueError, match="teacher_texts has 2 rows for 3 token lists"):
        TextClassifier.train([["a"], ["b"], ["c"]], ["x", "y", "x"], distill=0.5, teacher_texts=["a", "b"], epochs=1, verbose=0)



def test_the_sentiment_stage_gives_the_teacher_the_raw_text_and_its_tokeniser(spark, monkeypatch):
    from sparktweet import keras_io
    from sparktweet.sentiment import SentimentClassifier

    seen = {}
    real = keras_io.TextClassifier.train.__func__

    def spy(cls, token_lists, labels, *args, **kwargs):
        seen.update(kwargs)
        seen["tokenised"] = kwargs["tokenize"](["so GOOD, thank you!"])
        return real(cls, token_lists, labels, *args, **kwargs)

    monkeypatch.setattr(keras_io.TextClassifier, "train", classmethod(spy))
    texts = [("so good, thank you", "positive"), ("it is not good at all", "negative"), ("what time is it", "neutral")] * 30
    df = spark.createDataFrame([(str(i), t, ["x"], lbl) for i, (t, lbl) in enumerate(texts)],
                               "tweet_id string, text string, tokens array<string>, airline_sentiment string")
    model = SentimentClassifier(epochs=15, lstmUnits=8, embeddingDim=8, maxLen=8, validationFraction=0.0, ensembleSize=1,
                                teacherEncoder="default", augment=1, teacherFineTune=1, augmentStyle="mix", teacherWeight=0.75).fit(df)
    assert seen["teacher_encoder"] == "default" and seen["augment"] == 1 and seen["teacher_finetune"] == 1
    assert seen["augment_style"] == "mix" and seen["teacher_weight"] == 0.75
    assert sorted(seen["teacher_texts"]) == sorted(t for t, _ in texts)  # the raw text, not the tokens column
    assert seen["tokenised"] == [["so", "good", "thank", "you", "xexcl"]]  # as the stage reads text (keepMarks)
    out = {r.tweet_id: r.sentiment for r in model.transform(df.limit(3).drop("airline_sentiment")).collect()}
    assert out == {"0": "positive", "1": "negative", "2": "neutral"}


@pytest.mark.parametrize("option", [{"teacher_finetune": 1}, {"teacher_finetune": -1, "teacher_encoder": "default"}])
def test_fine_tuning_the_teacher_needs_an_encoder_and_whole_epochs(option):
    with pytest.raises(ValueError, match="teacher_finetune must be 0, or epochs > 0 with a teacher_encoder"):
        TextClassifier.train([["a"], ["b"], ["c"]], ["x", "y", "x"], distill=0.5, epochs=1, verbose=0, **option)


@pytest.mark.parametrize("option", [{"teacher_encoder": "default"}, {"augment": 2}])
def test_teacher_options_without_distillation_are_refused(option):
    with pytest.raises(ValueError, match="need distill > 0"):
        TextClassifier.train([["a"], ["b"], ["c"]], ["x", "y", "x"], distill=0.0, epochs=1, verbose=0, **option)


def test_every_averaged_member_learns_the_rows_and_the_copies(tmp_path, monkeypatch):
    import keras

    from sparktweet import sentence_encoder

    def by_first_word(texts):  # the fine-tuned encoder: the label each text's first word stands for
        first = {"good": 0, "bad": 1, "flight": 2}
        return np.eye(3, dtype="float32")[[first.get((t.split() or ["flight"])[0], 2) for t in texts]]

    fitted = []
    real_fit = keras.Model.fit

    def spy(self, x=None, y=None, **kwargs):
        fitted.append(len(x))
        return real_fit(self, x, y, **kwargs)

    monkeypatch.setattr(sentence_encoder, "SentenceEncoder", fake_encoder(by_first_word))
    monkeypatch.setattr(keras.Model, "fit", spy)
    texts = ["good great thanks so much", "bad awful not late again", "flight today when is it"] * 20
    tokens = [t.split() for t in texts]
    labels = ["positive", "negative", "neutral"] * 20
    clf, history = TextClassifier.train(tokens, labels, label_order=["positive", "negative", "neutral"], epochs=12, ensemble=2,
                                        student=False, distill=1.0, teacher_encoder="default", teacher_finetune=1, teacher_weight=1.0,
                                        teacher_texts=texts, augment=3, augment_style="mix", embedding_dim=8, units=8,
                                        validation_fraction=0.0, verbose=0)
    assert fitted == [60 * 4, 60 * 4]  # each member: the 60 rows and their 3 copies each; no student
    assert {"member0_loss", "member1_loss"} <= set(history) and "student_loss" not in history
    assert clf.predict(tokens[:3])[0] == ["positive", "negative", "neutral"]
    clf.save(str(tmp_path))
    loaded = TextClassifier.load(str(tmp_path))
    assert sum(layer.name.startswith("lstm_") for layer in loaded.model.layers) == 2  # both members are saved
    assert loaded.predict(tokens[:3])[0] == ["positive", "negative", "neutral"]


def test_each_ensemble_member_can_learn_from_its_own_teacher(monkeypatch):
    from sparktweet import keras_io, sentence_encoder
    from sparktweet.sentiment import SentimentClassifier

    tuned_seeds, copy_seeds, members = [], [], []

    class Tuned:
        def __init__(self, seed):
            self.sure = np.eye(3, dtype="float32")[0 if seed == 13 else 2]  # teacher of seed 13: class 0; any other: class 2

        def predict_proba(self, texts):
            return np.tile(self.sure, (len(texts), 1))

    class Encoder:
        def __init__(self, path=None):
            pass

        def fine_tune(self, texts, y, num_classes, seed=13, **kwargs):
            tuned_seeds.append(seed)
            return Tuned(seed)

    real_augment, real_average = keras_io.augment_texts, keras_io._average

    def augment(texts, copies, seed=13, **kwargs):
        copy_seeds.append(seed)
        return real_augment(texts, copies, seed=seed, **kwargs)

    def average(models):
        members.extend(models)
        return real_average(models)

    monkeypatch.setattr(sentence_encoder, "SentenceEncoder", Encoder)
    monkeypatch.setattr(keras_io, "augment_texts", augment)
    monkeypatch.setattr(keras_io, "_average", average)
    texts = ["good great thanks", "bad awful late", "flight today when"] * 20
    tokens = [t.split() for t in texts]
    labels = ["negative", "neutral", "positive"] * 20
    answers = {}
    for per_member in (True, False):
        tuned_seeds.clear(), copy_seeds.clear(), members.clear()
        TextClassifier.train(tokens, labels, label_order=labels[:3], epochs=15, ensemble=2, distill=1.0, teacher_encoder="default",
                             teacher_finetune=1, teacher_weight=1.0, augment=1, augment_style="mix", embedding_dim=8, units=8,
                             validation_fraction=0.0, class_weight="none", teacher_per_member=per_member, verbose=0)
        x = keras_io.Vocabulary.build(tokens).encode(tokens[:3], 40)
        answers[per_member] = [set(np.asarray(m(x)).argmax(axis=1).tolist()) for m in members]
        assert tuned_seeds == copy_seeds == ([13, 1013] if per_member else [13])
    # Each member learnt what its own teacher wrote; without the option both learnt the first teacher.
    assert answers == {True: [{0}, {2}], False: [{0}, {0}]}
    assert SentimentClassifier(teacherPerMember=True).trainKwargs()["teacher_per_member"] is True
    assert SentimentClassifier().trainKwargs()["teacher_per_member"] is False


@pytest.mark.parametrize("option", [{"ensemble": 1}, {"distill": 0.0}, {"student": True}])
def test_a_teacher_per_member_needs_an_ensemble_with_a_teacher_and_no_student(option):
    kwargs = {"ensemble": 2, "distill": 0.5, "teacher_per_member": True, **option}
    with pytest.raises(ValueError, match="teacher_per_member needs an ensemble"):
        TextClassifier.train([["a"], ["b"], ["c"]], ["x", "y", "x"], epochs=1, verbose=0, **kwargs)
