"""The lab's HttpProxy logs: every request the lab's HTTPS endpoints answer, written as Exchange's front end writes
it, one folder per server: ``<root>/<server>/Logging/HttpProxy/<Protocol>/HttpProxy_<yyyyMMddHH>-1.LOG``.

The format follows real published files (Exchange 2016 CU23, https://artefacts.help/microsoft_exchange.html): the
plain CSV header line, then ``#Software``, ``#Version``, ``#Log-type: HttpProxy Logs``, ``#Date`` and ``#Fields``,
then one CSV line per request with CR LF. The field list is the lab's own copy (it never borrows the product's
parser), in Exchange's order. The UserAgent's commas are logged as spaces, as Exchange does ("(KHTML  like Gecko)").
"""

from __future__ import annotations

import csv
import io
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FIELDS = (
    "DateTime,RequestId,MajorVersion,MinorVersion,BuildVersion,RevisionVersion,ClientRequestId,Protocol,UrlHost,"
    "UrlStem,ProtocolAction,AuthenticationType,IsAuthenticated,AuthenticatedUser,Organization,AnchorMailbox,UserAgent,"
    "ClientIpAddress,ServerHostName,HttpStatus,BackEndStatus,ErrorCode,Method,ProxyAction,TargetServer,"
    "TargetServerVersion,RoutingType,RoutingHint,BackEndCookie,ServerLocatorHost,ServerLocatorLatency,RequestBytes,"
    "ResponseBytes,TargetOutstandingRequests,AuthModulePerfContext,HttpPipelineLatency,CalculateTargetBackEndLatency,"
    "GlsLatencyBreakup,TotalGlsLatency,AccountForestLatencyBreakup,TotalAccountForestLatency,"
    "ResourceForestLatencyBreakup,TotalResourceForestLatency,ADLatency,SharedCacheLatencyBreakup,"
    "TotalSharedCacheLatency,ActivityContextLifeTime,ModuleToHandlerSwitchingLatency,ClientReqStreamLatency,"
    "BackendReqInitLatency,BackendReqStreamLatency,BackendProcessingLatency,BackendRespInitLatency,"
    "BackendRespStreamLatency,ClientRespStreamLatency,KerberosAuthHeaderLatency,HandlerCompletionLatency,"
    "RequestHandlerLatency,HandlerToModuleSwitchingLatency,ProxyTime,CoreLatency,RoutingLatency,HttpProxyOverhead,"
    "TotalRequestTime,RouteRefresherLatency,UrlQuery,BackEndGenericInfo,GenericInfo,GenericErrors,EdgeTraceId,"
    "DatabaseGuid,UserADObjectGuid,PartitionEndpointLookupLatency,RoutingStatus"
).split(",")
# The folder (and Protocol value) Exchange logs each virtual directory under.
PROTOCOL_FOLDERS = {"mapi": "Mapi", "ews": "Ews", "oab": "Oab", "autodiscover": "Autodiscover",
                    "microsoft-server-activesync": "Eas", "rpc": "RpcHttp", "owa": "Owa", "ecp": "Ecp"}
SCHEMES = {"negotiate": "Negotiate", "ntlm": "NTLM", "basic": "Basic", "bearer": "Bearer", "kerberos": "Kerberos"}


def iso_ms(moment: datetime) -> str:
    """2023-01-09T19:00:00.130Z: Exchange's log time, UTC to the millisecond."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class HttpProxyLogs:
    """Thread-safe: the endpoint server's connection threads write through one instance."""

    def __init__(self, root: Path, builds: dict[str, tuple[int, int, int, int]]) -> None:
        self.root = root
        self.builds = builds            # server name -> (15, 2, 1544, 11)
        self._lock = threading.Lock()
        self._open: dict[Path, bool] = {}

    def version(self, server: str) -> tuple[int, int, int, int]:
        return self.builds.get(server, (15, 2, 1544, 11))

    def write(self, server: str, protocol: str, started: datetime, ended: datetime, values: dict[str, Any]) -> None:
        major, minor, build, revision = self.version(server)
        folder = self.root / server / "Logging" / "HttpProxy" / protocol
        path = folder / f"HttpProxy_{ended.astimezone(timezone.utc):%Y%m%d%H}-1.LOG"
        row = {name: "" for name in FIELDS}
        row.update(DateTime=iso_ms(ended), MajorVersion=major, MinorVersion=minor, BuildVersion=build,
                   RevisionVersion=revision, Protocol=protocol, ServerHostName=server)
        row.update({k: v for k, v in values.items() if k in row})
        row["UserAgent"] = str(row["UserAgent"]).replace(",", " ")
        core = "ProxyState-Run=None;" if row.get("ProxyAction") else "SharedCacheGuard=0;"
        row["GenericInfo"] = (f"BeginRequest={iso_ms(started)};CorrelationID=<empty>;{core}"
                              f"EndRequest={iso_ms(ended)};")
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerow([row[name] for name in FIELDS])
        with self._lock:
            new = not path.exists()
            if new:
                folder.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8", newline="") as handle:
                if new:
                    handle.write(self._header(major, minor, build, revision, ended))
                handle.write(buffer.getvalue())

    @staticmethod
    def _header(major: int, minor: int, build: int, revision: int, when: datetime) -> str:
        fields = ",".join(FIELDS)
        lines = [fields, "#Software: Microsoft Exchange Server",
                 f"#Version: {major:02d}.{minor:02d}.{build:04d}.{revision:03d}", "#Log-type: HttpProxy Logs",
                 f"#Date: {iso_ms(when)}", f"#Fields: {fields}"]
        return "\r\n".join(lines) + "\r\n"

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("HttpProxy_*.LOG")) if self.root.exists() else []
