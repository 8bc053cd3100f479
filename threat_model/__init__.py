"""Executable threat model of securefed: attacks that must fail, and residual risks, measured."""
