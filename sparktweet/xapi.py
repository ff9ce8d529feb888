"""A thin wrapper over ``tweepy.Client`` for the reply dispatcher: post a reply, find a posted one.

Errors are sorted into what the dispatcher does next:

- :class:`RateLimited` (HTTP 429): nothing was posted; wait until ``x-rate-limit-reset``.
- :class:`Ambiguous` (5xx, timeout, dropped connection): the post may or may not have been made,
  so the dispatcher looks for it (:meth:`XClient.find_reply`) before posting again.
- :class:`DuplicateContent` (403 "duplicate content"): X already holds this exact reply.
- :class:`Rejected` (other 4xx): X will never accept this post; retrying cannot help.

Credentials come from the environment only (:meth:`XClient.from_env`). tweepy's API host is fixed,
so ``api_base`` (config ``x.api_base``) redirects its requests to another origin, e.g. a staging
proxy or the local fake X API in the tests; tweepy's own HTTP code still runs.

Examples
--------
>>> XClient.credentials_present({"X_CONSUMER_KEY": "k"})
False
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import tweepy
from requests.adapters import HTTPAdapter

from sparktweet.errors import ConfigError, SparkTweetError

log = logging.getLogger(__name__)

OAUTH1_ENV = ("X_CONSUMER_KEY", "X_CONSUMER_SECRET", "X_ACCESS_TOKEN", "X_ACCESS_TOKEN_SECRET")
#: An OAuth 2.0 user-context access token (Authorization Code with PKCE), the alternative to OAuth 1.0a.
OAUTH2_USER_ENV = "X_USER_ACCESS_TOKEN"
TWEEPY_HOST = "https://api.twitter.com"


class XApiError(SparkTweetError):
    """A call to the X API failed; subclasses say whether and when to retry."""


class RateLimited(XApiError):
    """HTTP 429: nothing was posted. ``reset_at`` is the epoch second of ``x-rate-limit-reset``, if sent."""

    def __init__(self, message: str, reset_at: int | None) -> None:
        super().__init__(message)
        self.reset_at = reset_at


class Ambiguous(XApiError):
    """A 5xx, a timeout or a dropped connection: the post may have been made."""


class DuplicateContent(XApiError):
    """X refused the post as a duplicate of one the account already made."""


class Rejected(XApiError):
    """X refused the request for good (400, 401, 403, 404): retrying cannot help."""


class _TimeoutSession(requests.Session):
    """tweepy passes no timeout to requests; without one a stalled connection blocks forever."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, url, **kwargs)


class RedirectAdapter(HTTPAdapter):
    """Sends requests addressed to tweepy's fixed host to ``base`` (scheme://host:port) instead."""

    def __init__(self, base: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"x.api_base must be an http(s) origin like http://127.0.0.1:8081, found {base!r}.")
        self._scheme, self._netloc = parts.scheme, parts.netloc

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url)
        request.url = urlunsplit((self._scheme, self._netloc, parts.path, parts.query, parts.fragment))
        return super().send(request, **kwargs)


def _reply_parent(tweet: Any) -> str | None:
    for ref in getattr(tweet, "referenced_tweets", None) or []:
        kind = ref["type"] if isinstance(ref, Mapping) else getattr(ref, "type", None)
        if kind == "replied_to":
            return str(ref["id"] if isinstance(ref, Mapping) else ref.id)
    return None


class XClient:
    """Posts replies as the brand's account.

    Parameters
    ----------
    client
        A ``tweepy.Client`` with user-context credentials.
    user_auth
        True for OAuth 1.0a user tokens, False when ``client`` holds an OAuth 2.0 user access
        token as its bearer token.
    """

    def __init__(self, client: tweepy.Client, user_auth: bool = True) -> None:
        self.client = client
        self.user_auth = user_auth
        self._me: tuple[str, str] | None = None

    @staticmethod
    def credentials_present(env: Mapping[str, str] | None = None) -> bool:
        env = os.environ if env is None else env
        return bool(env.get(OAUTH2_USER_ENV)) or all(env.get(name) for name in OAUTH1_ENV)

    @classmethod
    def from_env(
        cls, timeout: float = 10.0, api_base: str | None = None, env: Mapping[str, str] | None = None
    ) -> XClient:
        """A client from ``X_CONSUMER_KEY``/``X_CONSUMER_SECRET``/``X_ACCESS_TOKEN``/``X_ACCESS_TOKEN_SECRET``
        (OAuth 1.0a) or ``X_USER_ACCESS_TOKEN`` (OAuth 2.0 user context)."""
        env = os.environ if env is None else env
        if env.get(OAUTH2_USER_ENV):
            client = tweepy.Client(bearer_token=env[OAUTH2_USER_ENV])
            user_auth = False
        elif all(env.get(name) for name in OAUTH1_ENV):
            client = tweepy.Client(*(env[name] for name in OAUTH1_ENV))
            user_auth = True
        else:
            raise ConfigError(
                "Live posting needs X credentials in the environment: "
                f"{', '.join(OAUTH1_ENV)} (OAuth 1.0a) or {OAUTH2_USER_ENV} (OAuth 2.0 user context)."
            )
        client.session = _TimeoutSession(timeout)
        if api_base:
            client.session.mount(TWEEPY_HOST, RedirectAdapter(api_base))
        return cls(client, user_auth=user_auth)

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(user_auth=self.user_auth, **kwargs)
        except tweepy.TooManyRequests as exc:
            raise RateLimited(f"{what}: HTTP 429 rate limited", getattr(exc, "reset_time", None)) from exc
        except tweepy.TwitterServerError as exc:
            raise Ambiguous(f"{what}: HTTP {exc.response.status_code} from X") from exc
        except tweepy.Forbidden as exc:
            text = " ".join(str(m) for m in exc.api_messages) or str(exc)
            if "duplicate" in text.lower():
                raise DuplicateContent(f"{what}: {text}") from exc
            raise Rejected(f"{what}: HTTP 403 {text}") from exc
        except tweepy.HTTPException as exc:
            code = exc.response.status_code
            text = " ".join(str(m) for m in exc.api_messages) or str(exc)
            if 400 <= code < 500 and code != 408:
                raise Rejected(f"{what}: HTTP {code} {text}") from exc
            raise Ambiguous(f"{what}: HTTP {code} {text}") from exc
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise Ambiguous(f"{what}: {type(exc).__name__}: {exc}") from exc

    def me(self) -> tuple[str, str]:
        """The authenticated account's (user id, username), fetched once."""
        if self._me is None:
            response = self._call("GET /2/users/me", self.client.get_me)
            self._me = (str(response.data.id), str(response.data.username))
        return self._me

    def post_reply(self, text: str, in_reply_to_tweet_id: str) -> str:
        """Post ``text`` as a reply; returns the new tweet's id."""
        response = self._call(
            f"reply to {in_reply_to_tweet_id}",
            self.client.create_tweet,
            text=text,
            in_reply_to_tweet_id=in_reply_to_tweet_id,
        )
        return str(response.data["id"])

    def find_reply(self, in_reply_to_tweet_id: str, since: _dt.datetime, max_pages: int = 5) -> str | None:
        """The id of a reply this account posted to ``in_reply_to_tweet_id`` since ``since``, or None.

        Used after an ambiguous failure, so a post that X did accept is recorded, not repeated.
        """
        user_id, _ = self.me()
        token = None
        start = since.astimezone(_dt.UTC).replace(microsecond=0) - _dt.timedelta(seconds=5)
        for _ in range(max_pages):
            response = self._call(
                f"GET /2/users/{user_id}/tweets",
                self.client.get_users_tweets,
                id=user_id,
                start_time=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                max_results=100,
                tweet_fields=["referenced_tweets", "created_at"],
                pagination_token=token,
            )
            for tweet in response.data or []:
                if _reply_parent(tweet) == str(in_reply_to_tweet_id):
                    return str(tweet.id)
            token = (response.meta or {}).get("next_token")
            if not token:
                return None
        return None
