"""validation: width-scaling and phase-diagram studies built on meanfield (issue 5)."""
