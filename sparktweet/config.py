"""The one config loader: YAML files in ``conf/`` plus dotted ``--set key=value`` overrides.

Secrets never come from these files; see :func:`secret`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from sparktweet.errors import ConfigError

# $SPARKTWEET_HOME names the folder holding conf/ (and var/, jars/) when the package is imported
# from a zip (spark-submit --py-files), whose parent is not a directory.
PROJECT_ROOT = Path(os.environ.get("SPARKTWEET_HOME") or Path(__file__).resolve().parent.parent).resolve()
CONF_DIR = PROJECT_ROOT / "conf"
DEFAULT_CONF = CONF_DIR / "default.yaml"


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"Config file {path} does not exist; pass an existing YAML file to --conf.") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping at the top level, found {type(data).__name__}.")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-typed value."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, found {item!r}.")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set expects a dotted key before '=', found {item!r}.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def load_config(files: Iterable[str | os.PathLike[str]] = (), overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Load ``conf/default.yaml``, then each file in ``files``, then the dotted overrides.

    Examples
    --------
    >>> cfg = load_config(overrides=["spark.master=local[2]", "train.epochs=2"])
    >>> cfg["spark"]["master"], cfg["train"]["epochs"]
    ('local[2]', 2)
    """
    config = _read_yaml(DEFAULT_CONF)
    for f in files:
        _merge(config, _read_yaml(Path(f)))
    for item in overrides:
        parts, value = parse_override(item)
        node = config
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:-1])} is a value, not a section.")
            node = child
        node[parts[-1]] = value
    return config


def get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """Read ``a.b.c`` from a nested config, or ``default`` when any part is missing."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def resolve_path(path: str | os.PathLike[str]) -> str:
    """Resolve a relative path against the project root when it does not exist from the cwd.

    URIs (``s3a://``, ``hdfs://``, ``file://``) are returned untouched.
    """
    text = os.fspath(path)
    if "://" in text or os.path.isabs(text) or os.path.exists(text):
        return text
    candidate = PROJECT_ROOT / text
    return str(candidate) if candidate.exists() else text


def secret(name: str, required: bool = True) -> str | None:
    """Read a secret from the environment only; never from config files."""
    value = os.environ.get(name)
    if required and not value:
        raise ConfigError(f"Environment variable {name} is not set; secrets are read from the environment only.")
    return value
