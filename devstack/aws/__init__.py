"""The local AWS: what `sam deploy` and AWS would run, on loopback (devstack.aws.stack)."""
