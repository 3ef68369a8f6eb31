"""What every tool reads of the deployed stack, on AWS or on the local stack: template.yaml (infra.template)
and the predictions table (infra.predictions). It imports nothing of the project, so cli/ and tools/, which
run against a real account, and devstack/, the local one, all build on it."""
