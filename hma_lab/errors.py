"""PowerShell and Exchange error records as the real endpoint sends them (texts, FullyQualifiedErrorIds, categories)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from psrpcore.types import ErrorCategory, ErrorCategoryInfo, ErrorRecord, NETException


class _CategoryInfo(ErrorCategoryInfo):
    """psrpcore drops the ':' PowerShell writes after the category name ("ObjectNotFound: (x:String) [], Reason")."""

    def __str__(self) -> str:
        return (f"{self.Category.name}: ({self.TargetName or ''}:{self.TargetType or ''}) "
                f"[{self.Activity or ''}], {self.Reason or ''}")


class CmdletError(Exception):
    """Raised inside a cmdlet: ``record`` goes to the client; ``terminating`` decides Failed versus an error stream entry."""

    def __init__(self, record: ErrorRecord, *, terminating: bool = True) -> None:
        super().__init__(str(record.Exception.Message))
        self.record = record
        self.terminating = terminating


def error_record(message: str, *, exception_type: str, category: ErrorCategory, reason: str, fqid: str,
                 target: str | None = None, target_type: str | None = "String", activity: str | None = None
                 ) -> ErrorRecord:
    exception = NETException(Message=message)
    exception.PSObject.type_names = [exception_type, "System.Exception", "System.Object"]
    return ErrorRecord(
        Exception=exception,
        CategoryInfo=_CategoryInfo(Category=category, Reason=reason, TargetName=target,
                                   TargetType=target_type if target is not None else None, Activity=activity),
        TargetObject=target,
        FullyQualifiedErrorId=fqid,
    )


def scripts_not_allowed(script: str) -> CmdletError:
    # A NoLanguage runspace refuses anything that is not a plain command: Command.CreateCommandProcessor throws a
    # ParseException "ScriptsNotAllowed" when IsScript is set (PowerShell engine source; Exchange's endpoint is NoLanguage).
    return CmdletError(error_record(
        "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode.",
        exception_type="System.Management.Automation.ParseException", category=ErrorCategory.ParserError,
        reason="ParseException", fqid="ScriptsNotAllowed", target=script))


def command_not_found(name: str) -> CmdletError:
    return CmdletError(error_record(
        f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable program. "
        "Check the spelling of the name, or if a path was included, verify that the path is correct and try again.",
        exception_type="System.Management.Automation.CommandNotFoundException", category=ErrorCategory.ObjectNotFound,
        reason="CommandNotFoundException", fqid="CommandNotFoundException", target=name))


def parameter_not_found(cmdlet: str, parameter: str) -> CmdletError:
    return CmdletError(error_record(
        f"A parameter cannot be found that matches parameter name '{parameter}'.",
        exception_type="System.Management.Automation.ParameterBindingException",
        category=ErrorCategory.InvalidArgument, reason="ParameterBindingException",
        fqid=f"NamedParameterNotFound,{cmdlet}", target=parameter))


def parameter_invalid(cmdlet: str, parameter: str, message: str) -> CmdletError:
    return CmdletError(error_record(
        f"Cannot bind parameter '{parameter}'. {message}",
        exception_type="System.Management.Automation.ParameterBindingException",
        category=ErrorCategory.InvalidArgument, reason="ParameterBindingException",
        fqid=f"CannotConvertArgumentNoMessage,{cmdlet}", target=parameter))


def exchange_fqid(server: str, failure_category: str, code: str, task: str) -> str:
    """Exchange prefixes its FullyQualifiedErrorId with the answering server, a request id and a time stamp."""
    stamp = datetime.now(timezone.utc).strftime("%m/%d/%Y %I:%M:%S %p")
    return (f"[Server={server},RequestId={uuid.uuid4()},TimeStamp={stamp}] "
            f"[FailureCategory=Cmdlet-{failure_category}] {code},{task}")


def object_not_found(identity: str, *, answering_server: str, domain_controller: str, task: str) -> CmdletError:
    # Exchange reports a missing object as a non-terminating error: the pipeline still completes, so a client that
    # checks only had_errors misses it (pypsrp sets had_errors only for a Failed pipeline).
    return CmdletError(error_record(
        f"The operation couldn't be performed because object '{identity}' couldn't be found on '{domain_controller}'.",
        exception_type="Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        category=ErrorCategory.NotSpecified, reason="ManagementObjectNotFoundException",
        fqid=exchange_fqid(answering_server, "ManagementObjectNotFoundException", "CE022D76", task),
        target=identity), terminating=False)


def cmdlet_failure(message: str, *, answering_server: str, task: str,
                   exception_type: str = "Microsoft.Exchange.Data.DataSourceOperationException") -> CmdletError:
    short = exception_type.rsplit(".", 1)[-1]
    return CmdletError(error_record(
        message, exception_type=exception_type, category=ErrorCategory.NotSpecified, reason=short,
        fqid=exchange_fqid(answering_server, short, "A5E0C1F2", task), target=None))


def throttled(user: str, limit: int, period_seconds: int, wait_ms: int) -> CmdletError:
    # The text of Exchange's PowerShellMaxCmdlets budget (ThrottlingPolicy); the client sees it as a failed pipeline.
    return CmdletError(error_record(
        f"The WS-Management service cannot process the request. The user load quota of {limit} requests per "
        f"{period_seconds} seconds has been exceeded. Send future requests at a slower rate or raise the quota for "
        f"this user. The next request from this user will not be approved for at least {wait_ms} milliseconds.",
        exception_type="System.Management.Automation.Remoting.PSRemotingTransportException",
        category=ErrorCategory.ResourceBusy, reason="PSRemotingTransportException",
        fqid="Microsoft.Exchange.Configuration.Tasks.ThrottlingException", target=user))


def pipeline_stopped() -> ErrorRecord:
    return error_record("The pipeline has been stopped.",
                        exception_type="System.Management.Automation.PipelineStoppedException",
                        category=ErrorCategory.OperationStopped, reason="PipelineStoppedException",
                        fqid="PipelineStopped", target=None)


def runspace_broken(reason: str) -> ErrorRecord:
    return error_record(reason, exception_type="System.Management.Automation.Remoting.PSRemotingTransportException",
                        category=ErrorCategory.ResourceUnavailable, reason="PSRemotingTransportException",
                        fqid="PSSessionStateBroken", target=None)
