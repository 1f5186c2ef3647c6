"""Model training and training-data construction (CoT dataset, teachers, HLLM, Creative LLM)."""
