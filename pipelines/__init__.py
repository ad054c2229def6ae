"""Thin Ray entry points: parse the CLI, build the Dataset or Trainer, wire the library steps."""
