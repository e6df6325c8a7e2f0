"""The analytics page (`/analytics/`) and its CSV downloads, for staff with the permission *Can
view the support analytics*. The page is drawn from the same datasets the CSV files hold."""

from __future__ import annotations

import csv
import datetime as dt

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required, permission_required
from django.contrib.auth.models import Permission
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from chatbot.analytics.selectors import GRAINS, HANDLED_BY, Filters, dataset, report
from chatbot.serving.selectors import rollout_guard_alert

PERMISSION = "conversations.view_analytics"
DEFAULT_DAYS = 30


def filters_from(request: HttpRequest) -> tuple[Filters, list[str]]:
    """The page's filters from its query string, and the words for each value that was refused
    (it falls back to the default then)."""
    problems: list[str] = []
    today = timezone.now().date()

    def day(name: str, default: dt.date) -> dt.date:
        raw = request.GET.get(name, "")
        if not raw:
            return default
        try:
            return dt.date.fromisoformat(raw)
        except ValueError:
            problems.append(f"“{raw[:20]}” is not a date (YYYY-MM-DD); showing {default.isoformat()}.")
            return default

    first = day("from", today - dt.timedelta(days=DEFAULT_DAYS - 1))
    last = day("to", today)
    if last < first:
        problems.append("The period ends before it starts; the dates were swapped.")
        first, last = last, first
    grain = request.GET.get("grain", "day")
    if grain not in GRAINS:
        problems.append(f"Unknown grain “{grain[:20]}”; showing days.")
        grain = "day"
    variant = request.GET.get("variant", "")
    if variant and variant not in settings.MODEL_VARIANTS:
        problems.append(f"Unknown model variant “{variant[:40]}”; showing all.")
        variant = ""
    handled_by = request.GET.get("handled_by", "")
    if handled_by and handled_by not in HANDLED_BY:
        problems.append("“Handled by” is the bot or an agent; showing both.")
        handled_by = ""
    agent_id = _whole(request.GET.get("agent", ""), problems, "agent")
    comment_score = _whole(request.GET.get("comment_score", ""), problems, "comment score")
    if comment_score is not None and not 1 <= comment_score <= 5:
        problems.append("The comments' score is 1 to 5; showing every score.")
        comment_score = None
    start = dt.datetime.combine(first, dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    filters = Filters(
        start=start,
        end=end,
        grain=grain,
        variant=variant,
        agent_id=agent_id,
        handled_by=handled_by,
        comment_score=comment_score,
    )
    return filters, problems


def _whole(raw: str, problems: list[str], what: str) -> int | None:
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        problems.append(f"The {what} “{raw[:20]}” is not a number; ignored.")
        return None


@require_GET
@login_required
@permission_required(PERMISSION, raise_exception=True)
def analytics_page(request: HttpRequest) -> HttpResponse:
    filters, problems = filters_from(request)
    datasets = report(filters)
    # The agent filter lists the people who work at the desk.
    desk = Permission.objects.get(content_type__app_label="conversations", codename="handle_conversations")
    staff = (
        get_user_model()
        .objects.filter(is_staff=True)
        .filter(Q(user_permissions=desk) | Q(groups__permissions=desk) | Q(is_superuser=True))
        .distinct()
        .order_by("username")
    )
    return render(
        request,
        "analytics/index.html",
        {
            "filters": filters,
            "first_day": filters.start.date(),
            "last_day": (filters.end - dt.timedelta(days=1)).date(),
            "problems": problems,
            "datasets": datasets,
            "datasets_data": {
                d.name: {"title": d.title, "columns": d.columns, "rows": d.rows, "chart": d.chart} for d in datasets
            },
            "variants": list(settings.MODEL_VARIANTS),
            "agents": staff,
            "grains": list(GRAINS),
            "query": request.GET.urlencode(),
            "store_name": settings.STORE_NAME,
            "guard_alert": rollout_guard_alert(),
            "rollout_title": next(d.title for d in datasets if d.name == "rollout"),
        },
    )


@require_GET
@login_required
@permission_required(PERMISSION, raise_exception=True)
def analytics_csv(request: HttpRequest, name: str) -> HttpResponse:
    filters, _ = filters_from(request)
    found = dataset(filters, name)
    if found is None:
        raise Http404("No such dataset.")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    first, last = filters.start.date(), (filters.end - dt.timedelta(days=1)).date()
    response["Content-Disposition"] = f'attachment; filename="{name}_{first}_{last}.csv"'
    writer = csv.writer(response)
    writer.writerow(found.columns)
    guarded = {found.columns.index(name) for name in found.free_text}
    for row in found.rows:
        writer.writerow(
            ["" if value is None else (_safe(value) if index in guarded else value) for index, value in enumerate(row)]
        )
    return response


def _safe(value: object) -> object:
    """A cell of people's text that a spreadsheet will not run as a formula (a comment may start
    with =, +, - or @)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
