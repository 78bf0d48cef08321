"""One error family for the migration tool: every refusal and failure carries a stable `code` that scripts
decide on, and a message saying what to do about it."""
from __future__ import annotations


class MigrationError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"
