"""Pure-torch ACE-Step v1 engine (no Ray here): model components, samplers, pipeline."""
