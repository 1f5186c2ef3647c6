"""Models of the HLLM-Creator method, one model per file: `item_llm.py` (Item LLM),
`user_llm.py` (User LLM), `predictor.py` (Item-User Predictor), `creative_llm.py` (Creative
LLM). Nothing here imports `jobs/`."""
