"""Integrations with other libraries; each module is imported explicitly (no import side effects here)."""
