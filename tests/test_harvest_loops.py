"""The signs that a list goes round (harvester.loops), one row per rule, and what does not count."""

from __future__ import annotations

import pytest

from harvester.loops import ListWatch, LoopLimits

A, B, C = ["a1", "a2"], ["b1", "b2"], ["c1", "c2"]


def walk(
    pages: list[list[str]], *, size: int | None = None, limits: LoopLimits | None = None
) -> tuple[int, str] | None:
    """Feed pages (each with a token) to a watch; (page number, reason) of the first sign."""
    watch = ListWatch(limits or LoopLimits())
    for n, ids in enumerate(pages, 1):
        why = watch.see(ids, token=f"t{n}", complete_list_size=size)
        if why is not None:
            return n, why
    return None


@pytest.mark.parametrize(
    ("pages", "size", "page", "reason"),
    [
        ([A, B, A, B, A], None, 5, "3 pages in a row held only records this list already gave"),
        ([A, A, A, A], None, 4, "3 pages in a row"),
        ([A] + [[]] * 10, None, 11, "10 empty pages in a row"),
        ([[f"p{n}-1", f"p{n}-2"] for n in range(20)], 4, 14, "completeListSize 4 makes 2 page"),
    ],
    ids=["repeated-cycle", "same-page", "empty", "overrun"],
)
def test_each_sign_ends_the_list_at_its_page(pages: list[list[str]], size: int | None, page: int, reason: str) -> None:
    found = walk(pages, size=size)
    assert found is not None and found[0] == page and reason in found[1], found


@pytest.mark.parametrize(
    "pages",
    [
        [A, B, [A[0], "b3"], C],  # a record that moved comes twice, among new ones
        [A, A, B, A, A, C],  # two repeated pages, then a new one: not in a row
        [A, [], [], [], B, [], C],  # a few empty pages
        [[f"p{n}" for n in range(k * 2, k * 2 + 2)] for k in range(200)],  # long, no size announced
    ],
    ids=["moved-record", "repeats-not-in-a-row", "some-empty-pages", "long-without-size"],
)
def test_what_is_not_a_loop(pages: list[list[str]]) -> None:
    assert walk(pages) is None


def test_the_last_page_ends_the_list_whatever_it_holds() -> None:
    watch = ListWatch()
    for _ in range(2):
        assert watch.see(A, token="t", complete_list_size=None) is None
    assert watch.see(A, token=None, complete_list_size=None) is None


def test_identifiers_past_the_memory_cap_are_not_remembered() -> None:
    watch = ListWatch(LoopLimits(remembered=3))
    watch.see(A, token="t1", complete_list_size=None)
    watch.see(B, token="t2", complete_list_size=None)
    assert len(watch.seen) == 4  # the page that crossed the cap is remembered whole
    watch.see(C, token="t3", complete_list_size=None)
    assert len(watch.seen) == 4
