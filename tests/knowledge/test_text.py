"""The knowledge base's pure text functions: passages, terms, relevance and its cut-off, the
grounded prompt, citations."""

from chatbot.knowledge import text as kb
from inference_worker.demo_model.corpus import ARTICLES_DIR


def demo_index() -> kb.MemoryIndex:
    return kb.MemoryIndex(kb.passages_from_folder(ARTICLES_DIR))


def test_sections_split_on_headings_with_keywords_apart():
    body = "Intro text.\n\n## Return window\n\nYou can return within 30 days.\n\nKeywords: send back, refund\n\n## Return window\n\nAgain."
    sections = kb.sections(body, title="Returns")
    assert [s.heading for s in sections] == ["Return window", "Return window"]
    assert [s.anchor for s in sections] == ["return-window", "return-window-2"]  # unique anchors
    assert sections[0].text == "You can return within 30 days."
    assert sections[0].keywords == "send back, refund"


def test_an_article_without_headings_is_one_passage():
    assert [(s.heading, s.text) for s in kb.sections("Just text\nover two lines.", title="Note")] == [
        ("Note", "Just text over two lines.")
    ]


def test_parse_markdown_article_needs_a_title():
    assert kb.parse_markdown_article("# Returns\n\nBody")[0] == "Returns"
    try:
        kb.parse_markdown_article("Body without a title")
    except ValueError as exc:
        assert "Title" in str(exc)
    else:
        raise AssertionError("no error")


def test_terms_drop_stop_words_and_stem():
    assert kb.terms("How long does a refund take? Refunds!") == ["long", "refund", "take"]
    assert kb.stem("shipped") == "ship" and kb.stem("returning") == "return"


def test_relevance_counts_known_words_only():
    df, total = {"refund": 2, "order": 20}, 40
    assert kb.relevance(["refund"], {"refund"}, df, total) == 1.0
    # "france" is in no passage: it weighs nothing, so it neither helps nor hurts.
    assert kb.relevance(["refund", "france"], {"refund"}, df, total) == 1.0
    assert kb.relevance(["capital", "france"], {"refund"}, df, total) == 0.0
    # A rare word matched counts more than a common one.
    assert kb.relevance(["refund", "order"], {"refund"}, df, total) > kb.relevance(
        ["refund", "order"], {"order"}, df, total
    )


def test_demo_retrieval_finds_the_right_passage_and_cuts_off_the_unrelated():
    index = demo_index()
    found = index.search("How long does a refund take?", limit=3, min_relevance=kb.DEFAULT_MIN_RELEVANCE)
    assert "returns#when-the-refund-arrives" in [p.key for p in found]
    assert index.search("what is the capital of France", limit=3, min_relevance=kb.DEFAULT_MIN_RELEVANCE) == []
    # Keywords carry customers' words: "postage" is only in the shipping costs keywords.
    found = index.search("What will I pay for postage?", limit=3, min_relevance=kb.DEFAULT_MIN_RELEVANCE)
    assert "shipping#shipping-costs" in [p.key for p in found]
    assert all(0 < p.relevance <= 1 for p in found)


def test_hostile_search_text_is_only_words():
    index = demo_index()
    for query in ['"', "*", "NEAR(refund", "refund OR 1=1", "'; DROP TABLE x; --", "🙂" * 50, "the a of", "x" * 10_000]:
        index.search(query, limit=3, min_relevance=0.0)  # no error
    assert kb.words('refund\' OR "1"="1" --') == ["refund", "or", "1", "1"]


def test_query_text_adds_the_previous_message_to_a_short_follow_up():
    assert kb.query_text(["How do gift cards work?", "does it expire?"]) == "How do gift cards work?\ndoes it expire?"
    assert kb.query_text(["hi", "How long does my refund take to arrive?"]) == "How long does my refund take to arrive?"


def test_grounded_content_and_citations():
    index = demo_index()
    passages = index.search("refund timing", limit=2, min_relevance=0.0)
    content = kb.grounded_content("When do I get my money?", passages)
    assert content.startswith(kb.PASSAGES_HEADER + "\n[1] ")
    # Each passage numbered at both ends, its text between.
    lines = content.split("\n")[1 : 1 + len(passages)]
    for n, (line, passage) in enumerate(zip(lines, passages, strict=True), 1):
        assert line == f"[{n}] {passage.heading}: {passage.text} [{n}]"
    assert content.endswith("\n\nQuestion: When do I get my money?")
    assert kb.grounded_content("Hi", []).startswith(kb.NO_PASSAGES)
    assert kb.cited_numbers("It takes 5 days. [2] See also [1] and [9].", 2) == [2, 1]
    assert kb.strip_citations("It takes 5 days. [2]") == "It takes 5 days."
    snapshot = passages[0].snapshot(1)
    assert snapshot["url"] == f"/help/{passages[0].article_slug}#{passages[0].anchor}"
