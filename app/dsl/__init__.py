"""Conductor workflow definition language: models, expressions and checks."""
