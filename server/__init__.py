"""llama-server compatible HTTP server for vkmtp engines (FastAPI + uvicorn); see docs/SERVER.md."""
