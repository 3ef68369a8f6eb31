"""The whole system on one machine, without an AWS account or Docker.

- devstack.aws is the local AWS: moto in server mode with the refusals it lacks, the stack's
  resources provisioned from template.yaml, the SageMaker runtime, model containers and transform
  runner, Lambda's execution environments and event sources, the fault proxy, the request meter and
  the call recorder that checks least privilege (devstack.aws.stack puts them together).
- devstack.workloads are the commands run on it: `make demo`, `make soak`, `make pipeline-benchmark`,
  `make cost`, and the small model they train.

devstack.aws is also the test harness: tests/pipeline provisions the template's resources with
devstack.aws.provision and fakes the model behind devstack.aws.sagemaker_runtime; tests/stack
starts the whole Stack."""
