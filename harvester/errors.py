"""Everything that can stop a harvest, under one root.

    HarvestError
    ├── ConfigurationError        a run's `from` (its checkpoint, read from the store) is not a date
    ├── TransportError            no usable HTTP answer: timeout, broken stream (retried)
    │   ├── Unreachable           no connection at all: refused, host name unknown, no route
    │   │                         (not retried: the partner's next run tries again)
    │   └── DeadlineExceeded      the whole answer did not arrive within the request's deadline
    ├── HTTPStatusError           an HTTP error status without an OAI-PMH <error> in its body
    ├── ResponseError             an answer that is not a usable OAI-PMH response
    │   ├── HTMLResponseError     an HTML page instead of XML (a login, portal or error page)
    │   ├── NotXMLResponseError   a body that is not XML at all (JSON, plain text)
    │   ├── XMLSyntaxError        XML that is not well-formed (see the `lenient_xml` quirk)
    │   ├── EncodingError         declared UTF-8, and its bytes are neither UTF-8 nor Western
    │   │                         text in Windows-1252 (harvester.encodings): refused
    │   ├── NotOAIResponseError   well-formed XML whose root is not OAI-PMH 2.0's <OAI-PMH>
    │   ├── PageTooLargeError     a page past the partner's max_page_mb (decompressed), or with
    │   │                         more markup than that size allows: refused, never parsed
    │   └── RedirectError         a redirect off the partner's scheme, host and port, or too many
    ├── PartnerOAIError           the partner answered with OAI-PMH <error>s; `.code` is the wire code
    │   ├── BadArgument               badArgument
    │   ├── BadResumptionToken        badResumptionToken
    │   ├── BadVerb                   badVerb
    │   ├── CannotDisseminateFormat   cannotDisseminateFormat
    │   ├── IdDoesNotExist            idDoesNotExist
    │   ├── NoMetadataFormats         noMetadataFormats
    │   └── NoSetHierarchy            noSetHierarchy
    ├── ListLoopError             the list goes round (new tokens over records it gave, empty pages, far too many pages)
    │   └── RepeatedTokenError        a resumption token came back that this list already used
    ├── PartnerBusy               another harvester holds the partner's lease
    ├── LeaseLost                 the lease was taken over during the run (nothing more is written)
    ├── WorkerError               the worker process converting pages died, or failed on a page
    ├── StoreError                the record store failed (down, full, locked) and the run could not be closed
    └── Stopped                   asked to stop (SIGTERM/SIGINT) between pages or while waiting

The wire codes are the protocol's one list, `oaiserver.records.ERROR_CODES` (the server's
errors and the validator use it too; a test holds this tree to it). PartnerOAIError is kept apart
from the server's `oaiserver.errors.OAIError` on purpose: receiving an error from a partner is a
harvest failure, raising one is an answer we give. `noRecordsMatch` is not an error here: the
client turns it into an empty page. Every
exception of `requests` and `lxml` that the client meets is mapped onto this tree; a test
holds it to that.
"""

from __future__ import annotations


class HarvestError(Exception):
    """The root: a harvest could not go on, and the message says why."""


class ConfigurationError(HarvestError):
    pass


class WorkerError(HarvestError):
    """The worker process (harvester.pipeline) died, or could not convert a page: the run
    fails, and the next one resumes at its checkpoint with a new worker."""


class TransportError(HarvestError):
    pass


class Unreachable(TransportError):
    """No connection could be made (refused, unknown host name, no route). Not retried within
    a run: a partner that is down or misnamed stays so for longer than a retry's wait, and
    its next run tries again; a partner that answers 503 or times out is retried."""


class DeadlineExceeded(TransportError):
    """A response that trickles: each read gets something in time, the whole never comes."""


class HTTPStatusError(HarvestError):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class ResponseError(HarvestError):
    pass


class HTMLResponseError(ResponseError):
    pass


class NotXMLResponseError(ResponseError):
    """JSON, plain text: no parser setting reads it, so the `lenient_xml` hint is not given."""


class XMLSyntaxError(ResponseError):
    pass


class EncodingError(ResponseError):
    """Not retried: the same request would bring the same bytes. Bytes that are Windows-1252
    text are read so instead (counted as `recoded`); these are not."""


class NotOAIResponseError(ResponseError):
    pass


class PageTooLargeError(ResponseError):
    """Not retried: the same request would bring the same page."""


class RedirectError(ResponseError):
    pass


class PartnerOAIError(HarvestError):
    """One or more OAI-PMH errors; `code` is the first, `codes` all of them."""

    code = ""

    def __init__(self, message: str, *, codes: tuple[str, ...] = (), status: int = 200) -> None:
        self.codes = codes or (self.code,)
        self.status = status
        super().__init__(message)


class BadArgument(PartnerOAIError):
    code = "badArgument"


class BadResumptionToken(PartnerOAIError):
    code = "badResumptionToken"


class BadVerb(PartnerOAIError):
    code = "badVerb"


class CannotDisseminateFormat(PartnerOAIError):
    code = "cannotDisseminateFormat"


class IdDoesNotExist(PartnerOAIError):
    code = "idDoesNotExist"


class NoMetadataFormats(PartnerOAIError):
    code = "noMetadataFormats"


class NoSetHierarchy(PartnerOAIError):
    code = "noSetHierarchy"


OAI_ERRORS: dict[str, type[PartnerOAIError]] = {
    cls.code: cls
    for cls in (
        BadArgument,
        BadResumptionToken,
        BadVerb,
        CannotDisseminateFormat,
        IdDoesNotExist,
        NoMetadataFormats,
        NoSetHierarchy,
    )
}


def partner_error(codes: list[tuple[str, str]], status: int) -> PartnerOAIError:
    """The exception for a response's `<error>`s: (code, message) pairs, first one wins the class."""
    code = codes[0][0]
    cls = OAI_ERRORS.get(code, PartnerOAIError)
    text = "; ".join(f"{c}: {m}" if m else c for c, m in codes)
    http = f" (HTTP {status})" if status != 200 else ""
    err = cls(
        f"the partner answered with an OAI-PMH error{http}: {text}", codes=tuple(c for c, _ in codes), status=status
    )
    if cls is PartnerOAIError:
        err.code = code
    return err


class ListLoopError(HarvestError):
    """The partner's list goes round: it is ended, what it gave is kept, and the next run
    lists the window again (resuming at one of its tokens would go round again)."""


class RepeatedTokenError(ListLoopError):
    pass


class PartnerBusy(HarvestError):
    def __init__(self, partner: str, holder: str, expires: int) -> None:
        self.partner, self.holder, self.expires = partner, holder, expires
        super().__init__(f"{partner}: another harvester ({holder}) holds the lease; skipped")


class LeaseLost(HarvestError):
    pass


class StoreError(HarvestError):
    """The record store failed under a run, and the run could not even be marked failed: the
    next harvester command that reaches the store marks it (see harvest.settle_runs)."""


class Stopped(HarvestError):
    pass
