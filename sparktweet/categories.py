"""Query categories loaded from ``conf/categories.yaml`` (no Spark, no TensorFlow)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from sparktweet.config import CONF_DIR
from sparktweet.errors import ConfigError

DEFAULT_CATEGORIES = CONF_DIR / "categories.yaml"
CROCKFORD_LETTERS = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    prefix: str
    keywords: tuple[str, ...] = field(default_factory=tuple)
    template: str = ""
    # Seed keywords for the circumstances of a complaint (waiting, hours, phoning) rather than its
    # subject: they seed the category like ``keywords`` but weigh less in the guided LDA.
    context_keywords: tuple[str, ...] = field(default_factory=tuple)


def parse_categories(items: Iterable[dict]) -> list[Category]:
    """Validate raw category dicts and return them as :class:`Category` objects."""
    out: list[Category] = []
    for i, item in enumerate(items):
        missing = [k for k in ("code", "name", "prefix") if not item.get(k)]
        if missing:
            raise ConfigError(f"Category #{i} lacks {', '.join(missing)}; each needs code, name and prefix.")
        prefix = str(item["prefix"]).upper()
        if not prefix.isalpha() or not 1 <= len(prefix) <= 5:
            raise ConfigError(f"Category {item['code']!r}: prefix must be 1-5 letters, found {prefix!r}.")
        out.append(
            Category(
                code=str(item["code"]),
                name=str(item["name"]),
                prefix=prefix,
                keywords=tuple(str(k).lower() for k in item.get("keywords") or ()),
                template=str(item.get("template") or ""),
                context_keywords=tuple(str(k).lower() for k in item.get("context_keywords") or ()),
            )
        )
    codes = [c.code for c in out]
    if len(set(codes)) != len(codes):
        raise ConfigError(f"Category codes must be unique, found {codes}.")
    prefixes = [c.prefix for c in out]
    if len(set(prefixes)) != len(prefixes):
        raise ConfigError(f"Category prefixes must be unique, found {prefixes}.")
    if not out:
        raise ConfigError("At least one category is required.")
    return out


def load_categories(path: str | os.PathLike[str] | None = None) -> list[Category]:
    """Read the categories file (default ``conf/categories.yaml``)."""
    p = Path(path) if path else DEFAULT_CATEGORIES
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"Categories file {p} does not exist.") from exc
    return parse_categories(data.get("categories") or [])
