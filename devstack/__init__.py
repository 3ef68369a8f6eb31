"""The local stack: AWS stand-ins built from template.yaml (moto for the AWS API, a SageMaker runtime
and transform runner serving the real model, Lambda environments running the unchanged handlers),
the `make demo` and `make stack` commands on top of it, and the pipeline benchmark.

It is also the test harness: tests/pipeline provisions the template's resources with
devstack.provision and fakes the model behind devstack.runtime; tests/stack starts the whole Stack."""
