"""The rollout guard drill with a real worker: a deliberately damaged candidate (a copy of the test
model with its weights drowned in noise) gets 30% of new conversations; the worker's guard rolls
it back once enough conversations show it answering worse, and the next conversations all run on
the baseline."""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.test import Client

from chatbot.conversations.models import Message
from chatbot.serving.models import Rollout, RolloutAssignment, VariantChange
from tests.conftest import WorkerProcess, free_port
from tests.integration.test_rollback_live import ask

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
URL = "/admin/serving/servingstate/"
QUESTIONS = [
    "How do I reset my password?",
    "What are your opening hours?",
    "Can I pay with PayPal?",
    "How long does shipping take?",
    "How do I return an item?",
    "Where is my order?",
    "Do you ship abroad?",
    "How do I change my address?",
]
BATCH = 8


def damage(source: Path, target: Path, *, seed: int = 22, scale: float = 1.0) -> Path:
    """A copy of a model folder whose every floating-point weight gets Gaussian noise of `scale`
    times its own spread: it still loads and runs, and answers nonsense. Its build-info.json goes
    (its checksums would refuse the copy, as they should)."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    (target / "build-info.json").unlink(missing_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for shard in target.glob("*.safetensors"):
        tensors = load_file(shard)
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and tensor.numel() > 1:
                noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
                spread = tensor.float().std().clamp_min(1e-3)
                tensors[name] = (tensor.float() + noise * spread * scale).to(tensor.dtype).contiguous()
        save_file(tensors, shard, metadata={"format": "pt"})
    return target


@pytest.fixture
def damaged_fp16(test_models, tmp_path) -> str:
    return str(damage(Path(test_models["fp16"]), tmp_path / "damaged-fp16"))


def staff_client() -> Client:
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_model_variant"))
    client = Client()
    client.force_login(user)
    return client


async def conversations(count: int, start: int) -> list[dict]:
    """`count` new customers at once, each asking one question; their last frames."""
    return list(
        await asyncio.gather(*(ask(QUESTIONS[(start + i) % len(QUESTIONS)], f"drill{start + i}") for i in range(count)))
    )


def test_the_guard_rolls_a_damaged_candidate_back_and_new_conversations_run_on_the_baseline(
    live_worker, damaged_fp16, tmp_path
):
    metrics_port = free_port()
    live_worker.stop()  # its fp16 is the intact model: only the drill's worker may take fp16's queue
    drill = None
    try:
        drill = WorkerProcess(
            "drill-worker",
            tmp_path / "drill.log",
            MODEL_FP16_PATH=damaged_fp16,
            ROLLOUT_GUARD_INTERVAL_S="0.5",
            ROLLOUT_GUARD_MIN_CONVERSATIONS="8",
            ROLLOUT_GUARD_ALPHA="0.05",
            METRICS_PORT=str(metrics_port),
        ).start()
        client = staff_client()
        response = client.post(
            URL,
            {
                "action": "share",
                "candidate": "fp16",
                "percent": "30",
                "reason": "drill: damaged fp16 checkpoint at 30%",
                "expected_percent": "0",
                "confirm": "yes",
            },
            follow=True,
        )
        assert any("30% of new conversations" in str(m) for m in response.context["messages"])
        rollout = Rollout.objects.get()

        asked = 0
        deadline = time.monotonic() + 150
        while True:
            async_to_sync(conversations)(BATCH, asked)
            asked += BATCH
            rollout.refresh_from_db()
            if rollout.outcome != Rollout.Outcome.RUNNING:
                break
            assert asked < 96 and time.monotonic() < deadline, (
                f"the guard did not act after {asked} conversations: {list(RolloutAssignment.objects.values_list('variant', flat=True))}"
            )

        assert rollout.outcome == Rollout.Outcome.GUARD
        change = VariantChange.objects.get(kind=VariantChange.Kind.GUARD_ROLLBACK)
        assert (change.changed_by, change.to_variant, change.percent_from, change.percent_to) == (None, "fp16", 30, 0)
        assert change.reason.startswith("Rolled back by the guard")
        breach = rollout.guard_evidence["breaches"][0]
        assert breach["candidate"] == "fp16" and breach["candidate_n"] >= 8 and breach["baseline_n"] >= 8
        assert breach["candidate_bad"] / breach["candidate_n"] > breach["baseline_bad"] / breach["baseline_n"]

        # The next conversations all run on the baseline.
        after = async_to_sync(conversations)(BATCH, asked)
        answered = [frame["message"]["id"] for frame in after if frame["type"] == "answer.done"]
        assert len(answered) == BATCH
        assert set(Message.objects.filter(pk__in=answered).values_list("model_variant", flat=True)) == {"gptq-int4"}

        # The alert: the rollback page's banner and the worker's Prometheus gauge.
        assert 'id="guard-alert"' in client.get(URL).content.decode()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "chatbot_rollout_guard_tripped 1.0" in metrics
        assert 'chatbot_rollout_guard_rollbacks_total{candidate="fp16"} 1.0' in metrics
    finally:
        if drill is not None:
            drill.stop()
        live_worker.start()
