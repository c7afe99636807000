"""The engine adapter (the Docker SDK): containers, images, volumes and the claim on GPUs."""
