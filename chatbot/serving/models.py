"""Which model variant serves new generations, its audit trail, and the variant comparisons.

The active variant is data (one row), so that an admin can move serving between the 4-bit and
the FP16 model with no restart: the web reads it when it enqueues a generation. A rollout puts a
share of new conversations on a candidate variant (`Rollout`, `RolloutAssignment`); the guard
ends it when the candidate answers measurably worse.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ServingState(models.Model):
    """A single row (pk=1): the variant new generations run on (the baseline), and the rollout
    in progress, if any: its candidate and the share of new conversations that start on it."""

    active_variant = models.CharField(max_length=32)
    changed_at = models.DateTimeField(auto_now=True)
    # Set while a rollout runs (then 0 < candidate_percent < 100); cleared when it ends.
    rollout = models.ForeignKey("Rollout", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    candidate_percent = models.PositiveSmallIntegerField(default=0)
    # Staff may turn the guard off (audited); it is on until they do.
    guard_enabled = models.BooleanField(default=True)

    class Meta:
        verbose_name = "model serving"
        verbose_name_plural = "model serving"
        permissions = [("change_model_variant", "Can switch the serving model variant")]

    def __str__(self) -> str:
        return f"Serving {self.active_variant}"


class VariantChange(models.Model):
    """Audit record of one change of serving: a switch of the active variant, a change of a
    rollout's share, the guard's rollback, the guard turned on or off. Never edited. For a share
    change and the guard's rollback, `from_variant` is the baseline and `to_variant` the
    candidate; for the guard's setting both are the active variant."""

    class Kind(models.TextChoices):
        SWITCH = "switch", "Switch"
        SHARE = "share", "Rollout share"
        GUARD_ROLLBACK = "guard_rollback", "Guard rollback"
        GUARD_SETTING = "guard_setting", "Guard on/off"

    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SWITCH)
    # The candidate's share of new conversations before and after (share changes and rollbacks).
    percent_from = models.PositiveSmallIntegerField(null=True, blank=True)
    percent_to = models.PositiveSmallIntegerField(null=True, blank=True)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    from_variant = models.CharField(max_length=32)
    to_variant = models.CharField(max_length=32)
    reason = models.TextField()

    class Meta:
        ordering = ["-changed_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.summary} at {self.changed_at:%Y-%m-%d %H:%M}"

    @property
    def summary(self) -> str:
        if self.kind == self.Kind.GUARD_SETTING:
            return "guard turned on" if self.percent_to else "guard turned off"
        if self.kind in (self.Kind.SHARE, self.Kind.GUARD_ROLLBACK):
            return f"{self.to_variant} share {self.percent_from or 0}% → {self.percent_to or 0}%"
        return f"{self.from_variant} → {self.to_variant}"


class Rollout(models.Model):
    """A candidate variant serving a share of new conversations beside the baseline (the active
    variant), from the first share above 0% until the share goes back to 0% (rolled back, by
    staff or the guard), up to 100% (promoted: the candidate becomes the active variant), or a
    switch ends it. Its conversations (`RolloutAssignment`) are the live comparison's traffic."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        PROMOTED = "promoted", "Promoted"
        ROLLED_BACK = "rolled_back", "Rolled back by staff"
        GUARD = "guard", "Rolled back by the guard"
        SWITCHED = "switched", "Ended by a switch"

    baseline = models.CharField(max_length=32)
    candidate = models.CharField(max_length=32)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    # The guard's rollback: the figures and tests that decided it (`guard.Breach`es and the arms).
    guard_evidence = models.JSONField(null=True, blank=True)
    # The banner to staff after the guard's rollback stays until one of them acknowledges it.
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"Rollout of {self.candidate} beside {self.baseline} ({self.get_outcome_display().lower()})"


class RolloutAssignment(models.Model):
    """The variant a conversation started on during a rollout: it keeps it for the rollout's
    life (sticky), and its figures count for that arm of the comparison."""

    conversation = models.OneToOneField(
        "conversations.Conversation", on_delete=models.CASCADE, related_name="rollout_assignment"
    )
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="assignments")
    variant = models.CharField(max_length=32)
    assigned_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["rollout", "assigned_at"])]


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
