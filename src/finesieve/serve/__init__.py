"""Putting a trained run to work: batch scoring of files (and, later, the moderation service)."""
