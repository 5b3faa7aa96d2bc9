"""The web service (FastAPI): thin routes over the library, errors mapped in one place."""
