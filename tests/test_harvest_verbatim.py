"""A harvested record keeps the XML the partner sent, byte for byte (plus the namespace
declarations it inherits, so it stands alone), when it can be cut out of the page with
certainty; otherwise the parsed element's serialization (the same infoset)."""

from __future__ import annotations

import copy

import pytest
from harvestkit import FAST_HARVEST, OAI_NS, FakePartner, list_records, oai, record, xml
from lxml import etree
from werkzeug.wrappers import Response

from harvester import harvest
from harvester.client import verbatim_items
from oaiserver.config import Partner
from oaiserver.store import Store

MARC = (
    '<record xmlns="http://www.loc.gov/MARC21/slim"><leader>00000nam</leader>'
    '<datafield tag="245" ind1=" " ind2="0"><subfield code="a">Nested &amp; named record</subfield></datafield>'
    "<record><empty/></record><record/></record>"
)
ODD = (
    "<record>\n  <header><identifier>oai:p:odd</identifier><datestamp>2024-04-01</datestamp>"
    "<setSpec>a</setSpec></header>\n  <metadata><oai_dc:dc xmlns:oai_dc='http://www.openarchives.org/OAI/2.0/oai_dc/'"
    " xmlns:dc='http://purl.org/dc/elements/1.1/'>"
    "<dc:title xml:lang='fr'>&#233;t&#xE9; &quot;x&quot; a&gt;b</dc:title><dc:subject/>"
    "<dc:description>a\r\nb</dc:description></oai_dc:dc></metadata>\n</record>"
)


def cut(body: str) -> list[str] | None:
    """The cuts, each checked to be the same XML as the element lxml parsed (canonical form)."""
    data = body.encode()
    root = etree.fromstring(data)
    items = root.findall(f".//{{{OAI_NS}}}record")
    cuts = verbatim_items(data, items, root.getroottree().docinfo.encoding)
    for item, text in zip(items, cuts or [], strict=False):
        alone = etree.fromstring(text.encode())
        assert etree.tostring(alone, method="c14n") == etree.tostring(copy.deepcopy(item), method="c14n")
    return cuts


def sent(record_xml: str, declarations: str = f' xmlns="{OAI_NS}"') -> str:
    """A record as stored: as sent, with the namespaces it inherits declared on its start tag."""
    name_end = record_xml.index("record") + len("record")
    return record_xml[:name_end] + declarations + record_xml[name_end:]


def test_each_record_is_cut_out_exactly_as_sent() -> None:
    marc = (
        record("oai:p:marc")
        .replace("<metadata>", f"<metadata>{MARC}")
        .replace("<oai_dc:dc", "<oai_dc:dc hidden='1'", 1)
    )
    records = [record("oai:p:1", "Tom &amp; Jerry"), ODD, record("oai:p:gone", deleted=True), marc]
    declaration, _, rest = list_records(records).partition("\n")
    body = f'{declaration}\n<?xml-stylesheet type="text/xsl" href="s.xsl"?><!-- a prolog comment -->\n{rest}'
    assert cut(body) == [sent(r) for r in records]


def test_a_prefixed_oai_namespace_is_cut_too() -> None:
    body = (
        f'<?xml version="1.0"?><o:OAI-PMH xmlns:o="{OAI_NS}"><o:responseDate>2024-05-01T12:00:00Z</o:responseDate>'
        "<o:request>http://p/oai</o:request><o:ListRecords>"
        "<o:record><o:header><o:identifier>oai:p:1</o:identifier><o:datestamp>2024-04-01</o:datestamp></o:header>"
        "<o:metadata><x xmlns='urn:x'><record/></x></o:metadata></o:record></o:ListRecords></o:OAI-PMH>"
    )
    found = cut(body)
    assert found is not None and found[0].startswith(f'<o:record xmlns:o="{OAI_NS}">')
    assert found[0].endswith("</o:record>")


@pytest.mark.parametrize(
    "trouble",
    ["<!-- </record> -->", "<![CDATA[</record>]]>", "<?pi </record>?>"],
    ids=["comment", "CDATA", "processing instruction"],
)
def test_markup_that_could_hide_tags_is_not_cut(trouble: str) -> None:
    body = list_records([record("oai:p:1", f"A {trouble} title"), record("oai:p:2")])
    assert cut(body) is None


def test_other_encodings_are_not_cut() -> None:
    body = list_records([record("oai:p:1", "Zürich")]).replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
    data = body.encode("latin-1")
    root = etree.fromstring(data)
    items = root.findall(f".//{{{OAI_NS}}}record")
    assert verbatim_items(data, items, root.getroottree().docinfo.encoding) is None


def test_harvested_records_keep_the_partners_bytes(store: Store) -> None:
    records = [record("oai:p:1", "Tom &amp; Jerry &#233;"), ODD]
    commented = [record("oai:p:2", "Plain"), record("oai:p:3", "With <!-- a comment --> inside")]

    def answer(params: dict[str, str], n: int) -> Response:
        if params.get("resumptionToken") == "t1":
            return xml(list_records(commented))
        return xml(list_records(records, "t1"))

    with FakePartner(answer) as fake:
        report = harvest.run(store, Partner("p", fake.url), settings=FAST_HARVEST)
    assert report.outcome == "success"
    for original in records:
        identifier = etree.fromstring(oai(original).encode()).findtext(f".//{{{OAI_NS}}}identifier")
        stored = store.get(identifier)
        assert stored is not None and stored.raw_xml == sent(original)
    # The page with a comment is not cut: its records keep the parsed element's serialization.
    fallback = store.get("oai:p:3")
    assert fallback is not None and fallback.raw_xml is not None
    reparsed = etree.fromstring(fallback.raw_xml.encode())
    assert "".join(reparsed.itertext()).count("inside") == 1 and "<!-- a comment -->" in fallback.raw_xml


def test_greater_than_signs_in_attributes_and_text_do_not_mislead_the_cut() -> None:
    nested = (
        '<record xmlns="urn:x" note="a > b/"><f>x</f></record>'  # '>' and '/' inside a quoted value
        "<record xmlns='urn:x'>/> text that ends like a tag<f/></record>"
    )
    records = [record("oai:p:1", "a &gt; b/&gt;").replace("<metadata>", f"<metadata>{nested}"), record("oai:p:2")]
    assert cut(list_records(records)) == [sent(r) for r in records]
