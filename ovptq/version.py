"""The ovptq version: part of every INT8 model's record, and of the key of a replayed speed decision."""

__version__ = "0.2.0"
