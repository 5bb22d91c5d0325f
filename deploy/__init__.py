"""The configs serlens ships: demo and CREMA-D run configs, the Serve application config."""
