"""sparktweet: Spark-native triage of customer tweets.

The pipeline stages are importable from the package root; they are loaded lazily so that
``import sparktweet`` costs nothing for the dispatcher and web app, which never import pyspark.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_STAGES = {
    "TweetPreprocessor": "sparktweet.preprocessing",
    "SentimentClassifier": "sparktweet.sentiment",
    "SentimentModel": "sparktweet.sentiment",
    "TopicLabeler": "sparktweet.topics",
    "TopicLabelerModel": "sparktweet.topics",
    "TopicClassifier": "sparktweet.topics",
    "TopicModel": "sparktweet.topics",
    "EntityExtractor": "sparktweet.entities",
    "TicketGenerator": "sparktweet.tickets",
}

__all__ = sorted(_STAGES) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _STAGES.get(name)
    if module is None:
        raise AttributeError(f"module 'sparktweet' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
