"""OAI-PMH errors: one Python class per wire code, under one root.

    OAIError
    ├── BadVerb                   badVerb
    ├── BadArgument               badArgument
    ├── BadResumptionToken        badResumptionToken
    ├── CannotDisseminateFormat   cannotDisseminateFormat
    ├── IdDoesNotExist            idDoesNotExist
    ├── NoRecordsMatch            noRecordsMatch
    ├── NoMetadataFormats         noMetadataFormats
    └── NoSetHierarchy            noSetHierarchy

Wire names stay at the edge, as the `code` class attribute; the renderer writes one
`<error>` per instance. The codes and their meanings are the shared list in
`records.ERROR_CODES`, which the validator and the harvester read too. The harvester's
`PartnerOAIError` tree (harvester/errors.py) is a separate hierarchy on purpose: it means
"a partner answered with this error", not "we answer with this error".
"""

from __future__ import annotations

from oaiserver.records import ERROR_CODES


class OAIError(Exception):
    """One error we answer with; without a message, the spec's meaning of its code."""

    code: str = ""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or ERROR_CODES[self.code]
        super().__init__(self.message)


class BadVerb(OAIError):
    code = "badVerb"


class BadArgument(OAIError):
    code = "badArgument"


class BadResumptionToken(OAIError):
    code = "badResumptionToken"


class CannotDisseminateFormat(OAIError):
    code = "cannotDisseminateFormat"


class IdDoesNotExist(OAIError):
    code = "idDoesNotExist"


class NoRecordsMatch(OAIError):
    code = "noRecordsMatch"


class NoMetadataFormats(OAIError):
    code = "noMetadataFormats"


class NoSetHierarchy(OAIError):
    code = "noSetHierarchy"


ALL_ERRORS: tuple[type[OAIError], ...] = (
    BadVerb,
    BadArgument,
    BadResumptionToken,
    CannotDisseminateFormat,
    IdDoesNotExist,
    NoRecordsMatch,
    NoMetadataFormats,
    NoSetHierarchy,
)


class OAIErrors(Exception):
    """One response's worth of errors: the spec asks for one `<error>` per problem."""

    def __init__(self, errors: list[OAIError]) -> None:
        assert errors
        self.errors = errors
        super().__init__("; ".join(f"{e.code}: {e.message}" for e in errors))
