"""The API's routers, one per concern: audio, results, SQL, training (and model promotion)."""
