#!/usr/bin/env python
"""Model quality on the shared split, beside a TF-IDF + logistic regression baseline, in one command.

    python benchmarks/quality.py [--data ../shared/data/Tweets.csv --split ../shared/data/split.csv] [--quick]

Runs in a plain Python process (no Spark session): the same library code the pipeline's stages
call (:class:`~sparktweet.text.TextPreprocessor`, :class:`~sparktweet.keras_io.TextClassifier`,
:class:`~sparktweet.lda.GuidedLda`, the evaluation helpers), configured from the stages' default
Params, so the figures are those of the shipped pipeline's recipe.

Protocol (issue 3): one row per tweet id (the first), the shared split's ``train`` part for every
fit, a validation part carved out of ``train`` (stratified by sentiment, identical texts kept on one
side) for every tuning decision, and the ``test`` part scored once at the end. ``negativereason``
is never a training input: it only scores the LDA labels. ``--eval validation`` reports on the
validation part instead of ``test`` (train = train minus validation): that is the mode used to tune.
One LSTM run moves by about 0.01 between seeds on this data: ``--seeds N`` trains the sentiment recipe
N times (seeds 13, 14, ...) and prints the mean, spread and range beside the headline figure, which
stays the shipped seed's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a fresh clone without installing the package

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from sparktweet.categories import load_categories
from sparktweet.evaluation import OBVIOUS_CATEGORY, classification_metrics, reason_agreement
from sparktweet.text import default_preprocessor

log = logging.getLogger("quality")

SENTIMENTS = ["negative", "neutral", "positive"]
FLOORS = {
    "sentiment_accuracy": 0.83,
    "sentiment_macro_f1": 0.78,
    "lda_agreement": 0.70,
    "topic_macro_f1": 0.80,
}
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "Tweets.csv"
DEFAULT_SPLIT = ROOT.parent / "shared" / "data" / "split.csv"


# --- data ---------------------------------------------------------------------------------------


def load_labelled(data: str | Path, split: str | Path) -> pd.DataFrame:
    """Tweets.csv joined with the split file: one row per tweet id (the first in the file)."""
    df = pd.read_csv(data, dtype=str, keep_default_na=False)
    df["tweet_id"] = df["tweet_id"].str.strip()
    df["negativereason"] = df["negativereason"].replace("", None)
    # Like sparktweet.records.first_per_tweet: repeated ids (155 in Tweets.csv) count once.
    df = df.drop_duplicates("tweet_id", keep="first")
    parts = pd.read_csv(split, dtype=str)
    parts["tweet_id"] = parts["tweet_id"].str.strip()
    parts["split"] = parts["split"].str.strip().str.lower()
    out = df.merge(parts[["tweet_id", "split"]], on="tweet_id", how="inner")
    if not {"train", "test"} <= set(out["split"]):
        raise SystemExit(f"{split} does not split {data} into train and test")
    return out.reset_index(drop=True)


def carve_validation(train: pd.DataFrame, fraction: float = 0.15, seed: int = 13) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``train`` into (fit, validation): stratified by sentiment, identical texts on one side only."""
    key = train["text"].str.lower().str.split().str.join(" ")
    first_label = train.groupby(key)["airline_sentiment"].first()
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for _, keys in first_label.groupby(first_label):
        texts = np.array(sorted(keys.index))
        rng.shuffle(texts)
        chosen.update(texts[: round(len(texts) * fraction)])
    in_val = key.isin(chosen)
    return train[~in_val].reset_index(drop=True), train[in_val].reset_index(drop=True)


# --- models -------------------------------------------------------------------------------------


def tfidf_lr(c: float = 3.0, weight: str | None = None):
    """TF-IDF word 1-2-grams + char_wb 2-5-grams on the raw lowercased text, then logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(lowercase=True, ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        TfidfVectorizer(lowercase=True, analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
    )
    return make_pipeline(features, LogisticRegression(C=c, class_weight=weight, max_iter=3000))


def reasons_reference(train: pd.DataFrame, evaluate: pd.DataFrame) -> dict[str, Any]:
    """A supervised reference for the LDA's pooled share: :func:`tfidf_lr` trained on the human reasons themselves.

    Trained on the ``train`` tweets whose reason is pooled, to predict that reason's obvious category (five
    choices, where the LDA has eight categories, every tweet and no labels), it scores the share of the pooled
    ``evaluate`` tweets put in their obvious category: roughly how far the text alone can agree with these
    human reasons.
    """
    fit = train[train["negativereason"].isin(list(OBVIOUS_CATEGORY))]
    scored = evaluate[evaluate["negativereason"].isin(list(OBVIOUS_CATEGORY))]
    truth = scored["negativereason"].map(OBVIOUS_CATEGORY).to_numpy()
    pred = tfidf_lr().fit(fit["text"], fit["negativereason"].map(OBVIOUS_CATEGORY)).predict(scored["text"])
    return {"pooled_share": float((pred == truth).mean()) if len(truth) else None, "n_train": len(fit), "n": len(truth)}


def tfidf_baseline(fit: pd.DataFrame, tune: pd.DataFrame | None, final_fit: pd.DataFrame, evaluate: pd.DataFrame,
                   quick: bool = False) -> dict[str, Any]:
    """TF-IDF word 1-2-grams + char_wb 2-5-grams on the raw lowercased text, logistic regression.

    C and the class weighting are chosen on ``tune`` (macro-F1 + accuracy) after fitting on ``fit``;
    the chosen setting is refitted on ``final_fit`` and scored once on ``evaluate``.
    """
    from sklearn.metrics import accuracy_score, f1_score

    grid = [(3.0, None), (3.0, "balanced"), (10.0, None), (10.0, "balanced")]
    if quick:
        grid = grid[:1]
    tried = []
    best = grid[0]
    if tune is not None and len(grid) > 1:
        scores = []
        for c, weight in grid:
            pred = tfidf_lr(c, weight).fit(fit["text"], fit["airline_sentiment"]).predict(tune["text"])
            acc = accuracy_score(tune["airline_sentiment"], pred)
            f1 = f1_score(tune["airline_sentiment"], pred, average="macro")
            tried.append({"C": c, "class_weight": weight, "val_accuracy": acc, "val_macro_f1": f1})
            scores.append(acc + f1)
            log.info("baseline C=%s class_weight=%s: validation accuracy %.3f macro-F1 %.3f", c, weight, acc, f1)
        best = grid[int(np.argmax(scores))]
    pred = tfidf_lr(*best).fit(final_fit["text"], final_fit["airline_sentiment"]).predict(evaluate["text"])
    metrics = classification_metrics(evaluate["airline_sentiment"].tolist(), list(pred), SENTIMENTS)
    metrics["chosen"] = {"C": best[0], "class_weight": best[1]}
    metrics["tuning"] = tried
    return metrics


def sentiment_lstm(train: pd.DataFrame, evaluate: pd.DataFrame, overrides: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The sentiment LSTM exactly as the training job's pipeline trains it, scored on ``evaluate``."""
    from sparktweet.config import load_config
    from sparktweet.keras_io import TextClassifier
    from sparktweet.sentiment import SentimentClassifier
    from sparktweet.training import build_pipeline

    # The training job's pipeline on the default config (conf/default.yaml: the sentiment LSTMs' epochs among others).
    stage = next(s for s in build_pipeline(load_config()).getStages() if isinstance(s, SentimentClassifier))
    overrides = dict(overrides)
    marks = bool(overrides.pop("keep_marks", stage.getOrDefault("keepMarks")))
    kwargs = {**stage.trainKwargs(), **overrides}
    if quick:  # the recipe's every part, cut short: 2 LSTM epochs, 1 teacher fine-tuning epoch, 2 copies per row, 2 LSTMs
        kwargs["epochs"] = min(int(kwargs["epochs"]), 2)
        kwargs["teacher_finetune"] = min(int(kwargs["teacher_finetune"]), 1)
        kwargs["augment"] = min(int(kwargs["augment"]), 2)
        kwargs["ensemble"] = min(int(kwargs["ensemble"]), 2)
    column = lstm_input_column(stage)
    if marks and column == "lstm_tokens":
        column = "lstm_mark_tokens"
    log.info("sentiment LSTM on %s: %s", column, kwargs)
    start = time.monotonic()
    texts, tokenize = None, None
    if column != "tokens":  # as the stage: the teacher reads the raw text when the LSTM does
        texts = train["text"].tolist()
        pre = default_preprocessor(keep_stop_words=True, keep_marks=column == "lstm_mark_tokens")

        def tokenize(rows):
            return [pre.tokenize(t) for t in rows]

    clf, history = TextClassifier.train(train[column].tolist(), train["airline_sentiment"].tolist(), SENTIMENTS, verbose=0,
                                        teacher_texts=texts, tokenize=tokenize, **kwargs)
    seconds = time.monotonic() - start
    pred, _ = clf.predict(evaluate[column].tolist())
    metrics = classification_metrics(evaluate["airline_sentiment"].tolist(), pred, SENTIMENTS)
    metrics.update(train_seconds=seconds, epochs_run=len(history.get("loss", [])), params=kwargs, input=column)
    return metrics


def lstm_input_column(stage) -> str:
    """Which token column of the frame the stage's LSTM reads (see :func:`add_tokens`)."""
    keep = stage.getOrDefault("keepStopWords") if stage.hasParam("keepStopWords") else False
    return "lstm_tokens" if keep else "tokens"


def add_tokens(df: pd.DataFrame) -> pd.DataFrame:
    """``tokens`` as TweetPreprocessor makes them, ``lstm_tokens`` with stop words kept, ``lstm_mark_tokens`` also marks."""
    df = df.copy()
    df["tokens"] = [default_preprocessor().tokenize(t) for t in df["text"]]
    df["lstm_tokens"] = [default_preprocessor(keep_stop_words=True).tokenize(t) for t in df["text"]]
    df["lstm_mark_tokens"] = [default_preprocessor(keep_stop_words=True, keep_marks=True).tokenize(t) for t in df["text"]]
    return df


def guided_lda(train: pd.DataFrame, evaluate: pd.DataFrame, overrides: dict[str, Any], quick: bool, categories: str | None = None):
    """The guided LDA exactly as ``TopicLabeler()`` trains it; labels for both parts and the scores."""
    from sparktweet.lda import GuidedLda
    from sparktweet.topics import TopicLabeler, context_tokens, seed_keywords

    kwargs = {**TopicLabeler().trainKwargs(), **overrides}
    if quick:
        kwargs["passes"] = min(int(kwargs["passes"]), 2)
    cats = load_categories(categories)
    seeds = seed_keywords(cats)
    start = time.monotonic()
    lda = GuidedLda.train(train["tokens"].tolist(), seeds, context=context_tokens(cats), **kwargs)
    seconds = time.monotonic() - start
    train_labels, _ = lda.label(train["tokens"].tolist())
    eval_labels, _ = lda.label(evaluate["tokens"].tolist())
    negatives = evaluate["negativereason"].notna().to_numpy()
    agreement = reason_agreement(evaluate.loc[negatives, "negativereason"].reset_index(drop=True),
                                 pd.Series(eval_labels, dtype="object")[negatives].reset_index(drop=True))
    docs = [t for t in train["tokens"] if t]
    coherence = lda.coherence(docs[:3000] if quick else docs, "c_v")
    result = {
        "agreement": agreement,
        "supervised_reference": reasons_reference(train, evaluate),
        "coherence_c_v": coherence,
        "top_words": {k: [w for w, _ in v] for k, v in lda.top_words(10).items()},
        "train_label_distribution": pd.Series(train_labels).value_counts().to_dict(),
        "train_seconds": seconds,
        "params": {k: v for k, v in kwargs.items() if k != "ignore"},
    }
    return result, train_labels, eval_labels


def topic_lstm(train: pd.DataFrame, train_labels: Sequence[str], evaluate: pd.DataFrame, eval_labels: Sequence[str],
               overrides: dict[str, Any], quick: bool, categories: str | None = None) -> dict[str, Any]:
    """The topic LSTM as ``TopicClassifier()`` trains it on the LDA labels, scored against the LDA labels of ``evaluate``."""
    from sparktweet.keras_io import TextClassifier
    from sparktweet.topics import TopicClassifier

    stage = TopicClassifier()
    kwargs = {**stage.trainKwargs(), **overrides}
    if quick:
        kwargs["epochs"] = min(int(kwargs["epochs"]), 2)
    column = lstm_input_column(stage)
    codes = [c.code for c in load_categories(categories)]
    start = time.monotonic()
    clf, history = TextClassifier.train(train[column].tolist(), list(train_labels), codes, verbose=0, **kwargs)
    seconds = time.monotonic() - start
    pred, _ = clf.predict(evaluate[column].tolist())
    metrics = classification_metrics(list(eval_labels), pred, codes)
    negatives = evaluate["negativereason"].notna().to_numpy()
    metrics["reason_agreement"] = reason_agreement(evaluate.loc[negatives, "negativereason"].reset_index(drop=True),
                                                   pd.Series(pred, dtype="object")[negatives].reset_index(drop=True))
    metrics.update(train_seconds=seconds, epochs_run=len(history.get("loss", [])), params=kwargs, input=column)
    return metrics


# --- report -------------------------------------------------------------------------------------


def seed_spread(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and macro-F1 of each seed's run, and their mean, standard deviation, min and max."""
    out: dict[str, Any] = {"runs": [{"seed": int(r["params"]["seed"]), "accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
                                    for r in runs]}
    for key in ("accuracy", "macro_f1"):
        values = np.array([r[key] for r in runs], dtype="float64")
        out[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "min": float(values.min()), "max": float(values.max())}
    return out


def verdict(value: float | None, floor: float, also_above: float | None = None) -> str:
    if value is None:
        return "n/a"
    ok = value >= floor and (also_above is None or value > also_above)
    return "PASS" if ok else "FAIL"


def render(results: dict[str, Any]) -> str:
    s, b = results.get("sentiment"), results.get("baseline")
    lda, topic = results.get("lda"), results.get("topic")
    rows: list[tuple[str, str, str, str, str]] = []

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    if s:
        rows.append(("sentiment accuracy (LSTM)", f(s["accuracy"]), f(b["accuracy"]) if b else "-",
                     f">= {FLOORS['sentiment_accuracy']:.2f} and > baseline",
                     verdict(s["accuracy"], FLOORS["sentiment_accuracy"], b["accuracy"] if b else None)))
        rows.append(("sentiment macro-F1 (LSTM)", f(s["macro_f1"]), f(b["macro_f1"]) if b else "-",
                     f">= {FLOORS['sentiment_macro_f1']:.2f} and > baseline",
                     verdict(s["macro_f1"], FLOORS["sentiment_macro_f1"], b["macro_f1"] if b else None)))
    spread = results.get("sentiment_seeds")
    if spread:
        for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            v = spread[key]
            rows.append((f"  sentiment {label} over {len(spread['runs'])} seeds: mean ± sd (min–max)",
                         f"{v['mean']:.3f} ± {v['std']:.3f} ({v['min']:.3f}–{v['max']:.3f})", "-", "reported", ""))
    if lda:
        agreement = lda["agreement"]
        reference = lda.get("supervised_reference") or {}
        rows.append(("LDA labels vs human reasons, pooled", f(agreement["pooled_share"]), f(reference.get("pooled_share")),
                     f">= {FLOORS['lda_agreement']:.2f}", verdict(agreement["pooled_share"], FLOORS["lda_agreement"])))
        for reason, row in agreement["per_reason"].items():
            pooled = reason in OBVIOUS_CATEGORY
            rows.append((f"  {reason} -> {row['category']} (n={row['n']})", f(row["share"]), "-", "pooled" if pooled else "not pooled", ""))
        rows.append(("LDA coherence c_v (train)", f(lda["coherence_c_v"]["overall"]), "-", "reported", ""))
    if topic:
        rows.append(("topic LSTM vs LDA labels, macro-F1", f(topic["macro_f1"]), "-", f">= {FLOORS['topic_macro_f1']:.2f}",
                     verdict(topic["macro_f1"], FLOORS["topic_macro_f1"])))
        rows.append(("topic LSTM vs LDA labels, accuracy", f(topic["accuracy"]), "-", "reported", ""))
        rows.append(("topic LSTM vs human reasons, pooled", f(topic["reason_agreement"]["pooled_share"]), "-", "reported", ""))
    widths = [max(len(r[i]) for r in rows + [("figure", "model", "TF-IDF+LR", "floor", "")]) for i in range(5)]
    header = ("figure", "model", "TF-IDF+LR", "floor", "")
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if lda and lda.get("supervised_reference"):
        ref = lda["supervised_reference"]
        lines.append(f"TF-IDF+LR beside the LDA row: supervised, trained on the human reasons of {ref['n_train']} pooled train tweets "
                     "(five obvious categories to choose from); the LDA learns without them.")
    return "\n".join(lines)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Tweets.csv (default: ../shared/data/Tweets.csv)")
    parser.add_argument("--split", default=str(DEFAULT_SPLIT), help="split.csv (default: ../shared/data/split.csv)")
    parser.add_argument("--quick", action="store_true", help="Small subsample and few epochs: checks the command works, figures mean nothing.")
    parser.add_argument("--eval", choices=["test", "validation"], default="test",
                        help="Report on the test part (default) or on the validation part carved from train (tuning).")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="Share of train carved out for validation.")
    parser.add_argument("--only", nargs="+", choices=["sentiment", "baseline", "lda", "topic"], help="Run only these parts.")
    parser.add_argument("--sentiment", nargs="*", default=[], metavar="KEY=VALUE", help="Override TextClassifier.train kwargs (tuning).")
    parser.add_argument("--lda", nargs="*", default=[], metavar="KEY=VALUE", help="Override GuidedLda.train kwargs (tuning).")
    parser.add_argument("--topic", nargs="*", default=[], metavar="KEY=VALUE", help="Override the topic LSTM's kwargs (tuning).")
    parser.add_argument("--categories", help="Categories file (default: conf/categories.yaml), for tuning seed keywords.")
    parser.add_argument("--seeds", type=int, default=1,
                        help="Train the sentiment recipe this many times (seeds seed, seed+1, ...) and report the spread; "
                             "the headline figure stays the first (the shipped seed). Use it before trusting a tuning gain.")
    parser.add_argument("--json", help="Also write every figure to this JSON file.")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("gensim", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    parts = set(args.only or ["sentiment", "baseline", "lda", "topic"])

    started = time.monotonic()
    df = load_labelled(args.data, args.split)
    train, test = df[df["split"] == "train"].reset_index(drop=True), df[df["split"] == "test"].reset_index(drop=True)
    fit, val = carve_validation(train, args.val_fraction)
    if args.eval == "validation":
        final_train, evaluate = fit, val
    else:
        final_train, evaluate = train, test
    if args.quick:
        final_train = final_train.sample(n=min(2000, len(final_train)), random_state=13).reset_index(drop=True)
        evaluate = evaluate.sample(n=min(600, len(evaluate)), random_state=13).reset_index(drop=True)
        fit = fit.sample(n=min(1500, len(fit)), random_state=13).reset_index(drop=True)
        val = val.sample(n=min(500, len(val)), random_state=13).reset_index(drop=True)
    final_train, evaluate = add_tokens(final_train), add_tokens(evaluate)
    log.info("train %d tweets, evaluate on %s: %d tweets (validation part: %d)", len(final_train), args.eval, len(evaluate), len(val))

    results: dict[str, Any] = {"eval": args.eval, "n_train": len(final_train), "n_eval": len(evaluate), "quick": args.quick}
    if "baseline" in parts:
        results["baseline"] = tfidf_baseline(fit, val, final_train, evaluate, quick=args.quick)
    if "sentiment" in parts:
        overrides = parse_overrides(args.sentiment)
        results["sentiment"] = sentiment_lstm(final_train, evaluate, overrides, args.quick)
        if args.seeds > 1:
            first = int(results["sentiment"]["params"]["seed"])
            runs = [results["sentiment"]] + [sentiment_lstm(final_train, evaluate, {**overrides, "seed": first + i}, args.quick)
                                             for i in range(1, args.seeds)]
            results["sentiment_seeds"] = seed_spread(runs)
    if parts & {"lda", "topic"}:
        results["lda"], train_labels, eval_labels = guided_lda(final_train, evaluate, parse_overrides(args.lda), args.quick, args.categories)
        if "topic" in parts:
            results["topic"] = topic_lstm(final_train, train_labels, evaluate, eval_labels, parse_overrides(args.topic), args.quick,
                                         args.categories)
    results["seconds"] = time.monotonic() - started
    results["load_average"] = os.getloadavg()

    print()
    print(f"Quality on the {args.eval} part ({len(evaluate)} tweets), trained on {len(final_train)} train tweets"
          + (" — QUICK RUN, figures not comparable to the floors" if args.quick else ""))
    print(render(results))
    if "sentiment" in results:
        print("\nsentiment LSTM per class (evaluated part):\n" + results["sentiment"]["report_text"].rstrip())
    if "lda" in results:
        print("\nLDA topics (top words): ")
        for name, words in results["lda"]["top_words"].items():
            print(f"  {name:24s} {' '.join(words)}")
    load = results["load_average"]
    print(f"\n{results['seconds']:.0f} s on {os.cpu_count()} cores, load average {load[0]:.1f} (machine shared with other work)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
