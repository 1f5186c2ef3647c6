"""Creative Factory jobs: one module per stage, plus the CLI and shared plumbing."""

__version__ = "0.1.0"
