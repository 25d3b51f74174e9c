"""Entra ID facts through Microsoft Graph (msgraph-sdk, azure-identity): the contract's graph.* sources per tenant."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import unquote, urlsplit

from hma_check.collect.graph.config import GraphTarget, secret_values
from hma_check.util.scrub import Scrubber
from hma_check.errors import ConfigError, HmaCheckError, one_line
from hma_check.contract.snapshot import SourceResult, iso_utc, utc_now
from hma_check.contract.sources import BY_NAME, PROPERTIES
from hma_check.util.json_file import loads_json_page

if TYPE_CHECKING:
    from msgraph import GraphServiceClient

EXO_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
# The tag every Application Proxy application's service principal carries; Microsoft finds the Hybrid Agent's
# application by it (https://learn.microsoft.com/exchange/troubleshoot/move-mailboxes/cannot-register-hybrid-agent).
APP_PROXY_TAG = "WindowsAzureActiveDirectoryOnPremApp"
# onPremisesPublishing (its externalUrl names the Hybrid Agent's endpoint) is a beta-only property of the application
# (https://learn.microsoft.com/graph/api/resources/onpremisespublishing?view=graph-rest-beta); it is read per
# application, as Graph does not return it in lists.
APPLICATION_SELECT = "id,appId,displayName,onPremisesPublishing"
# At most this many application reads at once per tenant: enough for hundreds of App Proxy apps, gentle on throttling.
APPLICATION_READS = 8
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Graph's largest page for /users; fewer round trips for a 50,000-user tenant (51 instead of 500).
USERS_PAGE_SIZE = 999
# A hostile or broken server could hand out nextLinks for ever; no real tenant needs more pages than this.
MAX_PAGES = 5000


@dataclass(frozen=True)
class Query:
    """One Graph read: the source it fills, the least permission it needs, and how to build its first request."""

    source: str
    permission: str
    build: Callable[["GraphServiceClient"], Any]  # client -> RequestInformation
    collection: bool
    # reads more for the items of the first request: (client, target, items) -> (items, what it sent)
    follow: Callable[..., Any] | None = None


def _config(query_parameters: Any) -> Any:
    from kiota_abstractions.base_request_configuration import RequestConfiguration

    return RequestConfiguration(query_parameters=query_parameters)


def _service_principal(client: "GraphServiceClient") -> Any:
    builder = client.service_principals_with_app_id(EXO_APP_ID)
    params = builder.ServicePrincipalsWithAppIdRequestBuilderGetQueryParameters(
        select=list(PROPERTIES["graph.exo_service_principal"]))
    return builder.to_get_request_information(_config(params))


def _app_proxy_service_principals(client: "GraphServiceClient") -> Any:
    builder = client.service_principals
    params = builder.ServicePrincipalsRequestBuilderGetQueryParameters(
        filter=f"tags/any(t:t eq '{APP_PROXY_TAG}')",
        select=["id", "appId", "displayName", "tags", "servicePrincipalNames", "homepage", "replyUrls", "logoutUrl"])
    return builder.to_get_request_information(_config(params))


async def _with_applications(client: Any, target: GraphTarget, service_principals: list[Any]) -> tuple[list, str]:
    """Each App Proxy service principal with its application's onPremisesPublishing (beta), read concurrently.

    An application that does not exist in the tenant (404) is recorded as null, so the check can say what it could
    not see; any other failure fails the source: a partial list must not pass.
    """
    from kiota_abstractions.method import Method
    from kiota_abstractions.request_information import RequestInformation
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    gate = asyncio.Semaphore(APPLICATION_READS)
    template = f"GET {target.beta_root}/applications(appId='<appId>')?$select={APPLICATION_SELECT}"

    async def one(sp: Any) -> dict[str, Any]:
        app_id = sp.get("appId") if isinstance(sp, dict) else None
        if not isinstance(app_id, str) or not _GUID.fullmatch(app_id):
            raise GraphQueryError(f"an Application Proxy service principal has no appId to read its application by "
                                  f"({str(sp)[:120]})")
        request = RequestInformation(Method.GET)
        request.url = f"{target.beta_root}/applications(appId='{app_id}')?$select={APPLICATION_SELECT}"
        request.headers.try_add("Accept", "application/json")
        async with gate:
            try:
                raw = await client.request_adapter.send_primitive_async(request, "bytes", {"XXX": ODataError})
            except ODataError as exc:
                if exc.response_status_code == 404:
                    return dict(sp, application=None)
                why = describe_error(exc, "Application.Read.All", target.tenant_id, PERMISSION_KIND[target.credential])
                raise GraphQueryError(f"{template.replace('<appId>', app_id)}: {why}") from None
        return dict(sp, application=_without_annotations(raw, _json(raw)))

    items = list(await asyncio.gather(*(one(sp) for sp in service_principals)))
    return items, f" (+{len(items)} {template})" if items else ""


def _organization(client: "GraphServiceClient") -> Any:
    params = client.organization.OrganizationRequestBuilderGetQueryParameters(
        select=list(PROPERTIES["graph.organization"]))
    return client.organization.to_get_request_information(_config(params))


def _domains(client: "GraphServiceClient") -> Any:
    params = client.domains.DomainsRequestBuilderGetQueryParameters(
        select=list(PROPERTIES["graph.domains"]))
    return client.domains.to_get_request_information(_config(params))


def _users(client: "GraphServiceClient") -> Any:
    params = client.users.UsersRequestBuilderGetQueryParameters(
        select=list(PROPERTIES["graph.users"]),
        top=USERS_PAGE_SIZE)
    return client.users.to_get_request_information(_config(params))


def _security_defaults(client: "GraphServiceClient") -> Any:
    return client.policies.identity_security_defaults_enforcement_policy.to_get_request_information()


def _conditional_access(client: "GraphServiceClient") -> Any:
    return client.identity.conditional_access.policies.to_get_request_information()


def _subscribed_skus(client: "GraphServiceClient") -> Any:
    return client.subscribed_skus.to_get_request_information()


# Least-privileged application permission per query (each API page's permissions table on
# https://learn.microsoft.com/graph/api/overview). Graph's 403 never names the permission, so the
# collector does. subscribedSkus' least permission is LicenseAssignment.Read.All, but it also accepts
# Organization.Read.All, which the scan needs anyway; asking for one permission less keeps the consent short.
QUERIES: tuple[Query, ...] = (
    Query("graph.exo_service_principal", "Application.Read.All", _service_principal, collection=False),
    Query("graph.app_proxy_applications", "Application.Read.All", _app_proxy_service_principals, collection=True,
          follow=_with_applications),
    Query("graph.organization", "Organization.Read.All", _organization, collection=True),
    Query("graph.domains", "Domain.Read.All", _domains, collection=True),
    Query("graph.users", "User.Read.All", _users, collection=True),
    Query("graph.security_defaults", "Policy.Read.All", _security_defaults, collection=False),
    Query("graph.conditional_access_policies", "Policy.Read.All", _conditional_access, collection=True),
    Query("graph.subscribed_skus", "Organization.Read.All", _subscribed_skus, collection=True),
)
REQUIRED_PERMISSIONS = tuple(dict.fromkeys(q.permission for q in QUERIES))


class GraphQueryError(HmaCheckError):
    """A query failed; the message is complete and printable (status, Graph's code, what to do), never a secret."""


# ---------------------------------------------------------------------------------------------- entry points

def run_graph(settings: Any, context: Any) -> list[SourceResult]:
    """The runner's entry (hma_check.collect.registry): secrets come from the environment, or in-process
    from ``context.secrets`` under the variable name the configuration gives (the demo lab's client secrets)."""
    environ = {**context.environ, **context.secrets}
    progress = context.progress("graph")
    progress.start(len(settings.targets) * len(QUERIES))
    try:
        return collect_graph(list(settings.targets), environ=environ,
                             on_result=lambda r: progress.advance(f"{r.name} {r.scope}", r.ok))
    finally:
        progress.finish()


def collect_graph(targets: list[GraphTarget], *, environ: Mapping[str, str] | None = None,
                  retry_delay: float = 3.0, max_retries: int = 3, signin_retries: int = 3,
                  credential_factory: Callable | None = None, prompt: Callable[[str], None] | None = None,
                  on_result: Callable[[SourceResult], None] | None = None) -> list[SourceResult]:
    """Read every ``graph.*`` source for every target tenant, concurrently; one result per source and tenant.

    A failure (no permission, throttled past the retries, unreachable, sign-in refused) becomes that source's error
    result, with the permission named where one is missing; the other sources are still collected.
    ``retry_delay``/``max_retries`` tune msgraph's retry handler (Retry-After always wins), ``signin_retries``
    azure-core's retries of connection failures towards the sign-in host.
    ``credential_factory(target, environ) -> TokenCredential`` replaces the credential built from the configuration
    (tests, embedding); ``on_result`` is called as each source completes (progress).
    """
    environ = os.environ if environ is None else environ
    check_environment(targets, environ)
    # azure-identity logs every refused sign-in at WARNING with the raw response; the failure is already recorded
    # in the sources, so the library's own messages would only duplicate it on stderr.
    azure_log = logging.getLogger("azure")
    if not azure_log.handlers:
        azure_log.addHandler(logging.NullHandler())
    if not targets:
        return []
    _settle_the_sdk()
    scrub = Scrubber(secret_values(targets, environ))
    factory = credential_factory or (
        lambda target, env: build_credential(target, env, prompt, retry_total=signin_retries))

    results: list[SourceResult] = []

    async def every_tenant() -> None:
        per_tenant = await asyncio.gather(*(
            _collect_tenant(t, environ, scrub, retry_delay, max_retries, factory, on_result) for t in targets))
        results.extend(result for tenant_results in per_tenant for result in tenant_results)

    # The results leave through the list, not as the main task's result: when asyncio.run puts the SIGINT handler
    # back, Python 3.11's signal module builds (and drops) an error message holding repr() of that handler, which
    # names the finished main task and so its result. With 50,000 users that repr took 0.3 s, twice per scan.
    asyncio.run(every_tenant())
    return results


_SDK_SETTLED = False
_SETTLING = threading.Lock()


def _settle_the_sdk() -> None:
    """Import msgraph-sdk, kiota and azure-identity, then move every object the process holds into the garbage
    collector's permanent generation; once per process.

    Those imports leave about 200,000 objects (classes, functions, module dicts) that live until the process ends,
    several times what hma-check itself holds. Every full collection walks them again: while they are imported,
    while a 50,000-user tenant is parsed (each page adds 999 dicts) and twice more when the interpreter exits. The
    collector is off while they are imported and they are frozen afterwards: 0.13 s of CPU less per 50,000-user
    collection, measured (benchmarks/README.md). Objects created later are collected as usual; what was garbage at
    that moment stays until the process ends, a one-time and bounded amount. An SDK that cannot be imported is
    left to build_client, which reports it on every source.
    """
    global _SDK_SETTLED
    with _SETTLING:
        if _SDK_SETTLED:
            return
        _SDK_SETTLED = True
        import gc

        enabled = gc.isenabled()
        gc.disable()
        try:
            import azure.identity  # noqa: F401 - for build_credential; imported here so that it is frozen too
            import httpx  # noqa: F401
            import kiota_authentication_azure.azure_identity_authentication_provider  # noqa: F401
            import kiota_http.kiota_client_factory  # noqa: F401
            import msgraph  # noqa: F401
            import msgraph_core  # noqa: F401
        except Exception:  # noqa: BLE001 - build_client reports a broken installation per source
            return
        finally:
            if enabled:
                gc.enable()
        gc.freeze()


def check_environment(targets: list[GraphTarget], environ: Mapping[str, str]) -> None:
    """Every secret the configuration names must be set before anything is sent: a usage error, not a finding."""
    for target in targets:
        # The variable's name is not repeated: a secret pasted into client_secret_env would be echoed with it.
        if target.credential == "client_secret" and not environ.get(target.client_secret_env or ""):
            raise ConfigError(f"graph: the client secret of tenant {target.tenant_id} is read from the environment "
                              "variable named by client_secret_env, which is not set")
        if target.certificate_password_env and target.certificate_password_env not in environ:
            raise ConfigError(f"graph: the certificate password of tenant {target.tenant_id} is read from the "
                              "environment variable named by certificate_password_env, which is not set")


# ---------------------------------------------------------------------------------------------- credentials

def build_credential(target: GraphTarget, environ: Mapping[str, str], prompt: Callable[[str], None] | None = None,
                     *, retry_total: int = 3) -> Any:
    """The azure-identity credential the configuration asks for (sync: one token request even under gather)."""
    import azure.identity as identity

    # The configured timeout bounds every sign-in request as it bounds every Graph request: azure-core's own
    # default is 300 s per connect and per read, so a sign-in host that accepts and never answers held the scan
    # for minutes per retry.
    common: dict[str, Any] = {"retry_total": retry_total, "connection_timeout": min(target.timeout, 30.0),
                              "read_timeout": target.timeout}
    if target.ca_bundle is not None:
        common["connection_verify"] = str(target.ca_bundle)
    signin: dict[str, Any] = dict(common, authority=target.authority_url)
    if target.custom_authority:
        # MSAL would ask login.microsoftonline.com to vouch for an unknown host (its instance discovery).
        signin["disable_instance_discovery"] = True
    kind = target.credential
    if kind == "client_secret":
        assert target.client_id is not None and target.client_secret_env is not None   # the config requires both
        return identity.ClientSecretCredential(target.tenant_id, target.client_id,
                                               environ[target.client_secret_env], **signin)
    if kind == "certificate":
        assert target.client_id is not None   # the config requires it
        password = environ.get(target.certificate_password_env) if target.certificate_password_env else None
        return identity.CertificateCredential(target.tenant_id, target.client_id,
                                              certificate_path=str(target.certificate_path),
                                              password=password.encode() if password else None, **signin)
    if kind == "device_code":
        def show(verification_uri: str, user_code: str, expires_on: Any) -> None:
            (prompt or _stderr)(f"To sign in to tenant {target.tenant_id}, open {verification_uri} and enter the "
                                f"code {user_code}")

        extra: dict[str, Any] = {"client_id": target.client_id} if target.client_id else {}
        return identity.DeviceCodeCredential(tenant_id=target.tenant_id, prompt_callback=show, **extra, **signin)
    if kind == "azure_cli":
        return identity.AzureCliCredential(tenant_id=target.tenant_id)  # a subprocess: no HTTP options
    if kind == "managed_identity":
        extra = {"client_id": target.client_id} if target.client_id else {}
        return identity.ManagedIdentityCredential(**extra, **common)
    # The default chain: environment, workload identity, managed identity, Azure CLI... in azure-identity's order.
    extra = {"managed_identity_client_id": target.client_id} if target.client_id else {}
    return identity.DefaultAzureCredential(exclude_interactive_browser_credential=True, **extra, **signin)


def _stderr(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ the client

def build_client(target: GraphTarget, credential: Any, *, retry_delay: float = 3.0,
                 max_retries: int = 3) -> tuple[Any, Any]:
    """GraphServiceClient over our own httpx client with msgraph's default middleware (retries honour Retry-After).

    Returns the client and the httpx client it sends through (the caller closes it).
    """
    import ssl

    import httpx
    from kiota_authentication_azure.azure_identity_authentication_provider import \
        AzureIdentityAuthenticationProvider
    from kiota_http.kiota_client_factory import KiotaClientFactory
    from kiota_http.middleware import RetryHandler
    from kiota_http.middleware.options import RetryHandlerOption
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.graph_request_adapter import options as msgraph_default_options
    from msgraph_core import GraphClientFactory
    from msgraph_core.middleware import GraphTelemetryHandler
    from msgraph_core.middleware.options import GraphTelemetryHandlerOption

    verify: ssl.SSLContext | bool = True
    if target.ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(target.ca_bundle))
    http = httpx.AsyncClient(base_url=target.graph_root, verify=verify,
                             timeout=httpx.Timeout(target.timeout, connect=min(target.timeout, 30.0)),
                             event_hooks={"request": [refuse_all_but_get]})
    options = dict(msgraph_default_options)
    options[RetryHandlerOption.get_key()] = RetryHandlerOption(delay=retry_delay, max_retries=max_retries)
    # msgraph's default pipeline, with a retry handler that never waits past the section's timeout (below).
    middleware = [_retry_within(target.timeout, handler.options) if isinstance(handler, RetryHandler) else handler
                  for handler in KiotaClientFactory.get_default_middleware(options)]
    middleware.append(GraphTelemetryHandler(options=options.get(GraphTelemetryHandlerOption.get_key())))
    http = GraphClientFactory.create_with_custom_middleware(middleware, client=http)
    # Explicit scopes: without them kiota derives "https://<request host>/.default", wrong for a proxy or the lab.
    # allowed_hosts: the token is attached to the Graph host only, never to a host a forged nextLink points at.
    token_options = {"tenant_id": target.tenant_id} if target.credential in ("azure_cli", "default") else None
    auth = AzureIdentityAuthenticationProvider(credential, options=token_options, scopes=[target.scope],
                                               allowed_hosts=[urlsplit(target.graph_root).hostname or ""])
    adapter = GraphRequestAdapter(auth, client=http)
    # httpx adds a trailing '/' to base_url and kiota's templates add another ("v1.0//domains").
    adapter.base_url = target.graph_root
    return GraphServiceClient(request_adapter=adapter), http


_REQUEST_STARTED: "contextvars.ContextVar[float | None]" = contextvars.ContextVar("graph_request_started",
                                                                                  default=None)


def _retry_within(seconds: float, options: Any) -> Any:
    """msgraph's retry handler, except that a wait (Retry-After, or the backoff) that would end past ``seconds`` from
    the request's first attempt is not waited for: the throttled answer becomes the source's error at once.

    kiota honours Retry-After up to 180 s, three times: a Graph that answered Retry-After: 100 held one source for
    300 s, past any timeout the configuration sets.
    """
    from kiota_http.middleware import RetryHandler
    from kiota_http.middleware.options import RetryHandlerOption

    class RetryWithinTimeout(RetryHandler):
        async def send(self, request: Any, transport: Any) -> Any:
            token = _REQUEST_STARTED.set(time.monotonic())
            try:
                return await super().send(request, transport)
            finally:
                _REQUEST_STARTED.reset(token)

        def get_delay_time(self, retry_count: int, response: Any = None, delay: float = 3.0) -> float:
            wait = super().get_delay_time(retry_count, response, delay)
            started = _REQUEST_STARTED.get()
            if started is not None and time.monotonic() - started + wait > seconds:
                return RetryHandlerOption.MAX_DELAY   # the handler does not retry a delay this long
            return wait

    return RetryWithinTimeout(options=options)


# A token is taken again from the credential when it has less than this left, as azure-core's bearer token policy
# does (its default refresh margin).
TOKEN_REFRESH_MARGIN = 300.0


class _CredentialSlot:
    """Stands in for the credential until it is built, so every request (and its command text) exists even when
    building the credential itself fails (an unreadable certificate, a wrong PFX password).

    It also keeps the token it last got, as azure-core's bearer token policy does: kiota asks the credential for a
    token on every request, and azure-identity answers each time from MSAL's cache through a search of it, 0.17 ms
    a request (9 ms of a 50,000-user tenant's 51 pages). A token is reused only for the same scopes and options and
    while it has more than TOKEN_REFRESH_MARGIN seconds left; a request with claims (a Continuous Access Evaluation
    challenge) always goes to the credential and drops the kept token, which the challenge has just refused."""

    credential: Any = None

    def __init__(self) -> None:
        self._kept: tuple[Any, Any] | None = None   # (scopes and options, AccessToken)

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        if kwargs.get("claims"):
            self._kept = None
            return self.credential.get_token(*scopes, **kwargs)
        key = (scopes, sorted(kwargs.items()))
        kept = self._kept
        if kept is not None and kept[0] == key and kept[1].expires_on - time.time() > TOKEN_REFRESH_MARGIN:
            return kept[1]
        token = self.credential.get_token(*scopes, **kwargs)
        self._kept = (key, token)
        return token


async def _collect_tenant(target: GraphTarget, environ: Mapping[str, str], scrub: "Scrubber", retry_delay: float,
                          max_retries: int, credential_factory: Callable,
                          on_result: Callable[[SourceResult], None] | None) -> list[SourceResult]:
    started = utc_now()
    t0 = time.perf_counter()
    slot = _CredentialSlot()
    http = None
    commands = {q.source: BY_NAME[q.source].filled_by for q in QUERIES}

    async def fail_all(message: str) -> list[SourceResult]:
        await _close(slot.credential, http)
        failed = [SourceResult.error_result(q.source, scrub(message), command=commands[q.source],
                                            scope=target.tenant_id, started=iso_utc(started), duration_ms=_ms(t0))
                  for q in QUERIES]
        for result in failed:
            _report(on_result, result)
        return failed

    try:
        client, http = build_client(target, slot, retry_delay=retry_delay, max_retries=max_retries)
        requests = {q.source: _first_request(client, q) for q in QUERIES}
        commands = {source: _command(request) for source, request in requests.items()}
    except Exception as exc:  # noqa: BLE001 - e.g. a CA bundle that is not PEM: data for every source
        return await fail_all(f"cannot set up the Graph client for tenant {target.tenant_id}: "
                              f"{describe_error(exc, None)}")
    try:
        slot.credential = credential_factory(target, environ)
        # One token up front, off the event loop: the queries then share it from the cache, and a refused sign-in
        # is reported once per source with its AADSTS code instead of as one failure per query.
        kwargs: dict[str, Any] = {"enable_cae": True}
        if target.credential in ("azure_cli", "default"):
            kwargs["tenant_id"] = target.tenant_id
        await asyncio.to_thread(slot.credential.get_token, target.scope, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a sign-in failure is data for every source of this tenant
        return await fail_all(f"sign-in to tenant {target.tenant_id} failed: {describe_error(exc, None)}")

    async def query(q: Query) -> SourceResult:
        result = await _run_query(client, target, q, requests[q.source], scrub, commands[q.source])
        _report(on_result, result)
        return result

    try:
        return list(await asyncio.gather(*(query(q) for q in QUERIES)))
    finally:
        await _close(slot.credential, http)


def _report(on_result: Callable[[SourceResult], None] | None, result: SourceResult) -> None:
    if on_result is not None:
        try:
            on_result(result)
        except Exception:  # noqa: BLE001 - a progress display must never cost evidence
            pass


def _first_request(client: Any, query: Query) -> Any:
    request = query.build(client)
    client.request_adapter.set_base_url_for_request_information(request)
    return request


def _command(request: Any) -> str:
    # Kiota percent-encodes '$' and ','; the command shows the request as Graph's documentation writes it.
    return f"GET {unquote(request.url)}"


async def _close(credential: Any, http: Any) -> None:
    if http is not None:
        await http.aclose()
    close = getattr(credential, "close", None)
    if close is not None:
        result = close()
        if asyncio.iscoroutine(result):
            await result


async def refuse_all_but_get(request: Any) -> None:
    """The read-only promise in code, at the transport: nothing but a GET can leave for Graph, whatever builds it."""
    if request.method != "GET":
        raise GraphQueryError(f"hma-check sends Graph GET requests only, not {request.method} {request.url.path}")


async def _run_query(client: Any, target: GraphTarget, query: Query, request: Any, scrub: "Scrubber",
                     command: str | None = None) -> SourceResult:
    from kiota_abstractions.method import Method
    from kiota_abstractions.request_information import RequestInformation
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    started = utc_now()
    t0 = time.perf_counter()
    if command is None:   # kiota expands the request's URL template on every read of .url: ~1.5 ms
        command = _command(request)
    pages = 0

    def send(request: Any) -> Any:
        # The raw-bytes path keeps msgraph's builders, auth and middleware but skips its generated models:
        # parsing one directory entity into them costs about 2 s and 90 MB on first use.
        return client.request_adapter.send_primitive_async(request, "bytes", {"XXX": ODataError})

    def get(url: str) -> Any:
        request = RequestInformation(Method.GET)
        request.url = url
        request.headers.try_add("Accept", "application/json")
        return request

    try:
        items: list[Any] = []
        seen: set[str] = set()
        while True:
            raw = await send(request)
            pages += 1
            body = _json(raw)
            clean = _without_annotations(raw, body)
            if not query.collection:
                data: Any = clean
                break
            if not isinstance(clean.get("value"), list):
                raise GraphQueryError("Graph answered without a 'value' list")
            items.extend(clean["value"])
            next_link = body.get("@odata.nextLink")
            if not next_link:
                data = items
                break
            _check_next_link(next_link, target, seen)
            if pages >= MAX_PAGES:
                raise GraphQueryError(f"stopped after {MAX_PAGES} pages: Graph kept answering with a nextLink")
            request = get(next_link)
        if query.follow is not None:
            data, followed = await query.follow(client, target, data)
            command += followed
    except Exception as exc:  # noqa: BLE001 - one failed query is data; the others go on
        message = scrub(describe_error(exc, query.permission, target.tenant_id, PERMISSION_KIND[target.credential]))
        if pages:
            message += f" (on page {pages + 1})"
        return SourceResult.error_result(query.source, message, command=command, scope=target.tenant_id,
                                         started=iso_utc(started), duration_ms=_ms(t0))
    if pages > 1:
        command += f" (+{pages - 1} @odata.nextLink pages)"
    return SourceResult.ok_result(query.source, data, command=command, scope=target.tenant_id,
                                  started=iso_utc(started), duration_ms=_ms(t0))


def _ms(t0: float) -> int:
    return int((time.perf_counter() - t0) * 1000)


def _json(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        raise GraphQueryError("Graph answered with an empty body")
    try:
        body = loads_json_page(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise GraphQueryError(f"Graph answered with a body that is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise GraphQueryError("Graph answered with JSON that is not an object")
    return body


# A JSON escape that decodes to one of the characters of "@odata.": a key spelled with one escapes a byte count.
_ANNOTATION_ESCAPE = re.compile(rb"\\u00(?:40|6[14fF]|74|2[eE])")


def _without_annotations(raw: bytes, body: dict[str, Any]) -> dict[str, Any]:
    """``_strip_annotations(body)``, where ``body`` is the JSON of ``raw``, without walking every item when it need not.

    Graph annotates a page at its top level (@odata.context, @odata.nextLink). When "@odata." occurs in the raw text
    only as often as in those top-level keys, and no escape could spell it, no string below the top level holds it:
    the items are kept as parsed (a 999-user page is walked in C by the count instead of object by object in Python).
    """
    if (raw.count(b"@odata.") == sum(key.count("@odata.") for key in body)
            and not (b"\\" in raw and _ANNOTATION_ESCAPE.search(raw))):   # no backslash, no escape: no regex scan
        return {k: v for k, v in body.items() if "@odata." not in k}
    stripped: dict[str, Any] = _strip_annotations(body)
    return stripped


def _strip_annotations(obj: Any) -> Any:
    """Drop OData annotations at every depth: instance annotations ("@odata.type") and property annotations
    ("authenticationStrength@odata.context", which real conditionalAccessPolicy lists carry inside grantControls).
    The data keeps Graph's property names and nothing of the transport."""
    if isinstance(obj, dict):
        return {k: _strip_annotations(v) for k, v in obj.items() if "@odata." not in k}
    if isinstance(obj, list):
        return [_strip_annotations(v) for v in obj]
    return obj


def _check_next_link(link: str, target: GraphTarget, seen: set[str]) -> None:
    base, parts = urlsplit(target.graph_root), urlsplit(link)
    if (parts.scheme, parts.hostname, parts.port) != (base.scheme, base.hostname, base.port):
        raise GraphQueryError(f"refused an @odata.nextLink to another host ({parts.scheme}://{parts.hostname})")
    if link in seen:
        raise GraphQueryError("Graph returned the same @odata.nextLink twice; paging stopped to avoid a loop")
    seen.add(link)


# --------------------------------------------------------------------------------------------------- errors

# Who needs the permission depends on how the scan signed in: an app (application permission) or a person
# (delegated permission plus a directory role; https://learn.microsoft.com/graph/permissions-overview).
_PERMISSION_HINTS = {
    "application": "grant the app the Microsoft Graph application permission {permission} (admin consent required)",
    "delegated": "the signed-in account needs the Microsoft Graph delegated permission {permission} (consented) and "
                 "a directory role that can read it, such as Global Reader",
    "either": "grant the Microsoft Graph permission {permission} to the identity the default credential chain "
              "signed in with",
}
PERMISSION_KIND = {"client_secret": "application", "certificate": "application", "managed_identity": "application",
                   "device_code": "delegated", "azure_cli": "delegated", "default": "either"}


def _header(exc: Any, name: str) -> str | None:
    headers = getattr(exc, "response_headers", None) or {}
    for key, value in dict(headers).items():
        if str(key).lower() == name.lower():
            return str(value[0] if isinstance(value, (list, tuple)) and value else value)
    return None


def describe_error(exc: BaseException, permission: str | None, tenant_id: str | None = None,
                   permission_kind: str = "application") -> str:
    """One printable line: HTTP status, Graph's code and message, and what to do; never a traceback or a secret."""
    from azure.core.exceptions import ClientAuthenticationError
    from kiota_abstractions.api_error import APIError

    if isinstance(exc, GraphQueryError):
        return str(exc)
    if isinstance(exc, APIError):
        status = exc.response_status_code
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None)
        message = getattr(error, "message", None) or exc.message or str(exc)
        inner = getattr(error, "inner_error", None)
        request_id = getattr(inner, "request_id", None)
        text = f"HTTP {status}"
        text += f" {code}: {message}" if code else f": {message}"
        if request_id:
            text += f" (request-id {request_id})"
        if status == 403 and permission:
            text += " - " + _PERMISSION_HINTS[permission_kind].format(permission=permission)
            if code == "AccessDenied":
                # Conditional Access policies are readable only in tenants with Entra ID P1 or P2.
                text += "; the Conditional Access API also needs an Entra ID P1 or P2 licence in the tenant"
        elif status == 401:
            text += " - Graph refused the access token (wrong tenant, cloud or audience)"
        elif status == 429:
            retry_after = _header(exc, "Retry-After")
            text += " - throttled by Graph" + (f" (Retry-After: {retry_after[:20]})" if retry_after else "") + \
                "; hma-check waits it out only while the wait ends within the graph timeout, a few times at most"
        elif status == 404 and permission == "Application.Read.All":
            text += f" - the Office 365 Exchange Online service principal ({EXO_APP_ID}) does not exist in tenant " \
                    f"{tenant_id}"
        return one_line(text, 1000)
    if isinstance(exc, ClientAuthenticationError):
        message = exc.message or str(exc)
        match = re.search(r"AADSTS\d+:[^\r\n]*", message)
        return one_line(match.group(0) if match else message, 1000)
    import httpx

    if isinstance(exc, httpx.HTTPError):
        where = ""
        try:
            where = f" {exc.request.url.scheme}://{exc.request.url.host}:{exc.request.url.port or 443}"
        except RuntimeError:  # no request attached
            pass
        return one_line(f"cannot reach Graph{where}: {type(exc).__name__}: {str(exc) or 'no answer in time'}", 1000)
    return one_line(f"{type(exc).__name__}: {exc}", 1000)
