"""Turning records into documents and getting documents to a sink."""
