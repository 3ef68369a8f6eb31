"""Commands run on the local AWS: the demo, the soak, the pipeline benchmark, the cost model, the small model."""
