"""A partner's own sets, kept: its republished records are in `partners:<name>:<its setSpec>`
(harvester.convert, config.partner_subset), and ListSets lists those sets with the names the
partner's ListSets gives them.

A set is stored (store.partner_sets) with the page whose records are first in it, in that
page's transaction, together with its ancestors, so that no header ever names a set ListSets
does not list. The names are read once per run, after its lists, from the partner's ListSets,
and only for a partner whose records are in sets: a partner's set in which we hold no record is
not listed. A ListSets that fails leaves the names as they were and the run as it is.
"""

from __future__ import annotations

import logging

from harvester import errors as err
from harvester.client import Client
from harvester.convert import Converted
from oaiserver.config import partner_set, partner_subset
from oaiserver.records import OAI_NS
from oaiserver.rows import ancestors

log = logging.getLogger(__name__)

_SPEC, _NAME = f"{{{OAI_NS}}}setSpec", f"{{{OAI_NS}}}setName"


class Seen:
    """The sets of one partner stored so far, and those a page adds."""

    def __init__(self, name: str, stored: set[str]) -> None:
        self.prefix = f"{partner_set(name)}:"
        self.stored = stored

    def new(self, converted: Converted) -> list[str]:
        """The partner's sets the page's records are in that are not stored yet, with their
        ancestors under `partners:<name>`, parents first."""
        found: dict[str, None] = {}
        specs = [spec for r in converted.records for spec in r.sets]
        specs += [spec for p in converted.prepared for spec in p.setspecs.split()]
        for spec in specs:
            if spec.startswith(self.prefix) and spec not in self.stored:
                found.update(dict.fromkeys(a for a in ancestors(spec) if a.startswith(self.prefix)))
        return [spec for spec in found if spec not in self.stored]

    def keep(self, specs: list[str]) -> None:
        self.stored.update(specs)


def names(client: Client, name: str) -> dict[str, str] | None:
    """The partner's ListSets, all its pages: our setSpec -> the partner's setName. None when it
    cannot be read (said in the log): the names stored stay."""
    found: dict[str, str] = {}
    try:
        for page in client.pages("ListSets"):
            for item in page.items:
                spec, set_name = (item.findtext(_SPEC) or "").strip(), (item.findtext(_NAME) or "").strip()
                ours = partner_subset(name, spec)
                if ours is not None and set_name:
                    found[ours] = set_name
    except err.Stopped:
        raise
    except err.HarvestError as exc:
        log.warning("%s: its ListSets could not be read (%s); its sets keep the names they had", name, exc)
        return None
    return found
