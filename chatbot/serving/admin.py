"""The rollback page in the Django admin: the active variant, each variant's readiness on the
running workers, the gradual rollout (its share, the live comparison of its arms, the guard),
the latest comparison, the toggle (reason + confirmation) and its audit trail. Only staff with
`serving.change_model_variant` see it."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from chatbot.serving import services
from chatbot.serving.guard import guard_assess
from chatbot.serving.heartbeats import worker_status_list
from chatbot.serving.models import Rollout, ServingState, VariantChange, VariantComparison
from chatbot.serving.selectors import (
    ROLLOUT_COLUMNS,
    rollout_comparison,
    rollout_comparison_rows,
    rollout_guard_alert,
    rollout_shown,
    serving_plan_get,
)

PERMISSION = "serving.change_model_variant"


class RollbackPermissionOnly(admin.ModelAdmin):
    """Seen only with the rollback permission; nothing is added, edited or deleted through it."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PERMISSION)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm(PERMISSION)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(ServingState)
class ServingStateAdmin(RollbackPermissionOnly):
    """Shown as "Model serving" in the admin; its list page is the rollback page."""

    def get_urls(self):
        return [path("", self.admin_site.admin_view(self.rollback_view), name="serving_servingstate_changelist")]

    def rollback_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm(PERMISSION):
            raise PermissionDenied
        if request.method == "POST":
            return self._post(request)
        plan = serving_plan_get(fresh=True)
        active = plan.baseline
        workers = worker_status_list()
        variants = []
        for name, config in settings.MODEL_VARIANTS.items():
            states = [(w.name, w.variants.get(name, {"state": "not served"})) for w in workers]
            variants.append(
                {
                    "name": name,
                    "path": config["path"],
                    "active": name == active,
                    "ready": any(w.can_serve(name) for w in workers),
                    "workers": states,
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Model serving and rollback",
            "opts": self.model._meta,
            "active": active,
            "variants": variants,
            "workers": workers,
            "latest": VariantComparison.objects.filter(status=VariantComparison.Status.DONE).first(),
            "pending": VariantComparison.objects.filter(
                status__in=[VariantComparison.Status.PENDING, VariantComparison.Status.RUNNING]
            ).first(),
            "last_failed": VariantComparison.objects.filter(status=VariantComparison.Status.FAILED).first(),
            "history": VariantChange.objects.select_related("changed_by")[:50],
            "plan": plan,
            "candidates": [name for name in settings.MODEL_VARIANTS if name != active],
            "guard_enabled": ServingState.objects.filter(pk=1).values_list("guard_enabled", flat=True).first()
            is not False,
            "guard_alert": rollout_guard_alert(),
            **_rollout_context(),
        }
        return TemplateResponse(request, "admin/serving/rollback.html", context)

    def _post(self, request: HttpRequest) -> HttpResponse:
        here = reverse("admin:serving_servingstate_changelist")
        if request.POST.get("action") == "compare":
            try:
                services.comparison_request(user=request.user)
            except services.ComparisonRefused as exc:
                messages.error(request, f"Comparison not queued: {exc}")
            else:
                messages.info(request, "Comparison queued; this page shows its result when a worker has run it.")
            return HttpResponseRedirect(here)
        action = request.POST.get("action")
        if action == "acknowledge":
            services.rollout_alert_acknowledge(user=request.user, rollout_id=_whole(request.POST.get("rollout")) or 0)
            return HttpResponseRedirect(here)
        if action == "guard":
            try:
                services.rollout_guard_set(
                    user=request.user,
                    enabled=request.POST.get("enabled") == "on",
                    reason=request.POST.get("reason", ""),
                )
            except services.SwitchRefused as exc:
                messages.error(request, f"Refused: {exc}")
            else:
                messages.success(request, f"The rollout guard is {request.POST.get('enabled')}.")
            return HttpResponseRedirect(here)
        if request.POST.get("confirm") != "yes":
            messages.error(request, "Tick the confirmation box to change the serving model.")
            return HttpResponseRedirect(here)
        if action == "share":
            percent = _whole(request.POST.get("percent"))
            try:
                if percent is None:
                    raise services.SwitchRefused("The share is a whole percentage from 0 to 100.")
                change = services.rollout_share_set(
                    user=request.user,
                    candidate=request.POST.get("candidate", ""),
                    percent=percent,
                    reason=request.POST.get("reason", ""),
                    expected_percent=_whole(request.POST.get("expected_percent")),
                )
            except services.SwitchRefused as exc:
                messages.error(request, f"Change refused: {exc}")
            else:
                messages.success(request, _share_message(change))
            return HttpResponseRedirect(here)
        try:
            change = services.serving_variant_switch(
                user=request.user,
                to_variant=request.POST.get("to_variant", ""),
                reason=request.POST.get("reason", ""),
                expected_from=request.POST.get("expected_from") or None,
            )
        except services.SwitchRefused as exc:
            messages.error(request, f"Switch refused: {exc}")
        else:
            messages.success(
                request,
                f"New generations now run on {change.to_variant} (was {change.from_variant}). "
                "Answers already streaming finish on the variant they started with.",
            )
        return HttpResponseRedirect(here)


def _whole(raw: str | None) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def _share_message(change: VariantChange) -> str:
    if change.percent_to == 100:
        return f"{change.to_variant} is promoted: new generations now run on it (was {change.from_variant})."
    if change.percent_to == 0:
        return f"Rolled back: new generations all run on {change.from_variant} again."
    return (
        f"{change.percent_to}% of new conversations now start on {change.to_variant}; each keeps the "
        "variant it started on."
    )


def _rollout_context() -> dict:
    """The rollout shown (the running one, else the latest): its arms side by side and what the
    guard sees on each signal."""
    rollout = rollout_shown()
    if rollout is None:
        return {"rollout": None}
    comparison = rollout_comparison(rollout=rollout)
    rows = rollout_comparison_rows(comparison)
    return {
        "rollout": rollout,
        "rollout_running": rollout.outcome == Rollout.Outcome.RUNNING,
        "rollout_since": comparison.since,
        # Transposed: one row per figure, the baseline's then the candidate's value.
        "rollout_rows": [(name, rows[0][i], rows[1][i]) for i, name in enumerate(ROLLOUT_COLUMNS) if i],
        "rollout_arms": [row[0] for row in rows],
        "assessments": guard_assess(baseline=comparison.baseline, candidate=comparison.candidate),
    }


@admin.register(Rollout)
class RolloutAdmin(RollbackPermissionOnly):
    list_display = ("started_at", "candidate", "baseline", "started_by", "outcome", "ended_at")
    list_filter = ("outcome",)


@admin.register(VariantChange)
class VariantChangeAdmin(RollbackPermissionOnly):
    """The audit trail: visible, never editable."""

    list_display = (
        "changed_at",
        "kind",
        "changed_by",
        "from_variant",
        "to_variant",
        "percent_from",
        "percent_to",
        "reason",
    )
    list_filter = ("kind", "to_variant")


@admin.register(VariantComparison)
class VariantComparisonAdmin(RollbackPermissionOnly):
    list_display = ("created_at", "requested_by", "status", "finished_at")
    list_filter = ("status",)
