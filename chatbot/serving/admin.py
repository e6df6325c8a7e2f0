"""The rollback page in the Django admin: the active variant, each variant's readiness on the
running workers, the latest comparison, the toggle (reason + confirmation) and its audit trail.
Only staff with `serving.change_model_variant` see it."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from chatbot.serving import services
from chatbot.serving.heartbeats import worker_status_list
from chatbot.serving.models import ServingState, VariantChange, VariantComparison
from chatbot.serving.selectors import active_variant_get

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
        active = active_variant_get(fresh=True)
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
        if request.POST.get("confirm") != "yes":
            messages.error(request, "Tick the confirmation box to switch the serving model.")
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


@admin.register(VariantChange)
class VariantChangeAdmin(RollbackPermissionOnly):
    """The audit trail: visible, never editable."""

    list_display = ("changed_at", "changed_by", "from_variant", "to_variant", "reason")
    list_filter = ("to_variant",)


@admin.register(VariantComparison)
class VariantComparisonAdmin(RollbackPermissionOnly):
    list_display = ("created_at", "requested_by", "status", "finished_at")
    list_filter = ("status",)
