"""moto's SageMaker, made to refuse what SageMaker refuses and moto lets through.

- A serverless endpoint config whose model is network-isolated: serverless endpoints do not support
  network isolation (SageMaker developer guide, serverless-endpoints, "Feature exclusions"). moto
  drops CreateModel's EnableNetworkIsolation; the patch keeps it on the model, and
  CreateEndpointConfig answers ValidationException for a ServerlessConfig variant of such a model.
  The message is ours: AWS's wording is not documented.
- A transform job starts InProgress (DescribeTransformJob, TransformJobStatus), not Completed as moto
  creates it: the local stack's TransformRunner moves it on as it runs the job, and a caller polling
  for the end waits for that.

The local stack (devstack/aws/stack.py) and the tests' moto server (tests/conftest.py) apply it.
"""

from __future__ import annotations

from typing import Any


def patch() -> None:
    """Apply the refusals to moto's SageMaker (idempotent)."""
    from moto.sagemaker import models, responses
    from moto.sagemaker.exceptions import ValidationError

    if getattr(responses.SageMakerResponse.create_model, "keeps_network_isolation", False):
        return
    create_model = responses.SageMakerResponse.create_model
    create_endpoint_config = models.SageMakerModelBackend.create_endpoint_config
    create_transform_job = models.SageMakerModelBackend.create_transform_job

    def create_model_keeping_isolation(self: Any) -> Any:
        result = create_model(self)
        model = self.sagemaker_backend._models[self._get_param("ModelName")]
        model.enable_network_isolation = bool(self._get_param("EnableNetworkIsolation", False))
        return result

    def create_endpoint_config_as_sagemaker(
        self: Any, endpoint_config_name: str, production_variants: list[dict[str, Any]], *args: Any, **kwargs: Any
    ) -> Any:
        for variant in production_variants:
            model = self._models.get(variant.get("ModelName"))
            if "ServerlessConfig" in variant and getattr(model, "enable_network_isolation", False):
                raise ValidationError(
                    f"Model {variant['ModelName']!r} has EnableNetworkIsolation set, which serverless "
                    f"endpoints do not support (variant {variant.get('VariantName')!r})"
                )
        return create_endpoint_config(self, endpoint_config_name, production_variants, *args, **kwargs)

    def create_transform_job_in_progress(self: Any, *args: Any, **kwargs: Any) -> Any:
        job = create_transform_job(self, *args, **kwargs)
        job.transform_job_status = "InProgress"
        job.transform_end_time = None  # type: ignore[assignment]  # moto's model has no Optional
        return job

    create_model_keeping_isolation.keeps_network_isolation = True  # type: ignore[attr-defined]
    responses.SageMakerResponse.create_model = create_model_keeping_isolation  # type: ignore[method-assign]
    models.SageMakerModelBackend.create_endpoint_config = create_endpoint_config_as_sagemaker  # type: ignore[method-assign]
    models.SageMakerModelBackend.create_transform_job = create_transform_job_in_progress  # type: ignore[method-assign]
