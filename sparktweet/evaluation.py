"""Evaluation report: data exploration, classifier metrics, confusion matrices, LDA topics and agreement."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame

from sparktweet.categories import load_categories

log = logging.getLogger(__name__)

# The category a human complaint reason of Tweets.csv obviously belongs to. Used only to validate
# the LDA labels, never as training input. "Customer Service Issue", "longlines" and "Can't Tell"
# are too broad to name one category and are reported but not pooled.
OBVIOUS_CATEGORY = {
    "Lost Luggage": "baggage",
    "Damaged Luggage": "baggage",
    "Cancelled Flight": "reschedule_refund",
    "Late Flight": "delay_customer_service",
    "Flight Booking Problems": "online_booking",
    "Bad Flight": "customer_experience",
    "Flight Attendant Complaints": "customer_experience",
}
EXTRA_REASONS = {"Customer Service Issue": "delay_customer_service", "longlines": "delay_customer_service"}


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "report": classification_report(y_true, y_pred, labels=labels, zero_division=0, output_dict=True),
        "report_text": classification_report(y_true, y_pred, labels=labels, zero_division=0, digits=3),
        "labels": labels,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def reason_agreement(reasons: pd.Series, predicted: pd.Series) -> dict[str, Any]:
    """Per human reason, the share of tweets whose predicted category is the obvious one."""
    rows = {}
    pooled_hits = pooled_n = 0
    for reason, category in {**OBVIOUS_CATEGORY, **EXTRA_REASONS}.items():
        mask = reasons == reason
        n = int(mask.sum())
        hits = int((predicted[mask] == category).sum())
        rows[reason] = {"category": category, "n": n, "share": hits / n if n else None,
                        "distribution": dict(Counter(predicted[mask]).most_common())}
        if reason in OBVIOUS_CATEGORY:
            pooled_hits, pooled_n = pooled_hits + hits, pooled_n + n
    return {"per_reason": rows, "pooled_share": pooled_hits / pooled_n if pooled_n else None, "pooled_n": pooled_n}


def _confusion_png(metrics: dict, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(metrics["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    labels = metrics["labels"]
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 3, 1.0 * len(labels) + 2.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _eda(train: pd.DataFrame, out: str) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eda: dict[str, Any] = {}
    balance = train["airline_sentiment"].value_counts()
    eda["class_balance"] = balance.to_dict()
    lengths = train["text"].str.len()
    tok_lengths = train["tokens"].map(lambda t: len(t) if t is not None else 0)
    eda["text_length"] = {"mean": float(lengths.mean()), "p50": float(lengths.median()), "p95": float(lengths.quantile(0.95)), "max": int(lengths.max())}
    eda["token_count"] = {"mean": float(tok_lengths.mean()), "p95": float(tok_lengths.quantile(0.95)), "max": int(tok_lengths.max())}
    per_airline = pd.crosstab(train["airline"], train["airline_sentiment"], normalize="index").round(3)
    eda["sentiment_per_airline"] = per_airline.to_dict(orient="index")
    top: dict[str, list] = {}
    for label, group in train.groupby("airline_sentiment"):
        counts: Counter[str] = Counter()
        for tokens in group["tokens"]:
            if tokens is not None:
                counts.update(t for t in tokens if t.isalpha() and len(t) > 2)
        top[str(label)] = counts.most_common(15)
    eda["top_words"] = top

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    balance.plot.bar(ax=axes[0], color=["#c0392b", "#7f8c8d", "#27ae60"][: len(balance)], title="Sentiment class balance (train)")
    axes[1].hist(lengths, bins=40, color="#2980b9")
    axes[1].set_title("Tweet length (characters)")
    per_airline.plot.barh(stacked=True, ax=axes[2], color=["#c0392b", "#7f8c8d", "#27ae60"], title="Sentiment per airline")
    axes[2].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "eda.png"), dpi=100)
    plt.close(fig)
    return eda


def _md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(model: PipelineModel, train_df: DataFrame, test_df: DataFrame, out: str, version: str,
                 config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Score the test part once and write ``report.md``, ``metrics.json`` and the PNGs into ``out``."""
    from sparktweet.topics import TopicLabelerModel

    os.makedirs(out, exist_ok=True)
    cols = ["tweet_id", "text", "airline", "airline_sentiment", "negativereason", "tokens", "topic_label", "category",
            "sentiment", "needs_ticket", "error"]
    test = model.transform(test_df).select(*cols).toPandas()
    prefix = PipelineModel(model.stages[:2])  # preprocessing + LDA labels, for EDA and coherence
    train = prefix.transform(train_df).select("text", "airline", "airline_sentiment", "tokens", "topic_label").toPandas()
    codes = [c.code for c in load_categories()]
    ok = test[test["error"].isna()]
    metrics: dict[str, Any] = {"version": version, "n_train": len(train), "n_test": len(test), "n_test_errors": int(test["error"].notna().sum())}
    metrics["sentiment"] = classification_metrics(ok["airline_sentiment"].tolist(), ok["sentiment"].tolist(), ["negative", "neutral", "positive"])
    metrics["topic_classifier_vs_lda"] = classification_metrics(ok["topic_label"].tolist(), ok["category"].tolist(), codes)
    negatives = ok[ok["negativereason"].notna()]
    metrics["lda_agreement"] = reason_agreement(negatives["negativereason"], negatives["topic_label"])
    metrics["classifier_agreement"] = reason_agreement(negatives["negativereason"], negatives["category"])
    lda_stage = next(s for s in model.stages if isinstance(s, TopicLabelerModel))
    lda = lda_stage.getLda()
    train_tokens = [list(t) for t in train["tokens"] if t is not None and len(t)]
    metrics["lda_topics"] = lda.top_words(10)
    metrics["lda_coherence_c_v"] = lda.coherence(train_tokens, "c_v")
    metrics["lda_label_distribution_train"] = train["topic_label"].value_counts().to_dict()
    metrics["eda"] = _eda(train, out)
    _confusion_png(metrics["sentiment"], "Sentiment (test split)", os.path.join(out, "confusion_sentiment.png"))
    _confusion_png(metrics["topic_classifier_vs_lda"], "Topic LSTM vs LDA labels (test split)", os.path.join(out, "confusion_topic.png"))
    with open(os.path.join(out, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2, sort_keys=True, default=str)
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write(render_markdown(metrics))
    log.info("report written to %s: sentiment accuracy %.3f, macro-F1 %.3f", out, metrics["sentiment"]["accuracy"], metrics["sentiment"]["macro_f1"])
    return metrics


def render_markdown(m: dict[str, Any]) -> str:
    s, t = m["sentiment"], m["topic_classifier_vs_lda"]
    eda = m["eda"]
    parts = [
        f"# sparktweet evaluation report — {m['version']}",
        "",
        f"Trained on {m['n_train']} tweets of the shared split's `train` part; every figure below is measured once on its "
        f"`test` part ({m['n_test']} tweets, {m['n_test_errors']} unscorable).",
        "",
        "## Data exploration (train)",
        "",
        "![class balance, lengths, sentiment per airline](eda.png)",
        "",
        _md_table(["class", "tweets"], [[k, v] for k, v in eda["class_balance"].items()]),
        "",
        f"Tweet length: mean {eda['text_length']['mean']:.0f} chars, p95 {eda['text_length']['p95']:.0f}, max {eda['text_length']['max']}; "
        f"tokens after preprocessing: mean {eda['token_count']['mean']:.1f}, p95 {eda['token_count']['p95']:.0f}.",
        "",
        "Sentiment per airline (share of the airline's tweets):",
        "",
        _md_table(["airline", "negative", "neutral", "positive"],
                  [[a, v.get("negative"), v.get("neutral"), v.get("positive")] for a, v in eda["sentiment_per_airline"].items()]),
        "",
        "Top words per class:",
        "",
        _md_table(["class", "words"], [[k, ", ".join(w for w, _ in v)] for k, v in eda["top_words"].items()]),
        "",
        "## Sentiment LSTM (test split)",
        "",
        f"Accuracy **{s['accuracy']:.3f}**, macro-F1 **{s['macro_f1']:.3f}** over {s['n']} tweets.",
        "",
        "```",
        s["report_text"].rstrip(),
        "```",
        "",
        "![sentiment confusion matrix](confusion_sentiment.png)",
        "",
        "## Topic LSTM against its LDA labels (test split)",
        "",
        f"Accuracy **{t['accuracy']:.3f}**, macro-F1 **{t['macro_f1']:.3f}**.",
        "",
        "```",
        t["report_text"].rstrip(),
        "```",
        "",
        "![topic confusion matrix](confusion_topic.png)",
        "",
        "## Guided LDA topics",
        "",
        f"Coherence c_v (train tokens): **{m['lda_coherence_c_v']['overall']:.3f}**.",
        "",
        _md_table(["topic", "c_v", "top words"],
                  [[k, m["lda_coherence_c_v"].get(k), ", ".join(w for w, _ in v)] for k, v in m["lda_topics"].items()]),
        "",
        "## LDA labels against the human complaint reasons (negative test tweets)",
        "",
        "The `negativereason` column validates the labels; it is never used for training. Pooled share over the reasons "
        f"with an obvious category: LDA labels **{_share(m['lda_agreement']['pooled_share'])}**, topic LSTM "
        f"**{_share(m['classifier_agreement']['pooled_share'])}** (n = {m['lda_agreement']['pooled_n']}).",
        "",
        _md_table(
            ["human reason", "obvious category", "tweets", "LDA share", "LSTM share"],
            [[r, v["category"], v["n"], v["share"], m["classifier_agreement"]["per_reason"][r]["share"]]
             for r, v in m["lda_agreement"]["per_reason"].items()],
        ),
        "",
    ]
    return "\n".join(parts)


def _share(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
