"""Which model variant serves new generations, its audit trail, and the variant comparisons.

The active variant is data (one row), so that an admin can move serving between the 4-bit and
the FP16 model with no restart: the web reads it when it enqueues a generation.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ServingState(models.Model):
    """A single row (pk=1): the variant new generations run on."""

    active_variant = models.CharField(max_length=32)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "model serving"
        verbose_name_plural = "model serving"
        permissions = [("change_model_variant", "Can switch the serving model variant")]

    def __str__(self) -> str:
        return f"Serving {self.active_variant}"


class VariantChange(models.Model):
    """Audit record of one switch of the active variant. Never edited."""

    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    from_variant = models.CharField(max_length=32)
    to_variant = models.CharField(max_length=32)
    reason = models.TextField()

    class Meta:
        ordering = ["-changed_at"]

    def __str__(self) -> str:
        return f"{self.from_variant} → {self.to_variant} at {self.changed_at:%Y-%m-%d %H:%M}"


class VariantComparison(models.Model):
    """A run of the FP16-vs-4-bit comparison (`evaluate_models`), and its stored result."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # The worker running it: a RUNNING comparison whose worker stopped beating is ended FAILED by
    # the orphan sweep (`services.comparison_fail_orphans`).
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
