"""enrichd: on-premise enrichment of speech-to-text transcripts with a local LLM on CPU."""

__version__ = "0.1.0"
