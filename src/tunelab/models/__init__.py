"""Model registry, GGUF -> safetensors cache, loading with adapters, export."""
