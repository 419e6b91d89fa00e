"""Offline tools that build the embedded scenarios from data_build/raw/ (not installed)."""
