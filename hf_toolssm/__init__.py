"""hf_toolssm: tool-using state-space models for Hugging Face Transformers."""
