"""Crosswalks from native formats to Dublin Core (oaiserver.crosswalks): each sample record gives
exactly the Dublin Core its format's public mapping says; what it gives is served as valid
oai_dc; and no input, however broken, raises. Samples: tests/data/crosswalks/SOURCES.md."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
from conftest import HERE, OAI_SCHEMA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from oaiserver import oai_dc
from oaiserver.crosswalks import crosswalk, known
from oaiserver.crosswalks.common import MARC_NS, MODS_NS, OAI_DATACITE_NS
from oaiserver.records import DC_ELEMENTS, DCValue

DATA = HERE / "data" / "crosswalks"
REALWORLD = HERE / "data" / "realworld"
OAI = "{http://www.openarchives.org/OAI/2.0/}"
NAME_TAGS = {"100", "110", "111", "700", "710", "711", "720"}
MARC_CAPTURES = [
    "vufindharvest/marc.xml",
    "hepcrawl/functional/cds/fixtures/http_server/records/cds-single.xml",
    "hepcrawl/functional/cds/fixtures/http_server/records/cds-cerncds-hep-ex.xml",
]


def parse(name: str) -> etree._Element:
    return etree.parse(str(DATA / name), etree.XMLParser(no_network=True, resolve_entities=False)).getroot()


def rows(values: list[DCValue] | None) -> list[tuple[str, str] | tuple[str, str, str]]:
    """Values as short tuples, the language only where there is one, so expectations read easily."""
    assert values is not None
    return [(v.element, v.value, v.lang) if v.lang else (v.element, v.value) for v in values]


def assert_valid_oai_dc(values: list[DCValue]) -> None:
    """The values, rendered by our oai_dc crosswalk, validate against the official oai_dc schema."""
    doc = etree.fromstring(oai_dc.render(values).encode())
    assert OAI_SCHEMA.validate(doc), f"{OAI_SCHEMA.error_log}\n{oai_dc.render(values)[:2000]}"


# ---- MARC 21 slim: the LoC "MARC to Dublin Core Crosswalk" -----------------------------------

ARITHMETIC = [
    ("title", "Arithmetic"),  # 245 $a, " /" and the statement of responsibility ($c) left out
    ("creator", "Sandburg, Carl, 1878-1967"),  # 100 $a $d, final period trimmed
    ("subject", "PS3537.A618 A88 1993"),  # 050 $a $b
    ("subject", "811/.52"),  # 082 $a (its edition, $2, is control data)
    ("subject", "Arithmetic -- Juvenile poetry"),  # 650: subdivisions after " -- "
    ("subject", "Children's poetry, American"),
    ("subject", "Arithmetic -- Poetry"),
    ("subject", "American poetry"),
    ("subject", "Visual perception"),
    ("description", "One Mylar sheet included in pocket."),  # 500: a note keeps its period
    (
        "description",
        "A poem about numbers and their characteristics. Features anamorphic, or distorted, drawings which can "
        "be restored to normal by viewing from a particular angle or by viewing the image's reflection in the "
        "provided Mylar cone.",
    ),
    ("publisher", "San Diego : Harcourt Brace Jovanovich"),  # 260 $a $b
    ("contributor", "Rand, Ted"),  # 700, relator "ill.": not an author
    ("date", "1993"),  # 008/07-10; 260 $c "c1993." names the same year
    ("type", "Text"),  # Leader/06 "a"
    ("identifier", "URN:ISBN:0152038655"),  # 020 $a "0152038655 :"
    ("language", "eng"),  # 008/35-37
]

THESIS = [
    ("title", "Über Brücken : eine Studie zur Baugeschichte"),  # whitespace folded
    ("title", "Περὶ γεφυρῶν : μελέτη"),  # 880 linked to 245: read as a title
    ("creator", "Müller, Anna"),  # 100
    ("creator", "Weber, Jonas"),  # 700 $e author
    ("subject", "Brücke"),  # 653: each $a a subject
    ("subject", "Ingenieurbau"),
    ("description", "Dissertation Freie Universität Berlin 2020"),  # 502
    ("publisher", "Berlin : Beispielverlag"),  # 264 second indicator 1 (publication)
    ("contributor", "Schmidt, Peter"),  # 700 $4 dgs
    ("contributor", "Freie Universität Berlin. Institut für Bauingenieurwesen"),  # 710 $a $b
    ("date", "2021"),  # 008; 264 _1 $c "[2021]" is the same year; 264 _4 (copyright) not read
    ("type", "Text"),
    ("type", "Hochschulschrift"),  # 655 without its authority number ($0)
    ("format", "application/pdf"),  # 856 $q
    ("identifier", "URN:ISBN:9783000000002"),  # 020 "(PDF)" qualifier left out
    ("identifier", "https://doi.org/10.1234/example.5678"),  # 024 7_ $2 doi
    ("identifier", "urn:nbn:de:0000-1234567890"),  # 024 7_ $2 urn: as it is
    ("identifier", "https://example.org/thesis/1234567890.pdf"),  # 856 $u
    ("language", "ger"),  # 008/35-37 and 041 "gereng" (two codes run together)
    ("language", "eng"),
    ("language", "Text in German, summary in English."),  # 546
    ("relation", "Über Brücken"),  # 776 $t
    ("coverage", "Berlin (Germany) -- History -- 20th century"),  # 651
    ("rights", "Open access."),  # 506
    ("rights", "CC BY 4.0"),  # 540
]


def test_marc_record_follows_the_loc_crosswalk() -> None:
    """The LoC's documented example record, field by field (see the comments beside each value)."""
    assert rows(crosswalk("marc21", parse("marc-arithmetic.xml"))) == ARITHMETIC


def test_marc_collection_with_a_namespace_prefix_and_modern_fields() -> None:
    """A <marc:collection> (its first record), RDA's 264, 880 fields in another script, relator
    codes and terms deciding creator or contributor, DOIs, notes; a comment between fields."""
    assert rows(crosswalk("marcxml", parse("marc-thesis.xml"))) == THESIS


def test_marc_inside_oai_metadata_without_its_namespace_is_read_by_the_prefix() -> None:
    """Some repositories put MARC elements in no namespace (so, inside an OAI-PMH response, in
    OAI-PMH's): the root's name and the prefix the partner was asked for identify the format."""
    record = (DATA / "marc-arithmetic.xml").read_text().split("<record", 1)[1]
    metadata = etree.fromstring(
        f'<metadata xmlns="http://www.openarchives.org/OAI/2.0/"><record{record}</metadata>'.replace(
            ' xmlns="http://www.loc.gov/MARC21/slim"', ""
        )
    )
    assert rows(crosswalk("marc21", metadata)) == ARITHMETIC  # the OAI <metadata> element itself is accepted
    assert rows(crosswalk(MARC_NS, metadata)) == ARITHMETIC  # the namespace names the format too
    assert crosswalk("oai_dc", metadata) is None  # a prefix of no known format


@pytest.mark.parametrize("capture", MARC_CAPTURES)
def test_real_marc_records_all_give_a_title_and_valid_oai_dc(capture: str) -> None:
    """Records real repositories sent (Ex Libris Alma, CERN's Invenio): each has a title, one with
    a name field (1XX, 7XX) a creator or contributor, and each renders as valid oai_dc."""
    doc = etree.parse(str(REALWORLD / capture))
    metadata = doc.findall(f".//{OAI}record/{OAI}metadata")
    assert metadata
    for element in metadata:
        values = crosswalk("marc21", element)
        assert values is not None
        elements = {v.element for v in values}
        assert "title" in elements, rows(values)
        named = [f for f in element.iter(f"{{{MARC_NS}}}datafield") if f.get("tag") in NAME_TAGS]
        assert not named or elements & {"creator", "contributor"}, rows(values)
        assert_valid_oai_dc(values)


@pytest.mark.parametrize(
    ("value", "trimmed"),
    [
        ("Arithmetic /", "Arithmetic"),
        ("San Diego :", "San Diego"),
        ("Harcourt Brace Jovanovich,", "Harcourt Brace Jovanovich"),
        ("1878-1967.", "1878-1967"),
        ("Title ;", "Title"),
        ("Titre =", "Titre"),
        ("And so on...", "And so on..."),
        ("  spaced   out  ", "spaced out"),
    ],
)
def test_marc_subfield_punctuation_is_trimmed(value: str, trimmed: str) -> None:
    """ISBD punctuation that only separated a subfield from the next one is left out."""
    from oaiserver.crosswalks.marc import chop

    assert chop(value) == trimmed


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ('<datafield tag="100"><subfield code="a">Main, Entry.</subfield></datafield>', ("creator", "Main, Entry")),
        ('<datafield tag="700"><subfield code="a">Added</subfield></datafield>', ("contributor", "Added")),
        (
            '<datafield tag="700"><subfield code="a">A</subfield><subfield code="4">aut</subfield></datafield>',
            ("creator", "A"),
        ),
        (
            '<datafield tag="700"><subfield code="a">A</subfield>'
            '<subfield code="4">http://id.loc.gov/vocabulary/relators/cre</subfield></datafield>',
            ("creator", "A"),
        ),
        (
            '<datafield tag="700"><subfield code="a">A</subfield><subfield code="e">Author.</subfield></datafield>',
            ("creator", "A"),
        ),
        (
            '<datafield tag="700"><subfield code="a">A</subfield><subfield code="e">editor.</subfield></datafield>',
            ("contributor", "A"),
        ),
        # In a meeting's name (X11) $e is a subordinate unit, part of the name; its relator term is $j.
        (
            '<datafield tag="711"><subfield code="a">Conf.</subfield><subfield code="e">Author</subfield></datafield>',
            ("contributor", "Conf. Author"),
        ),
        (
            '<datafield tag="711"><subfield code="a">Meeting,</subfield>'
            '<subfield code="j">author.</subfield></datafield>',
            ("creator", "Meeting"),
        ),
        (
            '<datafield tag="720"><subfield code="a">Uncontrolled</subfield></datafield>',
            ("contributor", "Uncontrolled"),
        ),
    ],
)
def test_marc_names_are_creators_when_main_entries_or_authors(field: str, expected: tuple[str, str]) -> None:
    """1XX are creators; 7XX and 720 are creators only when a relator code or term says author or creator."""
    record = etree.fromstring(f'<record xmlns="{MARC_NS}">{field}</record>')
    assert rows(crosswalk("marc21", record)) == [expected]


def test_marc_type_from_the_leader() -> None:
    """Leader/06 to the DCMI Type Vocabulary (the crosswalk's table); Leader/07 c: a collection."""

    def types(leader: str) -> list[str]:
        record = etree.fromstring(f'<record xmlns="{MARC_NS}"><leader>{leader}</leader></record>')
        return [v.value for v in crosswalk("marc21", record) or [] if v.element == "type"]

    assert types("00000nam a2200000 a 4500") == ["Text"]
    assert types("00000njm a2200000 a 4500") == ["Sound"]
    assert types("00000nkm a2200000 a 4500") == ["Image"]
    assert types("00000nmm a2200000 a 4500") == []  # computer file: the crosswalk gives no type
    assert types("00000npc a2200000 a 4500") == ["Collection"]
    assert types("short") == []


# ---- MODS 3.x: the LoC "MODS to Dublin Core Metadata Element Set Mapping" ----------------------

SOUND_AND_FURY = [
    ("title", "The sound and the fury: a novel"),  # nonSort, title and subTitle as one title
    ("title", "Schall und Wahn", "de"),  # a translated title, with its language
    ("creator", "Faulkner, William, 1897-1962"),  # role aut; family, given, date
    ("subject", "Families -- Fiction"),  # topic and genre of one <subject>
    ("subject", "Compson family (Fictitious characters) -- Fiction"),  # a name as subject
    ("subject", "PS3511.A86 S7 1990"),  # classification
    ("subject", "813/.52"),
    ("description", "Told in four sections, the novel follows the decline of the Compson family."),
    ("description", "April Seventh, 1928 -- June Second, 1910 -- April Sixth, 1928 -- April Eighth, 1928."),
    ("description", "William Faulkner ; edited by Noel Polk."),  # note
    ("publisher", "Vintage Books"),
    ("contributor", "Polk, Noel"),  # role editor
    ("contributor", "Random House"),  # no role
    ("date", "1990"),  # dateIssued (its marc-encoded repeat left out)
    ("date", "1928/1929"),  # dateCreated start and end, as one interval
    ("type", "text"),  # typeOfResource
    ("type", "novel"),  # genre
    ("format", "print"),  # physicalDescription
    ("format", "326 p. ; 21 cm."),
    ("identifier", "URN:ISBN:0679732241"),
    ("identifier", "89040547"),  # lccn: as it is
    ("identifier", "https://doi.org/10.5555/sound.fury"),  # an invalid ISSN is not an identifier
    ("identifier", "https://example.org/catalog/89040547"),  # location/url
    ("source", "The sound and the fury"),  # relatedItem type="original" (its own date not read)
    ("language", "eng"),  # the code, not also the name
    ("relation", "Vintage international"),  # relatedItem by title
    ("relation", "https://example.org/ebook/89040547"),  # relatedItem by xlink:href
    ("coverage", "Mississippi"),  # subject/geographic
    ("coverage", "United States -- Mississippi"),  # hierarchicalGeographic
    ("coverage", "1910/1928"),  # temporal
    ("coverage", "W 91°39ʹ--W 88°06ʹ/N 35°00ʹ--N 30°10ʹ"),  # cartographics/coordinates
    ("rights", "Public domain in the United States."),  # accessCondition
    ("rights", "http://rightsstatements.org/vocab/NoC-US/1.0/"),  # accessCondition by xlink:href
]


def test_mods_record_follows_the_loc_mapping() -> None:
    assert rows(crosswalk("mods", parse("mods-sound-and-fury.xml"))) == SOUND_AND_FURY


def test_mods_collection_with_a_prefix_gives_its_first_record() -> None:
    inner = (DATA / "mods-sound-and-fury.xml").read_text().split("?>", 1)[1]
    collection = etree.fromstring(f'<modsCollection xmlns="{MODS_NS}">{inner}</modsCollection>')
    assert rows(crosswalk("mods", collection)) == SOUND_AND_FURY
    prefixed = etree.fromstring(
        f'<m:mods xmlns:m="{MODS_NS}" xml:lang="en"><m:titleInfo><m:title>  Hello\n  world </m:title>'
        "</m:titleInfo><m:name><m:namePart>Doe, Jane</m:namePart><m:role><m:roleTerm>Author</m:roleTerm>"
        "</m:role></m:name></m:mods>"
    )
    assert rows(crosswalk("anything", prefixed)) == [("title", "Hello world"), ("creator", "Doe, Jane")]


# ---- DataCite: "DataCite to Dublin Core Mapping 4.4" --------------------------------------------

GEOLOCATION_V4 = [
    ("title", "Gridded results of swath bathymetric mapping of Disko Bay, Western Greenland, 2007-2008", "en"),
    ("creator", "Schumann, Kai"),
    ("creator", "Völker, David"),
    ("creator", "Weinrebe, Wilhelm Reiber"),
    ("subject", "Geology, hydrology, meteorology", "en"),
    ("subject", "551"),  # classificationCode (the mapping's 6.d)
    (
        "description",
        "A ship-based acoustic mapping campaign was conducted at the exit of Ilulissat Ice Fjord and in the "
        "sedimentary basin of Disko Bay to the west of the fjord mouth. Submarine landscape and sediment "
        "distribution patterns are interpreted in terms of glaciomarine facies types that are related to "
        "variations in the past position of the glacier front. In particular, asymmetric ridges that form a "
        "curved entity and a large sill at the fjord mouth may represent moraines hat depict at least two "
        "relatively stable positions of the ice front in the Disko Bay and at the fjord mouth. In this respect, "
        "Ilulissat Glacier shows prominent differences to the East Greenland Kangerlussuaq Glacier which is "
        "comparable in present size and present role for the ice discharge from the inland ice sheet. Two "
        "linear clusters of pockmarks in the center of the sedimentary basin seem to be linked to ongoing "
        "methane release due to dissociation of gas hydrates, a process fueled by climate warming in the "
        "Arctic realm.",
        "en",
    ),
    ("publisher", "PANGAEA - Data Publisher for Earth & Environmental Science", "en"),
    ("contributor", "IFM-GEOMAR Leibniz-Institute of Marine Sciences, Kiel University"),
    ("date", "2011"),  # publicationYear
    ("type", "Dataset"),  # resourceTypeGeneral of an empty resourceType
    ("format", "4 datasets"),  # size
    ("format", "application/zip"),
    ("identifier", "https://doi.org/10.5072/geoPointExample"),
    ("language", "en"),
    ("relation", "https://doi.org/10.5072/timeSeries"),  # relatedIdentifier, a DOI
    ("coverage", "Disko Bay"),
    ("coverage", "east=-52.000000; north=69.000000"),  # geoLocationPoint as a DCMI Point
    ("rights", "https://creativecommons.org/licenses/by/3.0"),  # an empty rights element's rightsURI
]

HAS_METADATA_V3 = [
    ("title", "Identification of putative novel specific targets of mir-210 in A549 human adenocarcinoma cells"),
    ("creator", "Mari, Bernard"),
    ("creator", "Puissegur, Marie-Pierre"),
    ("creator", "Barbry, Pascal"),
    ("creator", "Lebrigand, Kevin"),
    ("subject", "Neoplasms"),
    ("subject", "Transcription profiling"),
    ("subject", "Homo sapiens"),
    ("subject", "A549"),
    ("subject", "DNA microarray"),
    (
        "description",
        "To identify putative novel specific targets of mir-210, we overexpressed miR-210 as well as miR-34a and a "
        "siRNA targeted against E2F3 in A549 human adenocarcinoma cells by transfecting them with synthetic "
        "pre-miRNAs or a synthetic negative pre-miRNA as control (miR-Neg). RNA samples were harvested at 48 "
        "hours post-transfection and 2 independent experiments performed in dye-swap: miR-210 versus miR-Neg ; "
        "miR-34a versus miR-Neg ; si-E2F3 versus miR-Neg ; si-control versus miR-Neg.",
    ),
    (
        "publisher",
        "Institut de Pharmacologie Moleculaire et Cellulaire (IPMC), CNRS UMR6097, Universite de Nice "
        "Sophia-Antipolis, 660 route des lucioles, 06560 Valbonne - Sophia-Antipolis, France",
    ),
    ("contributor", "INIST-CNRS"),
    ("date", "2010"),
    ("type", "Text"),  # resourceTypeGeneral
    ("type", "Experiment report"),  # resourceType
    ("format", "183 ko"),
    ("format", "3 pages"),
    ("format", "PDF"),
    ("identifier", "https://doi.org/10.5072/example"),
    ("language", "en"),
    ("relation", "http://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GSE18695"),
    ("rights", "Creative Commons Attribution-NonCommercial-NoDerivs 3.0 Unported"),
    ("rights", "http://creativecommons.org/licenses/by-nc-nd/3.0/"),
]


def test_datacite_kernel_4_follows_the_datacite_mapping() -> None:
    assert rows(crosswalk("datacite", parse("datacite-example-GeoLocation-v4.xml"))) == GEOLOCATION_V4


def test_datacite_kernel_3_in_the_oai_datacite_wrapper() -> None:
    """oai_datacite (what DataCite's own OAI-PMH service sends): the resource inside <payload>."""
    resource = (DATA / "datacite-example-HasMetadata-v3.0.xml").read_bytes().decode("utf-8-sig").split("?>", 1)[1]
    wrapped = etree.fromstring(
        f'<oai_datacite xmlns="{OAI_DATACITE_NS}"><isReferenceQuality>true</isReferenceQuality>'
        f"<schemaVersion>3.0</schemaVersion><datacentreSymbol>INIST.IPMC</datacentreSymbol>"
        f"<payload>{resource}</payload></oai_datacite>"
    )
    assert rows(crosswalk("oai_datacite", wrapped)) == HAS_METADATA_V3
    assert crosswalk("oai_datacite", etree.fromstring(f'<oai_datacite xmlns="{OAI_DATACITE_NS}"/>')) == []


def test_datacite_geolocation_boxes_and_kernel_3_points() -> None:
    """Kernel-3 points and boxes are text ("lat long", "south west north east"); kernel-4's are
    elements. Both become DCMI Point and Box values; a box missing a side is left out."""
    k3 = etree.fromstring(
        '<resource xmlns="http://datacite.org/schema/kernel-3"><geoLocations><geoLocation>'
        "<geoLocationPoint>31.233 -67.302</geoLocationPoint>"
        "<geoLocationBox>41.090 -71.032 42.893 -68.211</geoLocationBox></geoLocation></geoLocations></resource>"
    )
    k4 = etree.fromstring(
        '<resource xmlns="http://datacite.org/schema/kernel-4"><geoLocations><geoLocation><geoLocationBox>'
        "<westBoundLongitude>-71.032</westBoundLongitude><eastBoundLongitude>-68.211</eastBoundLongitude>"
        "<southBoundLatitude>41.090</southBoundLatitude><northBoundLatitude>42.893</northBoundLatitude>"
        "</geoLocationBox></geoLocation><geoLocation><geoLocationBox><westBoundLongitude>1</westBoundLongitude>"
        "</geoLocationBox></geoLocation></geoLocations></resource>"
    )
    box = "northlimit=42.893; eastlimit=-68.211; southlimit=41.090; westlimit=-71.032"
    assert rows(crosswalk("datacite", k3)) == [("coverage", "east=-67.302; north=31.233"), ("coverage", box)]
    assert rows(crosswalk("datacite", k4)) == [("coverage", box)]


# ---- dispatch, unknown formats, and what comes out --------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        '<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/"/>',
        '<record xmlns="urn:example:other"><leader>00000nam a2200000 a 4500</leader></record>',
        "<resource/>",
    ],
)
def test_an_unknown_format_gives_none(payload: str) -> None:
    assert crosswalk("oai_dc", etree.fromstring(payload)) is None
    assert crosswalk("oai_dc", None) is None
    empty_metadata = etree.fromstring(f"<metadata xmlns='{OAI[1:-1]}'><!-- nothing --></metadata>")
    assert crosswalk("marc21", empty_metadata) is None


def test_a_known_format_with_nothing_readable_gives_an_empty_list() -> None:
    for payload in (
        f'<collection xmlns="{MARC_NS}"/>',
        f'<record xmlns="{MARC_NS}"><datafield tag="245"><subfield code="a"> / </subfield></datafield></record>',
        f'<mods xmlns="{MODS_NS}"><titleInfo/><name/><subject/></mods>',
        '<resource xmlns="http://datacite.org/schema/kernel-4"><titles><title/></titles></resource>',
    ):
        assert crosswalk("x", etree.fromstring(payload)) == [], payload


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        *[("marc21", True), ("MARCXML", True), ("mods", True), ("oai_datacite", True), ("datacite", True)],
        *[(MARC_NS, True), (MODS_NS, True), ("http://datacite.org/schema/kernel-3", True), (OAI_DATACITE_NS, True)],
        *[("http://schema.datacite.org/oai/oai-1.0/", True)],
        *[("oai_dc", False), ("nsdl_dc", False), ("", False)],
    ],
)
def test_known_formats(hint: str, expected: bool) -> None:
    assert known(hint) is expected


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("DOI", "10.5072/example", "https://doi.org/10.5072/example"),
        ("doi", "doi:10.5072/example", "https://doi.org/10.5072/example"),
        ("doi", "https://dx.doi.org/10.5072/example", "https://doi.org/10.5072/example"),
        ("doi", "not a DOI", "not a DOI"),
        ("Handle", "10013/epic.10033", "https://hdl.handle.net/10013/epic.10033"),
        ("isbn", "0-15-203865-5 (pbk.)", "URN:ISBN:0-15-203865-5"),
        ("ISBN", "978-3-905673-82-1", "URN:ISBN:978-3-905673-82-1"),
        ("isbn", "1234567890123456789", "1234567890123456789"),  # too long to be one: as it is
        ("EISSN", "1562-6865", "URN:ISSN:1562-6865"),
        ("URL", " https://example.org/a ", "https://example.org/a"),
        ("ARK", "ark:/13030/tqb3kh97gh8w", "ark:/13030/tqb3kh97gh8w"),
        (None, "12345", "12345"),
    ],
)
def test_identifiers_of_a_known_kind_are_made_self_describing(kind: str | None, value: str, expected: str) -> None:
    from oaiserver.crosswalks.common import identifier

    assert identifier(kind, value) == expected


def test_languages_are_kept_only_when_valid_and_repeats_only_once() -> None:
    """xml:lang as oai_dc must carry it (en_US read as en-US, nonsense dropped); exact repeats go."""
    resource = etree.fromstring(
        '<resource xmlns="http://datacite.org/schema/kernel-4"><titles>'
        '<title xml:lang="en_US">A</title><title xml:lang="not a language">B</title>'
        '<title xml:lang="en-US">A</title><title>B</title></titles></resource>'
    )
    assert rows(crosswalk("datacite", resource)) == [("title", "A", "en-US"), ("title", "B")]


@pytest.mark.parametrize(
    "name",
    ["marc-arithmetic.xml", "marc-thesis.xml", "mods-sound-and-fury.xml", "datacite-example-GeoLocation-v4.xml"],
)
def test_every_sample_renders_as_valid_oai_dc(name: str) -> None:
    values = crosswalk("", parse(name))
    assert values and {v.element for v in values} <= set(DC_ELEMENTS)
    assert_valid_oai_dc(values)


# ---- never an exception -------------------------------------------------------------------------

SAMPLES = [
    "marc-arithmetic.xml",
    "marc-thesis.xml",
    "mods-sound-and-fury.xml",
    "datacite-example-GeoLocation-v4.xml",
    "datacite-example-HasMetadata-v3.0.xml",
]
# Every element name and attribute the crosswalks read, so random trees reach every branch.
NAMES = (
    *("leader", "controlfield", "datafield", "subfield", "record", "collection"),
    *("mods", "modsCollection", "titleInfo", "nonSort", "title", "subTitle", "partNumber", "partName", "name"),
    *("namePart", "displayForm", "role", "roleTerm", "subject", "topic", "geographic", "temporal", "country"),
    *("hierarchicalGeographic", "cartographics", "coordinates", "occupation", "genre", "classification"),
    *("abstract", "note", "tableOfContents", "originInfo", "publisher", "dateIssued", "dateCreated", "dateOther"),
    *("typeOfResource", "physicalDescription", "form", "extent", "internetMediaType", "identifier", "location"),
    *("url", "language", "languageTerm", "relatedItem", "accessCondition"),
    *("resource", "oai_datacite", "payload", "creators", "creator", "creatorName", "givenName", "familyName"),
    *("affiliation", "titles", "contributors", "contributor", "contributorName", "publicationYear", "subjects"),
    *("dates", "date", "resourceType", "alternateIdentifiers", "alternateIdentifier", "relatedIdentifiers"),
    *("relatedIdentifier", "sizes", "size", "formats", "format", "rightsList", "rights", "descriptions"),
    *("description", "geoLocations", "geoLocation", "geoLocationPlace", "geoLocationPoint", "geoLocationBox"),
    *("pointLatitude", "pointLongitude", "westBoundLongitude", "relatedItems", "relatedItemIdentifier"),
)
ATTRIBUTES = [
    "tag",
    "code",
    "ind1",
    "ind2",
    "type",
    "point",
    "usage",
    "invalid",
    "identifierType",
    "rightsURI",
    "resourceTypeGeneral",
    "classificationCode",
    "dateInformation",
    "relatedIdentifierType",
    "{http://www.w3.org/XML/1998/namespace}lang",
    "{http://www.w3.org/1999/xlink}href",
]
NAMESPACES = [MARC_NS, MODS_NS, "http://datacite.org/schema/kernel-4", OAI_DATACITE_NS, ""]
# XML 1.0 characters (lxml refuses the others), surrogates and the non-characters U+FFFE, U+FFFF excluded.
XML_CHAR = st.characters(exclude_categories=["Cs"], min_codepoint=0x20, exclude_characters="\ufffe\uffff")
XML_TEXT = st.text(XML_CHAR | st.sampled_from("\t\n"), max_size=30)
VALUES = st.one_of(
    XML_TEXT,
    st.sampled_from(
        [
            "245",
            "100",
            "700",
            "880",
            "650",
            "008",
            "a",
            "6",
            "start",
            "end",
            "doi",
            "isbn",
            "DOI",
            "en",
            "aut",
            "245-01",
            "1",
            "c",
            "en_US",
            "not a language",
            "",
        ]
    ),
)


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> etree._Element:
    """A random element in one of the formats' namespaces, with their names, attributes and text."""
    namespace = draw(st.sampled_from(NAMESPACES))
    name = draw(st.sampled_from(NAMES))
    el = etree.Element(f"{{{namespace}}}{name}" if namespace else name)
    for attribute in draw(st.lists(st.sampled_from(ATTRIBUTES), max_size=3)):
        el.set(attribute, draw(VALUES))
    el.text = draw(st.none() | VALUES)
    if depth < 3:
        for child in draw(st.lists(trees(depth + 1), max_size=3)):
            el.append(child)
    if draw(st.booleans()):
        el.append(etree.Comment("c"))
    return el


def check(values: list[DCValue] | None) -> None:
    """What a crosswalk may give: None, or Dublin Core that is served as valid oai_dc."""
    if values is None:
        return
    for v in values:
        assert isinstance(v, DCValue) and v.element in DC_ELEMENTS and v.value == " ".join(v.value.split()) != ""
    assert_valid_oai_dc(values)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), hint=st.sampled_from(["marc21", "mods", "datacite", "oai_datacite", "oai_dc", ""]))
def test_any_tree_gives_valid_dublin_core_or_none(tree: etree._Element, hint: str) -> None:
    check(crosswalk(hint, tree))


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["delete", "repeat", "attribute", "text", "clear", "adopt"]),
        st.integers(0, 10_000),
        st.sampled_from(ATTRIBUTES),
        VALUES,
    ),
    max_size=12,
)


def mutated(name: str, mutations: list[tuple[str, int, str, str]]) -> etree._Element:
    """A sample record with elements deleted, repeated, emptied or moved, attributes and text
    replaced: the messy records real partners send, along the paths the crosswalks read."""
    root = parse(name)
    for operation, where, attribute, value in mutations:
        elements = [e for e in root.iter() if isinstance(e.tag, str)]
        el = elements[where % len(elements)]
        parent = el.getparent()
        if operation == "delete" and parent is not None:
            parent.remove(el)
        elif operation == "repeat" and parent is not None:
            parent.append(copy.deepcopy(el))
        elif operation == "attribute":
            el.set(attribute, value)
        elif operation == "text":
            el.text = value
        elif operation == "clear":
            el.clear()
        elif operation == "adopt":
            other = elements[(where * 7 + 3) % len(elements)]
            if sum(1 for _ in other.iter()) <= 40:
                el.append(copy.deepcopy(other))
    return root


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(SAMPLES), mutations=MUTATIONS, hint=st.sampled_from(["marc21", "mods", "datacite", ""]))
def test_any_mangled_record_gives_valid_dublin_core(
    name: str, mutations: list[tuple[str, int, str, str]], hint: str
) -> None:
    check(crosswalk(hint, mutated(name, mutations)))


@pytest.mark.parametrize("name", SAMPLES)
def test_truncated_and_mangled_records_never_raise(name: str) -> None:
    """Every sample cut at 200 places, or with bytes dropped, repaired by the lenient parser
    (as the harvester's client does): the crosswalk reads what is left."""
    data = (DATA / name).read_bytes()
    parser = etree.XMLParser(recover=True, no_network=True, resolve_entities=False)
    rng = random.Random(name)
    cuts = sorted(rng.sample(range(1, len(data)), 200))
    for cut in cuts:
        mangled = data[:cut] if cut % 2 else data[:cut] + data[cut + rng.randint(1, 40) :]
        root = etree.fromstring(mangled, parser)
        for hint in ("marc21", "mods", "datacite"):
            check(crosswalk(hint, root))


def test_sources_are_documented() -> None:
    """Every sample file is named in SOURCES.md."""
    sources = (DATA / "SOURCES.md").read_text()
    for path in Path(DATA).glob("*.xml"):
        assert f"`{path.name}`" in sources, path.name
