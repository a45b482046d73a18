"""The filtered stream's rules (``/2/tweets/search/stream/rules``): list, add, delete, and sync
them with the ``x_rules`` setting.

What can be checked locally is checked before a request is sent (an empty rule, a rule longer
than ``x_rule_max_length``: 1,024 characters on pay-per-use access, 512 elsewhere, a value listed
twice); everything else is left to the server, whose error details are shown as it sent them.

    >>> plan_sync([StreamRule("1", "#happy", None)], [XRule(value="#happy", tag="joy")]).retag
    (StreamRule(id='1', value='#happy', tag=None),)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from happyhashtags.config import XRule
from happyhashtags.errors import ConfigError, SourceError
from happyhashtags.sources.x_protocol import (
    Problem,
    describe_problems,
    error_body_problems,
    http_error_message,
    scrub,
)

if TYPE_CHECKING:
    import httpx

    from happyhashtags.config import Settings

__all__ = [
    "RULES_PATH",
    "RulesChange",
    "RulesError",
    "StreamRule",
    "SyncPlan",
    "SyncResult",
    "XRulesClient",
    "plan_sync",
    "rules_client_from_settings",
    "validate_rules",
]

RULES_PATH = "/2/tweets/search/stream/rules"


class RulesError(SourceError):
    """The X API did not make the rule change asked for; the message holds its details."""


@dataclass(frozen=True, slots=True)
class StreamRule:
    """A rule as the server holds it."""

    id: str
    value: str
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class RulesChange:
    """What one add or delete request did (or, on a dry run, would do)."""

    dry_run: bool
    rules: tuple[StreamRule, ...] = ()
    created: int = 0
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """How to turn the server's rules into the wanted ones.

    Attributes:
        add: wanted rules the server lacks (re-tagged ones included).
        delete: server rules nobody wants any more (re-tagged ones included).
        keep: server rules that are wanted as they are.
        retag: server rules whose value is wanted with another tag; X cannot change a tag,
            so they are deleted and added again.
    """

    add: tuple[XRule, ...] = ()
    delete: tuple[StreamRule, ...] = ()
    keep: tuple[StreamRule, ...] = ()
    retag: tuple[StreamRule, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.add or self.delete)


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What `XRulesClient.sync` did."""

    plan: SyncPlan
    dry_run: bool
    deleted: RulesChange | None = None
    added: RulesChange | None = None


def validate_rules(rules: Sequence[XRule], *, max_length: int) -> None:
    """Check what can be checked without the server.

    Raises:
        ConfigError: a rule is empty or too long, or a value is listed twice.
    """
    seen: set[str] = set()
    for rule in rules:
        value = rule.value
        if not value.strip():
            raise ConfigError("a filtered-stream rule must not be empty")
        if len(value) > max_length:
            raise ConfigError(
                f"the rule {_short(value)} is {len(value):,} characters long; the limit is "
                f"{max_length:,} (x_rule_max_length: 1024 on pay-per-use access, 512 elsewhere)"
            )
        if value in seen:
            raise ConfigError(f"the rule {_short(value)} is listed twice")
        seen.add(value)


def plan_sync(current: Sequence[StreamRule], wanted: Sequence[XRule]) -> SyncPlan:
    """The changes that make `current` equal to `wanted` (same values with the same tags)."""
    wanted_by_value = {rule.value: rule for rule in wanted}
    current_values = {rule.value for rule in current}
    keep: list[StreamRule] = []
    delete: list[StreamRule] = []
    retag: list[StreamRule] = []
    for rule in current:
        want = wanted_by_value.get(rule.value)
        if want is None:
            delete.append(rule)
        elif (want.tag or None) != (rule.tag or None):
            delete.append(rule)
            retag.append(rule)
        else:
            keep.append(rule)
    retagged = {rule.value for rule in retag}
    add = [r for r in wanted if r.value not in current_values or r.value in retagged]
    return SyncPlan(tuple(add), tuple(delete), tuple(keep), tuple(retag))


class _Rule(msgspec.Struct):
    id: str
    value: str
    tag: str | None = None


class _Summary(msgspec.Struct):
    created: int = 0
    not_created: int = 0
    deleted: int = 0
    not_deleted: int = 0


class _Meta(msgspec.Struct):
    result_count: int = 0
    next_token: str | None = None
    summary: _Summary | None = None


class _Response(msgspec.Struct):
    data: list[_Rule] | None = None
    meta: _Meta | None = None
    errors: list[Problem] | None = None


_response_decoder = msgspec.json.Decoder(_Response)


class XRulesClient:
    """A client of the filtered stream's rules endpoints (app-only bearer token).

    Example::

        with XRulesClient(token=token, max_length=1024) as client:
            client.add([XRule(value="#happy lang:en", tag="happy")])
            print(client.list_rules())
    """

    def __init__(
        self,
        *,
        token: str,
        base_url: str = "https://api.x.com",
        max_length: int = 512,
        timeout: float = 30.0,
    ) -> None:
        import httpx

        from happyhashtags.sources.x_api import check_base_url, user_agent

        self.base_url = check_base_url(base_url)
        self.max_length = max_length
        self._token = token
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": user_agent()},
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"XRulesClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> XRulesClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def list_rules(self) -> list[StreamRule]:
        """Every rule on the server, in the server's order."""
        rules: list[StreamRule] = []
        params: dict[str, str] = {"max_results": "1000"}
        while True:
            response = self._call("GET", params=params)
            rules.extend(StreamRule(r.id, r.value, r.tag) for r in response.data or ())
            next_token = response.meta.next_token if response.meta else None
            if not next_token:
                return rules
            params["pagination_token"] = next_token

    def add(self, rules: Sequence[XRule], *, dry_run: bool = False) -> RulesChange:
        """Add `rules` (the server validates them all, and adds none if any is invalid).

        Raises:
            ConfigError: a rule fails the local checks (nothing is sent).
            RulesError: the server did not add them; the message has its details per rule.
        """
        validate_rules(rules, max_length=self.max_length)
        payload = {"add": [_rule_json(r) for r in rules]}
        response = self._call("POST", payload=payload, dry_run=dry_run)
        summary = response.meta.summary if response.meta else None
        if response.errors or (summary is not None and summary.not_created):
            raise RulesError(
                self._message("the X API did not add the rules", response.errors or [])
            )
        created = tuple(StreamRule(r.id, r.value, r.tag) for r in response.data or ())
        return RulesChange(dry_run, created, created=summary.created if summary else len(created))

    def delete(self, ids: Sequence[str], *, dry_run: bool = False) -> RulesChange:
        """Delete the rules with these `ids`.

        Raises:
            RulesError: some were not deleted (unknown ids, say); the others were.
        """
        if not ids:
            raise ConfigError("give at least one rule id to delete ('x-rules list' shows them)")
        payload = {"delete": {"ids": list(ids)}}
        response = self._call("POST", payload=payload, dry_run=dry_run)
        summary = response.meta.summary if response.meta else None
        if response.errors or (summary is not None and summary.not_deleted):
            done = summary.deleted if summary else 0
            raise RulesError(
                self._message(
                    f"the X API deleted {done} of {len(ids)} rules", response.errors or []
                )
            )
        return RulesChange(dry_run, deleted=summary.deleted if summary else len(ids))

    def sync(self, wanted: Sequence[XRule], *, dry_run: bool = False) -> SyncResult:
        """Make the server's rules equal to `wanted`: delete the others, then add the missing.

        On a dry run the server validates both requests (``dry_run=true``) and changes
        nothing; re-tagged rules cannot be checked that way (their value still exists), and
        need no check: the server accepted them before.

        Raises:
            ConfigError: a wanted rule fails the local checks (nothing is sent).
            RulesError: a request failed; the message says what was done before.
        """
        validate_rules(wanted, max_length=self.max_length)
        plan = plan_sync(self.list_rules(), wanted)
        deleted = added = None
        if plan.delete:
            deleted = self.delete([r.id for r in plan.delete], dry_run=dry_run)
        to_add = plan.add
        if dry_run:
            retagged = {r.value for r in plan.retag}
            to_add = tuple(r for r in plan.add if r.value not in retagged)
        if to_add:
            try:
                added = self.add(to_add, dry_run=dry_run)
            except RulesError as exc:
                if deleted is not None and not dry_run:
                    raise RulesError(f"{exc} (after deleting {deleted.deleted} rules)") from None
                raise
        return SyncResult(plan, dry_run, deleted, added)

    # -- HTTP --------------------------------------------------------------------------------

    def _call(
        self, method: str, *, params: dict[str, str] | None = None,
        payload: dict[str, Any] | None = None, dry_run: bool = False,
    ) -> _Response:  # fmt: skip
        import httpx

        query = dict(params or {})
        if dry_run:
            query["dry_run"] = "true"
        try:
            response = self._client.request(method, RULES_PATH, params=query, json=payload)
        except httpx.TransportError as exc:
            raise SourceError(
                f"cannot reach the X API at {self.base_url}: {exc or type(exc).__name__}"
            ) from None
        body = response.content
        try:
            parsed = _response_decoder.decode(body)
        except msgspec.DecodeError:
            parsed = None
        # Rule results come with a summary even when the status is 400: their per-rule errors
        # say more than the status does.
        has_summary = parsed is not None and parsed.meta is not None and parsed.meta.summary
        if response.is_success or (has_summary and response.status_code == 400):
            if parsed is None:
                raise SourceError(
                    f"the X API sent an unreadable answer ({response.status_code}): "
                    f"{describe_problems([], body=body)}"
                )
            return parsed
        raise SourceError(scrub(self._http_error(response), self._token))

    def _http_error(self, response: httpx.Response) -> str:
        status = response.status_code
        problems = error_body_problems(response.content)
        if status == 429:
            reset = response.headers.get("x-rate-limit-reset")
            details = describe_problems(problems, body=response.content)
            when = f"; the limit resets at epoch {reset}" if reset else ""
            return f"the X API rate-limited the rules request (429 {details}){when}: try later"
        return http_error_message(
            status,
            response.reason_phrase,
            problems,
            body=response.content,
            base_url=self.base_url,
        )

    def _message(self, heading: str, problems: list[Problem]) -> str:
        details = describe_problems(problems) or "no details"
        return scrub(f"{heading}: {details}", self._token)


def _rule_json(rule: XRule) -> dict[str, str]:
    out = {"value": rule.value}
    if rule.tag:
        out["tag"] = rule.tag
    return out


def _short(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def rules_client_from_settings(settings: Settings) -> XRulesClient:
    """A rules client with the token, base URL and rule length limit of `settings`."""
    from happyhashtags.sources.x_api import bearer_token

    return XRulesClient(
        token=bearer_token(settings),
        base_url=settings.x_api_base_url,
        max_length=settings.x_rule_max_length,
    )
