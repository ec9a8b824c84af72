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
`<error>` per instance.
"""

from __future__ import annotations


class OAIError(Exception):
    code: str = ""
    default_message: str = ""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class BadVerb(OAIError):
    code = "badVerb"
    default_message = (
        "Value of the verb argument is not a legal OAI-PMH verb, the verb argument is missing, "
        "or the verb argument is repeated."
    )


class BadArgument(OAIError):
    code = "badArgument"
    default_message = (
        "The request includes illegal arguments, is missing required arguments, includes a repeated "
        "argument, or values for arguments have an illegal syntax."
    )


class BadResumptionToken(OAIError):
    code = "badResumptionToken"
    default_message = "The value of the resumptionToken argument is invalid or expired."


class CannotDisseminateFormat(OAIError):
    code = "cannotDisseminateFormat"
    default_message = (
        "The metadata format identified by the value given for the metadataPrefix argument is not "
        "supported by the item or by the repository."
    )


class IdDoesNotExist(OAIError):
    code = "idDoesNotExist"
    default_message = "The value of the identifier argument is unknown or illegal in this repository."


class NoRecordsMatch(OAIError):
    code = "noRecordsMatch"
    default_message = (
        "The combination of the values of the from, until, set and metadataPrefix arguments results in an empty list."
    )


class NoMetadataFormats(OAIError):
    code = "noMetadataFormats"
    default_message = "There are no metadata formats available for the specified item."


class NoSetHierarchy(OAIError):
    code = "noSetHierarchy"
    default_message = "The repository does not support sets."


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
