"""Daemon configuration: TOML decoded straight into msgspec Structs.

Unknown keys are errors (a typo must not silently fall back to a default), and
every error names the offending key path, e.g. ``numbers[1].rate: Expected
float >= 0.001``. Secrets may be given inline, from an environment variable
(``*_env``) or from a file (``*_file``, e.g. a systemd ``LoadCredential``).
Secrets the daemon checks callers against must be strong (``secretpolicy``):
an empty or weak one is refused, naming the key, never showing the value.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from dispatcher.core import secretpolicy
from dispatcher.core.bucketing import BucketCountError, check_count
from dispatcher.core.channelspec.load import Registry, SpecError, load_registry
from dispatcher.core.channelspec.model import Spec
from dispatcher.core.decode_errors import key_first
from dispatcher.core.ssrf import RefusedURLError, check_host, check_syntax
from dispatcher.core.template_file import TemplateError, load_file

E164 = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]
AccountSid = Annotated[str, msgspec.Meta(pattern=r"^AC[0-9a-fA-F]{32}$")]
ApiKeySid = Annotated[str, msgspec.Meta(pattern=r"^SK[0-9a-fA-F]{32}$")]
ServiceSid = Annotated[str, msgspec.Meta(pattern=r"^MG[0-9a-fA-F]{32}$")]
PositiveRate = Annotated[float, msgspec.Meta(ge=0.001, le=100_000.0)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0)]
GraphVersion = Annotated[str, msgspec.Meta(pattern=r"^v[0-9]{1,3}\.[0-9]{1,2}$")]
WabaId = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,32}$")]


class ConfigError(Exception):
    """The configuration is invalid; the message names the key."""


class Secret(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A secret value: inline, from ``env`` (variable name) or from ``file`` (path)."""

    value: str | None = None
    env: str | None = None
    file: str | None = None

    def resolve(self, where: str) -> str:
        given = [k for k in ("value", "env", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"{where}: give exactly one of value, env, file")
        if self.value is not None:
            return self.value
        if self.env is not None:
            found = os.environ.get(self.env)
            if found is None:
                raise ConfigError(f"{where}.env: environment variable {self.env} is not set")
            return found
        assert self.file is not None
        try:
            return Path(self.file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{where}.file: cannot read {self.file}: {exc.strerror}") from exc

    def resolve_strong(self, where: str) -> str:
        """The value of a secret callers are checked against: refused if empty or weak."""
        value = self.resolve(where)
        reason = secretpolicy.weakness(value)
        if reason is not None:
            raise ConfigError(f"{where}: {reason}{self._source()}")
        return value

    def resolve_present(self, where: str) -> str:
        """The value of a credential we present upstream: refused only if empty."""
        value = self.resolve(where)
        if not value.strip():
            raise ConfigError(f"{where}: must not be empty{self._source()}")
        return value

    def _source(self) -> str:
        if self.env is not None:
            return f" (environment variable {self.env})"
        if self.file is not None:
            return f" (file {self.file})"
        return ""


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    listen: str = "127.0.0.1:8080"
    # The URL customers and WhatsApp use to reach this daemon (webhooks, media links).
    public_url: str | None = None
    graceful_timeout: Seconds = 5.0
    drain_timeout: Seconds = 10.0
    # A request body must arrive whole within this many seconds once read (else 408, connection closed).
    body_timeout: Annotated[float, msgspec.Meta(gt=0.0, le=600.0)] = 15.0
    # Open HTTP connections at most; more clients wait in the listen backlog (keep LimitNOFILE well above).
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    data_dir: str = "./var"
    # Buckets of a new data root (a power of two, one LMDB environment each; bucket = sha256(number) mod B).
    # Fixed once the root exists (recorded in it): unset means "as recorded", 1 for a new root;
    # a value that differs from the root's refuses to start (`wadispatch rebucket` changes it, offline).
    buckets: Annotated[int, msgspec.Meta(ge=1, le=65536)] | None = None
    # Per bucket (each bucket maps its own environment).
    map_size_mb: Annotated[int, msgspec.Meta(ge=1)] = 1024
    # When the map is full it doubles, up to this (0: never grows; a full map answers 503).
    map_max_mb: Annotated[int, msgspec.Meta(ge=0)] = 0
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 4096


class ApiKeyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """An API key of the account: HTTP Basic ``SK...:secret`` acts as the account."""

    sid: ApiKeySid
    secret: Secret
    friendly_name: str = ""


class AccountConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    sid: AccountSid
    auth_token: Secret
    friendly_name: str = ""
    api_keys: list[ApiKeyConfig] = []


class CloudConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A Cloud API (Graph) number: its id, system-user token, webhook secrets and Meta's limits."""

    phone_number_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,32}$")]
    # A system-user token (no login flow); re-read from env/file when Meta answers 190.
    access_token: Secret
    # Signs Meta's webhook POSTs (X-Hub-Signature-256) and answers the GET handshake.
    app_secret: Secret
    verify_token: Secret
    api_version: GraphVersion = "v23.0"
    # Per-number throughput (Meta: 80 messages/s by default, up to 1000 once upgraded).
    throughput: Annotated[float, msgspec.Meta(ge=0.001, le=1000.0)] = 80.0
    throughput_burst: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 80
    # The pace once Meta upgrades the number's throughput (webhook THROUGHPUT_UPGRADE, or its
    # ``throughput.level`` read as HIGH): 1,000 messages/s; the burst grows in proportion.
    throughput_upgraded: Annotated[float, msgspec.Meta(ge=0.001, le=1000.0)] = 1000.0
    # Unique business-initiated recipients per rolling 24 h (Meta's messaging tier).
    messaging_limit: Annotated[int, msgspec.Meta(ge=1)] | Literal["unlimited"] = 250
    # Messages per recipient: one every pair_interval seconds, with bursts of pair_burst.
    pair_interval: Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)] = 6.0
    pair_burst: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 45
    # Seconds between re-reads of access_token while Meta refuses it (error 190).
    token_recheck: Annotated[float, msgspec.Meta(gt=0.0)] = 30.0


class WabaConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A WhatsApp Business Account (WABA): the templates of its numbers are kept in sync with Meta.

    Numbers of the WABA name it with ``waba = "<id>"``; its templates serve the account's
    ``ContentSid``s and its Content API (``/v1/Content``).
    """

    id: WabaId
    # The Twilio-style account whose creates and Content API see this WABA's templates.
    account: AccountSid
    # A system-user token with whatsapp_business_management (templates are read and submitted with it).
    access_token: Secret
    graph_version: GraphVersion = "v23.0"
    # Graph's base URL (default https://graph.facebook.com); none with simulated = true.
    endpoint: str | None = None
    # Served by the daemon's embedded simulator (a sandbox WABA).
    simulated: bool = False
    # The Meta app's id: uploads of header media examples (``POST /{app-id}/uploads``) go through it.
    app_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,32}$")] | None = None
    # Seconds between full template syncs; the template webhooks update it in between.
    sync_interval: Annotated[float, msgspec.Meta(ge=10.0, le=7 * 86_400.0)] = 900.0
    # Queued messages of a template Meta paused or disabled: wait until it is approved again
    # (or their validity period ends), or fail at once (63027, the callback says why).
    on_paused: Literal["wait", "fail"] = "wait"
    # For numbers onboarded into this WABA at runtime (``wadispatch numbers``): Meta's app secret
    # (it signs their webhooks) and the verify token of the webhook handshake. A number in
    # [[numbers]] keeps its own (cloud.app_secret, cloud.verify_token).
    app_secret: Secret | None = None
    verify_token: Secret | None = None


# A number's setting of its channel kind: text, or a secret given as {value|env|file}.
SettingValue = str | Secret


class NumberConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One sender number and the API endpoint(s) that serve it."""

    number: E164
    account: AccountSid
    # "onprem", "cloud" (the hand-written WhatsApp channels) or the kind of a channel spec
    # (shipped, or in [channels] spec_dir): "vonage-sms", "twilio-sms", "line", ...
    channel: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{0,39}$")] = "onprem"
    # A spec channel's settings (its spec's [settings]: keys, tokens, ids), e.g.
    # ``settings = { api_key = "...", api_secret = { env = "VONAGE_SECRET" } }``.
    settings: dict[str, SettingValue] = {}
    # Base URLs of the number's WhatsApp API (on-prem webapp); empty with simulated = true.
    # A cloud number defaults to https://graph.facebook.com.
    endpoints: list[str] = []
    # Served by the daemon's embedded simulator (sandbox numbers).
    simulated: bool = False
    # A simulated number served as this many endpoints (multiconnect), like several ``endpoints``.
    simulated_endpoints: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    username: str = "admin"
    password: Secret | None = None
    # Shared secret in the path of the webhook URL WhatsApp posts to.
    webhook_secret: Secret | None = None
    rate: PositiveRate = 20.0
    burst: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 60
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 32
    # Pending messages held in memory at most; the rest wait in the LMDB outbox and are loaded in
    # order as these go. 4,096 is four seconds at Meta's highest throughput (1,000/s).
    outbox_window: Annotated[int, msgspec.Meta(ge=16, le=1_000_000)] = 4096
    request_timeout: Annotated[float, msgspec.Meta(gt=0.0)] = 10.0
    # Bytes of an API answer's body read at most (a larger one is refused unread, the connection
    # closed, and the send counted as ambiguous). Answers are small JSON; media are streamed apart.
    max_response_body: Annotated[int, msgspec.Meta(ge=4096, le=64 << 20)] = 1 << 20
    # Log in again when less than this remains of the token's life (On-Prem tokens last 7 days);
    # each number adds its own share of up to a quarter of the rest, so numbers refresh apart.
    token_refresh_before: Seconds = 86_400.0
    status_callback: str | None = None
    # Where inbound messages to this number are POSTed (Twilio's "A message comes in" URL).
    inbound_url: str | None = None
    # How WhatsApp's webhooks prove they come from this number's API: the secret in
    # the URL path (/webhooks/onprem/{digits}/{secret}) or in a header
    # (/webhooks/onprem/{digits} with ``webhook_header: secret``).
    webhook_auth: Literal["path", "header"] = "path"
    webhook_header: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9-]{1,64}$")] = "X-Webhook-Secret"
    # Transient failures: full-jitter exponential backoff per message, then failed.
    backoff_base: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 0.5
    backoff_cap: Annotated[float, msgspec.Meta(gt=0.0, le=86_400.0)] = 60.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 12
    # A send whose answer was lost may have reached WhatsApp: send it again
    # ("retry": at-least-once) or record it failed ("fail": at-most-once).
    on_ambiguous: Literal["retry", "fail"] = "retry"
    # Refuse free-form messages outside the customer's 24 h window at create (63016).
    # Default: on, except for simulated (sandbox) numbers.
    enforce_window: bool | None = None
    # A free-form message refused for the 24 h window (63016) goes out as this template
    # (ContentSid) instead, its body as the variable window_variable: a linked fallback message.
    window_template: ContentSid | None = None
    window_variable: TemplateVariable = "1"

    # Cloud API only (channel = "cloud"); see CloudConfig.
    cloud: CloudConfig | None = None
    # The WhatsApp Business Account this number belongs to (an ``id`` of ``[[wabas]]``): its
    # templates are the ones this number sends.
    waba: WabaId | None = None


class ChannelsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Channel kinds beyond the shipped ones: a directory of spec files (``*.toml``)."""

    spec_dir: str | None = None


class MediaConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Inbound media downloads (``GET .../Media/{MediaSid}``), streamed from the number's API."""

    # Downloads at once, per number and in all: one more is refused at once (429), never queued.
    per_number: Annotated[int, msgspec.Meta(ge=1, le=1_000)] = 4
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 32
    # Seconds for a whole download, from the request to the last byte relayed to the client.
    deadline: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 300.0


class CallbacksConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Delivery of status callbacks and inbound webhooks to customer URLs."""

    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    per_destination: Annotated[int, msgspec.Meta(ge=1, le=1_000)] = 4
    lane_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    timeout: Annotated[float, msgspec.Meta(gt=0.0)] = 10.0
    backoff_initial: Annotated[float, msgspec.Meta(gt=0.0)] = 1.0
    backoff_max: Annotated[float, msgspec.Meta(gt=0.0)] = 600.0
    give_up_after: Annotated[float, msgspec.Meta(gt=0.0)] = 4 * 3600.0
    poll_interval: Annotated[float, msgspec.Meta(gt=0.0)] = 0.25
    # Addresses or CIDRs that callback URLs may reach although private/loopback (SSRF guard).
    allow_private: list[str] = []


ContentSid = Annotated[str, msgspec.Meta(pattern=r"^HX[0-9a-fA-F]{32}$")]
TemplateVariable = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_]{1,64}$")]
# Twilio and WhatsApp error codes are five or six digits; Meta's own run to seven.
ErrorCode = Annotated[int, msgspec.Meta(ge=1, le=9_999_999)]
FALLBACK_MAX_AFTER = 86_400.0


class FallbackConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A service's fallback (``[services.fallback]``): a second message when the first cannot make it.

    ``from`` (another number of the account, an SMS one typically) sends it when the first
    fails with one of ``error_codes``, or has not reached ``await`` ("delivered" or "sent")
    within ``after`` seconds. ``window_template`` (a ContentSid) stands in, from the same
    number, for a free-form message refused for the 24 h window (63016), its body as the
    template variable ``window_variable``.
    """

    from_: E164 | None = msgspec.field(default=None, name="from")
    error_codes: list[ErrorCode] = []
    after: Annotated[float, msgspec.Meta(gt=0.0, le=FALLBACK_MAX_AFTER)] | None = None
    await_: Literal["delivered", "sent"] = msgspec.field(default="delivered", name="await")
    window_template: ContentSid | None = None
    window_variable: TemplateVariable = "1"


class ServiceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A Messaging Service (``MessagingServiceSid``): a pool of the account's sender numbers."""

    sid: ServiceSid
    account: AccountSid
    numbers: list[E164]
    friendly_name: str = ""
    status_callback: str | None = None
    fallback: FallbackConfig | None = None


class MessagingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # Twilio's Body limit is 1600; raise it to accept longer bodies, which go out
    # split into WhatsApp-sized (4096) segments.
    max_body: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 1600
    # WhatsApp templates (ContentSid -> namespace/name/language/body), see dispatcher/messages/templates.py.
    templates_file: str | None = None


class WebhooksConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """WhatsApp's webhooks to us: statuses parked until their channel id is known, per number."""

    orphan_limit: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 10_000  # oldest leave first
    orphan_ttl: Annotated[float, msgspec.Meta(gt=0.0, le=30 * 86_400.0)] = 3600.0  # seconds


class SimulatorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The embedded WhatsApp API simulator that serves ``simulated`` numbers."""

    listen: str = "127.0.0.1:0"
    rate: PositiveRate = 20.0
    burst: Annotated[int, msgspec.Meta(ge=1)] = 60
    webhook_batch: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    # Walk every accepted message through sent/delivered/read webhooks on its own;
    # false leaves statuses to the control API (POST /_sim/status), for tests.
    status_webhooks: bool = True


class LogConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"


class AdminConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The operators' API under ``/admin/v1``: its own bearer token, never an account's."""

    # Without a token every admin route answers 403: the admin API is off.
    token: Secret | None = None
    # Require the admin token on /metrics too (Prometheus: ``authorization: {credentials: ...}``).
    protect_metrics: bool = False


class SupervisorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How a crashed number actor is restarted, and when a crash loop marks it degraded."""

    restart_base: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 0.1  # first restart delay
    restart_max: Annotated[float, msgspec.Meta(gt=0.0, le=86_400.0)] = 30.0  # backoff cap
    stable_after: Annotated[float, msgspec.Meta(gt=0.0)] = 60.0  # a run this long resets the backoff
    crash_limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 5  # crashes within crash_window ...
    crash_window: Annotated[float, msgspec.Meta(gt=0.0)] = 60.0  # ... mark the number degraded
    degraded_retry: Annotated[float, msgspec.Meta(gt=0.0, le=86_400.0)] = 60.0  # restart delay while degraded


class WatchConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What the daemon does with Meta's word on its Cloud numbers (account webhooks, Graph)."""

    # Pause a number's sending while Meta reports it so (messages stay queued; it resumes when
    # Meta lifts it). Default: reported only (log, status, /metrics).
    pause_on: list[Literal["flagged", "restricted", "disabled"]] = []
    # Read each Cloud number's fields (tier, throughput, quality) and check the Graph version
    # once at start (a cold-path request per number, in the background).
    check_at_start: bool = True
    # Warn this many days before the configured Graph version stops working.
    version_warn_days: Annotated[int, msgspec.Meta(ge=0, le=3650)] = 90


class EtcdConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """etcd v3 (its JSON gateway) for ownership across hosts."""

    endpoints: list[str] = []  # http(s)://host:2379 of every member
    # The lease: a daemon that cannot renew it for ttl seconds loses its buckets to the others.
    ttl: Annotated[float, msgspec.Meta(ge=2.0, le=3600.0)] = 15.0
    # Sends stop this long before the lease could lapse (clock drift between this host and etcd).
    margin: Annotated[float, msgspec.Meta(ge=0.0)] = 1.0
    # A new owner waits this long after its claim before its first send.
    grace: Seconds = 2.0
    # Seconds one call to etcd may take, over every endpoint it tries.
    request_timeout: Annotated[float, msgspec.Meta(gt=0.0, le=60.0)] = 2.0
    # TLS: the cluster's CA, and a client certificate when etcd asks for one (--client-cert-auth).
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # etcd's own auth (etcdctl user add): the password through the credentials mechanism.
    username: str | None = None
    password: Secret | None = None


class ClusterConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Who owns a bucket when several processes (flock) or hosts (etcd) share the work."""

    backend: Literal["flock", "etcd"] = "flock"
    # etcd keys live under /wadispatch/{name}/: one etcd can serve several clusters.
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "default"
    # This daemon's id among the owners (default: host name and process id).
    owner_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")] | None = None
    # Where this daemon takes requests forwarded by the others (its own port, never shared).
    peer_listen: str = "127.0.0.1:0"
    # How the others reach peer_listen (default http://<peer_listen host>:<bound port>).
    advertise_url: str | None = None
    # Where this daemon takes forwarded requests over its lane (one multiplexed connection per
    # peer, straight into the front door's app; default: peer_listen's host, any free port).
    lane_listen: str | None = None
    # How the others reach lane_listen (default lane://<lane_listen host>:<bound port>).
    advertise_lane: str | None = None
    # flock: seconds between looks at who holds what (a dead process's buckets are taken this fast).
    poll_interval: Annotated[float, msgspec.Meta(gt=0.0, le=10.0)] = 0.25
    etcd: EtcdConfig = EtcdConfig()


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    server: ServerConfig = ServerConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    admin: AdminConfig = AdminConfig()
    store: StoreConfig = StoreConfig()
    log: LogConfig = LogConfig()
    simulator: SimulatorConfig | None = None
    callbacks: CallbacksConfig = CallbacksConfig()
    media: MediaConfig = MediaConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    accounts: list[AccountConfig] = []
    wabas: list[WabaConfig] = []
    numbers: list[NumberConfig] = []
    channels: ChannelsConfig = ChannelsConfig()
    messaging: MessagingConfig = MessagingConfig()
    services: list[ServiceConfig] = []
    watch: WatchConfig = WatchConfig()
    # Several processes or hosts sharing the buckets (absent: one daemon owns everything).
    cluster: ClusterConfig | None = None


_LISTEN = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>[0-9]{1,5})$")


def parse_listen(value: str, where: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ``("127.0.0.1", 8080)``; port 0 picks a free one."""
    match = _LISTEN.match(value)
    if not match or int(match["port"]) > 65535:
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
    return match["host"].strip("[]"), int(match["port"])


def validate(config: Config) -> Config:
    """Cross-field checks msgspec cannot express; raises ConfigError naming the key."""
    parse_listen(config.server.listen, "server.listen")
    _validate_cluster(config)
    if config.store.map_max_mb and config.store.map_max_mb < config.store.map_size_mb:
        raise ConfigError(f"store.map_max_mb: must be 0 or at least map_size_mb ({config.store.map_size_mb})")
    if config.store.buckets is not None:
        try:
            check_count(config.store.buckets)
        except BucketCountError as exc:
            raise ConfigError(f"store.buckets: {exc}") from None
    if config.supervisor.restart_max < config.supervisor.restart_base:
        raise ConfigError(
            f"supervisor.restart_max: must be at least restart_base ({config.supervisor.restart_base})"
        )
    if config.simulator is not None:
        parse_listen(config.simulator.listen, "simulator.listen")
    if config.admin.token is not None:
        config.admin.token.resolve_strong("admin.token")
    elif config.admin.protect_metrics:
        raise ConfigError("admin.protect_metrics: needs admin.token")
    sids: set[str] = set()
    key_sids: set[str] = set()
    for i, account in enumerate(config.accounts):
        if account.sid in sids:
            raise ConfigError(f"accounts[{i}].sid: duplicate account {account.sid}")
        sids.add(account.sid)
        account.auth_token.resolve_strong(f"accounts[{i}].auth_token")
        for j, api_key in enumerate(account.api_keys):
            if api_key.sid in key_sids:
                raise ConfigError(f"accounts[{i}].api_keys[{j}].sid: duplicate API key {api_key.sid}")
            key_sids.add(api_key.sid)
            api_key.secret.resolve_strong(f"accounts[{i}].api_keys[{j}].secret")
    wabas = _validate_wabas(config, sids)
    registry = channel_registry(config)
    seen: set[str] = set()
    for i, num in enumerate(config.numbers):
        where = f"numbers[{i}]"
        if num.number in seen:
            raise ConfigError(f"{where}.number: duplicate number {num.number}")
        seen.add(num.number)
        if num.account not in sids:
            raise ConfigError(f"{where}.account: no account {num.account} in [[accounts]]")
        if num.simulated:
            if config.simulator is None:
                raise ConfigError(f"{where}.simulated: needs a [simulator] section")
            if num.endpoints:
                raise ConfigError(f"{where}.endpoints: a simulated number takes no endpoints")
        elif num.simulated_endpoints != 1:
            raise ConfigError(f"{where}.simulated_endpoints: only for a simulated number")
        elif not num.endpoints and num.channel == "onprem":
            raise ConfigError(f"{where}.endpoints: at least one endpoint URL is required")
        for j, url in enumerate(num.endpoints):
            if not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
                raise ConfigError(f"{where}.endpoints[{j}]: not an http(s) URL: {url!r}")
        if num.waba is not None:
            if num.waba not in wabas:
                raise ConfigError(f"{where}.waba: no WABA {num.waba} in [[wabas]]")
            if wabas[num.waba].account != num.account:
                raise ConfigError(
                    f"{where}.waba: WABA {num.waba} belongs to account {wabas[num.waba].account}, "
                    f"not to {num.account}"
                )
        if num.backoff_base > num.backoff_cap:
            raise ConfigError(f"{where}.backoff_base: must not exceed backoff_cap ({num.backoff_cap})")
        for key in ("status_callback", "inbound_url"):
            _check_callback_url(getattr(num, key), f"{where}.{key}")
        if num.channel == "cloud":
            _validate_cloud(num, where)
            continue
        if num.channel != "onprem":
            _validate_spec_number(num, where, registry, config.server.public_url)
            continue
        if num.settings:
            raise ConfigError(f"{where}.settings: only for a channel spec kind, not {num.channel!r}")
        if num.cloud is not None:
            raise ConfigError(f'{where}.cloud: only for channel = "cloud"')
        if num.password is None:
            raise ConfigError(f"{where}.password: required (the API user's password)")
        num.password.resolve_present(f"{where}.password")
        if num.webhook_secret is None:
            raise ConfigError(f"{where}.webhook_secret: required (it authenticates WhatsApp's webhooks)")
        num.webhook_secret.resolve_strong(f"{where}.webhook_secret")
    for i, entry in enumerate(config.callbacks.allow_private):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ConfigError(f"callbacks.allow_private[{i}]: not an address or CIDR: {entry!r}") from exc
    _validate_services(config)
    if config.messaging.templates_file:
        try:
            load_file(config.messaging.templates_file)
        except TemplateError as exc:
            raise ConfigError(f"messaging.templates_file: {exc}") from exc
    return config


def _validate_wabas(config: Config, accounts: set[str]) -> dict[str, WabaConfig]:
    """``[[wabas]]``: unique ids, a known account, a token, and where their Graph API is."""
    wabas: dict[str, WabaConfig] = {}
    for i, waba in enumerate(config.wabas):
        where = f"wabas[{i}]"
        if waba.id in wabas:
            raise ConfigError(f"{where}.id: duplicate WABA {waba.id}")
        wabas[waba.id] = waba
        if waba.account not in accounts:
            raise ConfigError(f"{where}.account: no account {waba.account} in [[accounts]]")
        waba.access_token.resolve_present(f"{where}.access_token")
        for key in ("app_secret", "verify_token"):
            secret: Secret | None = getattr(waba, key)
            if secret is not None:
                secret.resolve_strong(f"{where}.{key}")
        if (waba.app_secret is None) != (waba.verify_token is None):
            raise ConfigError(
                f"{where}.app_secret: give both app_secret and verify_token (onboarding needs both)"
            )
        if waba.simulated:
            if config.simulator is None:
                raise ConfigError(f"{where}.simulated: needs a [simulator] section")
            if waba.endpoint is not None:
                raise ConfigError(f"{where}.endpoint: a simulated WABA takes no endpoint")
        elif waba.endpoint is not None and not re.match(r"^https?://[^/\s]+/?$", waba.endpoint):
            raise ConfigError(f"{where}.endpoint: not an http(s) base URL: {waba.endpoint!r}")
    return wabas


def waba_base_url(waba: WabaConfig) -> str:
    """Where a non-simulated WABA's Graph API lives."""
    return (waba.endpoint or GRAPH_URL).rstrip("/")


def channel_registry(config: Config) -> Registry:
    """The channel kinds this configuration can name: the shipped specs and ``channels.spec_dir``'s.

    Raises:
        ConfigError: a spec that cannot be used (naming its file and key).
    """
    try:
        return load_registry(config.channels.spec_dir)
    except SpecError as exc:
        raise ConfigError(f"channels.spec_dir: {exc}") from exc


def _validate_spec_number(num: NumberConfig, where: str, registry: Registry, public_url: str | None) -> None:
    """A number of a spec kind: its settings are the spec's, secrets present, an endpoint known."""
    loaded = registry.get(num.channel)
    if loaded is None:
        kinds = ", ".join(["onprem", "cloud", *registry.kinds])
        raise ConfigError(f"{where}.channel: no channel kind {num.channel!r} (known: {kinds})")
    spec = loaded.spec
    for key in ("password", "webhook_secret", "cloud", "waba"):
        if getattr(num, key) is not None:
            raise ConfigError(
                f"{where}.{key}: not for a {num.channel} number (its spec's settings say what it needs)"
            )
    for key, value in num.settings.items():
        setting = spec.settings.get(key)
        if setting is None:
            known = ", ".join(sorted(spec.settings)) or "none"
            raise ConfigError(
                f"{where}.settings.{key}: unknown setting of {num.channel} (its settings: {known})"
            )
        if isinstance(value, Secret):
            value.resolve_present(f"{where}.settings.{key}")
        elif setting.secret and not value.strip():
            raise ConfigError(f"{where}.settings.{key}: must not be empty")
    for key, setting in spec.settings.items():
        if setting.required and key not in num.settings:
            raise ConfigError(
                f"{where}.settings.{key}: required by {num.channel} ({setting.description or key})"
            )
    if num.simulated and spec.simulator is None:
        raise ConfigError(f"{where}.simulated: the {num.channel} spec has no [simulator] section")
    if not num.simulated and not num.endpoints and spec.base_url is None:
        raise ConfigError(f"{where}.endpoints: the {num.channel} spec names no base_url: give the API's URL")
    if not num.simulated and public_url is None and _needs_status_url(spec):
        raise ConfigError(
            f"{where}.channel: {num.channel} sends our webhook URL with each message ({{status_url}}): "
            "set server.public_url"
        )


def _needs_status_url(spec: Spec) -> bool:
    """A send body names ``{status_url}`` as a value that must be there (not ``{status_url?}``)."""
    kinds = (spec.send.text, spec.send.media, spec.send.template)
    return any("{status_url}" in msgspec.json.encode(k.body).decode() for k in kinds if k is not None)


def _validate_cloud(num: NumberConfig, where: str) -> None:
    cloud = num.cloud
    if cloud is None:
        raise ConfigError(f'{where}.cloud: required for channel = "cloud" (phone_number_id, tokens)')
    defaults = NumberConfig(number=num.number, account=num.account)
    for key in ("rate", "burst"):
        if getattr(num, key) != getattr(defaults, key):
            raise ConfigError(
                f"{where}.{key}: a cloud number's pace is cloud.throughput{'_burst' * (key == 'burst')}"
            )
    if num.password is not None:
        raise ConfigError(f"{where}.password: a cloud number uses cloud.access_token, not a login")
    cloud.access_token.resolve_present(f"{where}.cloud.access_token")
    for key in ("app_secret", "verify_token"):
        secret: Secret = getattr(cloud, key)
        secret.resolve_strong(f"{where}.cloud.{key}")


def cloud_base_url(num: NumberConfig) -> str:
    """Where a non-simulated cloud number's Graph API lives."""
    return num.endpoints[0] if num.endpoints else GRAPH_URL


GRAPH_URL = "https://graph.facebook.com"


def _validate_services(config: Config) -> None:
    owner = {num.number: num.account for num in config.numbers}
    seen: set[str] = set()
    for i, service in enumerate(config.services):
        where = f"services[{i}]"
        if service.sid in seen:
            raise ConfigError(f"{where}.sid: duplicate service {service.sid}")
        seen.add(service.sid)
        if not any(a.sid == service.account for a in config.accounts):
            raise ConfigError(f"{where}.account: no account {service.account} in [[accounts]]")
        if not service.numbers:
            raise ConfigError(f"{where}.numbers: a service needs at least one sender number")
        for j, number in enumerate(service.numbers):
            if owner.get(number) != service.account:
                raise ConfigError(f"{where}.numbers[{j}]: {number} is not a number of {service.account}")
        _check_callback_url(service.status_callback, f"{where}.status_callback")
        if service.fallback is not None:
            _validate_fallback(service.fallback, service.account, owner, f"{where}.fallback")
            if service.fallback.from_ in service.numbers:
                raise ConfigError(
                    f"{where}.fallback.from: {service.fallback.from_} is a sender of the service itself;"
                    " a fallback comes from another number"
                )


def _validate_fallback(fallback: FallbackConfig, account: str, owner: dict[str, str], where: str) -> None:
    """A fallback names a sender of the account when it needs one, and a condition for it."""
    condition = bool(fallback.error_codes) or fallback.after is not None
    if fallback.from_ is None:
        if condition:
            raise ConfigError(f"{where}.from: error_codes and after need a fallback sender")
        if fallback.window_template is None:
            raise ConfigError(f"{where}: give from (with error_codes or after) or window_template")
        return
    if owner.get(fallback.from_) != account:
        raise ConfigError(f"{where}.from: {fallback.from_} is not a number of {account}")
    if not condition:
        raise ConfigError(f"{where}: a fallback sender needs error_codes or after (when to fall back)")
    if len(set(fallback.error_codes)) != len(fallback.error_codes):
        raise ConfigError(f"{where}.error_codes: a code is listed twice")


def _check_callback_url(url: str | None, where: str) -> None:
    """A configured callback URL: absolute http(s) with a host DNS can carry (as a create's
    StatusCallback, underscores allowed). The URL is not repeated: it may hold credentials."""
    if url is None:
        return
    try:
        parts = check_syntax(url)
        check_host(parts.hostname or "", strict=False)
    except RefusedURLError as exc:
        raise ConfigError(f"{where}: not a usable http(s) URL: {exc}") from None


def loads(text: str | bytes) -> Config:
    """Decode and validate TOML text."""
    try:
        config = msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(key_first(str(exc))) from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from exc
    return validate(config)


def load(path: str | os.PathLike[str]) -> Config:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {os.fspath(path)}: {exc.strerror}") from exc
    return loads(text)


def _validate_cluster(config: Config) -> None:
    cluster = config.cluster
    if cluster is None:
        return
    parse_listen(cluster.peer_listen, "cluster.peer_listen")
    if cluster.advertise_url is not None and not re.match(r"^https?://[^/\s]+$", cluster.advertise_url):
        raise ConfigError(
            f"cluster.advertise_url: expected http(s)://host:port, got {cluster.advertise_url!r}"
        )
    if cluster.lane_listen is not None:
        parse_listen(cluster.lane_listen, "cluster.lane_listen")
    if cluster.advertise_lane is not None and not re.match(
        r"^lane://[^/\s]+:[0-9]{1,5}$", cluster.advertise_lane
    ):
        raise ConfigError(
            f"cluster.advertise_lane: expected lane://host:port, got {cluster.advertise_lane!r}"
        )
    if cluster.backend != "etcd":
        return
    etcd = cluster.etcd
    if not etcd.endpoints:
        raise ConfigError("cluster.etcd.endpoints: the etcd backend needs at least one endpoint")
    for i, endpoint in enumerate(etcd.endpoints):
        if not re.match(r"^https?://[^/\s]+$", endpoint):
            raise ConfigError(f"cluster.etcd.endpoints[{i}]: expected http(s)://host:port, got {endpoint!r}")
    longest = max((num.request_timeout for num in config.numbers), default=0.0)
    if etcd.ttl <= etcd.margin + longest:
        raise ConfigError(
            f"cluster.etcd.ttl: must exceed margin + the longest numbers' request_timeout "
            f"({etcd.margin:g} + {longest:g} s): no send could start within the lease"
        )
    if (etcd.cert_file is None) != (etcd.key_file is None):
        raise ConfigError("cluster.etcd: give cert_file and key_file together")
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(etcd, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"cluster.etcd.{key}: no such file {path}")
    if (etcd.cert_file or etcd.ca_file) and not all(e.startswith("https://") for e in etcd.endpoints):
        raise ConfigError("cluster.etcd.endpoints: TLS files are set, so every endpoint must be https://")
    if (etcd.username is None) != (etcd.password is None):
        raise ConfigError("cluster.etcd: give username and password together")
    if etcd.password is not None:
        etcd.password.resolve_present("cluster.etcd.password")


def check_workers(config: Config, workers: int) -> None:
    """What ``--workers N`` needs of a config: one data root on this host, no fixed simulator port."""
    if config.cluster is not None and config.cluster.backend != "flock":
        raise ConfigError(
            f"cluster.backend: --workers {workers} shares one data root on this host, so it needs flock, "
            f"not {config.cluster.backend} (run one daemon per host under etcd)"
        )
    if config.simulator is not None and parse_listen(config.simulator.listen, "simulator.listen")[1] != 0:
        raise ConfigError(
            f"simulator.listen: every one of --workers {workers} would embed a simulator on that port; "
            "give port 0, or run `wadispatch simulate` apart and point the numbers at it"
        )
