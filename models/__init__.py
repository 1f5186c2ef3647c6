"""Models of the HLLM-Creator method, one model per file (see docs/ and DESIGN.md).

Empty until the HLLM issue lands: Item LLM, User LLM, Item-User Predictor, Creative LLM.
"""
