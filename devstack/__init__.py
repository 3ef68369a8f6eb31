"""Local stand-ins for AWS, built from template.yaml (used by tests and, later, `make demo`)."""
