"""The analytics page and its CSV downloads through the Django test client, on the seeded demo
history: who may see them, the filters (bad ones named), and CSV equal to the page's tables."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command

from chatbot.analytics.selectors import Filters, report
from chatbot.conversations.models import Conversation, Message, Rating
from chatbot.serving.models import VariantChange

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def analyst(client):
    user = User.objects.create_user("ana", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_analytics"))
    client.force_login(user)
    return client


@pytest.fixture
def seeded():
    call_command("seed_demo_history", conversations=300, days=90, seed=3, stdout=io.StringIO())


def test_seeded_history_fills_every_section(seeded):
    assert Conversation.objects.count() == 300
    variants = set(Message.objects.filter(author="bot").values_list("model_variant", flat=True))
    assert variants == {"gptq-int4", "fp16"}
    assert Conversation.objects.exclude(handoff_reason="").exists()
    assert Rating.objects.exclude(comment="").exists()
    assert VariantChange.objects.count() == 2
    import datetime as dt

    from django.utils import timezone

    now = timezone.now()
    datasets = {d.name: d for d in report(Filters(start=now - dt.timedelta(days=91), end=now))}
    assert datasets["csat_summary"].rows[0][1] > 0
    assert len(datasets["variants"].rows) == 2
    assert datasets["agents"].rows and datasets["handoff_reasons"].rows
    assert sum(sum(row[1:]) for row in datasets["heatmap"].rows) > 0


def test_only_staff_with_the_permission_see_the_page(client):
    assert client.get("/analytics/").status_code == 302  # to the login page
    user = User.objects.create_user("agent", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get("/analytics/").status_code == 403
    assert client.get("/analytics/export/csat_summary.csv").status_code == 403


def test_bad_filters_are_named_and_fall_back_to_defaults(analyst):
    page = analyst.get("/analytics/?from=yesterday&grain=hour&variant=int3&agent=x&comment_score=9").content.decode()
    for words in ("is not a date", "Unknown grain", "Unknown model variant", "is not a number", "score is 1 to 5"):
        assert words in page, words
    assert analyst.get("/analytics/export/nothing.csv").status_code == 404


def test_each_csv_download_equals_its_table(analyst, seeded):
    query = "from=2000-01-01&to=2100-01-01&grain=week"
    for name in ("csat_summary", "csat_over_time", "variants", "agents", "heatmap", "comments"):
        response = analyst.get(f"/analytics/export/{name}.csv?{query}")
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(response.content.decode())))
        assert rows[0], name
        assert len(rows) >= 2, name
    variants_csv = list(
        csv.reader(io.StringIO(analyst.get(f"/analytics/export/variants.csv?{query}").content.decode()))
    )
    import datetime as dt

    table = next(
        d
        for d in report(
            Filters(
                start=dt.datetime(2000, 1, 1, tzinfo=dt.UTC), end=dt.datetime(2100, 1, 2, tzinfo=dt.UTC), grain="week"
            )
        )
        if d.name == "variants"
    )
    assert variants_csv[0] == table.columns
    assert variants_csv[1:] == [["" if v is None else str(v) for v in row] for row in table.rows]


def test_a_comment_that_looks_like_a_formula_is_not_one_in_the_csv(analyst):
    conversation = Conversation.objects.create(visitor_id="v", status="resolved")
    Rating.objects.create(conversation=conversation, score=1, comment='=HYPERLINK("http://x")')
    rows = list(csv.reader(io.StringIO(analyst.get("/analytics/export/comments.csv").content.decode())))
    assert rows[1][2] == '\'=HYPERLINK("http://x")'
