from django.apps import AppConfig


class InferenceWorkerConfig(AppConfig):
    """The GPU worker as a Django app: it owns its management commands (`run_worker`,
    `build_demo_model`, `evaluate_models`). Nothing here imports torch until a command runs, so
    the web, which lists this app too, never loads the model libraries."""

    name = "inference_worker"
    verbose_name = "Inference worker"
