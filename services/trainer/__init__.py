"""Fine-tuning: ``TrainerService`` (service.py), settings (config.py), loop pieces (core.py)."""
