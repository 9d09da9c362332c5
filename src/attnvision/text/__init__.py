"""Text for text prompts: a frozen sentence encoder (all-MiniLM-L6-v2) and scene phrases."""
