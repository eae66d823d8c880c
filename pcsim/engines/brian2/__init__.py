"""The brian2 engine (the only modules that import brian2)."""
