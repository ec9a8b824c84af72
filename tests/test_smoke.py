from conftest import Clock, OAIClient, identifiers, make_record

from oaiserver.store import Store


def test_list_records_round_trip(oai: OAIClient, store: Store, clock: Clock) -> None:
    store.write([make_record("1", sets=("a:b",)), make_record("2")])
    clock.tick()
    doc = oai(verb="ListRecords", metadataPrefix="oai_dc")
    assert identifiers(doc) == ["oai:test.example.org:1", "oai:test.example.org:2"]
