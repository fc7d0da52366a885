"""Clinics (tenants) and their API keys."""
