"""Engines wire a source, the counting rules and a store together."""
