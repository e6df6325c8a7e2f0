from __future__ import annotations

import pytest

from chatbot.knowledge.services import articles_import
from tests.conftest import ROOT

DEMO_ARTICLES = ROOT / "chatbot" / "knowledge" / "demo_articles"


@pytest.fixture
def demo_articles(db):
    report = articles_import(folder=DEMO_ARTICLES)
    assert not report.skipped
    return report
