"""Secrets from the environment or AWS Secrets Manager, never from config files.

Every part of sparktweet reads its secrets from environment variables (``X_USER_ACCESS_TOKEN``,
``SPARKTWEET_AGENT_TOKEN``, ``SPARKTWEET_DB_URL``...; see :func:`sparktweet.config.secret`). On AWS
they live in one Secrets Manager secret whose value is a JSON object of those variables; this
module fills the environment from it before the real command starts, so the code that uses a
secret does not know where it came from. A variable already set in the environment wins (an ECS
task definition's ``secrets`` or a developer's shell keep working).

The ``secrets`` section of the config chooses the source::

    secrets:
      source: aws               # env (default) | aws
      secret_id: sparktweet/prod
      region: null              # null: AWS_REGION / AWS_DEFAULT_REGION / the instance's region
      names: []                 # variables to take from the secret; empty: every key in it

``SPARKTWEET_SECRETS_SOURCE`` and ``SPARKTWEET_SECRET_ID`` override ``source`` and ``secret_id``
(a container image sets them per deployment without a new config file).

As a command wrapper (the container image's entrypoint)::

    python -m sparktweet.secret_store [--conf FILE] [--set key=value] -- sparktweet serve --host 0.0.0.0

Examples
--------
>>> env = {"SPARKTWEET_AGENT_TOKEN": "t" * 32}
>>> load_secrets({"secrets": {"source": "env"}}, env)  # nothing to fetch: the environment is the source
[]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from sparktweet.config import get, load_config
from sparktweet.errors import ConfigError

log = logging.getLogger(__name__)

SOURCE_ENV = "SPARKTWEET_SECRETS_SOURCE"
SECRET_ID_ENV = "SPARKTWEET_SECRET_ID"
SOURCES = ("env", "aws")


def secrets_client(region: str | None = None, endpoint_url: str | None = None) -> Any:
    """A boto3 Secrets Manager client (``endpoint_url`` for a local stand-in such as moto)."""
    try:
        import boto3
    except ImportError as exc:
        raise ConfigError("secrets.source is 'aws' but boto3 is not installed; pip install 'sparktweet[aws]'.") from exc
    return boto3.client("secretsmanager", region_name=region, endpoint_url=endpoint_url)


def get_secret(secret_id: str, key: str | None = None, *, client: Any = None, region: str | None = None) -> str:
    """Read a secret's string value from AWS Secrets Manager, or one key of its JSON object.

    Parameters
    ----------
    secret_id
        The secret's name or ARN.
    key
        When given, the secret must hold a JSON object and the value under ``key`` is returned.
    client
        A boto3 ``secretsmanager`` client (default: :func:`secrets_client` for ``region``).
    """
    client = client or secrets_client(region)
    try:
        response = client.get_secret_value(SecretId=secret_id)
    except client.exceptions.ResourceNotFoundException as exc:
        raise ConfigError(f"AWS secret {secret_id!r} does not exist; create it or set secrets.secret_id.") from exc
    value = response.get("SecretString")
    if value is None:
        raise ConfigError(f"AWS secret {secret_id!r} holds binary data; sparktweet expects a string or a JSON object.")
    if key is None:
        return value
    data = _as_object(secret_id, value)
    if key not in data:
        raise ConfigError(f"AWS secret {secret_id!r} has no key {key!r}; it has {sorted(data)}.")
    return str(data[key])


def _as_object(secret_id: str, value: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"AWS secret {secret_id!r} is not a JSON object of environment variables: {exc}.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"AWS secret {secret_id!r} must hold a JSON object, found {type(data).__name__}.")
    return data


def load_secrets(config: Mapping[str, Any], environ: MutableMapping[str, str] | None = None, *, client: Any = None) -> list[str]:
    """Fill ``environ`` (default ``os.environ``) from the configured secret source.

    Returns the names of the variables it set. With ``source: env`` nothing is read and nothing
    set. Variables already present in ``environ`` are left alone.
    """
    environ = os.environ if environ is None else environ
    source = environ.get(SOURCE_ENV) or get(config, "secrets.source", "env")
    if source not in SOURCES:
        raise ConfigError(f"secrets.source must be one of {', '.join(SOURCES)}, found {source!r}.")
    if source == "env":
        return []
    secret_id = environ.get(SECRET_ID_ENV) or get(config, "secrets.secret_id")
    if not secret_id:
        raise ConfigError(f"secrets.source is 'aws' but no secret is named; set secrets.secret_id or ${SECRET_ID_ENV}.")
    client = client or secrets_client(get(config, "secrets.region"))
    data = _as_object(secret_id, get_secret(secret_id, client=client))
    wanted = list(get(config, "secrets.names") or data)
    missing = [n for n in wanted if n not in data]
    if missing:
        raise ConfigError(f"AWS secret {secret_id!r} lacks {missing}, listed in secrets.names.")
    loaded = []
    for name in wanted:
        if name not in environ:
            environ[name] = str(data[name])
            loaded.append(name)
    # Names only: values never reach a log.
    log.info("loaded %d secret(s) from AWS secret %s: %s", len(loaded), secret_id, ", ".join(loaded) or "none")
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sparktweet.secret_store [--conf FILE] [--set k=v] -- COMMAND ...``: load, then exec."""
    parser = argparse.ArgumentParser(prog="python -m sparktweet.secret_store",
                                     description="Load secrets into the environment, then run COMMAND in their place.")
    parser.add_argument("--conf", action="append", default=[], metavar="FILE")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        load_secrets(load_config(args.conf, args.overrides))
    except ConfigError as exc:
        print(f"secret_store: {exc}", file=sys.stderr)
        return 2
    os.execvp(command[0], command)
    return 0  # not reached: execvp replaces this process


if __name__ == "__main__":
    sys.exit(main())
