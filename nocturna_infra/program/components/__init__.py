"""Thin ComponentResources: each groups the Pulumi resources of one part of the stack."""
