"""Isolation layers under the checks: `local` (this machine) and `docker`."""
